"""Float32 Linear layers of encoders (webbuild.arch.bert) on WebGPU: a barrier-free register-tiled GEMM.

dlight's GPU Matmul stages tiles in workgroup memory behind barriers, which SwiftShader runs very
slowly (all-MiniLM-L6-v2's 24 weight matmuls took ~7.7 s for one 9-token input). As in
webbuild.kernels.prefill_gemm, each invocation here computes a tile of `TOKENS` tokens x `ROWS`
output rows with no workgroup memory,

    out[t, n] = sum_k x[t, k] * W[n, k] + bias[n]

walking k in chunks of `CHUNK` values held in registers. Tokens are the flattened (batch x seq)
rows. Thread i of workgroup b takes rows b * THREADS * ROWS + r * THREADS + i; the grid is (row
tiles, token tiles). Tokens and rows past the end are clamped when read and skipped when written.
"""

from __future__ import annotations

import functools
import operator

from tvm import tirx
from tvm.script import tirx as T

from .prefill_gemm import CHUNK, MAX_WORKGROUPS, OPAQUE, ROWS, THREADS, TOKENS


def covers(rows: int, cols: int) -> bool:
    """Whether `linear_func` makes a kernel for a (rows, cols) weight within every adapter's limits."""
    return cols % CHUNK == 0 and -(-rows // (ROWS * THREADS)) <= MAX_WORKGROUPS


@functools.cache
def linear_func(rows: int, cols: int) -> tirx.PrimFunc:
    """The scheduled PrimFunc: x (tokens, cols), W (rows, cols), bias (rows,) -> out (tokens, rows),
    all float32, tokens dynamic."""
    if not covers(rows, cols):
        raise ValueError(f"no encoder GEMM for a ({rows}, {cols}) weight")
    n, k, f32 = rows, cols, "float32"
    row_groups = -(-n // (ROWS * THREADS))
    m = tirx.Var("tokens", "int64")

    @T.prim_func(s_tir=True, private=True)
    def encoder_linear(x_h: T.handle, w_h: T.handle, b_h: T.handle, o_h: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True, "op_pattern": OPAQUE})
        X = T.match_buffer(x_h, (m, k), f32)
        W = T.match_buffer(w_h, (n, k), f32)
        B = T.match_buffer(b_h, (n,), f32)
        O = T.match_buffer(o_h, (m, n), f32)
        for by in T.thread_binding((m + TOKENS - 1) // TOKENS, thread="blockIdx.y"):
            for bx in T.thread_binding(row_groups, thread="blockIdx.x"):
                for tx in T.thread_binding(THREADS, thread="threadIdx.x"):
                    with T.sblock("encoder_linear"):
                        acc = T.sblock_alloc_buffer((TOKENS, ROWS), f32, scope="local")
                        xv = T.sblock_alloc_buffer((TOKENS, CHUNK), f32, scope="local")  # x of a chunk
                        wv = T.sblock_alloc_buffer((CHUNK,), f32, scope="local")  # a row's chunk
                        for t in T.unroll(TOKENS):
                            for r in T.unroll(ROWS):
                                acc[t, r] = T.float32(0)
                        for j in T.serial(k // CHUNK):
                            for t in T.unroll(TOKENS):
                                for e in T.unroll(CHUNK):
                                    xv[t, e] = X[T.min(by * TOKENS + t, m - 1), j * CHUNK + e]
                            for r in T.unroll(ROWS):
                                for e in T.unroll(CHUNK):
                                    wv[e] = W[T.min(T.Cast("int64", (bx * ROWS + r) * THREADS + tx), T.int64(n - 1)),
                                              j * CHUNK + e]
                                for t in T.unroll(TOKENS):
                                    acc[t, r] = acc[t, r] + functools.reduce(
                                        operator.add, [xv[t, e] * wv[e] for e in range(CHUNK)])
                        for t in T.unroll(TOKENS):
                            for r in T.unroll(ROWS):
                                if by * TOKENS + t < m and (bx * ROWS + r) * THREADS + tx < n:
                                    O[by * TOKENS + t, (bx * ROWS + r) * THREADS + tx] = (
                                        acc[t, r] + B[(bx * ROWS + r) * THREADS + tx])

    return encoder_linear
