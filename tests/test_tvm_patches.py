"""Every change webbuild makes to TVM is listed, anchored in the pinned TVM, and takes effect."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import webbuild.tvm_patches as patches
from webbuild.errors import ToolchainError
from webbuild.tvm_patches.runtime_sources import patch_text, source_patches


def test_installed_tvm_is_the_pinned_one():
    patches.check_pinned_tvm()


def test_every_patch_module_is_in_the_inventory():
    modules = {m.name for m in pkgutil.iter_modules(patches.__path__)} - {"pinned"}
    assert modules == {p.module for p in patches.PATCHES}
    for p in patches.PATCHES:
        importlib.import_module(f"webbuild.tvm_patches.{p.module}")
        assert p.anchor and p.recheck and p.applied_by


def test_runtime_source_anchors_occur_once_in_the_pinned_sources():
    from webbuild.compile.wasm_runtime import tvm_dirs

    tvm_dir, _ = tvm_dirs()
    for relative, replacements in source_patches().items():
        text = (tvm_dir / relative).read_text()
        patched = patch_text(relative, text, replacements)
        for old, new in replacements.items():
            assert text.count(old) == 1, (relative, old.splitlines()[0])
            assert new in patched or new == ""


def test_a_missing_anchor_fails_loudly():
    with pytest.raises(ToolchainError):
        patch_text("attn_backend.cc", "// TVM moved on\n", {"int old();\n": "int new();\n"})


def test_merge_state_rewrite_takes_effect_and_is_loud_without_its_kernel():
    from tvm import ir

    from webbuild.backends.webgpu import WebGPUBackend
    from webbuild.tvm_patches.merge_state import MERGE_STATE_SYMBOL, merge_state_kernel, replace_racy_merge_state

    mod = _webgpu_attention_module(WebGPUBackend())
    merges = [gv for gv, f in mod.functions.items() if gv.name_hint.startswith(MERGE_STATE_SYMBOL)]
    assert merges
    fixed = replace_racy_merge_state(mod)
    for gv in merges:
        want = merge_state_kernel(str(fixed[gv].params[0].dtype)).with_attr("global_symbol", gv.name_hint)
        ir.assert_structural_equal(fixed[gv], want)
    without = ir.IRModule({gv: f for gv, f in mod.functions.items() if gv not in merges}, attrs=mod.attrs)
    with pytest.raises(ToolchainError):
        replace_racy_merge_state(without)


def test_webgpu_trig_and_llama3_rope_overrides_take_effect():
    from tvm.relax.frontend.nn.llm import position_embedding

    from webbuild.tvm_patches import llama3_rope, webgpu_trig

    webgpu_trig.install_precise_webgpu_trig()
    assert webgpu_trig.installed()
    llama3_rope.install_let_free_llama3_rope()
    assert position_embedding.rope_freq_llama3 is llama3_rope._rope_freq_llama3_inline


def test_fused_decode_entry_rejects_an_unexpected_create_call():
    from tvm import relax as rx

    from webbuild.tvm_patches.fused_decode_entry import FusedDecodeKVCache

    call = rx.Call(rx.ExternFunc("vm.builtin.paged_attention_kv_cache_create"), [rx.prim_value(0)])
    with pytest.raises(ToolchainError):
        FusedDecodeKVCache._with_fused_entry(object.__new__(FusedDecodeKVCache), call)


def _webgpu_attention_module(backend, attn_softcap=None):
    """A one-layer model's exported Relax module with the backend's paged KV cache."""
    from tvm.relax.frontend import nn
    from tvm.relax.frontend.nn import op

    from webbuild.arch.kv_model import kv_model_spec
    from webbuild.kernels.paged_kv_cache import KVCacheSpec

    kernels = backend.model_kernels()
    nq, nkv, d = 2, 1, 16

    class Attn(nn.Module):
        def __init__(self):
            self.embed_tokens = nn.Embedding(64, (nq + 2 * nkv) * d)

        def embed(self, input_ids):
            return self.embed_tokens(input_ids)

        def _body(self, x, kv):
            b, s, _ = x.shape
            qkv = op.reshape(x, (b, s, nq + 2 * nkv, d))
            o = kv.attention_with_fused_qkv(0, qkv, nq, sm_scale=d ** -0.5)
            return op.reshape(o, (b, s, nq * d)), kv

        def prefill(self, input_embed, paged_kv_cache):
            return self._body(input_embed, paged_kv_cache)

        def decode(self, input_embed, paged_kv_cache):
            return self._body(input_embed, paged_kv_cache)

        def create_paged_kv_cache(self, max_batch_size, max_total_seq_len, prefill_chunk_size, page_size,
                                  support_sliding_window):
            spec = KVCacheSpec(num_layers=1, num_heads=nq, num_kv_heads=nkv, head_dim=d, rope_theta=10000.0,
                               rope_scaling=None, rotary_dim=d, attn_softcap=attn_softcap)
            return kernels.kv_cache(spec, "float32", max_batch_size, max_total_seq_len, prefill_chunk_size,
                                    page_size, support_sliding_window)

    mod, _ = Attn().export_tvm(spec=kv_model_spec((nq + 2 * nkv) * d, "float32", param_mode="plain"))
    return mod


@pytest.mark.parametrize("backend", ["webgpu", "cpu"])
def test_attention_softcap_caps_every_attention_kernel_once(backend):
    """Every kernel the cache's create call names for attention (prefill, decode, ragged, tree, the
    fused decode on WebGPU) gets exactly one tanh where its scores are complete; the other kernels none.
    (That the capped scores equal transformers' is tests/test_arch_parity.py's gemma2 case.)"""
    from tvm import tirx

    from webbuild.backends.host_cpu import HostCpuBackend
    from webbuild.backends.webgpu import WebGPUBackend

    make = WebGPUBackend if backend == "webgpu" else HostCpuBackend
    plain, capped = _webgpu_attention_module(make()), _webgpu_attention_module(make(), attn_softcap=50.0)
    tanh = {gv.name_hint: f.script().count("T.tanh(") for gv, f in capped.functions.items()
            if isinstance(f, tirx.PrimFunc)}
    attention = {name for name in tanh if name.startswith(("batch_", "tree_attn", "webbuild_fused"))}
    assert len(attention) >= 7 and ("webbuild_fused_decode_attention" in attention) == (backend == "webgpu")
    assert all(tanh[name] == 1 for name in attention), tanh
    assert all(n == 0 for name, n in tanh.items() if name not in attention), tanh
    assert all(f.script().count("T.tanh(") == 0 for f in plain.functions.values() if isinstance(f, tirx.PrimFunc))


def test_attention_softcap_is_loud_without_a_score_to_cap():
    from webbuild.tvm_patches.attention_softcap import softcap_scores
    from webbuild.tvm_patches.merge_state import merge_state_kernel

    with pytest.raises(ToolchainError):
        softcap_scores(merge_state_kernel("float32"), 50.0)
