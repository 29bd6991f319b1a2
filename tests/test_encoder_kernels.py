"""Encoders' WebGPU kernels in node (Dawn on SwiftShader): the attention (webbuild.kernels.encoder_attention)
against float64 numpy softmax attention with padded rows, the float32 Linear GEMM
(webbuild.kernels.encoder_gemm) against float64 numpy; a tiny random BERT's WebGPU build runs `encode`
through both and equals the same model's CPU build (Relax attention and matmuls)."""

from __future__ import annotations

import numpy as np
import pytest

from embedding_support import save_tiny_bert, sentences, token_ids
from node_harness import run_toy
from test_decode_kernels import _compile, _toy_module
from webbuild.compile import wasm_runtime
from webbuild.encoder_runner import CpuEncoder, pad_batch
from webbuild.kernels.encoder_attention import encoder_attention_func_gpu
from webbuild.kernels.encoder_gemm import linear_func

# (batch, seq, heads, head_dim, lengths): padded rows of every length, one full row; a lone
# one-token input; more (b, h, i) threads than one workgroup and a ragged last workgroup
CASES = [
    (3, 13, 4, 16, [13, 5, 1]),
    (1, 1, 2, 32, [1]),
    (2, 37, 3, 8, [20, 37]),
]

# (rows, cols, tokens): ragged row and token tiles, fewer tokens than one tile, more rows than one workgroup
GEMM_CASES = [(100, 48, 13), (384, 1536, 9), (1152, 64, 3), (20, 8, 17)]


@pytest.fixture(scope="module")
def runtime():
    return wasm_runtime.build_runtime()


def _reference(qkv: np.ndarray, mask: np.ndarray, heads: int, head_dim: int) -> np.ndarray:
    """float64 softmax(q k^T / sqrt(head_dim) + padding bias) v: (batch, seq, heads * head_dim)."""
    b, s, _ = qkv.shape
    q, k, v = (qkv.astype(np.float64).reshape(b, s, 3, heads, head_dim)[:, :, i].transpose(0, 2, 1, 3)
               for i in range(3))  # each (b, heads, s, head_dim)
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(head_dim) + np.where(mask[:, None, None, :] != 0, 0.0, -1e9)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return (probs @ v).transpose(0, 2, 1, 3).reshape(b, s, heads * head_dim)


def test_encoder_attention_kernel_matches_numpy(runtime, tmp_path):
    rng = np.random.default_rng(0)
    args, funcs, outs, refs = [], [], [], []
    for b, s, heads, head_dim, lengths in CASES:
        qkv = (rng.standard_normal((b, s, 3 * heads * head_dim)) * 2).astype(np.float32)
        mask = np.array([[1] * n + [0] * (s - n) for n in lengths], dtype=np.int32)
        qkv[mask == 0] = 50.0  # padding keys' huge values must not leak into any output
        args += [qkv, mask]
        funcs.append(encoder_attention_func_gpu(heads, head_dim).with_attr("global_symbol", f"attention{len(funcs)}"))
        outs.append(((b, s, heads * head_dim), "float32"))
        refs.append(_reference(qkv, mask, heads, head_dim))
    mod = _toy_module(funcs, outs, [[(a.shape, str(a.dtype)) for a in args[i:i + 2]] for i in range(0, len(args), 2)])
    _compile(mod, tmp_path / "attention.wasm")
    outputs = run_toy(tmp_path / "attention.wasm", "main", args)
    for case, ref, out in zip(CASES, refs, outputs):
        assert out.shape == ref.shape
        err = np.abs(out - ref).max() / max(1.0, np.abs(ref).max())
        assert err < 2e-6, f"{case}: relative error {err:.2e}"  # float32 rounding


def test_encoder_linear_gemm_matches_numpy(runtime, tmp_path):
    rng = np.random.default_rng(1)
    args, funcs, outs, refs = [], [], [], []
    for rows, cols, tokens in GEMM_CASES:
        x, w, b = (rng.standard_normal(shape).astype(np.float32) for shape in ((tokens, cols), (rows, cols), (rows,)))
        args += [x, w, b]
        funcs.append(linear_func(rows, cols).with_attr("global_symbol", f"linear{len(funcs)}"))
        outs.append(((tokens, rows), "float32"))
        refs.append(x.astype(np.float64) @ w.astype(np.float64).T + b)
    mod = _toy_module(funcs, outs, [[(a.shape, str(a.dtype)) for a in args[i:i + 3]] for i in range(0, len(args), 3)])
    _compile(mod, tmp_path / "linear.wasm")
    outputs = run_toy(tmp_path / "linear.wasm", "main", args)
    for case, ref, out in zip(GEMM_CASES, refs, outputs):
        assert out.shape == ref.shape
        err = np.abs(out - ref).max() / np.abs(ref).max()
        assert err < 2e-6, f"{case}: relative error {err:.2e}"  # float32 rounding: measured <= 5e-7


def test_tiny_bert_webgpu_encode_equals_cpu_build(runtime, model_build, tmp_path):
    folder = save_tiny_bert(tmp_path / "tiny-bert", "mean", True)
    gpu = model_build(folder, "q0f32", "webgpu")
    kernels = (gpu / "model.wasm").read_bytes()
    # the WebGPU module runs webbuild's kernels, none of dlight's matmuls
    assert b"encoder_attention" in kernels and b"encoder_linear" in kernels and b"matmul" not in kernels
    batch = token_ids(folder, sentences(12), 96)
    assert len({len(ids) for ids in batch}) > 3  # padded
    ids, mask = pad_batch(batch)
    ours = run_toy(gpu / "model.wasm", "encode", [ids, mask], params=gpu)[0]
    cpu = CpuEncoder(model_build(folder, "q0f32", "cpu")).encode(batch)
    assert ours.shape == cpu.shape == (12, 64)
    np.testing.assert_allclose(ours, cpu, atol=1e-5, rtol=0)
