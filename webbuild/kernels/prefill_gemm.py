"""Prefill (many-token) matmuls of group-quantized weights for WebGPU: a barrier-free register-tiled GEMM.

dlight's generic GPU Matmul stages tiles of x and W in workgroup memory behind barriers, which CPU
WebGPU implementations (SwiftShader) run very slowly. `gemm_func` needs no workgroup memory and no
barrier: each invocation computes a tile of `TOKENS` tokens x `ROWS` output rows,

    out[0, t, n] = sum_k x[0, t, k] * W[n, k]     (t in its token tile, n in its row tile)

walking k in chunks of 8 values (one int4 word, two int8 words). Per chunk it loads the 8 values of
x of each of its tokens into registers, and per row decodes the chunk's codes once (code - offset)
* scale (+ min) (float16-pair scales and mins widened by integer operations, `group_quant.widen_half`)
and multiplies them with every token's values: each weight is dequantized once per `TOKENS` tokens,
each x value read once per `ROWS` rows. Arithmetic is float32.

Weights read: today's symmetric int4 (`q_weight` (n, k/8) uint32, float32 `q_scale` (n, k/group))
and every `formats` container (int4 / int8 codes, with or without a min, groups of 16 / 32, float32
or float16-pair scales). `prefill_gemm_pass` swaps group_quant's dequantize-matmul PrimFunc of a
float32 many-token matmul (x (1, seq_len, k)) for this kernel, with the same parameters; matmuls it
does not recognize keep dlight's schedules.

Workgroups: `THREADS` invocations along the rows (thread i of workgroup b takes rows b * THREADS *
ROWS + r * THREADS + i), a grid of (row tiles, token tiles). Sized within the limits WebGPU grants
every adapter (256 invocations per workgroup, 65535 workgroups per grid dimension): the WGSL is
compiled ahead of time and must run on any adapter, so a kernel whose row grid would exceed that
is not swapped in. Tokens and rows past the end are clamped when read (no branch in the loop)
and skipped when written.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass

import tvm
import tvm_ffi
from tvm import te, tirx
from tvm.script import tirx as T

from ..quant.formats import FORMATS, WeightFormat
from ..quant.group_quant import OFFSET, _dequantize_matmul_te, group_param

# Tile and workgroup shape, measured on SwiftShader (1536 x 576 int4, 37 tokens; dlight ~1400-2000 ms):
# 4 x 4 tiles, 32 threads 254 ms; 4 x 8, 16 threads 176 ms; 8 x 8, 8 threads 89 ms; 12 x 12 88 ms;
# 16 x 8 138 ms; 16 x 16 136 ms (more live registers than the JIT keeps)
TOKENS = 8  # tokens per invocation's tile
ROWS = 8  # output rows per invocation's tile
THREADS = 8  # invocations per workgroup
CHUNK = 8  # input values per step: one int4 word, two int8 words
MAX_INVOCATIONS = 256  # maxComputeInvocationsPerWorkgroup every WebGPU adapter grants
MAX_WORKGROUPS = 65535  # maxComputeWorkgroupsPerDimension every WebGPU adapter grants
OPAQUE = 8  # TVM's kOpaque op pattern: not fused with its neighbours


@dataclass(frozen=True)
class GemmSpec:
    """One prefill matmul: W (rows, cols) group-quantized; `fmt` its `formats` container (None:
    today's int4 with float32 scales and `group_size`); x (1, seq_len, cols) float32."""

    rows: int
    cols: int
    group_size: int = 32
    fmt: WeightFormat | None = None

    def __post_init__(self):
        if self.cols % self.group_size or self.group_size % CHUNK:
            raise ValueError(f"cols {self.cols} is not a whole number of {self.group_size}-value groups")
        if self.fmt is not None and self.fmt.group_size != self.group_size:
            raise ValueError("a weight format needs its own group size")


def covers(spec: GemmSpec, tokens: int = TOKENS, rows: int = ROWS, threads: int = THREADS) -> bool:
    """Whether `gemm_func` makes a kernel for `spec` within every adapter's limits."""
    return threads <= MAX_INVOCATIONS and -(-spec.rows // (rows * threads)) <= MAX_WORKGROUPS


@functools.cache
def gemm_func(spec: GemmSpec, tokens: int = TOKENS, rows: int = ROWS, threads: int = THREADS) -> tirx.PrimFunc:
    """The scheduled PrimFunc: x (1, seq_len, cols) f32, q_weight (rows, cols / codes per word)
    uint32, q_scale (and q_min with a min) as `spec.fmt` stores them, out (1, seq_len, rows) f32.
    `tokens`, `rows` and `threads` override the tile and workgroup shape."""
    n, k, fmt, f32 = spec.rows, spec.cols, spec.fmt, "float32"
    if not covers(spec, tokens, rows, threads):
        raise ValueError(f"a {n}-row matmul exceeds the workgroup limits with these tiles")
    bits = fmt.bits if fmt is not None else 4
    per_word = 32 // bits  # codes per packed word
    words = CHUNK // per_word  # packed words per chunk: 1 (int4) or 2 (int8)
    offset = T.float32(fmt.offset if fmt is not None else OFFSET)
    has_min = fmt is not None and fmt.has_min
    chunks = k // CHUNK
    chunks_per_group = spec.group_size // CHUNK
    mask = T.uint32((1 << bits) - 1)
    s_shape = fmt.group_shape(n, k) if fmt is not None else (n, k // spec.group_size)
    s_dtype = fmt.group_dtype if fmt is not None else f32
    m_shape = s_shape if has_min else (1,)
    row_groups = -(-n // (rows * threads))
    seq = tirx.Var("seq_len", "int64")

    def code_at(word, e):
        """Code e of a chunk (its `words` packed words), as float32."""
        return T.Cast(f32, (word[e // per_word] >> T.uint32(bits * (e % per_word))) & mask)

    @T.prim_func(s_tir=True, private=True)
    def gemm(x_h: T.handle, w_h: T.handle, s_h: T.handle, m_h: T.handle, o_h: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True, "op_pattern": OPAQUE})
        X = T.match_buffer(x_h, (1, seq, k), f32)
        W = T.match_buffer(w_h, (n, k // per_word), "uint32")
        S = T.match_buffer(s_h, s_shape, s_dtype)
        M = T.match_buffer(m_h, m_shape, s_dtype)
        O = T.match_buffer(o_h, (1, seq, n), f32)
        for by in T.thread_binding((seq + tokens - 1) // tokens, thread="blockIdx.y"):
            for bx in T.thread_binding(row_groups, thread="blockIdx.x"):
                for tx in T.thread_binding(threads, thread="threadIdx.x"):
                    with T.sblock("prefill_gemm"):
                        acc = T.sblock_alloc_buffer((tokens, rows), f32, scope="local")
                        xv = T.sblock_alloc_buffer((tokens, CHUNK), f32, scope="local")  # x of a chunk
                        wv = T.sblock_alloc_buffer((CHUNK,), f32, scope="local")  # a row's dequantized chunk
                        word = T.sblock_alloc_buffer((words,), "uint32", scope="local")
                        par = T.sblock_alloc_buffer((2,), f32, scope="local")  # the group's scale, min
                        for t in T.unroll(tokens):
                            for r in T.unroll(rows):
                                acc[t, r] = T.float32(0)
                        for j in T.serial(chunks):
                            for t in T.unroll(tokens):
                                for e in T.unroll(CHUNK):
                                    xv[t, e] = X[0, T.min(by * tokens + t, seq - 1), j * CHUNK + e]
                            for r in T.unroll(rows):
                                row: T.let[T.int64] = T.min(T.Cast("int64", (bx * rows + r) * threads + tx),
                                                            T.int64(n - 1))
                                for w in T.unroll(words):
                                    word[w] = W[row, j * words + w]
                                par[0] = group_param(S, row, j // chunks_per_group, fmt)
                                if has_min:
                                    par[1] = group_param(M, row, j // chunks_per_group, fmt)
                                for e in T.unroll(CHUNK):
                                    if has_min:
                                        wv[e] = code_at(word, e) * par[0] + par[1]
                                    else:
                                        wv[e] = (code_at(word, e) - offset) * par[0]
                                for t in T.unroll(tokens):
                                    acc[t, r] = acc[t, r] + functools.reduce(
                                        operator.add, [xv[t, e] * wv[e] for e in range(CHUNK)])
                        for t in T.unroll(tokens):
                            for r in T.unroll(rows):
                                if by * tokens + t < seq and (bx * rows + r) * threads + tx < n:
                                    O[0, by * tokens + t, (bx * rows + r) * threads + tx] = acc[t, r]

    if has_min:
        return gemm
    params = [p for i, p in enumerate(gemm.params) if i != 3]
    return tirx.PrimFunc(params, gemm.body, gemm.ret_type, gemm.attrs)


def _candidates(rows: int, cols: int, q_weight, q_scale, has_min: bool) -> list[WeightFormat | None]:
    """The weight formats (None: today's int4) whose parameters have these shapes and dtypes."""
    words = int(q_weight.shape[1])
    found: list[WeightFormat | None] = []
    if not has_min and q_scale.dtype == "float32" and words * 8 == cols:
        found.append(None)
    for fmt in FORMATS.values():
        if (fmt.has_min == has_min and words * fmt.values_per_word == cols and fmt.group_dtype == q_scale.dtype
                and cols % fmt.group_size == 0
                and fmt.group_shape(rows, cols) == tuple(int(d) for d in q_scale.shape)):
            found.append(fmt)
    return found


def _static(extent) -> int | None:
    return int(extent) if isinstance(extent, (int, tirx.IntImm)) else None


def match_prefill_matmul(func: tirx.PrimFunc) -> GemmSpec | None:
    """The spec of `func` when it is exactly group_quant's float32 dequantize-matmul of a
    many-token x (1, seq_len, cols) (seq_len a variable); else None."""
    if len(func.params) not in (4, 5) or not all(isinstance(p.ty, tirx.BufferType) for p in func.params):
        return None
    x, q_weight, q_scale = func.params[:3]
    q_min = func.params[3] if len(func.params) == 5 else None
    weights = [q_weight, q_scale] + ([q_min] if q_min is not None else [])
    if x.dtype != "float32" or q_weight.dtype != "uint32" or len(x.shape) != 3 or _static(x.shape[0]) != 1:
        return None
    if not isinstance(x.shape[1], tirx.Var) or any(len(p.shape) != 2 for p in weights):
        return None
    dims = [_static(d) for d in (x.shape[2], *(d for p in weights for d in p.shape))]
    if None in dims or (q_min is not None and q_min.dtype != q_scale.dtype):
        return None
    cols, rows = int(x.shape[2]), int(q_weight.shape[0])
    for fmt in _candidates(rows, cols, q_weight, q_scale, q_min is not None):
        group_size = fmt.group_size if fmt is not None else cols // max(int(q_scale.shape[1]), 1)
        if int(q_scale.shape[1]) == 0 or cols % group_size or group_size % CHUNK:
            continue
        tensors = [te.placeholder(p.shape, p.dtype) for p in (x, *weights)]
        result = _dequantize_matmul_te(tensors[0], tensors[1], tensors[2], cols, group_size, "float32", fmt,
                                       tensors[3] if q_min is not None else None)
        reference = te.create_prim_func([*tensors, result], index_dtype_override="int64").without_attr("global_symbol")
        if tvm_ffi.structural_equal(func.without_attr("op_pattern"), reference, map_free_vars=True):
            return GemmSpec(rows, cols, group_size, fmt)
    return None


def prefill_gemm_pass():
    """Module pass: replace each recognized prefill dequantize-matmul PrimFunc by `gemm_func`'s
    kernel (same parameters and result, so the Relax calls are unchanged)."""

    @tvm.transform.module_pass(opt_level=0, name="WebGPUPrefillGemm")
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        for gvar, func in list(mod.functions_items()):
            if not isinstance(func, tirx.PrimFunc):
                continue
            spec = match_prefill_matmul(func)
            if spec is not None and covers(spec):
                mod[gvar] = gemm_func(spec)
        return mod

    return _pass
