"""WebGPU builds: they compile and link (f32 and f16 variants), their chat-config asks for the right
features, and the q4f32_1 model.wasm, run by TVM's JS runtime in node (Dawn on SwiftShader), gives
the CPU build's logits."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tokenizers import Tokenizer

from node_harness import run_model
from smollm_facts import chat_prompt
from webbuild.compile.wasm_link import unexpected_imports
from webbuild.runner import CpuModel

SMOLLM = "smollm2-135m-instruct"
TINY_PROMPT = [1, 5, 9, 33, 100, 7, 250, 3, 11, 12, 40, 41]
TOL = 1e-3


def _files(folder) -> set[str]:
    return {p.name for p in folder.iterdir()}


@pytest.mark.parametrize("quantization", ["q4f32_1", "q4f16_1"])
def test_smollm2_webgpu_builds_compile_and_link(quantization, model_build):
    folder = model_build(SMOLLM, quantization, "webgpu")
    assert {"model.wasm", "tensor-cache.json", "chat-config.json", "tokenizer.json"} <= _files(folder)
    assert unexpected_imports(folder / "model.wasm") == []
    config = json.loads((folder / "chat-config.json").read_text())
    cache = json.loads((folder / "tensor-cache.json").read_text())
    assert config["quantization"] == quantization and config["model_lib"] == "model.wasm"
    assert config["webgpu"]["required_features"] == (["shader-f16"] if "f16" in quantization else [])
    assert all(s["nbytes"] <= 32 * 1024 * 1024 for s in cache["shards"])
    assert 4.5 < config["build"]["bits_per_param"] < 5.5
    limits = config["webgpu"]["required_limits"]
    assert limits["maxStorageBufferBindingSize"] >= max(r["nbytes"] for r in cache["records"])


@pytest.mark.parametrize("quantization,variant",
                         [("q0f32", "untied"), ("q4f32_1", "untied"), ("q4f32_1", "llama3_rope")])
def test_tiny_llama_webgpu_matches_cpu_build(quantization, variant, tiny_llama_dirs, model_build):
    """Multi-chunk prefill and 8 greedy decode steps on WebGPU agree with the CPU build (llama3_rope:
    Llama 3.2's RoPE scaling with head_dim 64, whose TVM kernels needed webbuild's let-free rewrite)."""
    source = tiny_llama_dirs[variant][0]
    web = model_build(source, quantization, "webgpu", prefill_chunk=8)
    cpu = CpuModel(model_build(source, quantization, "cpu", prefill_chunk=8))
    result = run_model(web, TINY_PROMPT, decode=8, packed_params=True, no_prefetch_shaders=True, prefill_chunk=8)
    expected = cpu.prefill(TINY_PROMPT)
    assert np.abs(np.asarray(result["logits"], np.float32).reshape(-1) - expected).max() <= TOL
    cpu.reset()
    assert result["tokens"] == cpu.greedy(TINY_PROMPT, 8)


def test_smollm2_q4f32_webgpu_prefill_matches_cpu_build(model_build):
    web = model_build(SMOLLM, "q4f32_1", "webgpu")
    cpu = CpuModel(model_build(SMOLLM, "q4f32_1", "cpu"))
    tok = Tokenizer.from_file(str(web / "tokenizer.json"))
    ids = tok.encode(chat_prompt(cpu.config["chat_template"]), add_special_tokens=False).ids
    result = run_model(web, ids, decode=0, packed_params=True, no_prefetch_shaders=True)
    web_logits = np.asarray(result["logits"], np.float32).reshape(-1)
    assert np.abs(web_logits - cpu.prefill(ids)).max() <= TOL
