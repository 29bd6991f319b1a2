"""Weight storage formats the kernels read directly: packed integer codes plus per-group scales.

A weight W of shape (rows, cols) is stored along `cols` (the reduction dim) as
- `q_weight`: (rows, cols / vpw) uint32, vpw = 32 // bits values per word; value k of word j is
  column vpw*j + k, held in bits [bits*k, bits*k + bits) (for int4 the same nibble order as
  `group_quant`'s layout);
- `q_scale`: (rows, cols / group_size) float32, one scale per `group_size` consecutive columns;
- `q_min`: (rows, cols / group_size) float32 when the format has a min, else absent.
With `half_scales` the scales (and mins) are float16 values, two per uint32 word: `q_scale` is
(rows, ceil(groups / 2)) uint32 whose low half holds group 2i and high half group 2i + 1 (a last
odd group's high half is zero). Kernels widen them to float32 with integer operations
(`widen_half`), so no target needs float16 arithmetic; the widened value is the float16 value
exactly. A source whose scales are float16 (the legacy GGUF blocks) keeps its size this way.

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
    half_scales: bool = False

    def __post_init__(self) -> None:
        if self.bits not in _BITS or self.group_size not in _GROUP_SIZES:
            raise UnsupportedQuantizationError(
                f"no weight format with {self.bits} bits and group size {self.group_size}",
                where="weight format", fix=f"use bits in {_BITS} and a group size in {_GROUP_SIZES}")

    @property
    def name(self) -> str:
        """Stable artifact name, e.g. "int4_g32", "int8_g16_min" or "int4_g32_min_f16" (f16 scales)."""
        return (f"int{self.bits}_g{self.group_size}" + ("_min" if self.has_min else "")
                + ("_f16" if self.half_scales else ""))

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
        """Storage per weight: the code plus its share of the scale (and min)."""
        return self.bits + (16 if self.half_scales else 32) * (2 if self.has_min else 1) / self.group_size

    @property
    def group_dtype(self) -> str:
        """The stored dtype of q_scale / q_min: float32, or uint32 words of two float16."""
        return "uint32" if self.half_scales else "float32"

    def group_shape(self, rows: int, cols: int) -> tuple[int, int]:
        """The stored shape of q_scale / q_min for a (rows, cols) weight."""
        groups = cols // self.group_size
        return (rows, (groups + 1) // 2) if self.half_scales else (rows, groups)


FORMATS: dict[str, WeightFormat] = {
    fmt.name: fmt
    for fmt in (WeightFormat(bits, group, has_min, half)
                for bits in _BITS for group in _GROUP_SIZES for has_min in (False, True) for half in (False, True))
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


def pack_halves(values: np.ndarray, where: str = "q_scale") -> np.ndarray:
    """(rows, groups) float32 values that float16 holds exactly -> (rows, ceil(groups / 2)) uint32:
    group 2i in the low half of word i, group 2i + 1 in the high half."""
    values = np.asarray(values, dtype=np.float32)
    with np.errstate(over="ignore"):
        half = values.astype(np.float16)  # too large: inf, rejected below
    if values.ndim != 2 or not np.isfinite(half).all() or not np.array_equal(half.astype(np.float32), values):
        raise WeightMappingError(
            "values are not all finite float16 numbers", where=where,
            fix="keep these scales in a float32 format (a name without _f16)")
    rows, groups = values.shape
    bits = np.zeros((rows, groups + groups % 2), dtype=np.uint32)  # (rows, even groups)
    bits[:, :groups] = half.view(np.uint16)
    return (bits[:, 0::2] | (bits[:, 1::2] << np.uint32(16))).astype(np.uint32)


def unpack_halves(words: np.ndarray, groups: int) -> np.ndarray:
    """Inverse of `pack_halves`: (rows, ceil(groups / 2)) uint32 -> (rows, groups) float32."""
    words = np.asarray(words).astype(np.uint32, copy=False)
    halves = np.stack([words & np.uint32(0xFFFF), words >> np.uint32(16)], axis=2)  # (rows, words, 2)
    return halves.reshape(words.shape[0], -1)[:, :groups].astype(np.uint16).view(np.float16).astype(np.float32)


def store_groups(values: np.ndarray, fmt: WeightFormat, where: str = "q_scale") -> np.ndarray:
    """(rows, groups) float32 scales or mins -> their stored form in `fmt`."""
    if fmt.half_scales:
        return pack_halves(values, where=f"{fmt.name}: {where}")
    return np.ascontiguousarray(values, dtype=np.float32)


def group_values(stored: np.ndarray, fmt: WeightFormat, groups: int) -> np.ndarray:
    """The (rows, groups) float32 scales or mins of a stored q_scale / q_min."""
    stored = np.asarray(stored)
    return unpack_halves(stored, groups) if fmt.half_scales else stored.astype(np.float32)


def _check_groups(array: np.ndarray, name: str, rows: int, cols: int, fmt: WeightFormat) -> None:
    expected = fmt.group_shape(rows, cols)
    if array.shape != expected:
        raise WeightMappingError(
            f"{name} has shape {array.shape}, expected {expected}", where=f"{fmt.name}: {name}",
            fix=f"pass one {name[2:]} per {fmt.group_size} columns of each row"
                + (" (two float16 per uint32 word)" if fmt.half_scales else ""))


def dequantize(q_weight: np.ndarray, q_scale: np.ndarray, q_min: np.ndarray | None,
               fmt: WeightFormat) -> np.ndarray:
    """The float32 (rows, cols) weight a container holds: scale * (code - offset) [+ min]; q_scale
    and q_min in their stored form (`store_groups`)."""
    codes = unpack_codes(q_weight, fmt)  # (rows, cols)
    rows, cols = codes.shape
    if cols % fmt.group_size:
        raise WeightMappingError(
            f"{cols} columns are not whole groups of {fmt.group_size}", where=f"{fmt.name}: q_weight",
            fix="pass a weight whose column count is a multiple of the group size")
    groups = cols // fmt.group_size
    q_scale = np.asarray(q_scale)
    _check_groups(q_scale, "q_scale", rows, cols, fmt)
    if fmt.has_min != (q_min is not None):
        raise WeightMappingError(
            f"q_min is {'missing' if fmt.has_min else 'given'}", where=f"{fmt.name}: q_min",
            fix="pass q_min exactly when the format name ends in _min")
    centered = codes.astype(np.float32) - np.float32(fmt.offset)  # (rows, cols), exact integers
    scale = np.repeat(group_values(q_scale, fmt, groups), fmt.group_size, axis=1)  # (rows, cols)
    values = scale * centered  # (rows, cols)
    if q_min is not None:
        q_min = np.asarray(q_min)
        _check_groups(q_min, "q_min", rows, cols, fmt)
        values = values + np.repeat(group_values(q_min, fmt, groups), fmt.group_size, axis=1)
    return values
