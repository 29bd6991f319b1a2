"""Weight storage formats the kernels read directly: packed integer codes plus per-group scales.

A weight W of shape (rows, cols) is stored along `cols` (the reduction dim) as
- `q_weight`: (rows, cols / vpw) uint32, vpw = 32 // bits values per word; value k of word j is
  column vpw*j + k, held in bits [bits*k, bits*k + bits) (for int4 the same nibble order as
  `group_quant`'s layout);
- `q_scale`: (rows, cols / group_size) float32, one scale per `group_size` consecutive columns;
- `q_min`: (rows, cols / group_size) float32 when the format has a min, else absent.

Dequantized value, computed in float32 in exactly this order:
    value = scale * (code - offset) + min   (has_min; offset 0)
    value = scale * (code - offset)         (symmetric; offset 8 for int4, 128 for int8)
The float32 operations are one multiply (and one add), so a source whose values are defined by
the same operations (the GGUF block types, see `gguf_exact`) is reproduced bit for bit.
`dequantize` here is the numpy reference the kernels are tested against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UnsupportedQuantizationError, WeightMappingError

_BITS = (4, 8)
_GROUP_SIZES = (16, 32)


@dataclass(frozen=True)
class WeightFormat:
    """bits per stored code, values per scale (and min) group, and whether groups have a min."""

    bits: int
    group_size: int
    has_min: bool

    def __post_init__(self) -> None:
        if self.bits not in _BITS or self.group_size not in _GROUP_SIZES:
            raise UnsupportedQuantizationError(
                f"no weight format with {self.bits} bits and group size {self.group_size}",
                where="weight format", fix=f"use bits in {_BITS} and a group size in {_GROUP_SIZES}")

    @property
    def name(self) -> str:
        """Stable artifact name, e.g. "int4_g32" or "int8_g16_min"."""
        return f"int{self.bits}_g{self.group_size}" + ("_min" if self.has_min else "")

    @property
    def offset(self) -> int:
        """Subtracted from a code before scaling: 0 with a min, half the code range without."""
        return 0 if self.has_min else 1 << (self.bits - 1)

    @property
    def values_per_word(self) -> int:
        return 32 // self.bits

    @property
    def max_code(self) -> int:
        return (1 << self.bits) - 1

    @property
    def bits_per_weight(self) -> float:
        """Storage per weight: the code plus its share of the float32 scale (and min)."""
        return self.bits + 32 * (2 if self.has_min else 1) / self.group_size


FORMATS: dict[str, WeightFormat] = {
    fmt.name: fmt
    for fmt in (WeightFormat(bits, group, has_min)
                for bits in _BITS for group in _GROUP_SIZES for has_min in (False, True))
}


def format_by_name(name: str) -> WeightFormat:
    """The format with this artifact name; UnsupportedQuantizationError for an unknown one."""
    try:
        return FORMATS[name]
    except KeyError:
        raise UnsupportedQuantizationError(
            f"unknown weight format {name!r}", where="weight format",
            fix=f"use one of: {', '.join(FORMATS)}") from None


def pack_words(codes: np.ndarray, bits: int) -> np.ndarray:
    """(rows, cols) codes in 0..2^bits-1 -> (rows, cols * bits / 32) uint32 (layout above)."""
    codes = np.asarray(codes)
    vpw = 32 // bits
    if codes.ndim != 2 or codes.shape[1] % vpw:
        raise WeightMappingError(
            f"codes of shape {codes.shape} cannot be packed {vpw} per word",
            where=f"int{bits} codes", fix=f"pass a 2-D array whose column count is a multiple of {vpw}")
    if codes.size and (codes.min() < 0 or codes.max() > (1 << bits) - 1):
        raise WeightMappingError(
            f"codes range {codes.min()}..{codes.max()} does not fit {bits} bits",
            where=f"int{bits} codes", fix=f"pass codes in 0..{(1 << bits) - 1}")
    rows, cols = codes.shape
    lanes = codes.astype(np.uint32).reshape(rows, cols // vpw, vpw)  # (rows, words, vpw)
    shifts = (np.arange(vpw, dtype=np.uint32) * bits)[None, None, :]  # (1, 1, vpw)
    return np.bitwise_or.reduce(lanes << shifts, axis=2).astype(np.uint32)  # (rows, words)


def unpack_words(q_weight: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of `pack_words`: (rows, words) uint32 -> (rows, words * 32 / bits) uint32 codes."""
    q_weight = np.asarray(q_weight)
    if q_weight.ndim != 2 or not np.issubdtype(q_weight.dtype, np.integer):
        raise WeightMappingError(
            f"q_weight is {q_weight.dtype} of shape {q_weight.shape}", where="q_weight",
            fix="pass the 2-D uint32 array of packed codes")
    q_weight = q_weight.astype(np.uint32, copy=False)  # int32 words: the same 32 bits
    vpw = 32 // bits
    rows, words = q_weight.shape
    shifts = (np.arange(vpw, dtype=np.uint32) * bits)[None, None, :]  # (1, 1, vpw)
    lanes = (q_weight[:, :, None] >> shifts) & np.uint32((1 << bits) - 1)  # (rows, words, vpw)
    return lanes.reshape(rows, words * vpw)


def pack_codes(codes: np.ndarray, fmt: WeightFormat) -> np.ndarray:
    """(rows, cols) codes in 0..2^bits-1 -> q_weight (rows, cols // values_per_word) uint32."""
    return pack_words(codes, fmt.bits)


def unpack_codes(q_weight: np.ndarray, fmt: WeightFormat) -> np.ndarray:
    """q_weight (rows, words) uint32 -> its codes (rows, words * values_per_word) uint32."""
    return unpack_words(q_weight, fmt.bits)


def _check_groups(array: np.ndarray, name: str, rows: int, groups: int, fmt: WeightFormat) -> None:
    if array.shape != (rows, groups):
        raise WeightMappingError(
            f"{name} has shape {array.shape}, expected {(rows, groups)}", where=f"{fmt.name}: {name}",
            fix=f"pass one {name[2:]} per {fmt.group_size} columns of each row")


def dequantize(q_weight: np.ndarray, q_scale: np.ndarray, q_min: np.ndarray | None,
               fmt: WeightFormat) -> np.ndarray:
    """The float32 (rows, cols) weight a container holds: scale * (code - offset) [+ min]."""
    codes = unpack_codes(q_weight, fmt)  # (rows, cols)
    rows, cols = codes.shape
    if cols % fmt.group_size:
        raise WeightMappingError(
            f"{cols} columns are not whole groups of {fmt.group_size}", where=f"{fmt.name}: q_weight",
            fix="pass a weight whose column count is a multiple of the group size")
    groups = cols // fmt.group_size
    q_scale = np.asarray(q_scale)
    _check_groups(q_scale, "q_scale", rows, groups, fmt)
    if fmt.has_min != (q_min is not None):
        raise WeightMappingError(
            f"q_min is {'missing' if fmt.has_min else 'given'}", where=f"{fmt.name}: q_min",
            fix="pass q_min exactly when the format name ends in _min")
    centered = codes.astype(np.float32) - np.float32(fmt.offset)  # (rows, cols), exact integers
    scale = np.repeat(q_scale.astype(np.float32), fmt.group_size, axis=1)  # (rows, cols)
    values = scale * centered  # (rows, cols)
    if q_min is not None:
        q_min = np.asarray(q_min)
        _check_groups(q_min, "q_min", rows, groups, fmt)
        values = values + np.repeat(q_min.astype(np.float32), fmt.group_size, axis=1)
    return values
