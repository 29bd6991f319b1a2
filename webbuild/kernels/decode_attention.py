"""One WebGPU kernel for a decode step's attention: split + RoPE + KV append + paged attention.

TVM's paged KV cache runs a one-token attention call as three kernels: `tir_split_rotary` (split
the fused q/k/v and rotate q and k), `kv_cache_transpose_append` (write k and v into the pages)
and `batch_decode_paged_kv` (attention over the pages, one workgroup per KV head of up to 512
threads). `fused_decode_kernel` does all three in one dispatch: one workgroup per (sequence, query
head) reads the raw fused q/k/v, rotates q and its KV head's new k (each thread a share of the
dimensions, shared through workgroup memory), writes k and v into the cache (the first query head
of each group does; the others use their own copy of the new token rather than read it back), and
attends with per-thread online softmax over the positions, merged across the workgroup behind a
second barrier.

How the paged KV cache learns of the kernel (its create call and its C++ runtime) is a change
to TVM: webbuild.tvm_patches.fused_decode_entry. Only WebGPU builds use it. The kernel is checked
against TVM's unfused kernels on the same cache in tests/test_webgpu_attention.py.
"""

from __future__ import annotations

import math

from tvm import tirx
from tvm.relax.frontend.nn.llm.kv_cache import RopeMode
from tvm.relax.frontend.nn.llm.position_embedding import switch_rope_freq_func
from tvm.script import tirx as T

from .kv_page import KV_PAGE_SIZE as PAGE_SIZE

# Threads per workgroup, thread t taking positions t, t + 16, ... CPU WebGPU implementations pay per
# invocation (SwiftShader, SmolLM2 decode: 30 calls take ~67 ms with 32 threads, ~9 ms with 16);
# real GPUs get B x heads workgroups of 16 threads, which suits short and medium contexts.
MAX_THREADS = 16
SHARED_FLOATS = 4096  # 16 KiB: WebGPU's guaranteed workgroup storage


def threads_for(head_dim: int) -> int:
    """Threads per workgroup: a power of two <= MAX_THREADS whose workgroup memory (the merge
    buffer, threads x (head_dim + 2) floats, and the rotated q and k) fits the guaranteed storage."""
    threads = MAX_THREADS
    while threads > 1 and threads * (head_dim + 2) + 2 * head_dim > SHARED_FLOATS:
        threads //= 2
    return threads


def supports(rope_mode: RopeMode, rope_scaling: dict) -> bool:
    """Whether the fused kernel computes this RoPE exactly as `tir_split_rotary` does."""
    if rope_mode not in (RopeMode.NORMAL, RopeMode.NONE):
        return False
    return rope_scaling.get("rope_type") not in ("gptj", "longrope")


def fused_decode_kernel(num_heads: int, num_kv_heads: int, head_dim: int, dtype: str, rotary_dim: int,
                        rope_theta: float, rope_scale: float, rope_scaling: dict) -> tirx.PrimFunc:
    """The fused PrimFunc. Arguments: qkv (B, heads + 2 kv_heads, head_dim), pages (pages, 2,
    kv_heads, PAGE_SIZE, head_dim), page_indptr (B + 1,), page_values (nnz,), last_page_len (B,),
    q_rope_position (B,), output (B, heads, head_dim), lse (B, heads), apply_rope, sm_scale."""
    H, KV, D, R = num_heads, num_kv_heads, head_dim, rotary_dim
    G = H // KV
    NT = threads_for(D)
    f32 = "float32"
    freq_fn = switch_rope_freq_func(rope_scaling)
    scale = tirx.const(rope_scale, f32)
    log2e = math.log2(math.e)
    steps_d = -(-D // NT)

    def rotated(QKV, b, row, d, pos, apply_rope):
        """RoPE of QKV[b, row, d] at `pos`, rounded to `dtype` as tir_split_rotary stores it."""
        x = QKV[b, row, d]
        cos_freq, sin_freq, var_map = freq_fn(T.Cast(f32, pos) * scale, d, R, rope_theta, f32)
        partner = tirx.if_then_else(d < R // 2, -QKV[b, row, d + R // 2], QKV[b, row, d - R // 2])
        expr = (cos_freq * x.astype(f32) + sin_freq * partner.astype(f32)).astype(dtype)
        for var, value in var_map.items():
            expr = tirx.Let(var, value, expr)
        return tirx.if_then_else(tirx.all(apply_rope > 0, d < R), expr, x)

    @T.prim_func(s_tir=True, private=True)
    def fused(qkv_h: T.handle, pages_h: T.handle, indptr_h: T.handle, values_h: T.handle, length_h: T.handle,
              qpos_h: T.handle, out_h: T.handle, lse_h: T.handle, apply_rope: T.int32, sm_scale: T.float32):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        B = T.int32()
        nnz = T.int32()
        max_pages = T.int32()
        pages_offset = T.int64()
        indptr_offset = T.int32()
        values_offset = T.int32()
        length_offset = T.int32()
        qpos_offset = T.int32()
        QKV = T.match_buffer(qkv_h, (B, H + 2 * KV, D), dtype)
        pages = T.match_buffer(pages_h, (max_pages, 2, KV, PAGE_SIZE, D), dtype, elem_offset=pages_offset)
        indptr = T.match_buffer(indptr_h, (B + 1,), "int32", elem_offset=indptr_offset)
        values = T.match_buffer(values_h, (nnz,), "int32", elem_offset=values_offset)
        last_len = T.match_buffer(length_h, (B,), "int32", elem_offset=length_offset)
        qpos = T.match_buffer(qpos_h, (B,), "int32", elem_offset=qpos_offset)
        O = T.match_buffer(out_h, (B, H, D), dtype)
        LSE = T.match_buffer(lse_h, (B, H), f32)
        for b in T.thread_binding(B, thread="blockIdx.x"):
            for h in T.thread_binding(H, thread="blockIdx.y"):
                for tx in T.thread_binding(NT, thread="threadIdx.x"):
                    with T.sblock("attn"):
                        T.reads()
                        T.writes()
                        q = T.sblock_alloc_buffer((D,), f32, scope="local")  # rotated query
                        kn = T.sblock_alloc_buffer((D,), f32, scope="local")  # the new token's rotated key
                        acc = T.sblock_alloc_buffer((D,), f32, scope="local")  # sum_p w_p v_p
                        st = T.sblock_alloc_buffer((4,), f32, scope="local")  # max, denominator, score, rescale
                        merged = T.sblock_alloc_buffer((3,), f32, scope="local")  # max, denominator, output
                        knew = T.sblock_alloc_buffer((1,), dtype, scope="local")  # one rotated new-k value
                        qk = T.sblock_alloc_buffer((2, D), f32, scope="shared")  # rotated q and new k
                        red = T.sblock_alloc_buffer((NT, D + 2), f32, scope="shared")
                        g: T.let[T.int32] = h // G
                        begin: T.let[T.int32] = indptr[b]
                        end: T.let[T.int32] = indptr[b + 1]
                        length: T.let[T.int32] = (end - begin - 1) * PAGE_SIZE + last_len[b]
                        last_page: T.let[T.int32] = values[end - 1]
                        last_slot: T.let[T.int32] = last_len[b] - 1
                        # each thread rotates a share of q and k (and stores k, v) once for all
                        for i in T.serial(steps_d):
                            if i * NT + tx < D:
                                knew[0] = rotated(QKV, b, H + g, i * NT + tx, qpos[b], apply_rope)
                                qk[0, i * NT + tx] = T.Cast(f32, rotated(QKV, b, h, i * NT + tx, qpos[b], apply_rope))
                                qk[1, i * NT + tx] = T.Cast(f32, knew[0])
                                if h % G == 0:
                                    pages[last_page, 0, g, last_slot, i * NT + tx] = knew[0]
                                    pages[last_page, 1, g, last_slot, i * NT + tx] = QKV[b, H + KV + g, i * NT + tx]
                        T.tvm_storage_sync("shared")
                        for d in T.unroll(D):
                            q[d] = qk[0, d]
                            kn[d] = qk[1, d]
                        st[0] = T.float32(-5e4)
                        st[1] = T.float32(0)
                        for d in T.unroll(D):
                            acc[d] = T.float32(0)
                        for it in T.serial((length + NT - 1) // NT):
                            p: T.let[T.int32] = it * NT + tx
                            if p < length:
                                page: T.let[T.int32] = values[begin + p // PAGE_SIZE]
                                slot: T.let[T.int32] = p % PAGE_SIZE
                                st[2] = T.float32(0)
                                if p == length - 1:
                                    for d in T.unroll(D):
                                        st[2] = st[2] + q[d] * kn[d]
                                else:
                                    for d in T.unroll(D):
                                        st[2] = st[2] + q[d] * T.Cast(f32, pages[page, 0, g, slot, d])
                                st[2] = st[2] * (sm_scale * T.float32(log2e))
                                st[3] = T.exp2(st[0] - T.max(st[0], st[2]))
                                st[0] = T.max(st[0], st[2])
                                st[2] = T.exp2(st[2] - st[0])
                                st[1] = st[1] * st[3] + st[2]
                                if p == length - 1:
                                    for d in T.unroll(D):
                                        acc[d] = acc[d] * st[3] + st[2] * T.Cast(f32, QKV[b, H + KV + g, d])
                                else:
                                    for d in T.unroll(D):
                                        acc[d] = acc[d] * st[3] + st[2] * T.Cast(f32, pages[page, 1, g, slot, d])
                        for d in T.unroll(D):
                            red[tx, d] = acc[d]
                        red[tx, D] = st[0]
                        red[tx, D + 1] = st[1]
                        T.tvm_storage_sync("shared")
                        merged[0] = T.float32(-5e4)
                        for t in T.serial(NT):
                            merged[0] = T.max(merged[0], red[t, D])
                        merged[1] = T.float32(0)
                        for t in T.serial(NT):
                            merged[1] = merged[1] + red[t, D + 1] * T.exp2(red[t, D] - merged[0])
                        for i in T.serial(steps_d):
                            if i * NT + tx < D:
                                merged[2] = T.float32(0)
                                for t in T.serial(NT):
                                    merged[2] = merged[2] + red[t, i * NT + tx] * T.exp2(red[t, D] - merged[0])
                                O[b, h, i * NT + tx] = T.Cast(dtype, merged[2] / merged[1])
                        if tx == 0:
                            LSE[b, h] = merged[0] + T.log2(merged[1])

    return fused
