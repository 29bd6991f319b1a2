"""Build TVM's C++ web runtime (the wasm half of tvmjs) into cached wasm object files.

The apache-tvm wheel ships the runtime sources (``tvm/web/emcc/*.cc``, ``tvm/src/runtime``,
``tvm/include``; the FFI sources are in the ``tvm_ffi`` wheel) but nine headers they include
are in neither wheel; ``runtime_support/`` holds webbuild's own replacements for them.

The sources are staged into a temporary tree laid out like a TVM checkout, compiled with
emscripten's ``em++`` into wasm object files (``.o``, not LLVM bitcode: emscripten 3.1.6's
wasm-ld 14 cannot read the LLVM-22 bitcode that TVM emits, so both halves are objects), and
cached under ``~/.cache/webbuild/wasm-runtime/<key>/``. The key hashes the TVM, tvm-ffi and
emcc versions, the compile flags and the support headers; the cache directory is written
through a temporary directory and renamed into place, so an interrupted build leaves nothing.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from webbuild.errors import ToolchainError
from webbuild.tvm_patches.runtime_sources import apply_source_patches, source_patches

Progress = Callable[[dict], None]

#: The three translation units of the web runtime (all in ``tvm/web/emcc``).
RUNTIME_SOURCES = ("wasm_runtime.cc", "webgpu_runtime.cc", "tvmjs_support.cc")

#: webbuild's own translation units (in ``runtime_support/src``, staged to ``src/``): the thread
#: pool that replaces the web runtime's serial TVMBackendParallelLaunch.
SUPPORT_SOURCES = ("webbuild_threads.cc",)

#: ``wasm_runtime.cc`` is a unity file (~40 ``#include "....cc"``) that takes ~2.5 min alone.
#: It is split for parallel compilation: the sources under these prefixes move to generated
#: unity files of their own (one per group) and are masked out of ``wasm_runtime.cc`` by empty
#: stand-ins found first on the quote-include path. Everything else, including the code
#: wasm_runtime.cc itself defines, still compiles from the unmodified file.
UNITY_SPLIT = {
    "ffi": ("3rdparty/tvm-ffi/",),
    "vm": ("src/runtime/vm/", "src/runtime/memory/"),
}
LAYOUT_VERSION = "split-ffi-vm-threads-1"

#: Compile flags; part of the cache key. -O3 as in tvm/web/Makefile.
DEFAULT_CFLAGS = ("-O3", "-std=c++17", "-Wno-ignored-attributes")

#: The threaded flavour (for model-cpu-threads.wasm, linked with shared memory): atomics and real
#: thread-locals. The single-threaded links keep DEFAULT_CFLAGS: there, objects built with atomics
#: get thread-locals that nothing initializes.
THREADS_CFLAGS = (*DEFAULT_CFLAGS, "-matomics", "-mbulk-memory")

SUPPORT_DIR = Path(__file__).resolve().parent / "runtime_support"

EMSCRIPTEN_FIX = "run `make deps`, or `apt-get install emscripten` (Debian's 3.1.6 is known to work)"


@dataclass(frozen=True)
class RuntimeObjects:
    """The cached runtime objects: ``objects`` are absolute ``.o`` paths, ready to link."""

    key: str
    directory: Path
    objects: tuple[Path, ...]
    built: bool  # True when this call compiled them, False when they came from the cache


# ----------------------------------------------------------------------------- toolchain


def find_tool(name: str) -> str:
    """Absolute path of an emscripten tool (emcc / em++), or ToolchainError."""
    env_name = {"emcc": "EMCC", "em++": "EMXX"}.get(name)
    candidate = os.environ.get(env_name) if env_name else None
    path = shutil.which(candidate or name)
    if not path:
        raise ToolchainError(f"emscripten compiler `{candidate or name}` not found on PATH",
                             fix=EMSCRIPTEN_FIX)
    return path


def emscripten_env() -> dict[str, str]:
    """Environment for running emcc. Debian's emscripten needs NODE_PATH for its JS tools."""
    env = dict(os.environ)
    node_paths = [p for p in env.get("NODE_PATH", "").split(os.pathsep) if p]
    if os.path.isdir("/usr/share/nodejs") and "/usr/share/nodejs" not in node_paths:
        node_paths.append("/usr/share/nodejs")
    if node_paths:
        env["NODE_PATH"] = os.pathsep.join(node_paths)
    # emscripten writes its sanity/cache files under EM_CACHE; keep the default unless set.
    return env


_EMCC_VERSION_CACHE: dict[str, str] = {}


def emcc_version(emcc: str | None = None) -> str:
    """First line of ``emcc --version`` (part of the cache key)."""
    emcc = emcc or find_tool("emcc")
    if emcc not in _EMCC_VERSION_CACHE:
        try:
            proc = subprocess.run([emcc, "--version"], capture_output=True, text=True,
                                  env=emscripten_env(), timeout=120)
        except OSError as exc:  # pragma: no cover - exotic
            raise ToolchainError(f"cannot run {emcc}: {exc}", fix=EMSCRIPTEN_FIX) from exc
        if proc.returncode != 0:
            raise ToolchainError(f"`{emcc} --version` failed:\n{_tail(proc.stderr)}",
                                 fix=EMSCRIPTEN_FIX)
        _EMCC_VERSION_CACHE[emcc] = proc.stdout.strip().splitlines()[0]
    return _EMCC_VERSION_CACHE[emcc]


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# ----------------------------------------------------------------------------- sources


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ToolchainError(f"Python package `{name}` is not installed",
                             fix="pip install apache-tvm==0.27.0.post1")
    return Path(list(spec.submodule_search_locations)[0])


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def tvm_dirs() -> tuple[Path, Path]:
    """(tvm package dir, tvm_ffi package dir), checked to hold the runtime sources."""
    tvm_dir, ffi_dir = _package_dir("tvm"), _package_dir("tvm_ffi")
    needed = [tvm_dir / "web" / "emcc" / s for s in RUNTIME_SOURCES]
    needed += [tvm_dir / "src" / "runtime", tvm_dir / "include", ffi_dir / "include",
               ffi_dir / "src" / "ffi"]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise ToolchainError("the installed TVM wheels lack the web runtime sources: "
                             + ", ".join(missing),
                             fix="pip install --force-reinstall apache-tvm==0.27.0.post1")
    return tvm_dir, ffi_dir


def _support_digest() -> str:
    h = hashlib.sha256()
    for p in sorted([*SUPPORT_DIR.rglob("*.h"), *SUPPORT_DIR.rglob("*.cc")]):
        h.update(str(p.relative_to(SUPPORT_DIR)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def cache_key(cflags: Sequence[str] = DEFAULT_CFLAGS, emcc: str | None = None) -> str:
    """Hash of everything that determines the runtime objects."""
    ident = {
        "tvm": _dist_version("apache-tvm"),
        "tvm_ffi": _dist_version("apache-tvm-ffi"),
        "emcc": emcc_version(emcc),
        "cflags": list(cflags),
        "sources": list(RUNTIME_SOURCES),
        "layout": LAYOUT_VERSION,
        "support": _support_digest(),
        "patches": hashlib.sha256(json.dumps(source_patches(), sort_keys=True).encode()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]


def cache_root() -> Path:
    base = os.environ.get("WEBBUILD_CACHE_DIR")
    root = Path(base) if base else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "webbuild"
    return root / "wasm-runtime"


def stage_sources(dest: Path) -> Path:
    """Lay out a TVM-checkout-shaped source tree under ``dest`` (copies, so relative
    ``../support/..`` includes resolve inside it) and return its root."""
    tvm_dir, ffi_dir = tvm_dirs()
    root = dest / "tvm"
    shutil.copytree(tvm_dir / "include", root / "include")
    shutil.copytree(tvm_dir / "src" / "runtime", root / "src" / "runtime",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (root / "web").mkdir(parents=True)
    shutil.copytree(tvm_dir / "web" / "emcc", root / "web" / "emcc",
                    ignore=shutil.ignore_patterns("__pycache__"))
    ffi_root = root / "3rdparty" / "tvm-ffi"
    shutil.copytree(ffi_dir / "include", ffi_root / "include")
    shutil.copytree(ffi_dir / "src", ffi_root / "src")
    shutil.copytree(ffi_dir / "3rdparty" / "dlpack", ffi_root / "3rdparty" / "dlpack")
    # webbuild's replacements for the headers missing from the wheels
    shutil.copytree(SUPPORT_DIR / "include", root / "include", dirs_exist_ok=True)
    shutil.copytree(SUPPORT_DIR / "src", root / "src", dirs_exist_ok=True)
    shutil.copytree(SUPPORT_DIR / "3rdparty", root / "3rdparty", dirs_exist_ok=True)
    apply_source_patches(root)
    return root


def include_flags(root: Path) -> list[str]:
    return [
        f"-I{root}",
        f"-I{root / 'include'}",
        f"-I{root / '3rdparty' / 'tvm-ffi' / 'include'}",
        f"-I{root / '3rdparty' / 'tvm-ffi' / '3rdparty' / 'dlpack' / 'include'}",
        f"-I{root / '3rdparty' / 'compiler-rt'}",
    ]


def split_unity(root: Path) -> tuple[list[Path], Path]:
    """Write the split-off unity files and the masking stand-ins for ``wasm_runtime.cc``.

    Returns (generated unity sources, directory of stand-ins for ``-iquote``)."""
    text = (root / "web" / "emcc" / "wasm_runtime.cc").read_text()
    lines = text.splitlines()
    preamble = [ln for ln in lines if ln.startswith("#define TVM_")]
    headers = [ln for ln in lines if ln.startswith("#include <")]
    units = [ln.split('"')[1] for ln in lines if ln.startswith('#include "') and ln.rstrip().endswith('.cc"')]
    if not units or not preamble:
        raise ToolchainError("unexpected layout of tvm/web/emcc/wasm_runtime.cc; cannot split it",
                             fix="use apache-tvm==0.27.0.post1")
    mask = root.parent / "unity-mask"
    generated = []
    for group, prefixes in UNITY_SPLIT.items():
        members = [u for u in units if u.startswith(prefixes)]
        if not members:
            continue
        body = ["// generated by webbuild.compile.wasm_runtime: part of tvm/web/emcc/wasm_runtime.cc",
                *preamble, *headers, *(f'#include "{u}"' for u in members)]
        path = root / "web" / "emcc" / f"wasm_runtime_{group}.cc"
        path.write_text("\n".join(body) + "\n")
        generated.append(path)
        for u in members:
            stand_in = mask / u
            stand_in.parent.mkdir(parents=True, exist_ok=True)
            stand_in.write_text("// compiled in a separate unit by webbuild\n")
    return generated, mask


# ----------------------------------------------------------------------------- build


def _compile_one(emxx: str, src: Path, out: Path, flags: list[str], env: dict) -> float:
    start = time.monotonic()
    cmd = [emxx, *flags, "-c", str(src), "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0 or not out.exists():
        raise ToolchainError(
            f"compiling the TVM web runtime ({src.name}) failed:\n{_tail(proc.stderr or proc.stdout)}",
            where=str(src), fix=EMSCRIPTEN_FIX)
    return time.monotonic() - start


def build_runtime(
    cflags: Sequence[str] = DEFAULT_CFLAGS,
    *,
    progress: Progress | None = None,
    jobs: int | None = None,
    force: bool = False,
) -> RuntimeObjects:
    """Return the runtime's wasm objects, compiling them (in parallel) on a cache miss."""
    emcc = find_tool("emcc")
    emxx = find_tool("em++")
    key = cache_key(cflags, emcc)
    final = cache_root() / key
    # longest first: the FFI and VM parts of wasm_runtime.cc, its remainder, then the others
    unit_names = [f"wasm_runtime_{g}.cc" for g in UNITY_SPLIT] + list(RUNTIME_SOURCES) + list(SUPPORT_SOURCES)
    objects = tuple(final / (Path(s).stem + ".o") for s in unit_names)
    total = len(unit_names)
    if not force and (final / "manifest.json").exists() and all(o.exists() for o in objects):
        if progress:
            progress({"stage": "runtime", "file": "cache", "loaded": total, "total": total,
                      "cached": True})
        return RuntimeObjects(key, final, objects, built=False)

    final.parent.mkdir(parents=True, exist_ok=True)
    env = emscripten_env()
    work = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=final.parent))
    try:
        root = stage_sources(work / "src")
        out_dir = work / "out"
        out_dir.mkdir()
        flags = [*cflags, *include_flags(root)]
        generated, mask = split_unity(root)
        if sorted(p.name for p in generated) != sorted(f"wasm_runtime_{g}.cc" for g in UNITY_SPLIT):
            raise ToolchainError("splitting wasm_runtime.cc found an empty group",
                                 fix="use apache-tvm==0.27.0.post1")
        unit_flags = {n: flags for n in unit_names}
        unit_flags["wasm_runtime.cc"] = [f"-iquote{mask}", *flags]
        jobs = jobs or max(1, min(total, os.cpu_count() or 1))
        if progress:
            progress({"stage": "runtime", "file": None, "loaded": 0, "total": total})
        timings: dict[str, float] = {}
        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {
                pool.submit(_compile_one, emxx, root / ("src" if s in SUPPORT_SOURCES else "web/emcc") / s,
                            out_dir / (Path(s).stem + ".o"), unit_flags[s], env): s
                for s in unit_names
            }
            done = 0
            try:
                for fut in concurrent.futures.as_completed(futures):
                    name = futures[fut]
                    timings[name] = round(fut.result(), 2)
                    done += 1
                    if progress:
                        progress({"stage": "runtime", "file": name, "loaded": done, "total": total})
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
        manifest = {
            "key": key,
            "tvm": _dist_version("apache-tvm"),
            "tvm_ffi": _dist_version("apache-tvm-ffi"),
            "emcc": emcc_version(emcc),
            "cflags": list(cflags),
            "objects": [o.name for o in objects],
            "compile_seconds": timings,
            "wall_seconds": round(time.monotonic() - start, 2),
        }
        (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
        if force and final.exists():
            shutil.rmtree(final)
        try:
            os.rename(out_dir, final)
        except OSError:
            # another process finished the same build first; theirs is as good as ours
            if not (final / "manifest.json").exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return RuntimeObjects(key, final, objects, built=True)
