"""What both CPU backends (wasm32 and the host) share: webbuild's CPU kernels and the sliding-window rule.

int4 group-quantized matmuls are swapped for webbuild.kernels.cpu_matmul's 4-lane kernels before
legalization; after fusion the remaining matmuls get its schedules (row tiles split across
threads when `parallel`: on wasm32 webbuild_threads.cc runs them) and dequantize stages are
inlined into their readers (webbuild.kernels.inline_dequantize).

TVM 0.27's CPU prefill kernel reads a sliding window's running max before writing it once a
call's first query has a masked cached key, so past the window runtimes append one token per call
(`single_token_past_window`; webbuild.runner and the browser runtime read it from `_metadata`).
"""

from __future__ import annotations

from ..kernels.cpu_matmul import int4_matmul_pass, schedule_pass
from ..kernels.inline_dequantize import inline_dequantize
from .base import Backend


class CpuBackend(Backend):
    parallel: bool = False  # split matmul row tiles across threads

    def runtime_metadata(self) -> dict:
        return {**super().runtime_metadata(), "single_token_past_window": True}

    def before_legalize(self) -> list:
        return [int4_matmul_pass()]

    def after_fusion(self) -> list:
        return [schedule_pass(parallel=self.parallel), inline_dequantize]
