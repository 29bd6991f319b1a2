"""Bidirectional attention over a padded batch for encoders (webbuild.arch.bert) on WebGPU, one TIR
kernel: one GPU thread per (sequence, head, query row) walks the keys once with an online softmax
(running max and sum), the additive padding mask applied to each score; no shared memory, no barriers.

It replaces the two batched attention matmuls (scores = q k^T * scale + mask, probs @ v) whose dlight
GEMM pipelines SwiftShader never finishes compiling. Inputs are the fused [q; k; v] projection as it
comes out of the matmul, so no split or transpose runs either.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.script import tirx as T

THREADS = 64  # GPU threads per workgroup
MASK_BIAS = -1e9  # added to a padding key's score: exp() of it is 0 in float32 (the Relax path's bias)
FIRST_MAX = -3.0e38  # the running max before any key (finite: exp(FIRST_MAX - score) is 0, never NaN)


def encoder_attention_func(heads: int, head_dim: int, dtype: str = "float32") -> tirx.PrimFunc:
    """The attention PrimFunc, serial (unscheduled) loops: see `encoder_attention_func_gpu`.

    qkv: (batch, seq, 3 * heads * head_dim) `dtype`, [q | k | v] along the last axis, head-major
    inside each; mask: (batch, seq) int32, 1 a real token, 0 padding (keys with 0 get MASK_BIAS);
    out: (batch, seq, heads * head_dim) `dtype`. Accumulates in float32; scores scaled by
    1 / sqrt(head_dim)."""
    hidden = heads * head_dim
    scale = float(head_dim) ** -0.5

    @T.prim_func(s_tir=True)
    def encoder_attention(var_qkv: T.handle, var_mask: T.handle, var_out: T.handle):
        T.func_attr({"tirx.noalias": True})
        batch, seq = T.int64(), T.int64()
        qkv = T.match_buffer(var_qkv, (batch, seq, 3 * hidden), dtype)
        mask = T.match_buffer(var_mask, (batch, seq), "int32")
        out = T.match_buffer(var_out, (batch, seq, hidden), dtype)
        for b, h, i in T.grid(batch, heads, seq):
            with T.sblock("attention"):
                vb, vh, vi = T.axis.remap("SSS", [b, h, i])
                # running max, running sum, this key's score, its weight, the old terms' rescale
                st = T.sblock_alloc_buffer((5,), "float32", scope="local")
                q = T.sblock_alloc_buffer((head_dim,), "float32", scope="local")  # this row's query, scaled
                acc = T.sblock_alloc_buffer((head_dim,), "float32", scope="local")  # sum of weight * v
                for d in range(head_dim):
                    q[d] = T.Cast("float32", qkv[vb, vi, vh * head_dim + d]) * T.float32(scale)
                    acc[d] = T.float32(0)
                st[0] = T.float32(FIRST_MAX)
                st[1] = T.float32(0)
                for j in range(seq):
                    st[2] = T.if_then_else(mask[vb, j] != 0, T.float32(0), T.float32(MASK_BIAS))
                    for d in range(head_dim):
                        st[2] = st[2] + q[d] * T.Cast("float32", qkv[vb, j, hidden + vh * head_dim + d])
                    st[4] = T.exp(st[0] - T.max(st[0], st[2]))
                    st[3] = T.exp(st[2] - T.max(st[0], st[2]))
                    st[0] = T.max(st[0], st[2])
                    st[1] = st[1] * st[4] + st[3]
                    for d in range(head_dim):
                        acc[d] = acc[d] * st[4] + st[3] * T.Cast("float32", qkv[vb, j, 2 * hidden + vh * head_dim + d])
                for d in range(head_dim):
                    out[vb, vi, vh * head_dim + d] = T.Cast(dtype, acc[d] / st[1])

    return encoder_attention


def encoder_attention_func_gpu(heads: int, head_dim: int, dtype: str = "float32") -> tirx.PrimFunc:
    """`encoder_attention_func` with (sequence x head x query row) bound to GPU threads, `THREADS`
    per workgroup."""
    func = encoder_attention_func(heads, head_dim, dtype)
    sch = s_tir.Schedule(func)
    b, h, i = sch.get_loops(sch.get_sblock("attention"))
    blocks, threads = sch.split(sch.fuse(b, h, i), [None, THREADS])
    sch.bind(blocks, "blockIdx.x")
    sch.bind(threads, "threadIdx.x")
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)
