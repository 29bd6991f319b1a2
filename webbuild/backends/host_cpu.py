"""The host CPU backend: this machine through LLVM, a shared library (model.so) that
webbuild.runner runs from Python (parity tests, numerical checks of a build).

Same kernels, passes and sliding-window rule as the WASM CPU backend (cpu_common), with
single-threaded loops.
"""

from __future__ import annotations

from pathlib import Path

from tvm.target import Target

from ..progress import ProgressFn, silent
from .cpu_common import CpuBackend

MODULE_FILE = "model.so"


class HostCpuBackend(CpuBackend):
    name = "cpu"
    module_file = MODULE_FILE
    parallel = False

    def target(self) -> Target:
        return Target({"kind": "llvm"})

    def link(self, executable, folder: Path, *, opt_level: str, progress: ProgressFn = silent) -> dict[str, str]:
        executable.export_library(str(folder / MODULE_FILE))
        return {self.name: MODULE_FILE}
