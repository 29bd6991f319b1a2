"""Quantization schemes selectable with `--quantization` and what each one means."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import UnsupportedQuantizationError


@dataclass(frozen=True)
class QuantScheme:
    """How weights are stored and in which float type the model computes.

    weight_bits: 0 = unquantized (weights kept in `dtype`), 4 = int4 group quantization.
    dtype: the activation / unquantized-weight / scale dtype ("float32" or "float16").
    group_size: how many consecutive input-dim weights share one scale.
    from_source: keep each weight in its source type's exact container (`--quantization source`,
        GGUF sources): the build fills `formats` (model weight name -> `formats.WeightFormat`)
        from the file; weights without one stay float in `dtype`.
    has_min: int4 codes with a per-group min (value = scale * code + min, `q4f32_min`) instead of
        the symmetric scale * (code - 8).
    planned: the layer factories make float layers and the build's `formats` plan (filled for
        every weight the scheme quantizes, see `float_plan`) swaps in the container layers.
    """

    name: str
    weight_bits: int
    dtype: str
    group_size: int = 32
    from_source: bool = False
    has_min: bool = False
    planned: bool = False
    formats: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def quantized(self) -> bool:
        return self.weight_bits > 0

    @property
    def needs_shader_f16(self) -> bool:
        return self.dtype == "float16"


SCHEMES: dict[str, QuantScheme] = {
    "q0f32": QuantScheme("q0f32", 0, "float32"),
    "q0f16": QuantScheme("q0f16", 0, "float16"),
    "q4f32_1": QuantScheme("q4f32_1", 4, "float32"),
    "q4f16_1": QuantScheme("q4f16_1", 4, "float16"),
    "q4f32_min": QuantScheme("q4f32_min", 4, "float32", has_min=True, planned=True),
    "source": QuantScheme("source", 0, "float32", from_source=True),
}


def get_scheme(name: str) -> QuantScheme:
    """Look a scheme up by its `--quantization` name."""
    try:
        return SCHEMES[name]
    except KeyError:
        raise UnsupportedQuantizationError(
            f"unknown quantization {name!r}",
            where="--quantization",
            fix=f"use one of: {', '.join(SCHEMES)}",
        ) from None
