"""4-lane f32 matmul kernels for the CPU modules: the WebAssembly one (wasm32 + SIMD128, one
thread: model-cpu.wasm) and the native one (generic x86-64 / SSE: model.so for Python).

Unscheduled, LLVM gets one scalar multiply-add per loop iteration (with 64-bit div/mod index math
for every int4 nibble). Here every matmul gets 4-lane vectors, in two steps:

1. `int4_matmul_pass` (Relax level, before fusion) swaps each one-token int4 matmul PrimFunc of
   `webbuild.quant.group_quant` for the same product in a vector-friendly order (`gemv_int4_func`):
   with k = 32 g + 8 l + kk, lane l reads packed word 4 g + l (one vector load covers the
   quantization group g) and every lane takes the same nibble kk, masked in place
   (w & 0xF << 4 kk, exact as f32) against x pre-scaled by 2^-4kk. The scale and the -8 offset
   are applied once per group: sum_kk x (q - 8) s = s (sum_kk x q - 8 sum_kk x).
   That is 4 vector ops per 4 multiply-adds instead of 7. Prefill int4 matmuls (seq_len tokens)
   become `gemm_int4_func`: x copied in the same (g, kk, l) order with the tokens in blocks of
   TOKEN_BLOCK (the last one padded with zeros), so its kernel needs no bounds test per token.
2. `schedule_pass` (TIR level, after fusion) schedules:
   - that GEMV: NR rows at a time, per-group partial sums in registers, lanes rfactored into a
     local accumulator and summed across lanes at the end of the row;
   - that prefill matmul: PREFILL_ROWS rows are dequantized into a local f32 tile in the same
     (g, kk, l) order; per token block, PREFILL_ROWS x TOKEN_BLOCK 4-lane accumulators run over
     (g, kk) as one rolled loop (each weight vector serves 2 tokens, each x vector 4 rows; unrolled
     over kk, far more vectors were live than registers: 86 tok/s). SmolLM2 q4 prefill: 101 -> 142 tok/s on one thread;
   - other int4 matmuls (a dequantize stage + reduction): the same tile, one token at a time;
   - f32 weights: lanes over consecutive k, NR rows share each load of x.
Fused epilogues (a residual add) stay as their own loops after the matmul. Float16-pair scales and
mins (`formats` names ending `_f16`) are widened with `group_quant.widen_half_cpu` (6 operations;
CPUs keep float32 subnormals): in the GEMV and the prefill tile once per row tile into a small
float32 stage, vectorized over the tile's words (all its rows: SmolLM2's rows have 9 words),
instead of once per group and lane inside the reduction (SmolLM2's int8 head on its real weights:
8.5 -> 5.0-5.9 ms a call natively) or once per value of the prefill tile.

With ``parallel`` (the wasm32 module), the outer row-tile loop of every matmul of at least
`PARALLEL_MIN_MACS` multiply-adds per token is a parallel loop: TVM's codegen splits its tiles into
one contiguous range per thread (the runtime's webbuild_threads.cc; one thread without workers).
Each row's sums keep their order, so results do not depend on the thread count.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
import tvm_ffi
from tvm import s_tir, te, tirx

from ..quant.formats import FORMATS, WeightFormat
from ..quant.group_quant import (
    OFFSET,
    VALUES_PER_WORD,
    _dequantize_matmul_te,
    _dequantized_value,
    widen_half_cpu,
)

LANES = 4  # f32 lanes of a SIMD128 vector
WORD = VALUES_PER_WORD  # int4 values per packed uint32 word
GROUP = LANES * WORD  # int4 values in the four words one vector load reads
ROW_TILES = (8, 4, 2, 1)  # rows of W per tile: the largest that divides n
GEMV_ROWS = 4  # rows per tile of the int4 GEMV: they share each load of x (1 -> 4: decode +12%)
# int8 codes: twice the bytes per multiply-add, more rows streamed at once (SmolLM2's Q8_0 head,
# decode with 4 -> 8 rows: 0.82-0.84 -> 0.87 of q4f32_1 on one thread, in chromium)
GEMV_ROWS_INT8 = 8
TILE_BYTES = 48 * 1024  # dequantized f32 weight tile of the prefill kernel (stays in L1/L2)
GEMV_BLOCK = "gemv"  # block names of `gemv_int4_func`, found again after fusion
GEMV_PART = "gemv_part"
GEMV_HALVES = ("gemv_scale", "gemv_min")  # float16-pair scales / mins widened per row tile
GEMM_BLOCK, GEMM_PART, GEMM_X, GEMM_W = "gemm", "gemm_part", "gemm_x", "gemm_w"  # `gemm_int4_func`'s blocks
GEMM_HALVES = ("gemm_scale", "gemm_min")  # float16-pair scales / mins widened per prefill row tile
PREFILL_ROWS = 4  # rows of W per prefill tile
TOKEN_BLOCK = 2  # tokens per prefill micro-kernel step: PREFILL_ROWS x TOKEN_BLOCK accumulators
PARALLEL_MIN_MACS = 1 << 15  # smaller matmuls stay on one thread (a launch costs a few microseconds)
# Scope of the small per-tile accumulators. TVM's LowerTVMBuiltin keeps a CPU buffer under 1 KiB as a
# stack alloca only in "global" scope; a "local" one becomes a TVMBackendAllocWorkspace call, whose
# pointer LLVM must assume aliases x and the weights: every multiply-add then stored its accumulator
# and reloaded x. As allocas, LLVM keeps them in registers.
REGISTERS = "global"


def _static(extent) -> int | None:
    return int(extent) if isinstance(extent, (int, tirx.IntImm)) else None


# ------------------------------------------------------------------ 1. int4 GEMV and prefill reformulation

def _candidates(cols: int, q_weight, q_scale, has_min: bool) -> list[WeightFormat | None]:
    """The weight formats (None: today's int4) whose parameters have these shapes and dtypes."""
    rows, words = int(q_weight.shape[0]), int(q_weight.shape[1])
    found: list[WeightFormat | None] = []
    if not has_min and q_scale.dtype == "float32" and words * WORD == cols:
        found.append(None)
    for fmt in FORMATS.values():
        if (fmt.has_min == has_min and words * fmt.values_per_word == cols and fmt.group_dtype == q_scale.dtype
                and cols % fmt.group_size == 0 and fmt.group_shape(rows, cols) == tuple(int(d) for d in q_scale.shape)):
            found.append(fmt)
    return found


def _group_quant_matmul(func: tirx.PrimFunc) -> tuple[int, int, bool, WeightFormat | None] | None:
    """(K, group size, one token, weight format) when `func` is exactly group_quant's
    dequantize-matmul in float32 (today's int4: format None; or a `formats` container) with
    groups of whole vectors, x (1, ..., 1, K) (one token) or (1, ..., seq_len, K); else None."""
    if len(func.params) not in (4, 5) or not all(isinstance(p.ty, tirx.BufferType) for p in func.params):
        return None
    x, q_weight, q_scale = func.params[:3]
    q_min = func.params[3] if len(func.params) == 5 else None
    weights = [q_weight, q_scale] + ([q_min] if q_min is not None else [])
    dims = [_static(d) for d in (x.shape[-1], *(d for p in weights for d in p.shape))]
    if None in dims or x.dtype != "float32" or q_weight.dtype != "uint32":
        return None
    if q_scale.dtype not in ("float32", "uint32") or (q_min is not None and q_min.dtype != q_scale.dtype):
        return None
    if len(x.shape) < 2 or any(_static(d) != 1 for d in x.shape[:-2]):
        return None
    one_token = _static(x.shape[-2]) == 1
    if not one_token and not isinstance(x.shape[-2], tirx.Var):
        return None
    if any(len(p.shape) != 2 for p in weights):
        return None
    cols = int(x.shape[-1])
    for fmt in _candidates(cols, q_weight, q_scale, q_min is not None):
        group_size = fmt.group_size if fmt is not None else cols // max(int(q_scale.shape[1]), 1)
        if int(q_scale.shape[1]) == 0 or group_size % _vector_group(fmt) or cols % group_size:
            continue
        tensors = [te.placeholder(p.shape, p.dtype) for p in (x, *weights)]
        result = _dequantize_matmul_te(tensors[0], tensors[1], tensors[2], cols, group_size, "float32", fmt,
                                       tensors[3] if q_min is not None else None)
        reference = te.create_prim_func([*tensors, result], index_dtype_override="int64").without_attr("global_symbol")
        if tvm_ffi.structural_equal(func.without_attr("op_pattern"), reference, map_free_vars=True):
            return cols, group_size, one_token, fmt
    return None


def _code_bits(fmt: WeightFormat | None) -> int:
    return fmt.bits if fmt is not None else 4


def _vector_group(fmt: WeightFormat | None) -> int:
    """Values in the LANES packed words one vector load reads: 32 (int4) or 16 (int8)."""
    return LANES * (32 // _code_bits(fmt))


def _widened(stored: te.Tensor, rows: int, fmt: WeightFormat | None, name: str):
    """Group (n, q) -> its float32 scale (or min) from `stored`. Float16 pairs: a stage (2, rows,
    words), half h of word w of row n at [h, n, w], for the schedules to compute once per row tile;
    the tile's (n, w) are contiguous in both the stored words and the stage, so the widening is
    vectorized across rows too (SmolLM2's 576 columns make 9 words a row)."""
    if fmt is None or not fmt.half_scales:
        return lambda n, q: stored[n, q]
    halves = te.compute(
        (2, rows, int(stored.shape[1])),
        lambda h, n, w: widen_half_cpu(tirx.bitwise_and(tirx.shift_right(stored[n, w], (h * 16).astype("uint32")),
                                                        tirx.const(0xFFFF, "uint32"))),
        name=name)
    return lambda n, q: halves[q % 2, n, q // 2]


def gemv_int4_func(x_shape, rows: int, cols: int, group_size: int, fmt: WeightFormat | None = None) -> tirx.PrimFunc:
    """x (..., cols) @ dequantize(q_weight (rows, cols / codes per word), q_scale[, q_min])^T in the
    order described in the module docstring (int8 codes: 4 per word, bytes masked in place); same
    parameters as group_quant's PrimFunc of today's int4 (fmt None) or of container `fmt`."""
    lead = tuple(x_shape[:-1])
    bits = _code_bits(fmt)
    word_values = 32 // bits  # codes per packed word
    vector = _vector_group(fmt)  # values of one 4-word vector load
    groups = cols // vector
    has_min = fmt is not None and fmt.has_min
    offset = fmt.offset if fmt is not None else OFFSET
    x = te.placeholder((*lead, cols), "float32", name="x")
    q_weight = te.placeholder((rows, cols // word_values), "uint32", name="q_weight")
    group_shape = fmt.group_shape(rows, cols) if fmt is not None else (rows, cols // group_size)
    group_dtype = fmt.group_dtype if fmt is not None else "float32"
    q_scale = te.placeholder(group_shape, group_dtype, name="q_scale")
    q_min = te.placeholder(group_shape, group_dtype, name="q_min") if has_min else None
    last = word_values - 1  # the top code is shifted down instead of masked (a masked one can be >= 2^31)

    def col(g, kk, lane):
        return g * vector + lane * word_values + kk

    def pow2(kk):  # 2^-(bits kk) (1 for the top code)
        factor = tirx.const(1, "float32")
        for j in range(last):
            factor = tirx.Select(kk == j, tirx.const(2.0 ** (-bits * j), "float32"), factor)
        return factor

    def code_in_place(word, kk):  # code kk of word, times 2^(bits kk) (times 1 for the top code)
        top = tirx.shift_right(word, tirx.const(bits * last, "uint32"))
        mask = tirx.shift_left(tirx.const((1 << bits) - 1, "uint32"), (kk * bits).astype("uint32"))
        return tirx.Select(kk == last, top, tirx.bitwise_and(word, mask)).astype("int32").astype("float32")

    # xq[..., g, kk, l] = x[..., col] * 2^-(bits kk)
    xq = te.compute((*lead, groups, word_values, LANES),
                    lambda *i: x[(*i[:-3], col(*i[-3:]))] * pow2(i[-2]), name="gemv_x")
    kk = te.reduce_axis((0, word_values), name="kk")
    # xs[..., g, l] = offset * sum_kk x[..., col] (symmetric) or sum_kk x[..., col] (with a min)
    xs_factor = tirx.const(1 if has_min else offset, "float32")
    xs = te.compute((*lead, groups, LANES),
                    lambda *i: te.sum(x[(*i[:-2], col(i[-2], kk, i[-1]))] * xs_factor, axis=kk),
                    name="gemv_xsum")
    kk = te.reduce_axis((0, word_values), name="kk")
    # part[..., n, g, l] = sum_kk x[..., col] * code   (code = stored value)
    part = te.compute(
        (*lead, rows, groups, LANES),
        lambda *i: te.sum(xq[(*i[:-3], i[-2], kk, i[-1])]
                          * code_in_place(q_weight[i[-3], i[-2] * LANES + i[-1]], kk), axis=kk),
        name=GEMV_PART)
    g = te.reduce_axis((0, groups), name="g")
    lane = te.reduce_axis((0, LANES), name="l")

    scale_of = _widened(q_scale, rows, fmt, GEMV_HALVES[0])
    min_of = _widened(q_min, rows, fmt, GEMV_HALVES[1]) if q_min is not None else None

    def group_term(i):  # one (group, lane) partial sum, scaled: s (part - o xs) or s part + m xs
        n, group = i[-1], g * vector // group_size
        if min_of is not None:
            return part[(*i, g, lane)] * scale_of(n, group) + xs[(*i[:-1], g, lane)] * min_of(n, group)
        return (part[(*i, g, lane)] - xs[(*i[:-1], g, lane)]) * scale_of(n, group)

    out = te.compute((*lead, rows), lambda *i: te.sum(group_term(i), axis=[g, lane]), name=GEMV_BLOCK)
    weights = [q_weight, q_scale] + ([q_min] if q_min is not None else [])
    return te.create_prim_func([x, *weights, out], index_dtype_override="int64")


def gemm_int4_func(x_shape, rows: int, cols: int, group_size: int, fmt: WeightFormat | None = None) -> tirx.PrimFunc:
    """Prefill: x (..., seq_len, cols) @ dequantize(q_weight, q_scale[, q_min])^T with the tokens in
    blocks of TOKEN_BLOCK (x copied into gemm_x (..., block, token, g, kk, l), the last block padded
    with zeros) so that its micro-kernel reuses each weight vector for TOKEN_BLOCK tokens with no
    bounds test. Sums in the same order as `schedule_gemm_int4`'s kernel; same parameters as
    group_quant's PrimFunc of today's int4 (fmt None) or of container `fmt`."""
    *lead, seq = x_shape[:-1]
    lead = tuple(lead)
    blocks = (seq - 1) // TOKEN_BLOCK + 1  # this form (not a ceiling division) lets TVM prove the cover
    word_values = 32 // _code_bits(fmt)
    vector = _vector_group(fmt)
    groups = cols // vector
    x = te.placeholder((*lead, seq, cols), "float32", name="x")
    q_weight = te.placeholder((rows, cols // word_values), "uint32", name="q_weight")
    group_shape = fmt.group_shape(rows, cols) if fmt is not None else (rows, cols // group_size)
    group_dtype = fmt.group_dtype if fmt is not None else "float32"
    q_scale = te.placeholder(group_shape, group_dtype, name="q_scale")
    q_min = te.placeholder(group_shape, group_dtype, name="q_min") if fmt is not None and fmt.has_min else None

    def col(g, kk, lane):
        return g * vector + lane * word_values + kk

    def padded_x(*i):  # (..., block, token, g, kk, l)
        t = i[-5] * TOKEN_BLOCK + i[-4]
        return tirx.if_then_else(t < seq, x[(*i[:-5], tirx.min(t, seq - 1), col(*i[-3:]))], tirx.const(0, "float32"))

    xp = te.compute((*lead, blocks, TOKEN_BLOCK, groups, word_values, LANES), padded_x, name=GEMM_X)
    widened = {id(q_scale): _widened(q_scale, rows, fmt, GEMM_HALVES[0])}  # by the stored tensor
    if q_min is not None:
        widened[id(q_min)] = _widened(q_min, rows, fmt, GEMM_HALVES[1])
    wt = te.compute((rows, groups, word_values, LANES),
                    lambda n, g, kk, lane: _dequantized_value(
                        q_weight, q_scale, n, col(g, kk, lane), group_size, "float32", fmt, q_min,
                        params=lambda t, r, q: widened[id(t)](r, q)),
                    name=GEMM_W)
    g = te.reduce_axis((0, groups), name="g")
    kk = te.reduce_axis((0, word_values), name="kk")
    # part[..., block, token, n, l] = sum_{g, kk} x * w   (lane l: packed word 4 g + l)
    part = te.compute((*lead, blocks, TOKEN_BLOCK, rows, LANES),
                      lambda *i: te.sum(xp[(*i[:-2], g, kk, i[-1])] * wt[i[-2], g, kk, i[-1]], axis=[g, kk]),
                      name=GEMM_PART)
    lane = te.reduce_axis((0, LANES), name="l")
    out = te.compute((*lead, seq, rows),
                     lambda *i: te.sum(part[(*i[:-2], i[-2] // TOKEN_BLOCK, i[-2] % TOKEN_BLOCK, i[-1], lane)],
                                       axis=lane),
                     name=GEMM_BLOCK)
    weights = [q_weight, q_scale] + ([q_min] if q_min is not None else [])
    return te.create_prim_func([x, *weights, out], index_dtype_override="int64")


def int4_matmul_pass():
    """Module pass: replace group_quant's int4 matmuls by `gemv_int4_func` (one token) and
    `gemm_int4_func` (prefill): same parameters and result, so the Relax calls and the later fusion
    are unchanged."""

    @tvm.transform.module_pass(opt_level=0, name="CPUInt4Matmul")
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        for gvar, func in list(mod.functions_items()):
            if not isinstance(func, tirx.PrimFunc):
                continue
            match = _group_quant_matmul(func)
            if match is not None:
                x, q_weight = func.params[:2]
                cols, group_size, one_token, fmt = match
                make = gemv_int4_func if one_token else gemm_int4_func
                mod[gvar] = make(x.shape, int(q_weight.shape[0]), cols, group_size, fmt).without_attr("global_symbol")
        return mod

    return _pass


# ------------------------------------------------------------------ 2. schedules

@dataclass
class MatmulInfo:
    """The reduction block of a matmul PrimFunc and what its schedule needs to know."""

    block: s_tir.schedule.SBlockRV
    dequantize: s_tir.schedule.SBlockRV | None  # int4 dequantize stage, or None for f32 weights
    x_index: int  # read-buffer index of the activation x[..., k] in the block
    n: int  # output features
    k: int  # reduction length


def _matmul_info(sch: s_tir.Schedule) -> MatmulInfo | None:
    """Recognize out[..., n] = sum_k x[..., k] * W[n, k] (f32): one reduction block, k innermost,
    W a weight parameter or the output of a `dequantize` block."""
    reductions, dequantize = [], None
    for rv in sch.get_child_blocks(sch.get_sblock("root")):
        block = sch.get(rv)
        if any(iv.iter_type == tirx.IterVar.CommReduce for iv in block.iter_vars):
            reductions.append(rv)
        elif block.name_hint == "dequantize":
            dequantize = rv
    if len(reductions) != 1:
        return None
    block = sch.get(reductions[0])
    iters = block.iter_vars
    kinds = [iv.iter_type for iv in iters]
    if len(iters) < 2 or kinds[-1] != tirx.IterVar.CommReduce or tirx.IterVar.CommReduce in kinds[:-1]:
        return None
    n, k = _static(iters[-2].dom.extent), _static(iters[-1].dom.extent)
    if n is None or k is None or len(block.reads) != 2 or len(sch.get_loops(reductions[0])) != len(iters):
        return None
    if block.writes[0].source.dtype != "float32":
        return None
    x_index = next((i for i, r in enumerate(block.reads) if len(r.region) == len(iters) - 1), None)
    if x_index is None or len(block.reads[1 - x_index].region) != 2:
        return None
    weight = block.reads[1 - x_index]
    if not (weight.region[0].min.same_as(iters[-2].var) and weight.region[1].min.same_as(iters[-1].var)):
        return None
    if dequantize is not None and not weight.source.same_as(sch.get(dequantize).writes[0].source):
        return None
    return MatmulInfo(reductions[0], dequantize, x_index, n, k)


def _row_tile(n: int, limit: int = ROW_TILES[0]) -> int:
    return next(t for t in ROW_TILES if n % t == 0 and t <= limit)


def _group_order(ndim: int) -> tirx.IndexMap:
    """(..., k) -> (..., g, kk, l) with k = 32 g + 8 l + kk: lane l holds packed word 4 g + l."""
    return tirx.IndexMap.from_func(
        lambda *i: (*i[:-1], i[-1] // GROUP, i[-1] % WORD, i[-1] // WORD % LANES), ndim=ndim)


def _parallel(sch: s_tir.Schedule, loop, macs: int, parallel: bool) -> None:
    if parallel and macs >= PARALLEL_MIN_MACS and (_static(sch.get(loop).extent) or 0) > 1:
        sch.parallel(loop)


def schedule_gemv_int4(sch: s_tir.Schedule, parallel: bool = False) -> None:
    """`gemv_int4_func` (+ epilogue): per row tile and group, the 8 nibbles of 4 words."""
    block = sch.get_sblock(GEMV_BLOCK)
    *_, n, g, lane = sch.get_loops(block)  # (..., rows, groups, 4)
    word_values = _static(sch.get(sch.get_sblock(GEMV_PART)).iter_vars[-1].dom.extent) or WORD
    macs = (_static(sch.get(n).extent) or 0) * (_static(sch.get(g).extent) or 0) * LANES * word_values
    tile = GEMV_ROWS_INT8 if word_values == 4 else GEMV_ROWS
    n_outer, n_inner = sch.split(n, [None, _row_tile(_static(sch.get(n).extent) or 1, tile)])
    sch.reorder(n_outer, g, n_inner, lane)
    _parallel(sch, n_outer, macs, parallel)  # first: later steps break the dataflow check
    rf = sch.rfactor(lane, factor_axis=len(sch.get(block).iter_vars) - 2)
    sch.set_scope(rf, 0, REGISTERS)
    rf_loops = sch.get_loops(rf)  # (..., n_outer, g, n_inner, lane)
    n_outer, g, n_inner, lane = rf_loops[-4:]
    sch.reverse_compute_at(block, n_outer)
    part = sch.get_sblock(GEMV_PART)
    sch.compute_at(part, g)
    sch.set_scope(part, 0, REGISTERS)
    *spatial, nibble = sch.get_loops(part)[len(rf_loops) - 2:]  # ([n_inner,] lane, kk)
    sch.reorder(nibble, *spatial)
    for loop in spatial[:-1]:
        sch.unroll(loop)
    sch.vectorize(spatial[-1])
    sch.unroll(nibble)
    sch.decompose_reduction(part, nibble)
    sch.vectorize(lane)
    sch.unroll(n_inner)
    sch.decompose_reduction(rf, g)
    # widened float16 scales / mins: once per row tile, before its reduction (widening them per group
    # and lane inside the reduction made SmolLM2's int8 head GEMV ~1.5x slower)
    _widen_per_tile(sch, GEMV_HALVES, n_outer)


def _widen_per_tile(sch: s_tir.Schedule, names: tuple[str, ...], n_outer) -> None:
    """The float16-pair stages `names` (of `_widened`) computed once per row tile, vectorized over
    the tile's contiguous words."""
    for name in names:
        if name in _block_names(sch):
            widen = sch.get_sblock(name)
            sch.compute_at(widen, n_outer)
            *_, pair, tile_rows, words = sch.get_loops(widen)
            sch.unroll(pair)
            words = sch.fuse(tile_rows, words)
            if (_static(sch.get(words).extent) or 0) % LANES == 0:
                sch.vectorize(sch.split(words, [None, LANES])[1])


def schedule_gemm_blocked(sch: s_tir.Schedule, parallel: bool = False) -> None:
    """`gemm_int4_func` (+ epilogue): per tile of PREFILL_ROWS rows, their dequantized weights in a
    local tile; per token block, PREFILL_ROWS x TOKEN_BLOCK 4-lane accumulators over (g, kk)."""
    out = sch.get_sblock(GEMM_BLOCK)
    *lead, token, n, _ = sch.get_loops(out)  # (..., seq_len, rows, lanes)
    n_rows = _static(sch.get(n).extent) or 1
    weights = sch.get_sblock(GEMM_W)
    _, w_groups, w_values, _ = (_static(iv.dom.extent) or 0 for iv in sch.get(weights).iter_vars)
    macs = n_rows * w_groups * w_values * LANES
    n_outer, n_inner = sch.split(n, [None, _row_tile(n_rows, PREFILL_ROWS)])
    t_outer, t_inner = sch.split(token, [None, TOKEN_BLOCK])
    sch.reorder(n_outer, *lead, t_outer, t_inner, n_inner)
    _parallel(sch, n_outer, macs, parallel)  # first: later steps break the dataflow check
    part = sch.get_sblock(GEMM_PART)
    sch.compute_at(part, t_outer)
    sch.set_scope(part, 0, REGISTERS)
    *_, p_token, p_row, p_lane, p_g, p_kk = sch.get_loops(part)
    sch.reorder(p_g, p_kk, p_token, p_row, p_lane)
    p_step = sch.fuse(p_g, p_kk)
    sch.vectorize(p_lane)
    sch.unroll(p_row)
    sch.unroll(p_token)
    sch.decompose_reduction(part, p_step)
    sch.compute_at(weights, n_outer)
    sch.set_scope(weights, 0, "local")
    sch.vectorize(sch.get_loops(weights)[-1])
    _widen_per_tile(sch, GEMM_HALVES, n_outer)


def schedule_gemm_int4(sch: s_tir.Schedule, info: MatmulInfo, parallel: bool = False) -> None:
    """Prefill with int4 weights: dequantize NR rows into a local tile wt[NR, g, kk, l]
    (vectorized over the 4 words of a group), then each token's f32 micro-kernel, x in the same
    (g, kk, l) order."""
    block = info.block
    xp = sch.cache_read(block, info.x_index, "global")
    sch.transform_layout(xp, ("write", 0), _group_order(len(sch.get(xp).iter_vars)))
    sch.transform_layout(info.dequantize, ("write", 0), _group_order(2))
    sch.transform_block_layout(info.dequantize, _group_order(2))
    *tokens, n, k = sch.get_loops(block)  # (..., seq_len, n, k)
    rows = _row_tile(info.n, max(1, TILE_BYTES // (4 * info.k)))
    n_outer, n_inner = sch.split(n, [None, rows])
    g, lane, nibble = sch.split(k, [None, LANES, WORD])
    sch.reorder(n_outer, *tokens, g, nibble, n_inner, lane)
    _parallel(sch, n_outer, info.n * info.k, parallel)
    rf = sch.rfactor(lane, factor_axis=len(sch.get(block).iter_vars) - 1)
    sch.set_scope(rf, 0, REGISTERS)
    loops = sch.get_loops(rf)  # (n_outer, ..., token, g, kk, n_inner, lane)
    token, g, _, n_inner, lane = loops[-5:]
    sch.reverse_compute_at(block, token)
    sch.vectorize(lane)
    sch.unroll(n_inner)
    sch.decompose_reduction(rf, g)
    sch.compute_at(info.dequantize, loops[0])
    sch.set_scope(info.dequantize, 0, "local")
    sch.vectorize(sch.get_loops(info.dequantize)[-1])


def schedule_matmul(sch: s_tir.Schedule, info: MatmulInfo, rows: int, parallel: bool = False) -> None:
    """f32 weights, GEMV or GEMM: lanes over consecutive k, `rows` rows share each x load."""
    block = info.block
    *tokens, n, k = sch.get_loops(block)
    n_outer, n_inner = sch.split(n, [None, rows])
    k_outer, lane = sch.split(k, [None, LANES])
    sch.reorder(n_outer, *tokens, k_outer, n_inner, lane)
    _parallel(sch, n_outer, info.n * info.k, parallel)
    rf = sch.rfactor(lane, factor_axis=len(sch.get(block).iter_vars) - 1)
    sch.set_scope(rf, 0, REGISTERS)
    token, k_outer, n_inner, lane = sch.get_loops(rf)[-4:]
    sch.reverse_compute_at(block, token)
    sch.vectorize(lane)
    sch.unroll(n_inner)
    sch.decompose_reduction(rf, k_outer)


def _block_names(sch: s_tir.Schedule) -> set[str]:
    return {sch.get(rv).name_hint for rv in sch.get_child_blocks(sch.get_sblock("root"))}


def schedule_func(func: tirx.PrimFunc, parallel: bool = False) -> tirx.PrimFunc | None:
    """The scheduled function, or None when it is no matmul these schedules know."""
    sch = s_tir.Schedule(func)
    try:
        if {GEMV_BLOCK, GEMV_PART} <= _block_names(sch):
            schedule_gemv_int4(sch, parallel)
        elif {GEMM_BLOCK, GEMM_PART} <= _block_names(sch):
            schedule_gemm_blocked(sch, parallel)
        else:
            info = _matmul_info(sch)
            if info is None:
                return None
            if info.dequantize is not None and info.k % GROUP == 0:
                schedule_gemm_int4(sch, info, parallel)
            elif info.dequantize is None and info.k % LANES == 0:
                single_token = all(_static(sch.get(loop).extent) == 1 for loop in sch.get_loops(info.block)[:-2])
                schedule_matmul(sch, info, _row_tile(info.n, 2 if single_token else ROW_TILES[0]), parallel)
            else:
                return None
    except s_tir.ScheduleError:
        return None
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


def schedule_pass(parallel: bool = False):
    """Module pass scheduling every matmul PrimFunc it recognizes (``parallel``: row tiles across
    threads)."""

    @tvm.transform.module_pass(opt_level=0, name="CPUMatmulSchedule")
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        for gvar, func in list(mod.functions_items()):
            if isinstance(func, tirx.PrimFunc) and not (func.attrs and func.attrs.get("tirx.is_scheduled", False)):
                scheduled = schedule_func(func, parallel)
                if scheduled is not None:
                    mod[gvar] = scheduled
        return mod

    return _pass
