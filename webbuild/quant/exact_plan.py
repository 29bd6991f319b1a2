"""`--quantization source`: every weight kept in its source type's exact container.

For a quantized source (GGUF) the build does not re-quantize: each model weight whose source
tensors are all held exactly by a `formats` container (see `gguf_exact`) is declared in that
container and filled with the source's own codes, scales and mins. A model weight combined from
several source tensors (fused q/k/v, gate/up) takes the join of their formats (the widest codes,
the smallest group: still exact), provided the weight map combines them by rows only. Everything
else (float sources, norms, weights a combination cannot carry exactly) stays float32.

The plan is data on the scheme (`QuantScheme.formats`); `apply_formats` swaps the planned layers
of a built model for their container layers, so architecture modules stay format-free.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from tvm.relax.frontend import nn

from ..arch.base import WeightMap
from ..errors import WeightMappingError
from .formats import WeightFormat, format_by_name, group_values, pack_codes, store_groups, unpack_codes
from .gguf_exact import ExactWeight
from .group_quant import GroupQuantEmbedding, GroupQuantLinear
from .layers import module_at

ExactReader = Callable[[str], ExactWeight]


@dataclass(frozen=True)
class PlannedWeight:
    """One model weight held exactly: its container and the source row order.

    rows: for each row of the combined weight, (index of the source tensor, row in it).
    """

    fmt: WeightFormat
    rows: tuple[tuple[int, int], ...]


def join_formats(formats: list[WeightFormat]) -> WeightFormat | None:
    """The one container holding every format exactly, or None when there is none.

    Symmetric and min formats do not mix (the min form's extra add would round differently);
    float16 scales stay float16 only when every format has them."""
    if len({f.has_min for f in formats}) != 1:
        return None
    bits = max(f.bits for f in formats)
    group = min(f.group_size for f in formats)
    return format_by_name(f"int{bits}_g{group}" + ("_min" if formats[0].has_min else "")
                          + ("_f16" if all(f.half_scales for f in formats) else ""))


def _row_order(combine, shapes: list[tuple[int, ...]]) -> tuple[tuple[int, int], ...] | None:
    """Which source row each combined row comes from, when `combine` only concatenates and
    reorders whole rows of 2-D sources of one width; else None."""
    if any(len(s) != 2 for s in shapes) or len({s[1] for s in shapes}) != 1:
        return None
    starts = np.cumsum([0, *(s[0] for s in shapes)])
    probes = [np.repeat((starts[i] + np.arange(s[0], dtype=np.float64))[:, None], 2, axis=1)  # (rows_i, 2)
              for i, s in enumerate(shapes)]
    try:
        out = np.asarray(combine(probes))
    except (ValueError, IndexError, TypeError):
        return None
    if out.ndim != 2 or out.shape[1] != 2 or not np.array_equal(out[:, 0], out[:, 1]):
        return None
    ids = out[:, 0].astype(np.int64)
    if not np.array_equal(ids, out[:, 0]) or ids.min(initial=0) < 0 or ids.max(initial=0) >= starts[-1]:
        return None
    source = np.searchsorted(starts, ids, side="right") - 1
    return tuple((int(s), int(i - starts[s])) for s, i in zip(source, ids))


def plan_formats(wmap: WeightMap, source_format: Callable[[str], WeightFormat | None],
                 source_shape: Callable[[str], tuple[int, ...]]) -> dict[str, PlannedWeight]:
    """Model weight name (`x.weight`) -> its exact container and row order, for every 2-D weight
    whose sources are all held exactly and combine by rows."""
    plan: dict[str, PlannedWeight] = {}
    for name, source in wmap.weights.items():
        if not name.endswith(".weight"):
            continue
        formats = [source_format(s) for s in source.sources]
        if any(f is None for f in formats):
            continue
        fmt = join_formats([f for f in formats if f is not None])
        rows = _row_order(source.combine, [source_shape(s) for s in source.sources])
        if fmt is not None and rows is not None:
            plan[name] = PlannedWeight(fmt, rows)
    return plan


def _widen(weight: ExactWeight, fmt: WeightFormat) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The same values in the (wider, finer or float32-scaled) container `fmt`: codes re-centred on
    fmt's offset (exact integers), each scale and min repeated over the smaller groups."""
    if weight.fmt == fmt:
        return weight.q_weight, weight.q_scale, weight.q_min
    codes = unpack_codes(weight.q_weight, weight.fmt).astype(np.int64)  # (rows, cols)
    codes = codes - weight.fmt.offset + fmt.offset
    groups = codes.shape[1] // weight.fmt.group_size
    repeat = weight.fmt.group_size // fmt.group_size

    def regroup(stored: np.ndarray, what: str) -> np.ndarray:  # (rows, cols // fmt.group_size), stored
        values = np.repeat(group_values(stored, weight.fmt, groups), repeat, axis=1)
        return store_groups(values, fmt, where=what)

    q_min = None if weight.q_min is None else regroup(weight.q_min, "q_min")
    return pack_codes(codes, fmt), regroup(weight.q_scale, "q_scale"), q_min


def read_planned(name: str, planned: PlannedWeight, sources: tuple[str, ...], read_exact: ExactReader,
                 expected: tuple[int, ...], where: str) -> dict[str, np.ndarray]:
    """The container arrays of one planned model weight: {base.q_weight, base.q_scale[, base.q_min]};
    `expected` is the (rows, cols) the model declares for it."""
    exact = [read_exact(s) for s in sources]
    shape = (len(planned.rows), exact[0].q_weight.shape[1] * exact[0].fmt.values_per_word)
    if shape != tuple(expected):
        raise WeightMappingError(
            f"tensor shape {shape} does not match the expected {tuple(expected)}", where=where,
            fix="config.json does not describe these weights; check hidden_size, heads and layer counts")
    parts = [_widen(w, planned.fmt) for w in exact]  # per source: (q_weight, q_scale, q_min)
    src = np.array([r[0] for r in planned.rows])
    row = np.array([r[1] for r in planned.rows])
    base = name[: -len(".weight")]
    out = {}
    for k, suffix in enumerate((".q_weight", ".q_scale", ".q_min")):
        arrays = [a for a in (p[k] for p in parts) if a is not None]
        if len(arrays) != len(parts):
            continue
        starts = np.cumsum([0, *(a.shape[0] for a in arrays)])[:-1]  # first row of each source
        out[base + suffix] = np.ascontiguousarray(np.concatenate(arrays, axis=0)[starts[src] + row])
    return out


def apply_formats(model: nn.Module, formats: dict[str, WeightFormat], dtype: str) -> None:
    """Replace each planned `x.weight`'s layer (nn.Linear / nn.Embedding) by its container layer."""
    for name, fmt in formats.items():
        path = name.split(".")[:-1]
        layer = module_at(model, path)
        if isinstance(layer, nn.Linear):
            new: nn.Module = GroupQuantLinear(layer.in_features, layer.out_features, layer.bias is not None, dtype,
                                              fmt.group_size, fmt)
            if layer.bias is not None:
                new.bias = layer.bias
        elif isinstance(layer, nn.Embedding):
            new = GroupQuantEmbedding(layer.num, layer.dim, dtype, fmt.group_size, fmt)
        else:
            continue
        parent = module_at(model, path[:-1])
        if path[-1].isdigit():
            parent[int(path[-1])] = new
        else:
            setattr(parent, path[-1], new)
