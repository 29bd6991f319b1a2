"""Text patches to the TVM runtime's C++ sources, applied when webbuild stages its wasm runtime.

Each patch is {staged source path: {exact TVM text: replacement}}; every exact text must occur
exactly once in the pinned TVM's sources or staging fails with a ToolchainError (TVM moved: re-check
the patch). Two groups:
- the thread pool: the web runtime's serial parallel-loop functions are dropped and the workspace
  functions renamed, so that webbuild's ``webbuild_threads.cc`` provides them (worker threads
  allocate from a private arena, never from malloc);
- the fused decode attention's hooks in the paged KV cache (webbuild.tvm_patches.fused_decode_entry,
  imported when asked for: it needs TVM);
- separate device page tables for windowed layers (webbuild.tvm_patches.layer_sliding_aux).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ToolchainError
from .pinned import UPGRADE_FIX

#: The serial parallel-loop functions of ``wasm_runtime.cc``, dropped in favour of
#: ``webbuild_threads.cc`` (exact text of the pinned TVM).
SERIAL_PARALLEL = (
    "int TVMBackendParallelLaunch(FTVMParallelLambda flambda, void* cdata, int num_task) {\n"
    "  TVMParallelGroupEnv env;\n"
    "  env.num_task = 1;\n"
    "  flambda(0, &env, cdata);\n"
    "  return 0;\n"
    "}\n",
    "int TVMBackendParallelBarrier(int task_id, TVMParallelGroupEnv* penv) { return 0; }\n",
)

#: ``src/runtime/device_api.cc``'s workspace functions, renamed so that ``webbuild_threads.cc`` can
#: put its own in front of them (worker threads allocate from a private arena, never from malloc).
WORKSPACE_RENAMES = {
    "void* TVMBackendAllocWorkspace(int device_type,": "void* TVMBackendAllocWorkspaceDefault(int device_type,",
    "int TVMBackendFreeWorkspace(int device_type,": "int TVMBackendFreeWorkspaceDefault(int device_type,",
}


def thread_pool_patches() -> dict[str, dict[str, str]]:
    """The patches that hand parallel loops and workspaces to ``webbuild_threads.cc``."""
    return {
        "web/emcc/wasm_runtime.cc": dict.fromkeys(SERIAL_PARALLEL, ""),
        "src/runtime/device_api.cc": WORKSPACE_RENAMES,
    }


def source_patches() -> dict[str, dict[str, str]]:
    """Every text patch to the runtime sources (part of the wasm runtime's cache key)."""
    from .fused_decode_entry import RUNTIME_PATCHES as FUSED_DECODE_PATCHES
    from .layer_sliding_aux import RUNTIME_PATCHES as LAYER_SLIDING_PATCHES

    patches = thread_pool_patches()
    for group in (FUSED_DECODE_PATCHES, LAYER_SLIDING_PATCHES):
        for relative, replacements in group.items():
            patches.setdefault(relative, {}).update(replacements)
    return patches


def patch_text(name: str, text: str, replacements: dict[str, str]) -> str:
    """`text` with each exact old text (which must occur exactly once) replaced."""
    for old, new in replacements.items():
        if text.count(old) != 1:
            raise ToolchainError(f"{name} lacks the code webbuild patches: {old.splitlines()[0].strip()}",
                                 where=name, fix=UPGRADE_FIX)
        text = text.replace(old, new)
    return text


def apply_source_patches(root: Path) -> None:
    """Patch the TVM source tree staged under `root` in place."""
    for relative, replacements in source_patches().items():
        path = root / relative
        path.write_text(patch_text(relative, path.read_text(), replacements))
