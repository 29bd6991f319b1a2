"""Rotary position embedding applied by the model rather than by the paged KV cache.

TVM's KV cache rotates q and k with one RoPE base for every layer. Models whose layers use
different bases (Gemma 3: 10 000 on its sliding-window layers, 1 000 000 with optional linear
scaling on the global ones) build the cache without RoPE and rotate each layer's fused q/k/v here
before attention, with the cache's own frequency functions and rounding (rotate-half on the first
`rotary_dim` dims of each q and k head, computed in float32, stored in the model dtype), so a layer
computes exactly what the cache's `tir_split_rotary` would have with that layer's base.
"""

from __future__ import annotations

from tvm import te, tirx
from tvm.relax.frontend.nn import Tensor, op
from tvm.relax.frontend.nn.llm.position_embedding import switch_rope_freq_func


def rope_kernel_args(scaling: dict | None) -> tuple[float, dict]:
    """(position scale, frequency settings) for TVM's frequency functions: linear scaling divides
    the positions by its factor; the other kinds pass their fields on."""
    settings = dict(scaling or {})
    if settings.get("rope_type", settings.get("type")) == "linear":
        return 1.0 / float(settings["factor"]), {}
    return 1.0, settings


def apply_rope(qkv: Tensor, positions: Tensor, heads: int, kv_heads: int, rotary_dim: int, theta: float,
               scaling: dict | None) -> Tensor:
    """Rotate the q and k heads of `qkv` (n, heads + 2 kv_heads, head_dim) at `positions` (n,) int32;
    the v heads pass through. Returns (n, heads + 2 kv_heads, head_dim) in qkv's dtype."""
    scale, settings = rope_kernel_args(scaling)
    freq_fn = switch_rope_freq_func(settings)
    half = rotary_dim // 2

    def compute(x: te.Tensor, pos: te.Tensor) -> te.Tensor:
        def element(s, h, d):
            position = pos[s].astype("float32") * tirx.const(scale, "float32")
            cos_freq, sin_freq, var_map = freq_fn(position, d, rotary_dim, theta, "float32")
            partner = tirx.if_then_else(d < half, -x[s, h, d + half], x[s, h, d - half])
            rotated = (cos_freq * x[s, h, d].astype("float32") + sin_freq * partner.astype("float32")).astype(x.dtype)
            for var, value in var_map.items():
                rotated = tirx.Let(var, value, rotated)
            return tirx.if_then_else(tirx.all(h < heads + kv_heads, d < rotary_dim), rotated, x[s, h, d])

        return te.compute(x.shape, element, name="rope")

    return op.tensor_expr_op(compute, "rope", [qkv, positions])
