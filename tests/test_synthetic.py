"""Synthetic checkpoints (`synthetic:<preset>`): random weights in real model shapes, built without
any download or float weights."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from tokenizers import Tokenizer

from webbuild.build import BuildRequest, build
from webbuild.errors import ConfigError
from webbuild.loaders.synthetic import load_synthetic, param_generator, parse_source, special_ids
from webbuild.runner import CpuModel
from webbuild.shard.writer import ALIGN, DEFAULT_SHARD_BYTES

TINY = ("synthetic:llama-3.2-1b:hidden_size=128,intermediate_size=256,num_hidden_layers=2,num_attention_heads=4,"
        "num_key_value_heads=2,head_dim=32,vocab_size=600")


@pytest.fixture(scope="module")
def tiny_builds(tmp_path_factory):
    """seed -> the CPU q4f32_1 build of TINY with that seed (0 twice, to compare)."""
    out = tmp_path_factory.mktemp("synthetic")
    folders = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        folders[name] = build(BuildRequest(f"{TINY},seed={seed}", "q4f32_1", out, target="cpu", name=name)).folder
    return folders


def test_tiny_synthetic_model_builds_and_decodes(tiny_builds):
    folder = tiny_builds["a"]
    config = json.loads((folder / "chat-config.json").read_text())
    assert config["vocab_size"] == 600 and config["context_window_size"] == 4096
    ids = special_ids(600)  # Llama 3's layout: vocab - 256 + (0, 1, 6, 7, 9)
    assert config["bos_token_id"] == ids["<|begin_of_text|>"] == 344
    assert config["stop_token_ids"] == [ids["<|end_of_text|>"], ids["<|eot_id|>"]]
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    assert tok.get_vocab_size() == 600
    assert tok.decode(list(range(600)), skip_special_tokens=False).count("<tok_") == 600 - 256 - 5
    model = CpuModel(folder)
    prompt = tok.encode("<|start_header_id|>user<|end_header_id|>\n\nhello<|eot_id|>", add_special_tokens=False).ids
    logits = model.prefill(prompt)
    assert logits.shape == (600,) and np.isfinite(logits).all()
    assert all(0 <= t < 600 for t in model.greedy(prompt, 4))


def test_synthetic_weights_are_deterministic_per_seed(tiny_builds):
    def digests(name):
        cache = json.loads((tiny_builds[name] / "tensor-cache.json").read_text())
        return [s["sha256"] for s in cache["shards"]]

    assert digests("a") == digests("b") != digests("c")


def test_synthetic_parameters_have_the_requested_layout():
    generate = param_generator(0)
    words = generate("layers.0.mlp.up.q_weight", (64, 16), "uint32")
    scales = generate("layers.0.mlp.up.q_scale", (64, 4), "float16")
    assert words.dtype == np.uint32 and words.shape == (64, 16)
    assert scales.dtype == np.float16 and 0.001 < np.abs(scales.astype(np.float32)).mean() < 0.01
    assert (generate("final_norm.weight", (8,), "float32") == 1).all()
    assert np.array_equal(words, generate("layers.0.mlp.up.q_weight", (64, 16), "uint32"))


@pytest.mark.parametrize("preset,params,layers", [("llama-3.2-1b", 1_235_814_400, 16),
                                                  ("llama-3-8b", 8_030_261_248, 32)])
def test_preset_parameter_and_shard_plan(preset, params, layers):
    """The WebGPU model of each preset has the real model's parameter count; its q4f32_1 shards and
    largest buffer, planned without writing them."""
    from webbuild.arch import get_architecture
    from webbuild.arch.base import BuildOptions
    from webbuild.backends import get_backend
    from webbuild.quant.convert import float_shapes
    from webbuild.quant.scheme import get_scheme

    checkpoint = load_synthetic(f"synthetic:{preset}")
    arch = get_architecture(checkpoint.config["model_type"])
    config = arch.parse_config(checkpoint.config, BuildOptions(checkpoint.context_window))
    assert config.num_hidden_layers == layers and config.vocab_size == 128256 and config.context_window == 4096
    assert config.tie_word_embeddings == (preset == "llama-3.2-1b")
    _, named = get_backend("webgpu").export(arch, config, get_scheme("q4f32_1"))
    plan = [(name, tuple(int(d) for d in p.shape), p.dtype) for name, p in named]
    assert sum(math.prod(s) for s in float_shapes(plan).values()) == params
    offset = 0
    for _, shape, _ in plan:
        offset += -offset % ALIGN + math.prod(shape) * 4  # uint32 words and float32 scales / norms
    bits = offset * 8 / params
    assert 4.5 < bits < 5.2
    assert math.ceil(offset / DEFAULT_SHARD_BYTES) == {"llama-3.2-1b": 24, "llama-3-8b": 150}[preset]
    assert max(math.prod(s) * 4 for _, s, _ in plan) < 2**30  # within WebGPU's 1 GiB buffer limit


def test_bad_synthetic_sources_name_the_fix():
    with pytest.raises(ConfigError, match="unknown synthetic preset"):
        parse_source("synthetic:llama-9")
    with pytest.raises(ConfigError, match="key=value"):
        parse_source("synthetic:llama-3.2-1b:layers")
    with pytest.raises(ConfigError, match="too small"):
        parse_source("synthetic:llama-3.2-1b:vocab_size=100")
