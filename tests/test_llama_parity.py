"""The CPU build of the Llama architecture against transformers and an independent numpy forward pass."""

from __future__ import annotations

import numpy as np
import pytest

from reference_llama import llama_logits
from tiny_models import hf_logits
from webbuild.loaders import load_checkpoint
from webbuild.runner import CpuModel

PROMPT = [1, 5, 9, 33, 100, 7, 250, 3, 11, 12, 40, 41]
DECODE = [77, 8, 300, 16, 2, 99, 123, 64]
TOL = 1e-3


def _run(folder) -> list[np.ndarray]:
    """Logits after the prompt (chunked prefill) and after each of the 8 decode tokens."""
    model = CpuModel(folder)
    out = [model.prefill(PROMPT)]
    out += [model.decode(t) for t in DECODE]
    return out


def _hf_weights(folder) -> dict[str, np.ndarray]:
    ck = load_checkpoint(folder)
    return {n: ck.read_tensor(n) for n in ck.tensor_names}


def emulate_int4(w: np.ndarray, group: int = 32) -> np.ndarray:
    """Straight numpy emulation of symmetric int4 group quantization: per group of 32 columns,
    the value of largest magnitude m gives scale = m / -8; values round into [-8, 7]."""
    rows, cols = w.shape
    out = np.empty((rows, cols), dtype=np.float32)
    for r in range(rows):
        for g0 in range(0, cols, group):
            block = w[r, g0:g0 + group].astype(np.float32)
            m = block[np.argmax(np.abs(block))]
            scale = np.float32(m / -8.0)
            q = np.clip(np.rint(block / scale), -8, 7) if scale != 0 else np.zeros_like(block)
            out[r, g0:g0 + group] = q * scale
    return out


@pytest.mark.parametrize("variant", ["untied", "tied_bias", "llama3_rope"])
def test_q0f32_matches_transformers_prefill_and_decode(variant, tiny_llama_dirs, cpu_build):
    folder, cfg = tiny_llama_dirs[variant]
    built = cpu_build(folder, "q0f32", prefill_chunk=8)  # 12-token prompt: two prefill chunks
    ours = _run(built)
    ref = hf_logits(folder, PROMPT + DECODE)  # (20, vocab)
    expected = [ref[len(PROMPT) - 1]] + [ref[len(PROMPT) + i] for i in range(len(DECODE))]
    for step, (a, b) in enumerate(zip(ours, expected)):
        assert np.abs(a - b).max() <= TOL, f"step {step}: max diff {np.abs(a - b).max()}"
    assert np.abs(ref).max() > 0.5  # the comparison is not between near-zero logits


@pytest.mark.parametrize("variant", ["untied", "tied_bias"])
def test_q0f32_matches_numpy_reference(variant, tiny_llama_dirs, cpu_build):
    folder, cfg = tiny_llama_dirs[variant]
    ours = _run(cpu_build(folder, "q0f32", prefill_chunk=8))
    ref = llama_logits(_hf_weights(folder), cfg, PROMPT + DECODE)
    assert np.abs(ours[0] - ref[len(PROMPT) - 1]).max() <= TOL
    for i in range(len(DECODE)):
        assert np.abs(ours[i + 1] - ref[len(PROMPT) + i]).max() <= TOL


@pytest.mark.parametrize("variant", ["untied", "tied_bias"])
def test_q4f32_matches_numpy_on_emulated_quantized_weights(variant, tiny_llama_dirs, cpu_build):
    """Identical dequantized weights must give identical logits: the fused kernels are exact."""
    folder, cfg = tiny_llama_dirs[variant]
    ours = _run(cpu_build(folder, "q4f32_1", prefill_chunk=8))
    weights = {n: (emulate_int4(w) if w.ndim == 2 else w) for n, w in _hf_weights(folder).items()}
    ref = llama_logits(weights, cfg, PROMPT + DECODE)
    assert np.abs(ours[0] - ref[len(PROMPT) - 1]).max() <= TOL
    for i in range(len(DECODE)):
        assert np.abs(ours[i + 1] - ref[len(PROMPT) + i]).max() <= TOL
    plain = llama_logits(_hf_weights(folder), cfg, PROMPT + DECODE)
    assert np.abs(plain - ref).max() > 1e-2  # quantization really happened
