"""GGUF files of every architecture with a GGUF layout (llama, qwen2, qwen3, phi3, gemma, gemma3, stablelm), written
the way llama.cpp's converter writes them (tests/hf_to_gguf.py: its tensor names, llama's permuted q/k
rows, phi3's fused projections and partial RoPE, Gemma's norms stored plus one, some matrices as
Q8_0) from tiny random transformers models, built by `webbuild build`.

The oracle is transformers loading the same GGUF file (`from_pretrained(dir, gguf_file=...)`,
dequantized to float32). Where transformers 5.24 cannot stand in for llama.cpp (it loads no `gemma`
GGUF, reads a `phi3` file's partial RoPE, `phi3.rope.dimension_count`, as full, and ignores
`stablelm.rope.freq_base`) the oracle is the HF folder the file was written from (its matrices then
all F32). The CPU build's logits
after a two-chunk prefill and 8 decode steps match it to 1e-3, for `q0f32` and for the faithful
`source` build (Q8_0 kept as int8 groups).
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from tokenizers import Tokenizer

from arch_cases import CASES, save_case
from hf_to_gguf import write_hf_as_gguf
from webbuild.arch import get_architecture
from webbuild.loaders.gguf_loader import load_gguf
from webbuild.runner import CpuModel

PROMPT = [1, 5, 9, 33, 100, 7, 250, 3, 11, 12, 40, 41]
DECODE = [77, 8, 300, 16, 2, 99, 123, 64]
TOL = 1e-3
# transformers 5.24's GGUF loader reads no head_dim for qwen3 (it keeps Qwen3Config's 128), so the
# qwen3 file uses head_dim 128; ours comes from qwen3.attention.key_length either way
GGUF_CASES = {"llama": {}, "qwen2": {}, "qwen3": {"head_dim": 128}, "phi3": {}, "gemma": {}, "stablelm": {},
              # what llama.cpp assumes of every gemma3 file: every sixth layer global, local RoPE base
              # 10 000, scores scaled by 1/sqrt(head_dim); the window (6) and the global base are written
              "gemma3": {"num_hidden_layers": 6, "layer_types": None, "query_pre_attn_scalar": 24,
                         "rope_parameters": {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                             "full_attention": {"rope_type": "default", "rope_theta": 5000.0}}}}
# files transformers does not read as llama.cpp does (gemma3: it takes Gemma3TextConfig's default
# query_pre_attn_scalar, 256, where llama.cpp uses head_dim)
HF_ORACLE = {"gemma", "phi3", "stablelm", "gemma3"}
Q8_0 = ("ffn_up", "attn_output")


@pytest.fixture(scope="module")
def gguf_files(tmp_path_factory):
    """case name -> (GGUF path, transformers' logits of it for PROMPT + DECODE from the last prompt token)."""
    import torch
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("gguf_archs")
    cases = {c.name: c for c in CASES}
    made = {}
    for name, overrides in GGUF_CASES.items():
        case = replace(cases[name], config={**cases[name].config, **overrides})
        folder = save_case(case, root / name)
        # what llama.cpp writes for them (SentencePiece: Llama 2, Mistral, Phi-3, Gemma)
        pre = {"qwen2": "qwen2", "qwen3": "qwen2"}.get(name, "sentencepiece")
        path = write_hf_as_gguf(folder, root / f"{name}.gguf", q8_0=() if name in HF_ORACLE else Q8_0, pre=pre)
        if name in HF_ORACLE:
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        else:
            model = AutoModelForCausalLM.from_pretrained(root, gguf_file=path.name, dtype=torch.float32).eval()
        with torch.no_grad():
            logits = model(torch.tensor([PROMPT + DECODE])).logits[0].numpy()
        made[name] = (path, logits[len(PROMPT) - 1:])
    return made


def _steps(folder) -> np.ndarray:
    model = CpuModel(folder)
    return np.stack([model.prefill(PROMPT)] + [model.decode(t) for t in DECODE])


@pytest.mark.parametrize("name", list(GGUF_CASES))
def test_gguf_config_names_the_architecture(gguf_files, name):
    checkpoint = load_gguf(gguf_files[name][0])
    assert get_architecture(checkpoint.config["model_type"]).name == name
    case = next(c for c in CASES if c.name == name)
    expected = {**case.config, **GGUF_CASES[name]}
    head_dim = expected.get("head_dim", expected["hidden_size"] // expected["num_attention_heads"])
    assert checkpoint.config["head_dim"] == head_dim


@pytest.mark.parametrize("name", list(GGUF_CASES))
def test_gguf_build_writes_a_tokenizer_the_build_loads(gguf_files, cpu_build, name):
    folder = cpu_build(gguf_files[name][0], "q0f32", prefill_chunk=8)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    ids = tokenizer.encode("f0 f1, é!").ids
    assert ids and max(ids) < 320
    config = json.loads((folder / "chat-config.json").read_text())
    assert config["architecture"] == name


@pytest.mark.parametrize("quantization", ["q0f32", "source"])
@pytest.mark.parametrize("name", list(GGUF_CASES))
def test_gguf_build_matches_transformers_on_the_same_file(gguf_files, cpu_build, name, quantization):
    path, reference = gguf_files[name]
    ours = _steps(cpu_build(path, quantization, prefill_chunk=8))
    diff = np.abs(ours - reference).max(axis=1)
    assert diff.max() <= TOL, f"max |dlogit| per step: {np.array2string(diff, precision=6)}"
    assert np.abs(reference).max() > 0.5
