"""The WASM CPU backend: the model for the browser's CPU (wasm32 + SIMD128), the WebGPU build's
fallback, linked into model-cpu.wasm plus its threaded twin model-cpu-threads.wasm (the same
objects linked with shared memory: parallel loops on Web Workers).

Kernels, passes and the sliding-window rule: cpu_common.
"""

from __future__ import annotations

from pathlib import Path

from tvm.target import Target

from ..progress import ProgressFn, silent
from .cpu_common import CpuBackend
from .webgpu import WASM_TRIPLE

MODULE_FILE = "model-cpu.wasm"
THREADS_FILE = "model-cpu-threads.wasm"


class WasmCpuBackend(CpuBackend):
    name = "wasm"
    module_file = MODULE_FILE
    parallel = True

    def target(self) -> Target:
        return Target({"kind": "llvm", "mtriple": WASM_TRIPLE, "mattr": ["+simd128"]})

    def link(self, executable, folder: Path, *, opt_level: str, progress: ProgressFn = silent) -> dict[str, str]:
        from ..compile.wasm_link import export_wasm

        export_wasm(executable, folder / MODULE_FILE, opt_level=opt_level, progress=progress,
                    threads_path=folder / THREADS_FILE)
        return {self.name: MODULE_FILE, "wasm-threads": THREADS_FILE}
