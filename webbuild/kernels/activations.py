"""The MLP activations by name, in the two forms the model needs: as Relax operators (`activate`,
used by the architectures' modules and by unfused kernels) and as float32 TIR expressions
(`tir_activation`, inside hand-written kernels), the latter written like TVM's legalization of
the same operators so that both forms compute the same values."""

from __future__ import annotations

import math

from tvm.relax.frontend.nn import Tensor, op
from tvm.script import tirx as T

ACTIVATIONS = ("silu", "gelu", "gelu_tanh", "relu")


def activate(x: Tensor, kind: str) -> Tensor:
    """act(x) as a Relax operator; `kind` one of ACTIVATIONS."""
    if kind == "silu":
        return op.silu(x)
    if kind == "gelu":
        return op.gelu(x)
    if kind == "gelu_tanh":
        return op.gelu(x, approximate="tanh")
    if kind == "relu":
        return op.relu(x)
    raise ValueError(f"unknown activation {kind!r}")


def tir_activation(v, kind: str):
    """act(v) for a float32 TIR expression; `kind` one of ACTIVATIONS."""
    if kind == "silu":
        return v / (T.float32(1) + T.exp(-v))
    if kind == "gelu":
        return T.float32(0.5) * v * (T.float32(1) + T.erf(v * T.float32(1 / math.sqrt(2))))
    if kind == "gelu_tanh":
        inner = T.float32(math.sqrt(2 / math.pi)) * (v + T.float32(0.044715) * v * v * v)
        return T.float32(0.5) * v * (T.float32(1) + T.tanh(inner))
    if kind == "relu":
        return T.max(v, T.float32(0))
    raise ValueError(f"unknown activation {kind!r}")
