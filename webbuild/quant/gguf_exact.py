"""Exact conversion of a GGUF tensor's quantized blocks into a `formats` container.

Every supported GGUF block type defines a value as a float16 super-scale `d` (widened to
float32) times a small integer, times a small quantized integer, optionally plus a min; the
container holds the same integers and the same float32 products, so `formats.dequantize` of the
result performs the very float32 operations GGUF's own dequantization does (bit for bit).

| GGUF type | container     | code (q: the integer GGUF scales) | scale per group   | min per group   |
|-----------|---------------|-----------------------------------|-------------------|-----------------|
| Q4_0      | int4_g32      | q + 8, q = nibble - 8             | d                 |                 |
| Q4_1      | int4_g32_min  | q = nibble                        | d                 | m               |
| Q5_0      | int8_g32      | q + 128, q = 5-bit - 16           | d                 |                 |
| Q5_1      | int8_g32_min  | q = 5-bit                         | d                 | m               |
| Q8_0      | int8_g32      | q + 128, q = int8                 | d                 |                 |
| Q2_K      | int4_g16_min  | q = 2-bit                         | d * sc (4-bit)    | -(dmin * m)     |
| Q3_K      | int4_g16      | q + 8, q = 3-bit - 4              | d * (sc6 - 32)    |                 |
| Q4_K      | int4_g32_min  | q = nibble                        | d * sc (6-bit)    | -(dmin * m6)    |
| Q5_K      | int8_g32_min  | q = 5-bit                         | d * sc (6-bit)    | -(dmin * m6)    |
| Q6_K      | int8_g16      | q + 128, q = 6-bit - 32           | d * sc (int8)     |                 |

Why the scales and mins are exact in float32: d and dmin are float16, so widened they have at
most 11 significant bits (fewer when subnormal, and every float16 subnormal is a float32 normal);
the integer they multiply has magnitude at most 128 (8 bits), so the product has at most 19
significant bits and its exponent stays far inside float32's range: the float32 product has no
rounding. A K-quant value is `scale * q - dmin * m` in GGUF and `scale * q + (-(dmin * m))` here;
IEEE defines `a - b` as `a + (-b)`, so both round identically. Q4_1/Q5_1 compute `d * q + m`
in both. The symmetric types compute `d * q` in both (`code - offset` is an exact integer).

Each layout is a table: for every value (and every sub-block scale and min) of a block, which
byte holds which bits of its integer. Decoding gathers those bits for all blocks at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from ..errors import CorruptFileError, UnsupportedTensorTypeError, WeightMappingError
from .formats import FORMATS, WeightFormat, pack_codes, store_groups

QK_K = 256  # values per K-quant super-block


@dataclass(frozen=True)
class ExactWeight:
    """A GGUF tensor held without loss: dequantize(q_weight, q_scale, q_min, fmt) is its value."""

    fmt: WeightFormat
    q_weight: np.ndarray  # (rows, cols // fmt.values_per_word) uint32
    q_scale: np.ndarray  # fmt.group_shape(rows, cols), stored form (float32, or float16 pairs in uint32)
    q_min: np.ndarray | None  # as q_scale, or None


@dataclass(frozen=True)
class _Bits:
    """`width` bits of one block byte per item: bits [shift, shift + width) of byte `byte[i]`,
    placed at bit `place` of item i's integer."""

    byte: np.ndarray  # (items,) byte index inside the block
    shift: np.ndarray  # (items,) bit index inside that byte
    width: int
    place: int = 0


@dataclass(frozen=True)
class _Int:
    """A per-item integer assembled from bit fields, then made signed by subtracting `bias`
    or (`twos`) by reading it as two's complement."""

    fields: tuple[_Bits, ...]
    bias: int = 0
    twos: bool = False

    def read(self, blocks: np.ndarray) -> np.ndarray:
        """blocks (n_blocks, type_size) uint8 -> (n_blocks, items) int32."""
        value = np.zeros((blocks.shape[0], self.fields[0].byte.size), dtype=np.int32)
        for field in self.fields:
            raw = np.take(blocks, field.byte, axis=1).astype(np.int32)  # (n_blocks, items)
            value |= ((raw >> field.shift) & ((1 << field.width) - 1)) << field.place
        if self.twos:
            width = sum(field.width for field in self.fields)
            value = np.where(value >= 1 << (width - 1), value - (1 << width), value)
        return value - self.bias


@dataclass(frozen=True)
class _Layout:
    """Where one GGUF block type keeps its parts (byte offsets inside a block).

    value = d * scale_int * q + min, with min = m (min_at, no min_int) or -(dmin * min_int).
    """

    fmt: WeightFormat
    q: _Int  # (block,) the quantized integers, in value order
    d_at: int  # float16 d
    scale_int: _Int | None = None  # (block / group,) integers multiplying d; None: d alone
    min_at: int | None = None  # float16 m (plain min) or dmin (scaled, negated min)
    min_int: _Int | None = None  # (block / group,) integers multiplying dmin


def _bits(byte, shift, width: int, place: int = 0) -> _Bits:
    return _Bits(np.asarray(byte, dtype=np.intp), np.asarray(shift, dtype=np.int32), width, place)


def _legacy(qs_at: int, qh_at: int | None) -> _Int:
    """The 32 integers of a Q4/Q5 block: value e's low nibble is byte qs_at + e % 16 (values
    16..31 in the high nibbles); Q5's fifth bit is bit e of the little-endian word at qh_at."""
    e = np.arange(32)
    fields = [_bits(qs_at + e % 16, 4 * (e // 16), 4)]
    if qh_at is not None:
        fields.append(_bits(qh_at + e // 8, e % 8, 1, place=4))
    return _Int(tuple(fields))


def _k_scales_6bit(at: int) -> tuple[_Int, _Int]:
    """Q4_K/Q5_K's 8 six-bit scales and mins packed in 12 bytes at `at`: sub-blocks 0..3 keep
    theirs in the low 6 bits of bytes 0..3 (scales) and 4..7 (mins); sub-blocks 4..7 keep the
    low 4 bits in the nibbles of bytes 8..11 and the top 2 bits in the top bits of bytes 0..7."""
    j = np.arange(8)
    low = j < 4
    scale = _Int((
        _bits(at + np.where(low, j, j + 4), 0, 4),
        _bits(at + np.where(low, j, j - 4), np.where(low, 4, 6), 2, place=4),
    ))
    minimum = _Int((
        _bits(at + j + 4, np.where(low, 0, 4), 4),
        _bits(at + np.where(low, j + 4, j), np.where(low, 4, 6), 2, place=4),
    ))
    return scale, minimum


def _q2_k() -> _Layout:
    """84 bytes: scales[16] (low nibble scale, high nibble min per 16 values), qs[64], d, dmin.
    Value e = 128h + 32s + l is bits 2s..2s+1 of qs[32h + l]."""
    e, j = np.arange(QK_K), np.arange(QK_K // 16)
    h, s, lane = e // 128, e % 128 // 32, e % 32
    return _Layout(FORMATS["int4_g16_min"], _Int((_bits(16 + 32 * h + lane, 2 * s, 2),)), d_at=80,
                   scale_int=_Int((_bits(j, 0, 4),)), min_at=82, min_int=_Int((_bits(j, 4, 4),)))


def _q3_k() -> _Layout:
    """110 bytes: hmask[32], qs[64], scales[12], d. Value e = 128h + 32s + l: low 2 bits as in
    Q2_K (qs at 32), bit 2 is bit e // 32 of hmask[l]; q = that 3-bit integer - 4 (a clear
    hmask bit subtracts 4). Scale j: low 4 bits in nibble j // 8 of byte j % 8, top 2 bits at
    bit 2 * (j // 4) of byte 8 + j % 4, minus 32."""
    e, j = np.arange(QK_K), np.arange(QK_K // 16)
    h, s, lane = e // 128, e % 128 // 32, e % 32
    q = _Int((_bits(32 + 32 * h + lane, 2 * s, 2), _bits(lane, e // 32, 1, place=2)), bias=4)
    scale = _Int((_bits(96 + j % 8, 4 * (j // 8), 4), _bits(104 + j % 4, 2 * (j // 4), 2, place=4)),
                 bias=32)
    return _Layout(FORMATS["int4_g16"], q, d_at=108, scale_int=scale)


def _q45_k(five: bool) -> _Layout:
    """Q4_K (144 bytes: d, dmin, scales[12], qs[128]) and Q5_K (176 bytes: d, dmin, scales[12],
    qh[32], qs[128]). Value e = 64c + 32n + l is nibble n of qs[32c + l]; Q5_K's fifth bit is
    bit e // 32 of qh[l]."""
    e = np.arange(QK_K)
    qs_at = 48 if five else 16
    fields = [_bits(qs_at + 32 * (e // 64) + e % 32, 4 * (e % 64 // 32), 4)]
    if five:
        fields.append(_bits(16 + e % 32, e // 32, 1, place=4))
    scale, minimum = _k_scales_6bit(4)
    fmt = FORMATS["int8_g32_min" if five else "int4_g32_min"]
    return _Layout(fmt, _Int(tuple(fields)), d_at=0, scale_int=scale, min_at=2, min_int=minimum)


def _q6_k() -> _Layout:
    """210 bytes: ql[128], qh[64], scales[16] (int8), d. Value e = 128h + 32s + l: low 4 bits are
    nibble s // 2 of ql[64h + 32(s % 2) + l], top 2 bits are bits 2s..2s+1 of qh[32h + l];
    q = that 6-bit integer - 32."""
    e, j = np.arange(QK_K), np.arange(QK_K // 16)
    h, s, lane = e // 128, e % 128 // 32, e % 32
    q = _Int((_bits(64 * h + 32 * (s % 2) + lane, 4 * (s // 2), 4),
              _bits(128 + 32 * h + lane, 2 * s, 2, place=4)), bias=32)
    return _Layout(FORMATS["int8_g16"], q, d_at=208, scale_int=_Int((_bits(192 + j, 0, 8),), twos=True))


_T = GGMLQuantizationType
_LAYOUTS: dict[GGMLQuantizationType, _Layout] = {
    _T.Q4_0: _Layout(FORMATS["int4_g32_f16"], _Int(_legacy(2, None).fields, bias=8), d_at=0),
    _T.Q4_1: _Layout(FORMATS["int4_g32_min_f16"], _legacy(4, None), d_at=0, min_at=2),
    _T.Q5_0: _Layout(FORMATS["int8_g32_f16"], _Int(_legacy(6, 2).fields, bias=16), d_at=0),
    _T.Q5_1: _Layout(FORMATS["int8_g32_min_f16"], _legacy(8, 4), d_at=0, min_at=2),
    _T.Q8_0: _Layout(FORMATS["int8_g32_f16"], _Int((_bits(2 + np.arange(32), 0, 8),), twos=True), d_at=0),
    _T.Q2_K: _q2_k(),
    _T.Q3_K: _q3_k(),
    _T.Q4_K: _q45_k(five=False),
    _T.Q5_K: _q45_k(five=True),
    _T.Q6_K: _q6_k(),
}


def _ggml_type(ggml_type: GGMLQuantizationType | int) -> GGMLQuantizationType | None:
    try:
        return GGMLQuantizationType(int(ggml_type))
    except ValueError:
        return None


def exact_format(ggml_type: GGMLQuantizationType | int) -> WeightFormat | None:
    """The container that holds this GGUF type without loss; None for float types (kept float)
    and for types no container can hold."""
    kind = _ggml_type(ggml_type)
    layout = _LAYOUTS.get(kind) if kind is not None else None
    return layout.fmt if layout is not None else None


def _f16(blocks: np.ndarray, at: int) -> np.ndarray:
    """The little-endian float16 at byte `at` of every block, widened: (n_blocks, 1) float32."""
    return np.ascontiguousarray(blocks[:, at:at + 2]).view("<f2").astype(np.float32)


def _decode(blocks: np.ndarray, layout: _Layout) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """blocks (n, type_size) uint8 -> codes (n, block), scales and mins (n, block / group)."""
    fmt = layout.fmt
    codes = layout.q.read(blocks) + fmt.offset  # (n, block), 0..2^bits - 1 by construction
    d = _f16(blocks, layout.d_at)  # (n, 1)
    scale = d if layout.scale_int is None else d * layout.scale_int.read(blocks).astype(np.float32)
    minimum = None
    if layout.min_at is not None:
        dmin = _f16(blocks, layout.min_at)  # (n, 1)
        minimum = dmin if layout.min_int is None else -(dmin * layout.min_int.read(blocks).astype(np.float32))
    return codes, scale, minimum


def convert_exact(raw: np.ndarray, ggml_type: GGMLQuantizationType | int, shape: tuple[int, ...],
                  *, where: str | None = None) -> ExactWeight:
    """One GGUF tensor's stored block bytes (any shape, e.g. GGUFReader's (rows, row bytes) uint8)
    and its numpy (rows, cols) shape -> the container holding exactly its values.

    `where` names the tensor in errors (e.g. "model.gguf: blk.0.attn_q.weight").
    """
    where = where or "GGUF tensor"
    kind = _ggml_type(ggml_type)
    layout = _LAYOUTS.get(kind) if kind is not None else None
    if kind is None or layout is None:
        name = kind.name if kind is not None else f"type id {int(ggml_type)}"
        raise UnsupportedTensorTypeError(
            f"{name} has no exact weight container", where=where,
            fix=f"keep the tensor float, or use one of {', '.join(t.name for t in _LAYOUTS)}")
    if len(shape) != 2 or min(shape) < 1:
        raise WeightMappingError(f"shape {tuple(shape)} is not a 2-D weight", where=where,
                                 fix="convert matrices only; keep vectors float")
    rows, cols = (int(n) for n in shape)
    block, type_size = GGML_QUANT_SIZES[kind]
    if cols % block:
        raise CorruptFileError(f"row length {cols} is not a multiple of the {kind.name} block size {block}",
                               where=where, fix="re-download the file or re-convert it with llama.cpp")
    data = np.ascontiguousarray(raw).view(np.uint8).reshape(-1)  # (n_bytes,)
    expected = rows * (cols // block) * type_size
    if data.size != expected:
        raise CorruptFileError(
            f"{data.size} bytes of {kind.name} data for shape {(rows, cols)}, expected {expected}",
            where=where, fix="re-download the file or re-convert it with llama.cpp")
    codes, scale, minimum = _decode(data.reshape(-1, type_size), layout)  # blocks in row order
    fmt = layout.fmt
    groups = cols // fmt.group_size
    return ExactWeight(
        fmt=fmt,
        q_weight=pack_codes(codes.reshape(rows, cols), fmt),  # (rows, cols // vpw)
        q_scale=store_groups(scale.reshape(rows, groups), fmt, where=f"{where}: scales"),
        q_min=None if minimum is None else store_groups(minimum.reshape(rows, groups), fmt, where=f"{where}: mins"),
    )
