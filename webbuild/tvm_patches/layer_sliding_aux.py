"""A fix to TVM's paged KV cache runtime for models that mix windowed and full attention layers.

With per-layer sliding windows (Qwen2 with `max_window_layers`, Gemma 3), the cache copies two sets
of page tables to the device each forward call: the full one and the windowed one (only the pages
the window still touches). TVM 0.27's `PlainPagedKVCacheAuxDataManager`, which every device but CUDA
and CPU uses (so WebGPU), keeps one device array per depth for each kind of table, so the windowed
copy overwrites the full one: once the window has left a page behind, the full layers attend over
the windowed pages only (tests/test_sliding_window.py shows it against the CPU build). The native CPU
runtime uses the merged manager, which gives each copy its own place, and is not affected.

The fix gives the windowed tables their own arrays: the plain manager allocates two sets of per-depth
arrays, and the cache passes `depth + kPagedKVCacheMaxBlockDepth` for the windowed copies (the merged
manager ignores the depth). Applied when webbuild stages its wasm runtime
(webbuild.tvm_patches.runtime_sources); fails loudly when TVM's text moves.
"""

from __future__ import annotations

_SECOND_SET = " + kPagedKVCacheMaxBlockDepth"
_PLAIN_ARRAYS = ("    for (int d = 0; d < kPagedKVCacheMaxBlockDepth; ++d) {\n"
                 "      qo_indptr_on_depths_device_.push_back(\n")
_WINDOWED_COPIES = (
    "                &page_indptr_sliding_window_on_depths_host_[d], d);\n",
    "                &page_indices_sliding_window_on_depths_host_[d], d);\n",
    "                                                          &sliding_window_offset_on_depths_host_[d],\n"
    "                                                          &sink_size_on_depths_host_[d], d);\n",
    "                &k_rope_pos_offset_sliding_window_on_depths_host_[d], d);\n",
)

#: {staged source path: {exact TVM 0.27 text: replacement}} for webbuild's wasm runtime.
RUNTIME_PATCHES = {
    "src/runtime/vm/attn_utils.h": {
        _PLAIN_ARRAYS: _PLAIN_ARRAYS.replace("d < kPagedKVCacheMaxBlockDepth", "d < 2 * kPagedKVCacheMaxBlockDepth"),
    },
    "src/runtime/vm/paged_kv_cache.cc": {
        text: text.replace("[d], d);\n", f"[d], d{_SECOND_SET});\n") for text in _WINDOWED_COPIES
    },
}
