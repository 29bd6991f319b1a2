"""Turns float source weights into the parameters a (possibly quantized) model declares."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import numpy as np

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
    once per weight, or, for a weight in `scheme.formats`, read from the source's own container
    with `read_exact(float name)` ({param name: array}); everything else is cast to its declared
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
            if float_name(name) in scheme.formats and read_exact is not None:
                pair = read_exact(float_name(name))
            else:
                q_weight, q_scale = quantize_int4(read_float(float_name(name)), scheme.group_size, scheme.dtype)
                pair = {base + ".q_weight": q_weight, base + ".q_scale": q_scale}
            yield name, pair.pop(name)
            pending.update(pair)
            continue
        yield name, np.ascontiguousarray(read_float(name).astype((dtypes or {}).get(name, scheme.dtype)))


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
