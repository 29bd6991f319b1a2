"""Turns float source weights into the parameters a (possibly quantized) model declares."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping

import numpy as np

from .float_quant import quantize
from .formats import WeightFormat
from .group_quant import quantize_int4
from .scheme import QuantScheme

_QUANT_SUFFIXES = (".q_weight", ".q_scale", ".q_min")


def float_name(param_name: str) -> str:
    """The float weight a model parameter is derived from (`x.q_weight` -> `x.weight`)."""
    for suffix in _QUANT_SUFFIXES:
        if param_name.endswith(suffix):
            return param_name[: -len(suffix)] + ".weight"
    return param_name


def convert_params(
    param_names: list[str],
    read_float: Callable[[str], np.ndarray],
    scheme: QuantScheme,
    dtypes: dict[str, str] | None = None,
    read_exact: Callable[[str], dict[str, np.ndarray]] | None = None,
) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (model parameter name, array) in `param_names` order.

    `read_float(name)` gives the float32 weight for a float name. Quantized pairs are computed
    once per weight; a weight in `scheme.formats` is read from the source's own container with
    `read_exact(float name)` ({param name: array}) when given (`--quantization source`), else
    quantized into that container (`float_quant`); everything else is cast to its declared
    dtype in `dtypes` (default: the scheme dtype; a model may keep some parameters in float32
    whatever the scheme).
    """
    pending: dict[str, np.ndarray] = {}
    for name in param_names:
        if name in pending:
            yield name, pending.pop(name)
            continue
        if name.endswith(_QUANT_SUFFIXES):
            base = float_name(name)[: -len(".weight")]
            fmt = scheme.formats.get(float_name(name))
            if fmt is not None and read_exact is not None:
                pair = read_exact(float_name(name))
            elif fmt is not None:
                pair = _container(base, read_float(float_name(name)), fmt)
            else:
                q_weight, q_scale = quantize_int4(read_float(float_name(name)), scheme.group_size, scheme.dtype)
                pair = {base + ".q_weight": q_weight, base + ".q_scale": q_scale}
            yield name, pair.pop(name)
            pending.update(pair)
            continue
        yield name, np.ascontiguousarray(read_float(name).astype((dtypes or {}).get(name, scheme.dtype)))


def _container(base: str, w: np.ndarray, fmt: WeightFormat) -> dict[str, np.ndarray]:
    """{base.q_weight, base.q_scale[, base.q_min]} of float weight w (rows, cols) in `fmt`."""
    q_weight, q_scale, q_min = quantize(w, fmt)
    arrays = {base + ".q_weight": q_weight, base + ".q_scale": q_scale}
    if q_min is not None:
        arrays[base + ".q_min"] = q_min
    return arrays


def float_shapes(named_params: list[tuple[str, tuple[int, ...], str]],
                 formats: Mapping[str, WeightFormat] | None = None) -> dict[str, tuple[int, ...]]:
    """Float weight name -> the (rows, cols) shape its source must have, from the model's params
    (packed words hold 8 int4 values, or `formats[name].values_per_word`)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name, shape, _ in named_params:
        if name.endswith((".q_scale", ".q_min")):
            continue
        if name.endswith(".q_weight"):
            rows, words = shape
            fmt = (formats or {}).get(float_name(name))
            shapes[float_name(name)] = (rows, words * (fmt.values_per_word if fmt is not None else 8))
        else:
            shapes[name] = tuple(shape)
    return shapes


def _format_key(base: str, records: dict[str, dict], formats: Mapping[str, WeightFormat],
                group_size: int) -> tuple[str, int]:
    """(format name, values per word) of the quantized weight `base` (its q_* records)."""
    fmt = formats.get(base + ".weight")
    if fmt is not None:
        return fmt.name, fmt.values_per_word
    default = WeightFormat(bits=4, group_size=group_size, has_min=False)  # group_quant's int4 layout
    scale_dtype = records[base + ".q_scale"]["dtype"]
    return default.name + ("" if scale_dtype == "float32" else f"_{scale_dtype}_scales"), default.values_per_word


def format_summary(records: list[dict], formats: Mapping[str, WeightFormat],
                   group_size: int) -> dict[str, dict]:
    """Format name -> {"params", "bits_per_param"} over what was written (tensor-cache records:
    name, shape, dtype, nbytes): a quantized weight's params are its float (rows, cols), its bits
    every byte of its q_weight, q_scale and q_min; other tensors count under their dtype."""
    by_name = {r["name"]: r for r in records}
    totals: dict[str, list[int]] = {}  # name -> [params, bytes]
    for record in records:
        name = record["name"]
        if name.endswith(_QUANT_SUFFIXES):
            base = float_name(name)[: -len(".weight")]
            key, per_word = _format_key(base, by_name, formats, group_size)
            params = math.prod(record["shape"]) * per_word if name.endswith(".q_weight") else 0
        else:
            key, params = record["dtype"], math.prod(record["shape"])
        entry = totals.setdefault(key, [0, 0])
        entry[0] += params
        entry[1] += record["nbytes"]
    return {key: {"params": params, "bits_per_param": round(nbytes * 8 / max(params, 1), 4)}
            for key, (params, nbytes) in sorted(totals.items())}
