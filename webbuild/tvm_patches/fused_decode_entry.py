"""The fused decode attention's hook into TVM's paged KV cache: its create call and its C++ runtime.

`FusedDecodeKVCache` is a `TIRPagedKVCache` whose create call carries webbuild's fused one-token
attention kernel (webbuild.kernels.decode_attention) in its decode entry: ``("webbuild_fused",
fused, tir_attention_decode)`` instead of ``("tirx", tir_attention_decode)``. `RUNTIME_PATCHES`
are the source edits to the cache's C++ runtime (`paged_kv_cache.cc`, compiled into webbuild's
wasm runtime) that make it call the fused kernel when a call is one token per sequence on a
plain (not sliding-window) MHA layer with no forks, RoPE applied at append (or none), and no KV
transfer; every other call takes TVM's own path with the original kernels. Only WebGPU builds
use it, and they only run on webbuild's runtime; the native CPU runtime of the Python runner
never sees the new tag. Both halves fail loudly when TVM's code no longer has their anchors.
"""

from __future__ import annotations

from tvm import relax as rx
from tvm.ir import StringImm
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache, TIRPagedKVCache

from ..errors import ToolchainError
from ..kernels.decode_attention import fused_decode_kernel
from .pinned import UPGRADE_FIX

DECODE_ARG = 18  # index of the decode-attention entry in the create call (ExternFunc first)
FUSED_TAG = "webbuild_fused"


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
            raise ToolchainError("TVM's paged KV cache create call has no ('tirx', decode kernel) entry "
                                 f"at argument {DECODE_ARG}", fix=UPGRADE_FIX)
        fused = rx.BlockBuilder.current().add_func(fused_decode_kernel(**self._kernel),
                                                   "webbuild_fused_decode_attention")
        args[DECODE_ARG] = rx.Tuple([StringImm(FUSED_TAG), fused, entry.fields[1]])
        return rx.Call(call.op, args, call.attrs, call.ty_args)


# ----------------------------------------------------------------------------- C++ runtime patches

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

"""  # noqa: E501 (C++ spliced verbatim into the wasm runtime, whose cache key hashes the patched source)

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
