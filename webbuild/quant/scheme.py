"""Quantization schemes selectable with `--quantization` and what each one means."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UnsupportedQuantizationError


@dataclass(frozen=True)
class QuantScheme:
    """How weights are stored and in which float type the model computes.

    weight_bits: 0 = unquantized (weights kept in `dtype`), 4 = int4 group quantization.
    dtype: the activation / unquantized-weight / scale dtype ("float32" or "float16").
    group_size: how many consecutive input-dim weights share one scale.
    """

    name: str
    weight_bits: int
    dtype: str
    group_size: int = 32

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
