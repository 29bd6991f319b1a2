"""Int4 symmetric group quantization: the numpy packer and the Relax modules that consume it.

Layout, for a weight W of shape (rows, cols) quantized along `cols` (the reduction dim):
- `q_weight`: (rows, cols / 8) uint32; nibble k (bits 4k..4k+3) of word j holds column 8j + k,
  stored as the signed value + 8 (so 0..15).
- `q_scale`: (rows, cols / 32) in the scheme dtype; one scale per 32 consecutive columns.
Symmetric (zero is exact, no offset) and using all 16 codes: the group's value of largest
magnitude m maps to code -8, so scale = m / -8 and every other value rounds into [-8, 7].
Dequantized value: (nibble - 8) * scale. With group 32 this is `formats.FORMATS["int4_g32"]`,
whose numpy packing it uses. Dequantization is a TE stage inside the same PrimFunc as
the matmul that consumes it (an embedding lookup gathers and dequantizes its rows in one kernel),
so no dequantized copy of a weight exists at run time.
"""

from __future__ import annotations

import numpy as np
from tvm import te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op

from .float_quant import quantize_symmetric
from .formats import WeightFormat, pack_words, unpack_words

VALUES_PER_WORD = 8
OFFSET = 8  # stored nibble = signed value + OFFSET


def can_quantize(cols: int, group_size: int) -> bool:
    """Whether a weight with this reduction size can use group quantization."""
    return cols % group_size == 0 and cols % VALUES_PER_WORD == 0


def quantize_int4(w: np.ndarray, group_size: int, scale_dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Quantize a float (rows, cols) matrix; returns (q_weight uint32, q_scale)."""
    w = np.asarray(w, dtype=np.float32)
    rows, cols = w.shape
    groups = w.reshape(rows, cols // group_size, group_size)  # (rows, n_groups, group)
    codes, scale = quantize_symmetric(groups, OFFSET, scale_dtype)  # (rows, n_groups, group), (rows, n_groups)
    return pack_words(codes.astype(np.uint32).reshape(rows, cols), 4), scale  # (rows, cols / 8)


def dequantize_int4(q_weight: np.ndarray, q_scale: np.ndarray, group_size: int) -> np.ndarray:
    """Numpy inverse of `quantize_int4`, in float32: the reference the kernels are tested against."""
    values = unpack_words(q_weight, 4).astype(np.float32) - OFFSET  # (rows, cols)
    scale = np.repeat(q_scale.astype(np.float32), group_size, axis=1)  # (rows, cols)
    return values * scale


def _code(q_weight: te.Tensor, row, j, bits: int):
    """The unsigned code of W[row, j]: `bits` wide, 32 // bits per packed word."""
    per_word = 32 // bits
    word = q_weight[row, j // per_word]
    shift = (j % per_word * bits).astype("uint32")
    return tirx.bitwise_and(tirx.shift_right(word, shift), tirx.const((1 << bits) - 1, "uint32"))


def widen_half(h):
    """The float32 value of the float16 bits in the low 16 bits of uint32 expression `h`, exactly,
    with integer operations and one exact float multiply: no float16 type, no float32 subnormal
    (which some GPUs flush to zero) and no branch (a Select here became nested `if`s in the WGSL of
    dlight's prefill matmuls, which SwiftShader ran for minutes). Finite float16 only (`pack_halves`
    checks).

    A half with exponent field e and mantissa m is (m + 1024) * 2^(e - 25) when e > 0 and
    m * 2^-24 when e = 0, i.e. (m + 1024 * min(e, 1)) * 2^(max(e, 1) - 25): an integer below 2^11
    times a normal power of two, so the float32 product is exact; the sign bit is or-ed in last.
    """
    def u32(value: int):
        return tirx.const(value, "uint32")

    exponent = tirx.bitwise_and(tirx.shift_right(h, u32(10)), u32(0x1F))  # 0..31
    significand = tirx.bitwise_and(h, u32(0x3FF)) + tirx.shift_left(tirx.min(exponent, u32(1)), u32(10))
    power = tirx.reinterpret("float32", tirx.shift_left(tirx.max(exponent, u32(1)) + u32(127 - 25), u32(23)))
    magnitude = significand.astype("float32") * power  # exact: < 2^11 times a power of two
    sign = tirx.shift_left(tirx.bitwise_and(h, u32(0x8000)), u32(16))
    return tirx.reinterpret("float32", tirx.bitwise_or(tirx.reinterpret("uint32", magnitude), sign))


def widen_half_cpu(h):
    """`widen_half` in 6 operations for CPU kernels only: the half's sign and its exponent and
    mantissa bits moved into float32's places, times 2^112. A half subnormal becomes a float32
    subnormal before the multiply, which CPUs (x86 without flush-to-zero, WebAssembly SIMD128)
    compute exactly; GPUs may flush it to zero, so GPU kernels use `widen_half`."""
    sign = tirx.shift_left(tirx.bitwise_and(h, tirx.const(0x8000, "uint32")), tirx.const(16, "uint32"))
    rest = tirx.shift_left(tirx.bitwise_and(h, tirx.const(0x7FFF, "uint32")), tirx.const(13, "uint32"))
    return tirx.reinterpret("float32", tirx.bitwise_or(sign, rest)) * tirx.const(2.0 ** 112, "float32")


def group_param(buffer, row, group, fmt: WeightFormat | None, widen=widen_half):
    """Scale (or min) `group` of `row` as float32 from its stored q_scale / q_min (a TE tensor or
    a TIR buffer): a float element, or one float16 half of a uint32 word (`half_scales`) widened
    by `widen`."""
    if fmt is None or not fmt.half_scales:
        return buffer[row, group]
    word = buffer[row, group // 2]
    shift = (group % 2 * 16).astype("uint32")
    return widen(tirx.bitwise_and(tirx.shift_right(word, shift), tirx.const(0xFFFF, "uint32")))


def _dequantized_value(q_weight: te.Tensor, q_scale: te.Tensor, row, j, group_size: int, dtype: str,
                       fmt: WeightFormat | None = None, q_min: te.Tensor | None = None, widen=widen_half,
                       params=None):
    """W[row, j] from its packed word and its group's scale (and min): today's symmetric int4
    when `fmt` is None, else scale * (code - offset) [+ min] in `fmt`, in the order of
    `formats.dequantize` (so a GGUF source's values are reproduced exactly). `params`: a function
    (tensor, row, group) -> that group's float32 scale or min, read from a stage that already holds
    them widened (default: `group_param` with `widen`)."""
    def param(tensor, group):
        return params(tensor, row, group) if params is not None else group_param(tensor, row, group, fmt, widen)

    if fmt is None:
        code, offset = _code(q_weight, row, j, 4), OFFSET
    else:
        code, offset = _code(q_weight, row, j, fmt.bits), fmt.offset
    value = (code.astype(dtype) - tirx.const(offset, dtype)) * param(q_scale, j // group_size).astype(dtype)
    if q_min is not None:
        value = value + param(q_min, j // group_size).astype(dtype)
    return value


def _dequantize_te(q_weight: te.Tensor, q_scale: te.Tensor, cols: int, group_size: int, dtype: str,
                   fmt: WeightFormat | None = None, q_min: te.Tensor | None = None):
    """TE compute of the dequantized (rows, cols) matrix; inlined into its consumer by fusion."""
    rows = q_weight.shape[0]
    return te.compute((rows, cols),
                      lambda i, j: _dequantized_value(q_weight, q_scale, i, j, group_size, dtype, fmt, q_min),
                      name="dequantize")


def _dequantize_matmul_te(x: te.Tensor, q_weight: te.Tensor, q_scale: te.Tensor, cols: int, group_size: int,
                         dtype: str, fmt: WeightFormat | None = None, q_min: te.Tensor | None = None):
    """x @ dequantize(W)^T as one TE function: a dequantize stage feeding a reduction stage.

    Being one PrimFunc, the GPU schedules (dlight GEMV / Matmul) inline the dequantize stage into
    the reduction, so each weight element is decoded in registers as the matmul reads it.
    """
    w = _dequantize_te(q_weight, q_scale, cols, group_size, dtype, fmt, q_min)  # (rows, cols)
    k = te.reduce_axis((0, cols), name="k")
    out_shape = (*x.shape[:-1], q_weight.shape[0])  # (..., rows)
    return te.compute(out_shape, lambda *i: te.sum(x[(*i[:-1], k)] * w[i[-1], k], axis=k), name="matmul")


def _weights(layer) -> list[Tensor]:
    return [layer.q_weight, layer.q_scale] + ([layer.q_min] if layer.q_min is not None else [])


def _format_matmul(x: Tensor, layer, cols: int) -> Tensor:
    """(..., cols) x the layer's quantized (rows, cols) weight -> (..., rows), dequantizing inside the kernel."""
    if layer.fmt is None:
        return dequantize_matmul(x, layer.q_weight, layer.q_scale, cols, layer.group_size, layer.dtype)
    return op.tensor_expr_op(
        lambda xx, qw, qs, *qm: _dequantize_matmul_te(xx, qw, qs, cols, layer.group_size, layer.dtype, layer.fmt,
                                                      qm[0] if qm else None),
        "dequantize_matmul",
        args=[x, *_weights(layer)],
    )


def dequantize_matmul(x: Tensor, q_weight: Tensor, q_scale: Tensor, cols: int, group_size: int,
                      dtype: str) -> Tensor:
    """(..., cols) x int4-quantized (rows, cols) -> (..., rows), dequantizing inside the kernel."""
    return op.tensor_expr_op(
        lambda xx, qw, qs: _dequantize_matmul_te(xx, qw, qs, cols, group_size, dtype),
        "dequantize_matmul",
        args=[x, q_weight, q_scale],
    )


def _embedding_rows_te(q_weight: te.Tensor, q_scale: te.Tensor, ids: te.Tensor, cols: int, group_size: int,
                       dtype: str, fmt: WeightFormat | None = None, q_min: te.Tensor | None = None):
    """Dequantized rows `ids` (seq,) of a quantized (num, cols) table: (seq, cols)."""
    return te.compute((ids.shape[0], cols),
                      lambda s, j: _dequantized_value(q_weight, q_scale, ids[s], j, group_size, dtype, fmt, q_min),
                      name="embedding_rows")


def _declare(layer, rows: int, cols: int, dtype: str, group_size: int, fmt: WeightFormat | None) -> None:
    """q_weight / q_scale (/ q_min) parameters of a (rows, cols) weight: today's int4 with scales in
    `dtype` when `fmt` is None; else `fmt`'s codes with its scales and mins (float32, or float16
    pairs in uint32 words: exact containers)."""
    layer.fmt = fmt
    layer.group_size = fmt.group_size if fmt is not None else group_size
    layer.q_min = None
    if fmt is None:
        layer.q_weight = nn.Parameter((rows, cols // VALUES_PER_WORD), "uint32")
        layer.q_scale = nn.Parameter((rows, cols // layer.group_size), dtype)
        return
    layer.q_weight = nn.Parameter((rows, cols // fmt.values_per_word), "uint32")
    layer.q_scale = nn.Parameter(fmt.group_shape(rows, cols), fmt.group_dtype)
    if fmt.has_min:
        layer.q_min = nn.Parameter(fmt.group_shape(rows, cols), fmt.group_dtype)


class GroupQuantLinear(nn.Module):
    """y = x W^T (+ b) with W stored group-quantized (today's int4, or a `formats` container when
    `fmt` is given); same call signature as nn.Linear."""

    def __init__(self, in_features: int, out_features: int, bias: bool, dtype: str, group_size: int,
                 fmt: WeightFormat | None = None):
        self.in_features = in_features
        self.out_features = out_features
        self.dtype = dtype
        _declare(self, out_features, in_features, dtype, group_size, fmt)
        self.bias = nn.Parameter((out_features,), dtype) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        # (..., in_features) -> (..., out_features)
        y = _format_matmul(x, self, self.in_features)
        if self.bias is not None:
            y = y + self.bias
        return y


class GroupQuantEmbedding(nn.Module):
    """Token embedding stored group-quantized (as GroupQuantLinear); `lm_head_forward` reuses it as
    a tied head."""

    def __init__(self, num: int, dim: int, dtype: str, group_size: int, fmt: WeightFormat | None = None):
        self.num = num
        self.dim = dim
        self.dtype = dtype
        _declare(self, num, dim, dtype, group_size, fmt)

    def forward(self, ids: Tensor) -> Tensor:
        # ids: (seq,) -> the rows of those tokens, gathered and dequantized in one kernel: (seq, dim)
        fmt, group, dtype = self.fmt, self.group_size, self.dtype
        return op.tensor_expr_op(
            lambda qw, qs, *rest: _embedding_rows_te(qw, qs, rest[-1], self.dim, group, dtype, fmt,
                                                     rest[0] if len(rest) > 1 else None),
            "embedding_rows",
            args=[*_weights(self), ids],
        )

    def lm_head_forward(self, x: Tensor) -> Tensor:
        # (..., dim) -> (..., num)
        return _format_matmul(x, self, self.dim)
