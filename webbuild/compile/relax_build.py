"""Lowers an architecture's Relax model with a backend and compiles it with TVM.

Target-free: the backend (webbuild.backends) supplies the kernels the model is built with, the
rewrites and pass pipeline, and the runtime values written into `_metadata` next to the model's own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import tvm
from tvm import relax as rx

from ..arch.base import Architecture
from ..backends.base import Backend
from ..quant.scheme import QuantScheme


@dataclass
class LoweredModel:
    """The compiled executable and the parameters it expects, in call order."""

    executable: object
    params: list[tuple[str, tuple[int, ...], str]]  # (name, shape, dtype)
    metadata: dict


def _with_metadata(mod: tvm.IRModule, metadata: dict) -> tvm.IRModule:
    """Add `_metadata()`, a Relax function returning the model's metadata as a JSON string."""
    bb = rx.BlockBuilder(mod)
    with bb.function("_metadata", params=[]):
        bb.emit_func_output(tvm.ir.StringImm(json.dumps(metadata, sort_keys=True)))
    return bb.get()


def lower(arch: Architecture, config, scheme: QuantScheme, backend: Backend) -> LoweredModel:
    """Build the nn.Module for the backend, export its Relax functions and compile them."""
    mod, named_params = backend.export(arch, config, scheme)
    params = [(name, tuple(int(d) for d in p.shape), p.dtype) for name, p in named_params]
    metadata = {
        "architecture": arch.name,
        "quantization": scheme.name,
        **config.state_metadata,
        "context_window": config.context_window,
        "prefill_chunk": config.prefill_chunk,
        **backend.runtime_metadata(),
        "params": [{"name": n, "shape": list(s), "dtype": d} for n, s, d in params],
    }
    executable = backend.compile(_with_metadata(mod, metadata))
    return LoweredModel(executable, params, metadata)
