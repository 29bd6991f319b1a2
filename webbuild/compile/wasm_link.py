"""Link a TVM Relax executable built for WebGPU + wasm32 into a browser-loadable ``.wasm``.

The host code TVM generated is written as wasm object files (``object_format = "o"``;
emscripten 3.1.6's wasm-ld cannot read TVM's LLVM-22 bitcode) and linked by ``emcc`` with
the cached TVM web runtime objects (:mod:`webbuild.compile.wasm_runtime`). The result is a
standalone wasm module for the JS runtime ``@mlc-ai/web-runtime`` (global ``tvmjs``):
``tvmjs.instantiate(bytes, tvmjs.createPolyfillWASI())``.

No ``-sASYNCIFY``: tvmjs only needs it for synchronous GPU waits inside C++ (and for the
RPC time evaluator); model code reads GPU results back from JS (``await device.sync()``
then ``tensor.copyFrom``), as WebLLM does. Asyncify would double the size and the O3 link time.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from webbuild.compile.wasm_runtime import (
    EMSCRIPTEN_FIX,
    THREADS_CFLAGS,
    Progress,
    RuntimeObjects,
    _tail,
    build_runtime,
    emscripten_env,
    find_tool,
)
from webbuild.errors import ToolchainError

OPT_LEVELS = ("O0", "O1", "O2", "O3", "Os", "Oz")

#: Flags every linked model gets (cf. tvm.support.emcc.create_tvmjs_wasm).
LINK_FLAGS = (
    "--no-entry",
    "-sWASM_BIGINT=1",
    "-sSTANDALONE_WASM=1",
    "-sALLOW_MEMORY_GROWTH=1",
    "-sERROR_ON_UNDEFINED_SYMBOLS=0",
)

#: Memory of the threaded CPU module (64 KiB pages): imported and shared with its worker instances,
#: so the JS side creates it and must match these sizes (recorded in chat-config.json).
THREADS_MEMORY_PAGES = {"initial": 256, "maximum": 32768}  # 16 MiB, 2 GiB

#: Extra flags of the threaded CPU module (model-cpu-threads.wasm): shared, imported memory, and
#: the TLS initializer exported so that each instance can set up its own thread-local block.
#: Emscripten's single-threaded system libraries are linked as they are (its pthread builds need
#: its JS glue, which STANDALONE_WASM excludes), hence --no-check-features: only the main instance
#: runs library code; worker instances run nothing but the model's parallel loop bodies (matmul
#: row tiles, which allocate nothing and touch no library state).
THREADS_LINK_FLAGS = (
    "-matomics",
    "-mbulk-memory",
    f"-sINITIAL_MEMORY={THREADS_MEMORY_PAGES['initial'] << 16}",
    f"-sMAXIMUM_MEMORY={THREADS_MEMORY_PAGES['maximum'] << 16}",
    "-Wl,--shared-memory",
    "-Wl,--no-check-features",
    "-Wl,--import-memory",
    "-Wl,--export-if-defined=__wasm_init_tls",
    "-Wl,--export-if-defined=__tls_size",
    "-Wl,--export-if-defined=__tls_align",
)

#: Imports the JS side (tvmjs Environment + its bundled emscripten WASI polyfill) provides.
#: A linked module importing anything else fails to instantiate in the browser.
JS_PROVIDED_IMPORTS = frozenset({
    "TVMFFIWasmSafeCall",
    "TVMFFIWasmFunctionDeleter",
    "__console_log",
    "__cxa_thread_atexit",
    "emscripten_notify_memory_growth",
    "clock_time_get",
    "environ_get",
    "environ_sizes_get",
    "fd_close",
    "fd_read",
    "fd_seek",
    "fd_write",
    "proc_exit",
})


def link_wasm(
    out_path: str | os.PathLike,
    objects: Sequence[str | os.PathLike],
    *,
    opt_level: str = "O1",
    extra_flags: Sequence[str] = (),
    progress: Progress | None = None,
    runtime: RuntimeObjects | None = None,
) -> dict[str, Any]:
    """Link ``objects`` with the TVM web runtime into ``out_path`` (written atomically).

    ``runtime``: prebuilt runtime objects; built or fetched from the cache when omitted."""
    if opt_level not in OPT_LEVELS:
        raise ValueError(f"opt_level must be one of {OPT_LEVELS}, got {opt_level!r}")
    emcc = find_tool("emcc")
    runtime = runtime or build_runtime(progress=progress)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out_path.stem}-", suffix=".wasm", dir=out_path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    cmd = [emcc, f"-{opt_level}", *LINK_FLAGS, *extra_flags, "-o", str(tmp),
           *(str(o) for o in runtime.objects), *(str(o) for o in objects)]
    if progress:
        progress({"stage": "link", "file": out_path.name, "loaded": 0, "total": 1})
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=emscripten_env())
        if proc.returncode != 0 or not tmp.exists() or tmp.stat().st_size == 0:
            raise ToolchainError(
                f"linking {out_path.name} with emcc failed (exit {proc.returncode}):\n"
                f"{_tail(proc.stderr or proc.stdout)}",
                where=str(out_path), fix=EMSCRIPTEN_FIX)
        os.replace(tmp, out_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    seconds = time.monotonic() - start
    if progress:
        progress({"stage": "link", "file": out_path.name, "loaded": 1, "total": 1})
    return {"path": str(out_path), "seconds": round(seconds, 2), "bytes": out_path.stat().st_size,
            "opt_level": opt_level, "runtime_key": runtime.key}


def _make_fcompile(opt_level: str, progress: Progress | None, info: dict, runtime: RuntimeObjects,
                   threads: tuple[Path, RuntimeObjects] | None):
    def fcompile(output, objects, options=None, **_kwargs):
        info.update(link_wasm(output, objects, opt_level=opt_level, progress=progress, runtime=runtime))
        if threads is not None:
            info["threads"] = link_wasm(threads[0], objects, opt_level=opt_level, progress=progress,
                                        runtime=threads[1], extra_flags=THREADS_LINK_FLAGS)

    # wasm object files, not LLVM bitcode; TVM's export_library reads this attribute off the function
    fcompile.object_format = "o"  # type: ignore[attr-defined]
    return fcompile


def export_wasm(executable, out_path, opt_level: str = "O1", progress: Progress | None = None,
                threads_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Write ``executable`` (from ``tvm.compile(..., target=webgpu with wasm32 host)``) as a
    linked ``.wasm`` at ``out_path``. ``opt_level``: "O1" links in about a second (tests),
    "O3" takes about a minute and gives a smaller, faster module (release).

    ``threads_path``: also link the same objects with shared memory there (a CPU module whose
    parallel loops run on Web Workers; see runtime_support/src/webbuild_threads.cc).

    Returns ``{"path", "seconds", "bytes", "opt_level", "runtime_key"}`` (+ ``"threads"``: the
    same for the threaded module).
    """
    info: dict[str, Any] = {}
    # Build (or fetch) the runtime first so its progress is reported before TVM's export.
    runtime = build_runtime(progress=progress)
    threads = (Path(threads_path), build_runtime(THREADS_CFLAGS, progress=progress)) if threads_path else None
    with tempfile.TemporaryDirectory(prefix="webbuild-export-") as workspace:
        try:
            fcompile = _make_fcompile(opt_level, progress, info, runtime, threads)
            executable.export_library(str(out_path), fcompile=fcompile, workspace_dir=workspace)
        except ToolchainError:
            raise
        except Exception as exc:  # TVM raises plain errors when writing objects fails
            raise ToolchainError(f"exporting the TVM executable failed: {exc}",
                                 where=str(out_path),
                                 fix="check that the module was built with host "
                                     '{"kind": "llvm", "mtriple": "wasm32-unknown-unknown-wasm"}') from exc
    return info


def wasm_imports(path: str | os.PathLike) -> list[tuple[str, str, str]]:
    """(module, name, kind) of every import of a wasm file (minimal binary parser)."""
    data = Path(path).read_bytes()
    if data[:4] != b"\0asm":
        raise ToolchainError(f"{path} is not a wasm module")

    def leb(pos: int) -> tuple[int, int]:
        result = shift = 0
        while True:
            b = data[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return result, pos

    def name(pos: int) -> tuple[str, int]:
        n, pos = leb(pos)
        return data[pos:pos + n].decode(), pos + n

    kinds = {0: "func", 1: "table", 2: "memory", 3: "global", 4: "tag"}
    pos = 8
    out: list[tuple[str, str, str]] = []
    while pos < len(data):
        sec_id = data[pos]
        size, body = leb(pos + 1)
        if sec_id == 2:
            count, p = leb(body)
            for _ in range(count):
                mod, p = name(p)
                field, p = name(p)
                kind = data[p]
                p += 1
                if kind == 0:
                    _, p = leb(p)
                elif kind == 1:
                    p += 1
                    flags, p = leb(p)
                    _, p = leb(p)
                    if flags & 1:
                        _, p = leb(p)
                elif kind == 2:
                    flags, p = leb(p)
                    _, p = leb(p)
                    if flags & 1:
                        _, p = leb(p)
                elif kind == 3:
                    p += 2
                elif kind == 4:
                    p += 1
                    _, p = leb(p)
                out.append((mod, field, kinds.get(kind, str(kind))))
            break
        pos = body + size
    return out


def unexpected_imports(path: str | os.PathLike) -> list[str]:
    """Function imports of a linked model that the JS runtime does not provide."""
    return sorted(f"{m}.{n}" for m, n, k in wasm_imports(path)
                  if k == "func" and n not in JS_PROVIDED_IMPORTS)
