"""Every change webbuild makes to TVM, in one place, with what to re-check on a TVM upgrade.

`PATCHES` is the inventory: each entry names its module here, its kind (a text patch to TVM's C++
runtime sources, a rewrite of TIR in the exported module, or an override of a TVM Python
function), the anchor it depends on (the exact TVM text, symbol or attribute whose absence makes
it fail loudly with a ToolchainError) and what to re-check when TVM moves. All of them were
written against `pinned.PINNED_TVM`; tests/test_tvm_patches.py checks that the installed TVM is
that release, that every anchor is still there, that each patch takes effect, and that every
module in this package is listed.

This module is TVM-free (the CLI and the wasm runtime's cache key import the package).
"""

from __future__ import annotations

from dataclasses import dataclass

from .pinned import PINNED_TVM, UPGRADE_FIX, check_pinned_tvm

__all__ = ["PATCHES", "PINNED_TVM", "UPGRADE_FIX", "Patch", "check_pinned_tvm"]


@dataclass(frozen=True)
class Patch:
    """One change to TVM."""

    module: str  # webbuild.tvm_patches.<module>
    kind: str  # "runtime source" | "TIR rewrite" | "Python override"
    anchor: str  # what in TVM it depends on
    applied_by: str  # who applies it, and when
    recheck: str  # what to re-check on a TVM upgrade


PATCHES: tuple[Patch, ...] = (
    Patch("runtime_sources", "runtime source",
          "web/emcc/wasm_runtime.cc: serial TVMBackendParallelLaunch/Barrier; src/runtime/device_api.cc: "
          "TVMBackendAllocWorkspace/FreeWorkspace signatures",
          "compile.wasm_runtime.stage_sources (every wasm runtime build)",
          "whether the web runtime gained its own thread pool or moved the workspace functions; "
          "tests/test_wasm_runtime.py's threaded runs"),
    Patch("fused_decode_entry", "runtime source + Python override",
          "the create call's decode entry ('tirx', kernel) at argument 18 of TIRPagedKVCache; "
          "PagedDecodeFunc, ConvertPagedDecodeFunc's 'tirx' branch and AttentionWithFusedQKV's "
          "'Part 2' comment in src/runtime/vm/{attn_backend.h,attn_backend.cc,paged_kv_cache.cc}",
          "kernels.paged_kv_cache (WebGPU backend, fused_decode) and runtime_sources",
          "the cache's constructor argument order and the conditions under which its decode path "
          "runs (forks, sliding window, inline RoPE); tests/test_webgpu_attention.py"),
    Patch("layer_sliding_aux", "runtime source",
          "PlainPagedKVCacheAuxDataManager's per-depth array loop in src/runtime/vm/attn_utils.h; the "
          "windowed page-table copies (page_indptr / page_indices / length info / k_rope_pos_offset "
          "'_sliding_window' ... , d)) in src/runtime/vm/paged_kv_cache.cc",
          "runtime_sources (every wasm runtime build)",
          "whether the plain aux-data manager still shares one array per depth between the full and the "
          "windowed page tables; tests/test_sliding_window.py's mixed-window WebGPU test"),
    Patch("attention_softcap", "TIR rewrite",
          "the attention kernels named by TIRPagedKVCache's create call ((tag, kernel) tuples): the 'S_store' "
          "block of the GPU tiled kernels, the one 'score * sm_scale * log2e' statement of the scalar ones, the "
          "GPU decode kernel's store of its tvm_thread_allreduce result; exactly one per kernel",
          "kernels.paged_kv_cache.create_kv_cache (models with attention soft-capping: Gemma 2)",
          "whether every attention kernel still completes its scores in one place, in the log2 domain, "
          "before masking; tests/test_tvm_patches.py and the gemma2 cases of test_arch_parity / test_sliding_window"),
    Patch("merge_state", "TIR rewrite",
          "PrimFuncs named tir_attention_merge_state* in a module with batch_decode_paged_kv*",
          "backends.webgpu.WebGPUBackend.prepare (before tvm.compile)",
          "whether TVM's GPU merge kernel still reads S and writes it back without a barrier"),
    Patch("webgpu_trig", "Python override",
          "tirx.op.register_intrin_lowering for tirx.sin / tirx.cos on the webgpu target",
          "backends.webgpu.WebGPUBackend.prepare (process-wide, idempotent)",
          "whether WGSL codegen still lowers sin/cos to the imprecise built-ins"),
    Patch("llama3_rope", "Python override",
          "tvm.relax.frontend.nn.llm.position_embedding.rope_freq_llama3",
          "backends.base.Backend.export (before every export)",
          "whether rope_freq_llama3 still returns let-bindings that CSE rejects (Llama 3.x, head_dim 64)"),
)
