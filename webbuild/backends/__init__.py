"""The build's backends: one per target, each owning every decision that differs per target.

A backend (webbuild.backends.base.Backend) owns its TVM target, the kernels it hands to models
(webbuild.kernels.model_kernels), its Relax pass pipeline, the TIR rewrites and TVM patches it
needs before compiling, its link step (which files it writes) and the runtime values it writes
into every module's `_metadata`. Architecture modules, the compiler driver and the build never
branch on a target's name: they ask the backend.

This registry is TVM-free so the CLI starts fast: backends register a factory (imported when a
build asks for it) plus the few facts the CLI and folder naming need.

Built in: "webgpu" (WGSL kernels + wasm32 host: model.wasm; with the "wasm" backend as its CPU
fallback), "wasm" (the browser's CPU, wasm32 + SIMD128: model-cpu.wasm and its threaded twin;
only as a fallback) and "cpu" (this machine through LLVM: model.so, for the Python runner).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    from .base import Backend


@dataclass(frozen=True)
class BackendEntry:
    """What the registry knows about a backend without importing it."""

    name: str
    factory: Callable[[], Backend]
    folder_suffix: str  # appended to a build folder's name ("" for the default target)
    fallbacks: tuple[str, ...] = ()  # backends also built into the folder (unless turned off)
    selectable: bool = True  # offered as `webbuild build --target`


_REGISTRY: dict[str, BackendEntry] = {}


def _lazy(module: str, attr: str) -> Callable[[], Backend]:
    def make() -> Backend:
        return getattr(importlib.import_module(module, __name__), attr)()

    return make


def register_backend(entry: BackendEntry) -> None:
    """Add (or replace) a backend."""
    _REGISTRY[entry.name] = entry


def unregister_backend(name: str) -> None:
    _REGISTRY.pop(name, None)


def targets() -> tuple[str, ...]:
    """The names `webbuild build --target` accepts, default first."""
    return tuple(name for name, entry in _REGISTRY.items() if entry.selectable)


def backend_entry(name: str) -> BackendEntry:
    """The registered backend `name` (a target or a fallback)."""
    entry = _REGISTRY.get(name)
    if entry is None:
        raise ConfigError(f"unknown backend {name!r}", where="webbuild.backends",
                          fix=f"use one of {', '.join(_REGISTRY)}")
    return entry


def check_target(name: str) -> BackendEntry:
    """The backend for `webbuild build --target name`; a ConfigError naming --target when there is none."""
    if name not in targets():
        raise ConfigError(f"unknown target {name!r}", where="--target", fix=f"use one of {', '.join(targets())}")
    return _REGISTRY[name]


def get_backend(name: str) -> Backend:
    """A fresh backend object for `name` (imports TVM)."""
    return backend_entry(name).factory()


register_backend(BackendEntry("webgpu", _lazy(".webgpu", "WebGPUBackend"), folder_suffix="", fallbacks=("wasm",)))
register_backend(BackendEntry("cpu", _lazy(".host_cpu", "HostCpuBackend"), folder_suffix="-cpu"))
register_backend(BackendEntry("wasm", _lazy(".wasm_cpu", "WasmCpuBackend"), folder_suffix="-wasm", selectable=False))
