"""WebGPU attention (TVM's paged-KV-cache kernels) against float64 numpy, tightly.

Runs in node (Dawn + SwiftShader) through tests/js/tvm_node.mjs. A one-layer "model" whose
embedding rows are the fused QKV vectors and whose prefill returns the attention output of every
token of the chunk, so the comparison sees the attention kernels (RoPE, paged prefill, ragged
prefill, state merge across chunks, decode) and nothing else. Shapes follow SmolLM2: head_dim 64,
9 query / 3 KV heads (GQA 3:1).

WGSL's built-in sin/cos are only accurate to ~2e-4 on SwiftShader (the spec allows 2^-11), which
put a ~2e-4 relative error into every RoPE'd query and key; webbuild lowers them to precise
float32 code instead (webbuild.tvm_patches.webgpu_trig). With it the
attention output is within ~1e-6..1e-5 of float64 (float32 rounding); without it, ~1e-3.
"""

from __future__ import annotations

import numpy as np
import pytest

from node_harness import run_model, run_toy
from webbuild.arch.kv_model import kv_model_spec
from webbuild.compile import wasm_link, wasm_runtime
from webbuild.kernels.paged_kv_cache import KVCacheSpec, create_kv_cache
from webbuild.shard.writer import write_shards
from webbuild.tvm_patches.merge_state import replace_racy_merge_state
from webbuild.tvm_patches.webgpu_trig import install_precise_webgpu_trig

NQ, NKV, D = 9, 3, 64
V = 640  # > NQ * D: decode feeds back argmax over one token's attention output as the next id
THETA = 10000.0
# measured max |webgpu - float64| (outputs up to ~3.4): 1e-6..7.5e-6 with precise sin/cos (as
# float32 numpy), 7e-4..1.7e-3 with WGSL's own
ATOL = 3e-5


def _target():
    from webbuild.backends.webgpu import WebGPUBackend

    return WebGPUBackend().target()


@pytest.fixture(scope="module")
def runtime():
    return wasm_runtime.build_runtime()


def _compile_wasm(mod, path):
    import tvm

    install_precise_webgpu_trig()
    ex = tvm.compile(replace_racy_merge_state(mod), target=_target())
    wasm_link.export_wasm(ex, path, opt_level="O1")


# ----------------------------------------------------------------------------- sin / cos


def test_webgpu_sin_cos_are_precise(runtime, tmp_path):
    from tvm import te, tirx
    from tvm.relax.frontend import nn

    n = 4096
    x = np.concatenate([np.linspace(-np.pi, np.pi, n // 2), np.linspace(-5000.0, 5000.0, n // 2)]).astype("float32")

    class Trig(nn.Module):
        def main(self, v):
            return nn.op.tensor_expr_op(
                lambda t: [te.compute((n,), lambda i: tirx.sin(t[i]), name="s"),
                           te.compute((n,), lambda i: tirx.cos(t[i]), name="c")], "trig", [v])

    mod, _ = Trig().export_tvm(spec={"main": {"v": nn.spec.Tensor([n], "float32"),
                                              "$": {"param_mode": "plain", "effect_mode": "none"}}})
    _compile_wasm(mod, tmp_path / "trig.wasm")
    s, c = run_toy(tmp_path / "trig.wasm", "main", [x])
    xd = x.astype(np.float64)
    # float32 libm is ~6e-8 here; WGSL's own sin/cos on SwiftShader 1.9e-4 (2.4e-3 at |x| ~ 5000)
    np.testing.assert_allclose(s, np.sin(xd), atol=3e-7, rtol=0)
    np.testing.assert_allclose(c, np.cos(xd), atol=3e-7, rtol=0)


# ----------------------------------------------------------------------------- attention


# (query heads, KV heads, head_dim, rotated dims): SmolLM2's, and partial rotary with GQA 2:1
SMOLLM = (NQ, NKV, D, D)
PARTIAL = (4, 2, 32, 16)


def _attention_module(geometry=SMOLLM):
    from tvm.relax.frontend import nn
    from tvm.relax.frontend.nn import op

    target = _target()
    nq, nkv, d, rotary = geometry

    class Attn(nn.Module):
        def __init__(self):
            self.embed_tokens = nn.Embedding(V, (nq + 2 * nkv) * d)

        def embed(self, input_ids):
            return self.embed_tokens(input_ids)

        def _body(self, x, kv):
            b, s, _ = x.shape
            o = kv.attention_with_fused_qkv(0, op.reshape(x, (b, s, nq + 2 * nkv, d)), nq, sm_scale=d**-0.5)
            return op.reshape(o, (b, s, nq * d)), kv

        def prefill(self, input_embed, paged_kv_cache):
            return self._body(input_embed, paged_kv_cache)

        def decode(self, input_embed, paged_kv_cache):
            return self._body(input_embed, paged_kv_cache)

        def create_paged_kv_cache(self, max_batch_size, max_total_seq_len, prefill_chunk_size,
                                  page_size, support_sliding_window):
            spec = KVCacheSpec(num_layers=1, num_heads=nq, num_kv_heads=nkv, head_dim=d, rope_theta=THETA,
                               rope_scaling=None, rotary_dim=rotary)
            return create_kv_cache(spec, "float32", max_batch_size, max_total_seq_len, prefill_chunk_size,
                                   page_size, support_sliding_window, target=target, fused_decode=True)

    return Attn().export_tvm(spec=kv_model_spec((nq + 2 * nkv) * d, "float32", param_mode="plain"))


def _rope(x, pos, rotary):
    """Rotate-half RoPE of the first `rotary` dims of (s, heads, d) at positions pos (s,), float64."""
    half, d = rotary // 2, x.shape[-1]
    ang = pos[:, None].astype(np.float64) * THETA ** (-np.arange(half, dtype=np.float64) * 2 / rotary)[None, :]
    cos = np.concatenate([np.cos(ang)] * 2 + [np.ones((len(pos), d - rotary))], -1)[:, None, :]
    sin = np.concatenate([np.sin(ang)] * 2 + [np.zeros((len(pos), d - rotary))], -1)[:, None, :]
    partner = np.concatenate([-x[..., half:rotary], x[..., :half], x[..., rotary:]], -1)
    return x * cos + partner * sin


def _reference(table, tokens, geometry=SMOLLM):
    """Causal GQA attention output (s, nq * d) of every position of `tokens`, float64."""
    nq, nkv, d, rotary = geometry
    qkv = table[tokens].astype(np.float64).reshape(len(tokens), nq + 2 * nkv, d)
    pos = np.arange(len(tokens))
    q, k, v = _rope(qkv[:, :nq], pos, rotary), _rope(qkv[:, nq:nq + nkv], pos, rotary), qkv[:, nq + nkv:]
    s = len(tokens)
    out = np.empty((s, nq, d))
    for h in range(nq):
        kh = h // (nq // nkv)
        scores = np.where(np.tril(np.ones((s, s), bool)), q[:, h] @ k[:, kh].T * d**-0.5, -np.inf)
        w = np.exp(scores - scores.max(-1, keepdims=True))
        out[:, h] = (w / w.sum(-1, keepdims=True)) @ v[:, kh]
    return out.reshape(s, nq * d)


def _folder(tmp_path_factory, geometry):
    nq, nkv, d, _ = geometry
    folder = tmp_path_factory.mktemp("attention")
    mod, _ = _attention_module(geometry)
    _compile_wasm(mod, folder / "model.wasm")
    rng = np.random.default_rng(7)
    table = rng.standard_normal((V, nq + 2 * nkv, d)).astype("float32")
    table[:, :nq + nkv] *= 2.0  # queries and keys: attention scores with a std of ~4 (peaked softmax)
    table = table.reshape(V, -1)
    write_shards(folder, [("embed_tokens.weight", table)], {}, shard_bytes=1 << 20)
    return folder, table


@pytest.fixture(scope="module")
def attention_folder(runtime, tmp_path_factory):
    return _folder(tmp_path_factory, SMOLLM)


@pytest.fixture(scope="module")
def partial_rotary_folder(runtime, tmp_path_factory):
    return _folder(tmp_path_factory, PARTIAL)


def _prompt(n):
    return [int(t) for t in np.random.default_rng(n).integers(0, V, n)]


@pytest.mark.parametrize("length,chunk", [(1, None), (8, None), (37, None), (40, 16), (37, 5)],
                         ids=["1tok", "8tok", "37tok", "40tok-chunk16", "37tok-chunk5"])
def test_prefill_attention_matches_float64(attention_folder, length, chunk):
    """Single-chunk prefill (paged kernel over a fresh sequence) and multi-chunk prefill (the
    last chunk attends to its own tokens and to the paged history, merged), spanning pages."""
    folder, table = attention_folder
    tokens = _prompt(length)
    r = run_model(folder, tokens, prefill_chunk=chunk, no_prefetch_shaders=True)
    last = length - ((length - 1) % chunk + 1) if chunk else 0  # first token of the last chunk
    got = np.array(r["logits"], dtype=np.float64).reshape(length - last, NQ * D)
    ref = _reference(table, tokens)[last:]
    np.testing.assert_allclose(got, ref, atol=ATOL, rtol=0)


def test_decode_attention_matches_float64(attention_folder):
    """17 tokens in chunks of 16 (the last chunk is one token), then two decode steps."""
    folder, table = attention_folder
    tokens = _prompt(17)
    r = run_model(folder, tokens, decode=3, prefill_chunk=16, all_logits=True, no_prefetch_shaders=True)
    seq = list(tokens)
    outputs = [r["logits"], *r["decode_logits"]]
    assert len(outputs) == 3
    for step, got in enumerate(outputs):
        ref = _reference(table, seq)[-1]
        np.testing.assert_allclose(np.array(got, dtype=np.float64).reshape(-1), ref, atol=ATOL, rtol=0)
        assert r["tokens"][step] == int(np.argmax(ref))
        seq.append(r["tokens"][step])
    # split + RoPE + append + attention in webbuild's one fused kernel
    assert r["decode_dispatches"] == [1, 1]


def test_fused_decode_attention_partial_rotary_across_pages(partial_rotary_folder):
    """Fused decode with half the head rotated and two query heads per KV head: 12 prompt tokens
    (11 + 1), then decode steps that fill the first page and continue on the second; each step's key and
    value written by the kernel are read back by the steps after it."""
    folder, table = partial_rotary_folder
    tokens = _prompt(12)
    r = run_model(folder, tokens, decode=8, prefill_chunk=11, all_logits=True, no_prefetch_shaders=True)
    seq = list(tokens)
    outputs = [r["logits"], *r["decode_logits"]]  # the prompt's last chunk is one token
    assert len(outputs) == 8
    for step, got in enumerate(outputs):
        ref = _reference(table, seq, PARTIAL)[-1]
        np.testing.assert_allclose(np.array(got, dtype=np.float64).reshape(-1), ref, atol=ATOL, rtol=0)
        assert r["tokens"][step] == int(np.argmax(ref))
        seq.append(r["tokens"][step])
    assert r["decode_dispatches"] == [1] * 7


@pytest.mark.parametrize("heads,kv_heads,head_dim,dtype,rotary", [
    (4, 2, 16, "float32", 16), (4, 4, 16, "float16", 8), (8, 2, 128, "float16", 128), (2, 1, 256, "float32", 256),
    (6, 2, 48, "float32", 24)])
def test_fused_decode_kernel_compiles_for_other_geometries(heads, kv_heads, head_dim, dtype, rotary):
    """Head sizes below, at and above the workgroup's 16 threads (fewer threads at 256), partial
    rotary, no GQA, float16: the kernel's WGSL is generated (and passes TVM's barrier checks),
    within WebGPU's default workgroup storage."""
    import re

    import tvm

    from webbuild.kernels.decode_attention import fused_decode_kernel

    func = fused_decode_kernel(heads, kv_heads, head_dim, dtype, rotary, THETA, 1.0, {})
    lib = tvm.tirx.build(tvm.IRModule({"fused": func.with_attr("global_symbol", "fused")}), target=_target())
    wgsl = "".join(s for s in (m.inspect_source() for m in lib.imports) if "@compute" in s)
    assert wgsl
    # its workgroup arrays fit WebGPU's guaranteed 16 KiB of workgroup storage
    shared = re.findall(r"var<workgroup> \w+ : array<(f32|f16|i32|u32), (\d+)>", wgsl)
    assert shared and sum((2 if kind == "f16" else 4) * int(n) for kind, n in shared) <= 16384
