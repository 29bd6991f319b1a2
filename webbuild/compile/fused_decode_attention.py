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

The cache's C++ runtime (`paged_kv_cache.cc`, compiled into webbuild's wasm runtime) learns of
the kernel from the decode entry of its constructor arguments: ``("webbuild_fused", fused,
tir_attention_decode)`` instead of ``("tirx", tir_attention_decode)``. `RUNTIME_PATCHES` are the
source edits that make it call the fused kernel when a call is one token per sequence on a
plain (not sliding-window) MHA layer with no forks, RoPE applied at append (or none), and no KV
transfer; every other call takes TVM's own path with the original kernels. Only WebGPU builds
use it (`FusedDecodeKVCache`), and they only run on webbuild's runtime; the native CPU runtime of
the Python runner never sees the new tag.
"""

from __future__ import annotations

import math

from tvm import relax as rx
from tvm import tirx
from tvm.ir import StringImm
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache, RopeMode, TIRPagedKVCache
from tvm.relax.frontend.nn.llm.position_embedding import switch_rope_freq_func
from tvm.script import tirx as T

PAGE_SIZE = 16  # the page size TVM's KV-cache kernels are generated for (and the runtimes pass)
DECODE_ARG = 18  # index of the decode-attention entry in the create call (ExternFunc first)
FUSED_TAG = "webbuild_fused"
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


class _DecodeEntryHook(PagedKVCache):
    """Sits between TIRPagedKVCache and PagedKVCache in FusedDecodeKVCache's MRO, so that it sees
    the create call before it is emitted."""

    def __init__(self, _expr, _name):
        super().__init__(_expr=self._with_fused_entry(_expr), _name=_name)


class FusedDecodeKVCache(TIRPagedKVCache, _DecodeEntryHook):
    """A WebGPU `TIRPagedKVCache` whose decode entry also carries the fused kernel:
    ``fused_decode_kernel(**kernel)`` is added to the current BlockBuilder and the create call's entry
    becomes ``(FUSED_TAG, fused, tir_attention_decode)``. `kernel` holds `fused_decode_kernel`'s
    arguments; the other keyword arguments are TIRPagedKVCache's."""

    def __init__(self, kernel: dict, **kwargs):
        self._kernel = kernel
        super().__init__(**kwargs)

    def _with_fused_entry(self, call: rx.Call) -> rx.Call:
        args = list(call.args)
        entry = args[DECODE_ARG] if len(args) > DECODE_ARG else None
        if not (isinstance(entry, rx.Tuple) and len(entry.fields) == 2 and isinstance(entry.fields[0], StringImm)
                and entry.fields[0].value == "tirx"):
            raise TypeError("TVM's paged KV cache create call has an unexpected layout (apache-tvm 0.27 expected)")
        fused = rx.BlockBuilder.current().add_func(fused_decode_kernel(**self._kernel),
                                                   "webbuild_fused_decode_attention")
        args[DECODE_ARG] = rx.Tuple([StringImm(FUSED_TAG), fused, entry.fields[1]])
        return rx.Call(call.op, args, call.attrs, call.ty_args)


# ----------------------------------------------------------------------------- runtime patches

_DECODE_FUNC_CLASS = (
    "  explicit PagedDecodeFunc(ffi::Function attn_func, AttnKind attn_kind,\n"
    "                           AttnBackendKind backend_kind)\n"
    "      : AttnBackendFunc(std::move(attn_func), attn_kind, backend_kind) {}\n"
)
_CONVERT_DECODE = (
    "  ffi::String backend_name = args[0].cast<ffi::String>();\n"
    "  if (backend_name == \"tirx\") {\n"
    "    TVM_FFI_ICHECK_EQ(args.size(), 2);\n"
    "    ffi::Function attn_func = args[1].cast<ffi::Function>();\n"
    "    return std::make_unique<TIRPagedDecodeFunc>(std::move(attn_func), attn_kind);\n"
    "  }\n"
)
_ATTENTION_WITH_FUSED_QKV = (
    "  void AttentionWithFusedQKV(int64_t layer_id, Tensor qkv_data, ffi::Optional<Tensor> mask,\n"
    "                             Tensor o_data, double sm_scale) final {\n"
)
_SPLIT_ROTARY = "    // Part 2. Split fused qkv and apply rotary embedding to q/k data.\n"

_FUSED_DECODE_METHOD = """  /*! \\brief webbuild: one-token attention in one kernel (split + RoPE + append + attention) when
   *  the decode entry carries it and the call allows it; false to take the unfused path. */
  bool WebbuildFusedDecode(int64_t local_layer_id, const Tensor& qkv_data, const Tensor& o_data,
                           double sm_scale) {
    if (f_attention_decode_ == nullptr || !f_attention_decode_->webbuild_fused.has_value()) return false;
    if (!append_before_attn_ || num_depths_ != 1 || !use_decode_kernel_[0] || !is_chain_on_depths_[0]) {
      return false;
    }
    if (support_sliding_window_ || attn_kinds_[local_layer_id + layer_id_begin_offset_] != AttnKind::kMHA) {
      return false;
    }
    if (rope_ext_factors_.has_value() || transfer_kv_ || page_to_page_transfer_kv_ ||
        rope_mode_ == RoPEMode::kInline || page_indices_on_depths_view_[0]->shape[0] == 0) {
      return false;
    }
    f_attention_decode_->webbuild_fused.value()(
        qkv_data, pages_[local_layer_id], page_indptr_on_depths_view_[0], page_indices_on_depths_view_[0],
        length_info_on_depths_view_[0], q_rope_position_map_view_, o_data, merged_attn_lse_view_,
        static_cast<int64_t>(rope_mode_ == RoPEMode::kNormal), sm_scale);
    return true;
  }

"""

#: {staged source path: {exact TVM 0.27 text: replacement}} for webbuild's wasm runtime.
RUNTIME_PATCHES = {
    "src/runtime/vm/attn_backend.h": {
        _DECODE_FUNC_CLASS: _DECODE_FUNC_CLASS
        + "  /*! \\brief webbuild's fused one-token kernel (split + RoPE + append + attention), if any. */\n"
        + "  ffi::Optional<ffi::Function> webbuild_fused;\n",
    },
    "src/runtime/vm/attn_backend.cc": {
        _CONVERT_DECODE: "  ffi::String backend_name = args[0].cast<ffi::String>();\n"
        f"  if (backend_name == \"{FUSED_TAG}\") {{\n"
        "    TVM_FFI_ICHECK_EQ(args.size(), 3);\n"
        "    auto func = std::make_unique<TIRPagedDecodeFunc>(args[2].cast<ffi::Function>(), attn_kind);\n"
        "    func->webbuild_fused = args[1].cast<ffi::Function>();\n"
        "    return func;\n"
        "  }\n" + _CONVERT_DECODE.split("\n", 1)[1],
    },
    "src/runtime/vm/paged_kv_cache.cc": {
        _ATTENTION_WITH_FUSED_QKV: _FUSED_DECODE_METHOD + _ATTENTION_WITH_FUSED_QKV,
        _SPLIT_ROTARY: "    if (WebbuildFusedDecode(local_layer_id, qkv_data_view, o_data_view, sm_scale)) return;\n"
        + _SPLIT_ROTARY,
    },
}
