"""Sliding-window attention end to end: config rules, the CPU runner, KV reuse and WebGPU.

The tiny Mistral case of tests/arch_cases.py has window 5, so the 12-token prompt and the decode
steps run well past it (and across a 16-token KV page). test_arch_parity.py already matches its CPU
build to transformers; here: windows are parsed and capped as documented, popping back past the
window and re-feeding stays exact, the runtime sliding mode cannot be switched on by accident, and
the WebGPU build (node harness, Dawn on SwiftShader) gives the CPU build's logits and greedy tokens.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tvm
from tvm.runtime import ShapeTuple

from arch_cases import CASES, save_case
from node_harness import run_model
from tiny_models import hf_logits
from webbuild.arch import get_architecture
from webbuild.arch.base import BuildOptions
from webbuild.errors import ConfigError
from webbuild.runner import CpuModel

PROMPT = [1, 5, 9, 33, 100, 7, 250, 3, 11, 12, 40, 41]
DECODE = [77, 8, 300, 16, 2, 99, 123, 64]
TOL = 1e-3
MISTRAL = next(c for c in CASES if c.name == "mistral")
WINDOW = MISTRAL.config["sliding_window"]


def _parse(model_type: str, options: BuildOptions = BuildOptions(prefill_chunk=8), **fields):
    raw = dict(model_type=model_type, vocab_size=320, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, **fields)
    return get_architecture(model_type).parse_config(raw, options)


def test_window_caps_the_prefill_chunk_below_it():
    config = _parse("mistral", sliding_window=5)
    assert (config.sliding_window, config.prefill_chunk, config.windowed_layers) == (5, 4, (0, 1))
    assert config.state_metadata == {"kv_state": "paged_kv_cache", "sliding_window": 5}
    assert _parse("mistral", sliding_window=100).prefill_chunk == 8


def test_window_not_shorter_than_the_context_is_plain_attention():
    config = _parse("mistral", BuildOptions(context_window=64, prefill_chunk=8), sliding_window=64)
    assert (config.sliding_window, config.windowed_layers, config.prefill_chunk) == (None, (), 8)
    assert _parse("mistral", sliding_window=None).sliding_window is None


def test_window_of_one_token_is_rejected():
    with pytest.raises(ConfigError) as err:
        _parse("mistral", sliding_window=1)
    assert err.value.where == "config.json: sliding_window"


def test_qwen2_windows_only_the_layers_it_names():
    assert _parse("qwen2", sliding_window=6).sliding_window is None  # use_sliding_window is false
    legacy = _parse("qwen2", use_sliding_window=True, sliding_window=6, max_window_layers=1)
    assert (legacy.sliding_window, legacy.windowed_layers) == (6, (1,))
    typed = _parse("qwen2", use_sliding_window=True, sliding_window=6,
                   layer_types=["sliding_attention", "full_attention"])
    assert typed.windowed_layers == (0,)
    none = _parse("qwen2", use_sliding_window=True, sliding_window=6, layer_types=["full_attention"] * 2)
    assert none.sliding_window is None
    with pytest.raises(ConfigError) as err:
        _parse("qwen2", use_sliding_window=True, sliding_window=6, layer_types=["sliding_attention"])
    assert err.value.where == "config.json: layer_types"


@pytest.fixture(scope="module")
def mistral(tmp_path_factory):
    """(HF folder, transformers logits for PROMPT + DECODE) of the tiny window-5 Mistral."""
    folder = save_case(MISTRAL, tmp_path_factory.mktemp("mistral") / "hf")
    return folder, hf_logits(folder, PROMPT + DECODE)


def test_popping_back_past_the_window_and_refeeding_is_exact(mistral, cpu_build):
    """A second turn that rewrites the last 6 tokens (more than the window): the cache keeps every
    token, so popn + re-feed gives transformers' logits for the new sequence, no recompute."""
    source, _ = mistral
    model = CpuModel(cpu_build(source, "q0f32", prefill_chunk=8))
    assert (model.sliding_window, model.prefill_chunk) == (WINDOW, WINDOW - 1)
    model.prefill(PROMPT + DECODE[:4])
    tvm.get_global_func("vm.builtin.kv_state_popn")(model.kv, 0, 6)
    turn = [5, 6, 7, 250, 251, 17, 18]
    ours = model.prefill(turn)
    expected = hf_logits(source, PROMPT[:-2] + turn)[-1]
    assert np.abs(ours - expected).max() <= TOL


def test_runtime_sliding_mode_is_forced_off(mistral, cpu_build):
    """Asking create_paged_kv_cache for TVM's trimming sliding mode changes nothing (it is inexact)."""
    source, ref = mistral
    model = CpuModel(cpu_build(source, "q0f32", prefill_chunk=8))
    model.kv = model.vm["create_paged_kv_cache"](ShapeTuple([1]), ShapeTuple([model.context_window]),
                                                 ShapeTuple([model.prefill_chunk]), ShapeTuple([16]), ShapeTuple([1]))
    model._kv_add(model.kv, 0)
    steps = np.stack([model.prefill(PROMPT)] + [model.decode(t) for t in DECODE])
    assert np.abs(steps - ref[len(PROMPT) - 1:]).max() <= TOL


def test_mistral_webgpu_matches_cpu_build_across_the_window(mistral, model_build):
    """Prefill (asked for in chunks of 8; the harness takes window - 1) and 8 greedy decode steps
    on WebGPU give the CPU build's logits at every step and the same tokens."""
    source, _ = mistral
    web = model_build(source, "q0f32", "webgpu", prefill_chunk=8)
    assert json.loads((web / "chat-config.json").read_text())["state"]["sliding_window"] == WINDOW
    result = run_model(web, PROMPT, decode=8, packed_params=True, no_prefetch_shaders=True, prefill_chunk=8,
                       all_logits=True)
    assert result["kv_cache"]["prefill_step"] == WINDOW - 1
    cpu = CpuModel(model_build(source, "q0f32", "cpu", prefill_chunk=8))
    tokens = cpu.greedy(PROMPT, 8)
    cpu.reset()
    expected = [cpu.prefill(PROMPT)] + [cpu.decode(t) for t in tokens[:-1]]
    got = [result["logits"]] + result["decode_logits"]
    diffs = [float(np.abs(np.asarray(g, np.float32).reshape(-1) - e).max()) for g, e in zip(got, expected)]
    print(f"\nmistral (window {WINDOW}) WebGPU vs CPU max |dlogit| per step: "
          f"{np.array2string(np.array(diffs), precision=8)}")
    assert len(got) == 8 and max(diffs) <= TOL, diffs
    assert result["tokens"] == tokens


@pytest.mark.parametrize("name", ["qwen2_sliding", "gemma3", "gemma2"])
def test_mixed_window_and_full_layers_on_webgpu_match_transformers_past_a_page(name, arch_checkpoint, model_build):
    """Models with windowed and full layers (Qwen2's max_window_layers, Gemma 3's pattern), 30 tokens of
    prompt and 12 decode steps: once the window has left the first KV page behind, the full layers still
    attend over every page (the plain aux-data manager used to overwrite their page table with the
    window's: webbuild.tvm_patches.layer_sliding_aux), in prefill and in decode, on WebGPU and on CPU."""
    source = arch_checkpoint(name)
    prompt = PROMPT + list(range(50, 68))
    web = model_build(source, "q0f32", "webgpu", prefill_chunk=8)
    result = run_model(web, prompt, decode=12, packed_params=True, no_prefetch_shaders=True, prefill_chunk=8,
                       all_logits=True)
    tokens = result["tokens"]
    ref = hf_logits(source, prompt + tokens[:-1])[len(prompt) - 1:]  # (12, vocab)
    got = np.stack([np.asarray(g, np.float32).reshape(-1) for g in [result["logits"]] + result["decode_logits"]])
    assert np.abs(got - ref).max() <= TOL
    cpu = CpuModel(model_build(source, "q0f32", "cpu", prefill_chunk=8))
    assert cpu.greedy(prompt, 12) == tokens
