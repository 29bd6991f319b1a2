"""Lowers an architecture's Relax model with a backend and compiles it with TVM.

Target-free: the backend (webbuild.backends) supplies the kernels the model is built with, the
rewrites and pass pipeline, and the runtime values written into `_metadata` next to the model's own.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass

import tvm
from tvm import relax as rx

from ..arch.base import Architecture
from ..backends.base import Backend
from ..errors import CompileError, WebbuildError
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


def _tvm_message(exc: Exception) -> str:
    """TVM's message without the C++ / Python backtrace lines it may carry."""
    kept = []
    for line in (raw.strip() for raw in str(exc).splitlines()):
        if line.startswith("-->"):  # a TVMScript diagnostic: the source excerpt follows
            break
        if line and not line.startswith(("Traceback", "File ", "at ", "[bt]")):
            kept.append(line)
    return " ".join(kept)[:1000] or type(exc).__name__


@contextmanager
def _compile_errors(arch: Architecture, backend: Backend, stage: str):
    """Re-raise what TVM raises (its errors are RuntimeErrors; its Python code raises ValueError,
    AssertionError, KeyError, ... for a config it cannot lower) as a CompileError naming the
    architecture and the target."""
    try:
        yield
    except WebbuildError:
        raise
    except (RuntimeError, ValueError, AssertionError, KeyError, TypeError, IndexError) as exc:
        raise CompileError(f"TVM could not {stage} the {arch.name} model for {backend.name}: {_tvm_message(exc)}",
                           where="config.json", fix="check the fields this names against the original checkpoint; "
                           "if they are right, this is a webbuild bug: please report it with the message") from None


def lower(arch: Architecture, config, scheme: QuantScheme, backend: Backend) -> LoweredModel:
    """Build the nn.Module for the backend, export its Relax functions and compile them."""
    with _compile_errors(arch, backend, "export"):
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
    with _compile_errors(arch, backend, "compile"):
        executable = backend.compile(_with_metadata(mod, metadata))
    return LoweredModel(executable, params, metadata)
