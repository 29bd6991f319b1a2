"""Layer factories: the plain or the group-quantized layer, as the quantization scheme asks."""

from __future__ import annotations

from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op

from .formats import WeightFormat
from .group_quant import GroupQuantEmbedding, GroupQuantLinear, can_quantize
from .scheme import QuantScheme


def _quantize_here(cols: int, scheme: QuantScheme) -> bool:
    """Whether the factory itself makes the int4 layer (a planned scheme's plan swaps float layers)."""
    return scheme.quantized and not scheme.planned and can_quantize(cols, scheme.group_size)


def linear(in_features: int, out_features: int, scheme: QuantScheme, bias: bool = False) -> nn.Module:
    """A Linear layer whose weight is quantized when the scheme and its shape allow it."""
    if _quantize_here(in_features, scheme):
        return GroupQuantLinear(in_features, out_features, bias, scheme.dtype, scheme.group_size)
    return nn.Linear(in_features, out_features, bias=bias, dtype=scheme.dtype)


def embedding(num: int, dim: int, scheme: QuantScheme) -> nn.Module:
    """A token embedding table, quantized when the scheme and its shape allow it."""
    if _quantize_here(dim, scheme):
        return GroupQuantEmbedding(num, dim, scheme.dtype, scheme.group_size)
    return nn.Embedding(num, dim, dtype=scheme.dtype)


def tied_lm_head(embed: nn.Module, x: Tensor) -> Tensor:
    """Logits through the transposed embedding table (tied word embeddings)."""
    if isinstance(embed, GroupQuantEmbedding):
        return embed.lm_head_forward(x)
    return op.matmul(x, op.permute_dims(embed.weight))


def module_at(model: nn.Module, path: list[str]) -> nn.Module:
    """The submodule of `model` at a dotted-name path split into parts (digits index lists)."""
    node = model
    for part in path:
        node = node[int(part)] if part.isdigit() else getattr(node, part)
    return node


def float_plan(model: nn.Module, body: WeightFormat, head: WeightFormat) -> dict[str, WeightFormat]:
    """Model weight name (`x.weight`) -> container, for every layer the factories quantized in
    `model` (built with an unplanned int4 scheme): the token embedding and an output head (a
    quantized linear directly on the model root) in `head`, every other layer in `body`."""
    plan: dict[str, WeightFormat] = {}
    for name, _ in model.named_parameters():
        if not name.endswith(".q_weight"):
            continue
        path = name.split(".")[:-1]
        layer = module_at(model, path)
        is_head = isinstance(layer, GroupQuantEmbedding) or len(path) == 1
        plan[".".join(path) + ".weight"] = head if is_head else body
    return plan
