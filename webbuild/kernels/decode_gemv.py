"""One-token (decode) matrix-vector kernels for WebGPU, with their neighbours fused in.

A decode step multiplies one activation vector by every weight matrix. dlight's generic GEMV
gives each output row its own workgroup and reduces it across that workgroup's threads; that is
one kernel per matmul plus separate kernels for the norm before it and the activation between the
MLP's matmuls. `gemv_func` makes one hand-scheduled kernel that does all of it:

    out[n] = epilogue( sum_k prologue(x)[k] * W[n, k] )

- W: group-quantized, dequantized in registers as it is read: today's int4 (`group_quant` layout:
  `q_weight` (n, k/8) uint32, `q_scale` (n, k/group)) or any `formats` container (int4 / int8
  codes, with or without a per-group min, float32 or float16-pair scales widened by integer
  operations); or plain float (n, k).
- prologue: none; RMSNorm (x * w, the 1/rms factor applied after the sum); LayerNorm ((x - mean)
  * rstd * w + b, statistics computed first by each workgroup); gated activation act(gate) * up of
  a (2k,) input [gate; up]; activation act(x).
- epilogue: + bias[n], + residual[n], cast to the output dtype (float32 logits).

Each workgroup computes `ROWS` consecutive rows with `threads_for(cols)` threads: thread t reads
the packed words t, t + threads, ... of every row (consecutive threads read consecutive words:
coalesced), decodes the 8 input values of such a word once and uses them for all its rows; the
per-thread partial sums meet in workgroup memory behind one barrier (LayerNorm statistics take a
second one), and `ROWS` threads add them up. Arithmetic is float32 whatever the model dtype.

Sizes: `ROWS` = 8 rows per workgroup gives n / 8 workgroups, enough to fill a GPU for 1B+ models
(an 8B model's smallest matmul has 4096 rows: 512 workgroups of 64 threads, each thread with 8
independent loads in flight). Each thread handles at least `MIN_WORDS_PER_THREAD` words of a row:
threads = the largest power of two <= cols / 64, within [8, 64]; 32-64 threads for 1B+ models
(cols >= 2048), 8 for SmolLM2's 576 columns, where per-thread work would otherwise be one or two
words and the reduction and per-workgroup setup would dominate. That also suits CPU WebGPU
implementations: on SwiftShader the cost grows with invocations per workgroup (3072 x 576 int4:
~97 ms with 64 threads, ~23 ms with 8; dlight's kernel ~230 ms, same load).
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass

from tvm import tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op
from tvm.script import tirx as T

from ..quant.formats import WeightFormat
from ..quant.group_quant import OFFSET, VALUES_PER_WORD, GroupQuantEmbedding, GroupQuantLinear, group_param
from .activations import ACTIVATIONS, activate, tir_activation

ROWS = 8  # output rows per workgroup
MIN_THREADS, MAX_THREADS = 8, 64  # threads per workgroup (>= ROWS: one thread sums each row)
MIN_WORDS_PER_THREAD = 8
CHUNK = VALUES_PER_WORD  # input values a thread handles at a time (one int4 word, two int8 words)
PROLOGUES = ("none", "rms", "layer", "gated", "act")


@dataclass(frozen=True)
class GemvSpec:
    """The shape and fused operations of one decode GEMV kernel.

    rows, cols: W is (rows, cols); the input vector has `cols` values (2 * cols for "gated").
    quantized: W is group-quantized with `group_size`; else float in `dtype`. `fmt`: its
    `formats` container (codes, min, scale storage); None: today's int4 with scales in `dtype`.
    prologue: one of PROLOGUES; `act` names the activation of "gated" / "act"; `eps` the norm's.
    bias, residual: add a (rows,) bias / a (1, 1, rows) residual to the output.
    dtype: activations, scales, norm weights, bias, residual; out_dtype: the output.
    """

    rows: int
    cols: int
    quantized: bool
    dtype: str = "float32"
    out_dtype: str = "float32"
    group_size: int = 32
    fmt: WeightFormat | None = None
    prologue: str = "none"
    act: str = "silu"
    eps: float = 1e-5
    bias: bool = False
    residual: bool = False

    def __post_init__(self):
        if self.prologue not in PROLOGUES:
            raise ValueError(f"unknown prologue {self.prologue!r}")
        if self.prologue in ("gated", "act") and self.act not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.act!r}")
        if self.quantized and (self.cols % self.group_size or self.group_size % CHUNK):
            raise ValueError(f"cols {self.cols} is not a whole number of {self.group_size}-value groups")
        if self.fmt is not None and (not self.quantized or self.fmt.group_size != self.group_size):
            raise ValueError("a weight format needs a quantized spec with its group size")

    @property
    def input_size(self) -> int:
        return 2 * self.cols if self.prologue == "gated" else self.cols


def threads_for(cols: int) -> int:
    """Threads per workgroup for a reduction over `cols` values: a power of two, each thread
    taking at least MIN_WORDS_PER_THREAD words of 8 values, within [MIN_THREADS, MAX_THREADS]."""
    threads = MIN_THREADS
    while threads < MAX_THREADS and threads * 2 * MIN_WORDS_PER_THREAD * CHUNK <= cols:
        threads *= 2
    return threads


@functools.cache
def gemv_func(spec: GemvSpec, threads: int | None = None, rows_per_group: int = ROWS) -> tirx.PrimFunc:
    """The scheduled PrimFunc of `spec`. Parameters, in order: x (1, 1, input_size); W as
    q_weight (rows, cols / codes per word) uint32, q_scale and, with a min, q_min (stored as
    `spec.fmt` says; today's int4: (rows, cols / group) in `dtype`), or weight (rows, cols);
    norm weight (cols,) ["rms", "layer"]; norm bias (cols,) ["layer"]; bias (rows,); residual
    (1, 1, rows); out (1, 1, rows). `threads` and `rows_per_group` override the workgroup shape."""
    n, k, dtype, f32 = spec.rows, spec.cols, spec.dtype, "float32"
    nthreads, nrows = threads or threads_for(k), rows_per_group
    if nrows > nthreads:
        raise ValueError("a workgroup needs at least one thread per row")
    prologue, act, quantized = spec.prologue, spec.act, spec.quantized
    fmt = spec.fmt
    code_bits = fmt.bits if fmt is not None else 4
    per_word = 32 // code_bits  # codes per packed word
    words_per_chunk = CHUNK // per_word  # 1 (int4) or 2 (int8)
    code_offset = T.float32(fmt.offset if fmt is not None else OFFSET)
    has_min = fmt is not None and fmt.has_min
    chunks = -(-k // CHUNK)  # 8-value chunks of the input (1 or 2 packed words of a quantized row)
    short_chunk = k % CHUNK != 0  # float weights only: the last chunk has fewer than 8 values
    chunks_per_group = spec.group_size // CHUNK
    # float16-pair scales (and mins) cost a widening per read: when the groups spread evenly over
    # the threads, a thread takes the chunks of a whole group in consecutive steps and widens its
    # scale (and min) once per group; otherwise consecutive threads take consecutive chunks.
    # (Unevenly, e.g. SmolLM2's 18 groups a row on 8 threads, a quarter of the thread-steps idle and
    # the GEMV got slower on SwiftShader; evenly, its 1536-column down projection: 133 -> 112 ms a step.)
    by_group = (quantized and fmt is not None and fmt.half_scales and chunks_per_group > 1
                and (chunks // chunks_per_group) % nthreads == 0)
    span = chunks_per_group if by_group else 1  # consecutive chunks a thread takes
    steps = -(-chunks // (nthreads * span)) * span  # chunks per thread
    ragged = chunks % (nthreads * span) != 0  # the last steps leave some threads without a chunk
    workgroups = -(-n // nrows)
    ragged_rows = n % nrows != 0
    layer_norm = prologue == "layer"
    # unused buffers get shape (1,) and are dropped from the signature at the end
    w_shape = (n, k // per_word) if quantized else (n, k)
    s_shape = (fmt.group_shape(n, k) if fmt is not None else (n, k // spec.group_size)) if quantized else (1,)
    s_dtype = fmt.group_dtype if fmt is not None else dtype
    m_shape = s_shape if has_min else (1,)
    norm_shape = (k,) if prologue in ("rms", "layer") else (1,)
    eps, inv_k = T.float32(spec.eps), T.float32(1.0 / k)
    zero = T.float32(0)
    mask = T.uint32((1 << code_bits) - 1)

    def code_dot(word, xv):
        """sum_e code_e * xv[e] over the 8 codes of a chunk (its words_per_chunk packed words)."""
        terms = [T.Cast(f32, (word[e // per_word] >> T.uint32(code_bits * (e % per_word))) & mask) * xv[e]
                 for e in range(CHUNK)]
        return functools.reduce(operator.add, terms)

    @T.prim_func(s_tir=True, private=True)
    def gemv(x_h: T.handle, w_h: T.handle, s_h: T.handle, m_h: T.handle, nw_h: T.handle, nb_h: T.handle,
             b_h: T.handle, r_h: T.handle, o_h: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        X = T.match_buffer(x_h, (1, 1, spec.input_size), dtype)
        W = T.match_buffer(w_h, w_shape, "uint32" if quantized else dtype)
        S = T.match_buffer(s_h, s_shape, s_dtype)
        M = T.match_buffer(m_h, m_shape, s_dtype)
        NW = T.match_buffer(nw_h, norm_shape, dtype)
        NB = T.match_buffer(nb_h, norm_shape, dtype)
        B = T.match_buffer(b_h, (n,) if spec.bias else (1,), dtype)
        R = T.match_buffer(r_h, (1, 1, n) if spec.residual else (1,), dtype)
        O = T.match_buffer(o_h, (1, 1, n), spec.out_dtype)
        for bx in T.thread_binding(workgroups, thread="blockIdx.x"):
            for tx in T.thread_binding(nthreads, thread="threadIdx.x"):
                with T.sblock("gemv"):
                    acc = T.sblock_alloc_buffer((nrows,), f32, scope="local")  # row partial sums
                    xv = T.sblock_alloc_buffer((CHUNK,), f32, scope="local")  # prologue(x) of a chunk
                    # 0: sum of the chunk's xv (code offset, min); 1: sum of squares (RMSNorm)
                    stat = T.sblock_alloc_buffer((2,), f32, scope="local")
                    norm = T.sblock_alloc_buffer((2,), f32, scope="local")  # LayerNorm mean, rstd
                    total = T.sblock_alloc_buffer((2,), f32, scope="local")
                    word = T.sblock_alloc_buffer((words_per_chunk,), "uint32", scope="local")  # a chunk's W words
                    # by_group: each row's widened scale and min of the current group
                    held = T.sblock_alloc_buffer((2, nrows), f32, scope="local")
                    part = T.sblock_alloc_buffer((nrows + 1, nthreads), f32, scope="shared")
                    for r in T.unroll(nrows):
                        acc[r] = zero
                    stat[1] = zero
                    if layer_norm:
                        # the input's mean and variance, from sums shifted by x[0] (precision)
                        stat_part = T.sblock_alloc_buffer((2, nthreads), f32, scope="shared")
                        stat[0] = zero
                        for c in T.serial(steps):
                            for e in T.unroll(CHUNK):
                                kk: T.let[T.int32] = (c * nthreads + tx) * CHUNK + e
                                if kk < k:
                                    stat[0] = stat[0] + (T.Cast(f32, X[0, 0, kk]) - T.Cast(f32, X[0, 0, 0]))
                                    stat[1] = stat[1] + (T.Cast(f32, X[0, 0, kk]) - T.Cast(f32, X[0, 0, 0])) * (
                                        T.Cast(f32, X[0, 0, kk]) - T.Cast(f32, X[0, 0, 0]))
                        stat_part[0, tx] = stat[0]
                        stat_part[1, tx] = stat[1]
                        T.tvm_storage_sync("shared")
                        total[0] = zero
                        total[1] = zero
                        for i in T.serial(nthreads):
                            total[0] = total[0] + stat_part[0, i]
                            total[1] = total[1] + stat_part[1, i]
                        norm[0] = total[0] * inv_k + T.Cast(f32, X[0, 0, 0])
                        norm[1] = T.rsqrt(T.max(total[1] * inv_k - total[0] * inv_k * (total[0] * inv_k), zero) + eps)
                    for c in T.serial(steps // span):
                        g: T.let[T.int32] = c * nthreads + tx  # by_group: the group this thread takes
                        if by_group:
                            if not ragged or g * span < chunks:
                                for r in T.unroll(nrows):
                                    if not ragged_rows or bx * nrows + r < n:
                                        held[0, r] = group_param(S, bx * nrows + r, g * span // chunks_per_group,
                                                                 fmt)
                                        if has_min:
                                            held[1, r] = group_param(M, bx * nrows + r, g * span // chunks_per_group,
                                                                     fmt)
                        for q in T.serial(span):
                            j: T.let[T.int32] = g * span + q  # the chunk (packed word) this thread takes
                            if not ragged or j < chunks:
                                for e in T.unroll(CHUNK):
                                    kk: T.let[T.int32] = j * CHUNK + e  # type: ignore[no-redef]  # a new TIR let
                                    if not short_chunk or kk < k:
                                        if prologue == "none":
                                            xv[e] = T.Cast(f32, X[0, 0, kk])
                                        elif prologue == "rms":
                                            # x * w here; the 1 / rms factor multiplies the finished sum
                                            xv[e] = T.Cast(f32, X[0, 0, kk])
                                            stat[1] = stat[1] + xv[e] * xv[e]
                                            xv[e] = xv[e] * T.Cast(f32, NW[kk])
                                        elif prologue == "layer":
                                            xv[e] = (T.Cast(f32, X[0, 0, kk]) - norm[0]) * norm[1] \
                                                * T.Cast(f32, NW[kk]) \
                                                + T.Cast(f32, NB[kk])
                                        elif prologue == "gated":
                                            xv[e] = tir_activation(T.Cast(f32, X[0, 0, kk]), act) * T.Cast(
                                                f32, X[0, 0, k + kk])
                                        else:
                                            xv[e] = tir_activation(T.Cast(f32, X[0, 0, kk]), act)
                                    else:
                                        xv[e] = zero
                                if quantized:
                                    # sum_e (s (q_e - o) + m) x_e = s (sum_e q_e x_e - o sum_e x_e) + m sum_e x_e;
                                    # all rows share sum_e x_e
                                    stat[0] = xv[0] + xv[1] + xv[2] + xv[3] + xv[4] + xv[5] + xv[6] + xv[7]
                                for r in T.unroll(nrows):
                                    row: T.let[T.int32] = bx * nrows + r
                                    if not ragged_rows or row < n:
                                        if quantized:
                                            for w in T.unroll(words_per_chunk):
                                                word[w] = W[row, j * words_per_chunk + w]
                                            if by_group:
                                                if has_min:
                                                    acc[r] = acc[r] + held[0, r] * code_dot(word, xv) \
                                                        + held[1, r] * stat[0]
                                                else:
                                                    acc[r] = acc[r] + held[0, r] * (code_dot(word, xv)
                                                                                    - code_offset * stat[0])
                                            elif has_min:
                                                acc[r] = acc[r] + group_param(S, row, j // chunks_per_group, fmt) * \
                                                    code_dot(word, xv) \
                                                    + group_param(M, row, j // chunks_per_group, fmt) \
                                                    * stat[0]
                                            else:
                                                acc[r] = acc[r] + T.Cast(f32, group_param(S, row, j // chunks_per_group,
                                                                                          fmt)) * (
                                                    code_dot(word, xv) - code_offset * stat[0])
                                        else:
                                            for e in T.unroll(CHUNK):
                                                if not short_chunk or j * CHUNK + e < k:
                                                    acc[r] = acc[r] + T.Cast(f32, W[row, j * CHUNK + e]) * xv[e]
                    for r in T.unroll(nrows):
                        part[r, tx] = acc[r]
                    part[nrows, tx] = stat[1]
                    T.tvm_storage_sync("shared")
                    if tx < nrows:
                        if not ragged_rows or bx * nrows + tx < n:
                            total[0] = zero
                            for i in T.serial(nthreads):
                                total[0] = total[0] + part[tx, i]
                            if prologue == "rms":
                                total[1] = zero
                                for i in T.serial(nthreads):
                                    total[1] = total[1] + part[nrows, i]
                                total[0] = total[0] * T.rsqrt(total[1] * inv_k + eps)
                            if spec.bias:
                                total[0] = total[0] + T.Cast(f32, B[bx * nrows + tx])
                            if spec.residual:
                                total[0] = total[0] + T.Cast(f32, R[0, 0, bx * nrows + tx])
                            O[0, 0, bx * nrows + tx] = T.Cast(spec.out_dtype, total[0])

    keep = [True, True, quantized, has_min, prologue in ("rms", "layer"), layer_norm, spec.bias, spec.residual, True]
    return _drop_params(gemv, keep)


def _drop_params(func: tirx.PrimFunc, keep: list[bool]) -> tirx.PrimFunc:
    """`func` without the parameters (and their buffers) that `keep` marks False; they are unused."""
    params = [p for p, k in zip(func.params, keep) if k]
    return tirx.PrimFunc(params, func.body, func.ret_type, func.attrs)


def _norm_parts(norm: nn.Module | None) -> tuple[str, float, list[Tensor]]:
    """(prologue, eps, parameters) of an RMSNorm / LayerNorm module (or no norm)."""
    if norm is None:
        return "none", 1e-5, []
    if isinstance(norm, nn.RMSNorm) and norm.bias is None:
        return "rms", float(norm.epsilon), [norm.weight]
    if isinstance(norm, nn.LayerNorm) and norm.weight is not None:
        return "layer", float(norm.eps), [norm.weight, norm.bias]
    raise TypeError(f"no fused decode prologue for {type(norm).__name__}")


def _weight_parts(layer: nn.Module) -> tuple[int, int, bool, int, list[Tensor], Tensor | None]:
    """(rows, cols, quantized, group size, weight tensors, bias) of a linear layer, or of a token
    embedding used as the tied output head."""
    if isinstance(layer, (GroupQuantLinear, GroupQuantEmbedding)):
        q_min = [layer.q_min] if layer.q_min is not None else []
        weights = [layer.q_weight, layer.q_scale, *q_min]
        if isinstance(layer, GroupQuantLinear):
            return layer.out_features, layer.in_features, True, layer.group_size, weights, layer.bias
        return layer.num, layer.dim, True, layer.group_size, weights, None
    if isinstance(layer, nn.Linear):
        return layer.out_features, layer.in_features, False, 32, [layer.weight], layer.bias
    if isinstance(layer, nn.Embedding):
        rows, cols = (int(d) for d in layer.weight.shape)
        return rows, cols, False, 32, [layer.weight], None
    raise TypeError(f"no fused decode GEMV for {type(layer).__name__}")


def _kernel_reads(layer: nn.Module) -> bool:
    """Whether the fused kernel reads this layer's weight: float, today's int4, or a `formats`
    container whose groups are whole 8-value chunks (all of them today)."""
    fmt = getattr(layer, "fmt", None)
    return fmt is None or fmt.group_size % CHUNK == 0


def _unfused(x: Tensor, layer: nn.Module, norm: nn.Module | None, act: str | None, gated: bool,
             residual: Tensor | None, out_dtype: str | None) -> Tensor:
    """`fused_linear`'s result as separate operators, for weights the kernel does not read."""
    if norm is not None:
        x = norm(x)
    if act is not None:
        if gated:
            gate, up = op.split(x, 2, axis=-1)  # (1, 1, cols) each
            x = activate(gate, act) * up
        else:
            x = activate(x, act)
    y = layer.lm_head_forward(x) if isinstance(layer, GroupQuantEmbedding) else layer(x)  # (1, 1, rows)
    if residual is not None:
        y = y + residual
    if out_dtype is not None and out_dtype != y.dtype:
        y = y.astype(out_dtype)
    return y


def fused_linear(x: Tensor, layer: nn.Module, norm: nn.Module | None = None, act: str | None = None,
                 gated: bool = False, residual: Tensor | None = None, out_dtype: str | None = None) -> Tensor:
    """One decode token through `layer` in one kernel: (1, 1, in) -> (1, 1, rows).

    `norm` (RMSNorm / LayerNorm module) normalizes x first; `act` applies an activation to x
    (with `gated`: x is [gate; up], and act(gate) * up is multiplied); the layer's bias and
    `residual` (1, 1, rows) are added; the result is cast to `out_dtype` (default: x's dtype).
    """
    if not _kernel_reads(layer):
        return _unfused(x, layer, norm, act, gated, residual, out_dtype)
    rows, cols, quantized, group, weights, bias = _weight_parts(layer)
    prologue, eps, norm_params = _norm_parts(norm)
    if act is not None:
        prologue = "gated" if gated else "act"
    spec = GemvSpec(rows, cols, quantized, dtype=x.dtype, out_dtype=out_dtype or x.dtype, group_size=group,
                    fmt=getattr(layer, "fmt", None), prologue=prologue, act=act or "silu", eps=eps,
                    bias=bias is not None, residual=residual is not None)
    args = [x, *weights, *norm_params, *([bias] if bias is not None else []),
            *([residual] if residual is not None else [])]
    return op.tensor_ir_op(gemv_func(spec), f"decode_gemv_{prologue}", args,
                           Tensor.placeholder((1, 1, rows), spec.out_dtype))
