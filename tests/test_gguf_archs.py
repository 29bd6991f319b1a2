"""GGUF files of the architectures with a GGUF layout (llama, qwen2, qwen3, phi3, gemma, gemma2, gemma3,
stablelm, phi2, gptneox, starcoder, chatglm), written the way llama.cpp's converter writes them
(tests/hf_to_gguf.py: its tensor names, llama's permuted q/k rows, phi3's fused projections and partial
RoPE, GPT-NeoX's query_key_value rows reordered to [q; k; v], Gemma's norms stored plus one, Gemma 2's
soft-caps, the keys the phi2, gptneox, starcoder and chatglm converters write and no more (chatglm, which
llama.cpp writes for HF GLM: no key length, base 10 000, epsilon 1e-5), some matrices as Q8_0) from
tiny random transformers models, built by `webbuild build`. llama.cpp writes no GPT-J or RWKV-4 file
(webbuild.arch.gguf_layout); those architectures, and its own RWKV-6/7, are refused by name.

The oracle is transformers loading the same GGUF file (`from_pretrained(dir, gguf_file=...)`,
dequantized to float32). Where transformers 5.24 cannot stand in for llama.cpp (it loads no `gemma`,
`phi2`, `gptneox`, `starcoder` or `chatglm` GGUF, reads a `phi3` file's partial RoPE, `phi3.rope.dimension_count`,
as full, and ignores `stablelm.rope.freq_base`) the oracle is the HF model the file was written from,
its Q8_0 matrices replaced by the file's values (`q8_0_round_trip`). The CPU build's logits after a
two-chunk prefill and 8 decode steps match it to 1e-3, for `q0f32` and for the faithful `source` build
(Q8_0 kept as int8 groups; GPT-NeoX's fused q/k/v among them). Bad files of the new families end in
typed errors (a starcoder file with several key/value heads, GPT-NeoX q/k/v rows the heads do not split,
a chatglm file with ChatGLM's fused attn_qkv).
"""

from __future__ import annotations

import json
from dataclasses import replace

import gguf
import numpy as np
import pytest
from tokenizers import Tokenizer

from arch_cases import CASES, save_case
from hf_to_gguf import add_bpe_vocabulary, q8_0_round_trip, write_hf_as_gguf
from webbuild.arch import get_architecture
from webbuild.errors import ConfigError, UnknownArchitectureError, WeightMappingError
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
                                             "full_attention": {"rope_type": "default", "rope_theta": 5000.0}}},
              # what llama.cpp assumes of every gemma2 file: scores scaled by 1/sqrt(head_dim) (but for the
              # 27B), every other layer sliding; the window and both soft-caps are written
              "gemma2": {"query_pre_attn_scalar": 24},
              # what llama.cpp's converters write and assume: phi2 and starcoder files give the MLP
              # width as 4 * hidden; gptneox files no RoPE base (llama.cpp's default, 10 000)
              "phi": {"intermediate_size": 256}, "gpt_neox": {"rotary_emb_base": 10000.0},
              "gpt_bigcode": {"n_inner": 256},
              # what llama.cpp's chatglm converter writes and assumes of a GlmForCausalLM: no key length
              # (head_dim = hidden / heads), RoPE base 10 000, epsilon 1e-5 (the case's already)
              "glm": {"head_dim": 16, "rope_theta": 10000.0},
              # gptneox.use_parallel_residual = false; llama.cpp needs the attention biases and an
              # output tensor, and the file does not name the activation (webbuild reads `gelu`)
              "gpt_neox_sequential": {"attention_bias": True, "tie_word_embeddings": False, "hidden_act": "gelu"}}
# the architecture of each case (its name unless it is a variant)
ARCH = {"gpt_neox_sequential": "gpt_neox"}
# files transformers does not read as llama.cpp does (gemma3: it takes Gemma3TextConfig's default
# query_pre_attn_scalar, 256, where llama.cpp uses head_dim; gemma2: that and the default soft-caps,
# 50 and 30, whatever the file says), or does not read at all
HF_ORACLE = {"gemma", "phi3", "stablelm", "gemma2", "gemma3", "phi", "gpt_neox", "gpt_bigcode", "gpt_neox_sequential",
             "glm"}
Q8_0 = ("ffn_up", "attn_output", "attn_qkv")
# the byte-level BPE pre-tokenizers of the test files (SentencePiece: Llama 2, Mistral, Phi-3, Gemma)
PRE = {"qwen2": "qwen2", "qwen3": "qwen2", "phi": "gpt2", "gpt_neox": "gpt2", "gpt_bigcode": "gpt2",
       "gpt_neox_sequential": "gpt2", "glm": "chatglm-bpe"}


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
        path = write_hf_as_gguf(folder, root / f"{name}.gguf", q8_0=Q8_0, pre=PRE.get(name, "sentencepiece"))
        if name in HF_ORACLE:
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
            stored = {k: torch.from_numpy(v) for k, v in q8_0_round_trip(folder, Q8_0).items()}
            assert stored and not model.load_state_dict(stored, strict=False).unexpected_keys
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
    assert get_architecture(checkpoint.config["model_type"]).name == ARCH.get(name, name)
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
    assert config["architecture"] == ARCH.get(name, name)


@pytest.mark.parametrize("quantization", ["q0f32", "source"])
@pytest.mark.parametrize("name", list(GGUF_CASES))
def test_gguf_build_matches_transformers_on_the_same_file(gguf_files, cpu_build, name, quantization):
    path, reference = gguf_files[name]
    ours = _steps(cpu_build(path, quantization, prefill_chunk=8))
    diff = np.abs(ours - reference).max(axis=1)
    assert diff.max() <= TOL, f"max |dlogit| per step: {np.array2string(diff, precision=6)}"
    assert np.abs(reference).max() > 0.5


def _tiny_gguf(path, arch: str, keys: dict, tensors: dict):
    """A GGUF of `arch` with the given `<arch>.*` keys (ints, floats, bools), a 320-token BPE vocabulary
    and F32 tensors, for the loader's refusals."""
    writer = gguf.GGUFWriter(path, arch)
    for key, value in keys.items():
        add = {bool: writer.add_bool, int: writer.add_uint32, float: writer.add_float32}[type(value)]
        add(f"{arch}.{key}", value)
    add_bpe_vocabulary(writer, 320, "gpt2")
    for name, value in tensors.items():
        writer.add_tensor(name, np.asarray(value, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


SHAPE = {"block_count": 1, "context_length": 16, "embedding_length": 64, "feed_forward_length": 256,
         "attention.head_count": 4, "attention.layer_norm_epsilon": 1e-5}


@pytest.mark.parametrize("arch", ["gptj", "rwkv6", "rwkv7"])
def test_families_llama_cpp_does_not_write_for_webbuild_are_refused(tmp_path, arch):
    path = _tiny_gguf(tmp_path / f"{arch}.gguf", arch, SHAPE, {"token_embd.weight": np.zeros((320, 64))})
    with pytest.raises(UnknownArchitectureError) as info:
        load_gguf(path)
    assert "gptneox" in info.value.fix and "starcoder" in info.value.fix


def test_starcoder_with_more_than_one_kv_head_is_refused(tmp_path):
    path = _tiny_gguf(tmp_path / "sc.gguf", "starcoder", {**SHAPE, "attention.head_count_kv": 4},
                      {"token_embd.weight": np.zeros((320, 64))})
    with pytest.raises(ConfigError) as info:
        load_gguf(path)
    assert "head_count_kv" in info.value.where


def test_gptneox_qkv_rows_that_do_not_split_into_heads_are_a_mapping_error(tmp_path):
    path = _tiny_gguf(tmp_path / "neox.gguf", "gptneox", {**SHAPE, "rope.dimension_count": 8},
                      {"token_embd.weight": np.zeros((320, 64)), "blk.0.attn_qkv.weight": np.zeros((100, 64))})
    checkpoint = load_gguf(path)
    with pytest.raises(WeightMappingError) as info:
        checkpoint.read_tensor("gpt_neox.layers.0.attention.query_key_value.weight")
    assert "blk.0.attn_qkv.weight" in info.value.message


def test_chatglm_file_of_an_original_chatglm_checkpoint_is_a_mapping_error(tmp_path):
    """ChatGLM2/3 and the original GLM-4 (remote code) convert to `chatglm` files with a fused attn_qkv,
    which webbuild's `glm` (separate q/k/v) does not map."""
    keys = {**SHAPE, "rope.dimension_count": 8, "attention.layer_norm_rms_epsilon": 1e-5}
    path = _tiny_gguf(tmp_path / "chatglm.gguf", "chatglm", keys,
                      {"token_embd.weight": np.zeros((320, 64)), "blk.0.attn_qkv.weight": np.zeros((192, 64))})
    with pytest.raises(WeightMappingError) as info:
        load_gguf(path)
    assert "blk.0.attn_qkv.weight" in info.value.message
