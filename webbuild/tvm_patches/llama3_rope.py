"""Let-free llama3 RoPE frequencies for TVM's KV-cache kernels (a Python override).

TVM 0.27's ``position_embedding.rope_freq_llama3`` returns its frequency as let-bindings that the
KV-cache kernels wrap around both the cos and the sin expression, binding the same variables
twice; with head_dim 64 the WebGPU build of ``tir_split_rotary`` and the tree-attention kernel
then fails in TIR's common-subexpression elimination ("variable cse_v... has been used before
definition"). :func:`install_let_free_llama3_rope` replaces it with the same frequency written
out in full. Every backend installs it before a model is exported (the KV-cache kernels are made
there).
"""

from __future__ import annotations

import math

from tvm import tirx

from ..errors import ToolchainError
from .pinned import UPGRADE_FIX


def _rope_freq_llama3_inline(s, d, d_range: int, theta: float, dtype: str, factor: float, low_freq_factor: float,
                             high_freq_factor: float, original_max_position_embeddings: float):
    """TVM's ``rope_freq_llama3`` (cos, sin, let-bindings) with the frequency written out in full:
    no let-bound variables, so no variable is bound once for the cos and again for the sin."""
    orig_freq = tirx.const(1, "float32") / tirx.power(theta, d * 2 % d_range / tirx.const(d_range, "float32"))
    inv_diff_freq_factor = 1.0 / (high_freq_factor - low_freq_factor)
    alpha = original_max_position_embeddings / (2 * math.pi) * inv_diff_freq_factor
    beta = low_freq_factor * inv_diff_freq_factor
    smooth = tirx.max(0.0, tirx.min(1.0, alpha * orig_freq - beta))
    freq = s * ((1.0 - smooth) * orig_freq * (1.0 / factor) + smooth * orig_freq)
    return tirx.cos(freq).astype(dtype), tirx.sin(freq).astype(dtype), {}


def install_let_free_llama3_rope() -> None:
    """Use :func:`_rope_freq_llama3_inline` for llama3 RoPE scaling (Llama 3.1 / 3.2).

    Process-wide and idempotent; the computed values are the same. Fails loudly when TVM no
    longer has the function it replaces (its name is the anchor).
    """
    from tvm.relax.frontend.nn.llm import position_embedding

    if not callable(getattr(position_embedding, "rope_freq_llama3", None)):
        raise ToolchainError("TVM's position_embedding has no rope_freq_llama3 to replace", fix=UPGRADE_FIX)
    position_embedding.rope_freq_llama3 = _rope_freq_llama3_inline


def installed() -> bool:
    """Whether TVM's KV-cache kernels get the let-free llama3 frequencies."""
    from tvm.relax.frontend.nn.llm import position_embedding

    return position_embedding.rope_freq_llama3 is _rope_freq_llama3_inline
