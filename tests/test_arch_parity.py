"""Every architecture in tests/arch_cases.py, built by `webbuild build`, against transformers.

For each case: the CPU q0f32 build's logits after a two-chunk prefill and 8 decode steps match
transformers' (float32) to 1e-3; the q4f32_1 build's top-1 agreement with q0f32 is measured and
reported (and its logits must still track the float model's); the WebGPU build and its WebAssembly CPU
module compile and link, and the CPU module run in node gives the native CPU build's logits.
"""

from __future__ import annotations

import numpy as np
import pytest

from arch_cases import CASES
from node_harness import run_model
from tiny_models import hf_logits
from webbuild.compile.wasm_link import unexpected_imports
from webbuild.runner import CpuModel

PROMPT = [1, 5, 9, 33, 100, 7, 250, 3, 11, 12, 40, 41]
DECODE = [77, 8, 300, 16, 2, 99, 123, 64]
TOL = 1e-3
IDS = [c.name for c in CASES]


def _steps(folder) -> np.ndarray:
    """(9, vocab): logits after the prompt (prefill in chunks of 8) and after each decode token."""
    model = CpuModel(folder)
    return np.stack([model.prefill(PROMPT)] + [model.decode(t) for t in DECODE])


def _reference(folder) -> np.ndarray:
    ref = hf_logits(folder, PROMPT + DECODE)  # (20, vocab)
    return ref[len(PROMPT) - 1:]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_q0f32_matches_transformers(case, arch_checkpoint, cpu_build):
    folder = arch_checkpoint(case.name)
    ours = _steps(cpu_build(folder, "q0f32", prefill_chunk=8))
    ref = _reference(folder)
    diff = np.abs(ours - ref).max(axis=1)
    assert diff.max() <= TOL, f"max |dlogit| per step: {np.array2string(diff, precision=6)}"
    assert np.abs(ref).max() > 0.5  # not a comparison of near-zero logits


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_q4f32_agreement_with_f32(case, arch_checkpoint, cpu_build, record_property):
    folder = arch_checkpoint(case.name)
    f32 = _steps(cpu_build(folder, "q0f32", prefill_chunk=8))
    q4 = _steps(cpu_build(folder, "q4f32_1", prefill_chunk=8))
    agreement = float(np.mean(f32.argmax(axis=1) == q4.argmax(axis=1)))
    record_property("q4f32_1_top1_agreement", agreement)
    print(f"\n{case.name}: q4f32_1 top-1 agreement with q0f32 over {len(f32)} steps: {agreement:.2f}")
    assert np.isfinite(q4).all()
    assert np.abs(q4 - f32).max() > 1e-4  # the weights really were quantized
    corr = [np.corrcoef(a, b)[0, 1] for a, b in zip(q4, f32)]
    assert min(corr) > 0.8, f"q4 logits no longer track the float model: {corr}"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_webgpu_build_compiles_and_links(case, arch_checkpoint, model_build):
    folder = model_build(arch_checkpoint(case.name), "q4f32_1", "webgpu")
    for module in ("model.wasm", "model-cpu.wasm"):
        assert (folder / module).stat().st_size > 0
        assert unexpected_imports(folder / module) == []


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_wasm_cpu_module_matches_the_native_cpu_build(case, arch_checkpoint, model_build, cpu_build):
    """The browser's CPU fallback (model-cpu.wasm, run by TVM's JS runtime in node) gives the native
    CPU build's logits and greedy tokens for the same (q4f32_1) weights."""
    source = arch_checkpoint(case.name)
    web = model_build(source, "q4f32_1", "webgpu")
    native = CpuModel(cpu_build(source, "q4f32_1", prefill_chunk=8))
    result = run_model(web, PROMPT, decode=8, packed_params=True, device="cpu", wasm="model-cpu.wasm", prefill_chunk=8)
    expected = native.prefill(PROMPT)
    assert np.abs(np.asarray(result["logits"], np.float32).reshape(-1) - expected).max() <= TOL
    native.reset()
    assert result["tokens"] == native.greedy(PROMPT, 8)
