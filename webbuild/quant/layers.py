"""Layer factories: the plain or the group-quantized layer, as the quantization scheme asks."""

from __future__ import annotations

from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op

from .group_quant import GroupQuantEmbedding, GroupQuantLinear, can_quantize
from .scheme import QuantScheme


def linear(in_features: int, out_features: int, scheme: QuantScheme, bias: bool = False) -> nn.Module:
    """A Linear layer whose weight is quantized when the scheme and its shape allow it."""
    if scheme.quantized and can_quantize(in_features, scheme.group_size):
        return GroupQuantLinear(in_features, out_features, bias, scheme.dtype, scheme.group_size)
    return nn.Linear(in_features, out_features, bias=bias, dtype=scheme.dtype)


def embedding(num: int, dim: int, scheme: QuantScheme) -> nn.Module:
    """A token embedding table, quantized when the scheme and its shape allow it."""
    if scheme.quantized and can_quantize(dim, scheme.group_size):
        return GroupQuantEmbedding(num, dim, scheme.dtype, scheme.group_size)
    return nn.Embedding(num, dim, dtype=scheme.dtype)


def tied_lm_head(embed: nn.Module, x: Tensor) -> Tensor:
    """Logits through the transposed embedding table (tied word embeddings)."""
    if isinstance(embed, GroupQuantEmbedding):
        return embed.lm_head_forward(x)
    return op.matmul(x, op.permute_dims(embed.weight))
