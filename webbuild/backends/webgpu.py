"""The WebGPU backend: WGSL kernels with wasm32 host code, linked into model.wasm.

Its decisions: dlight's GPU schedules, except for group-quantized prefill matmuls (webbuild's
barrier-free register-tiled GEMM, webbuild.kernels.prefill_gemm); the one-token decode in webbuild's fused kernels
(webbuild.kernels.decode_gemv / decode_attention, with the paged KV cache's hook in
webbuild.tvm_patches.fused_decode_entry); encoders' attention and float32 Linear layers in
barrier-free kernels (webbuild.kernels.encoder_attention / encoder_gemm); the workgroup argmax,
token-mask and WKV kernels; TVM's racy attention-state merge replaced (tvm_patches.merge_state) and
precise sin/cos for RoPE (tvm_patches.webgpu_trig). Its KV-cache kernels start a window's running max
at -5e4, so it takes chunks of window - 1 tokens past the window as well (`single_token_past_window`
false).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import tvm
from tvm.target import Target

from ..kernels.argmax import argmax_func
from ..kernels.encoder_attention import encoder_attention_func_gpu
from ..kernels.encoder_gemm import linear_func
from ..kernels.model_kernels import ModelKernels
from ..kernels.prefill_gemm import prefill_gemm_pass
from ..kernels.token_bitmask import token_bitmask_func
from ..kernels.wkv import wkv_func_gpu
from ..progress import ProgressFn, silent
from ..tvm_patches.merge_state import replace_racy_merge_state
from ..tvm_patches.webgpu_trig import install_precise_webgpu_trig
from .base import Backend

WASM_TRIPLE = "wasm32-unknown-unknown-wasm"
MODULE_FILE = "model.wasm"


class WebGPUBackend(Backend):
    name = "webgpu"
    module_file = MODULE_FILE

    def target(self) -> Target:
        return Target({"kind": "webgpu"}, host={"kind": "llvm", "mtriple": WASM_TRIPLE})

    def model_kernels(self) -> ModelKernels:
        return ModelKernels(self.target(), partial(argmax_func, gpu=True), wkv_func_gpu,
                            partial(token_bitmask_func, gpu=True), fused_decode=True,
                            encoder_attention_func=encoder_attention_func_gpu, encoder_linear_func=linear_func)

    def prepare(self, mod: tvm.IRModule) -> tvm.IRModule:
        install_precise_webgpu_trig()  # WGSL sin/cos are ~2e-4 off: precise RoPE
        return replace_racy_merge_state(mod)

    def before_legalize(self) -> list:
        return [prefill_gemm_pass()]

    def generic_pipeline(self):
        from tvm.relax.backend.gpu_generic import pipeline

        return pipeline

    def schedule_rules(self) -> list:
        from tvm.s_tir import dlight as dl

        return [dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.Fallback()]

    def link(self, executable, folder: Path, *, opt_level: str, progress: ProgressFn = silent) -> dict[str, str]:
        from ..compile.wasm_link import export_wasm

        export_wasm(executable, folder / MODULE_FILE, opt_level=opt_level, progress=progress)
        return {self.name: MODULE_FILE}
