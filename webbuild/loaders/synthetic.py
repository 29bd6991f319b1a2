"""Synthetic checkpoints: real model shapes with random weights, for measuring kernel throughput.

A build source `synthetic:<preset>[:key=value,...]` names a Hugging Face style config (the
presets below, with any fields overridden, e.g. `synthetic:llama-3.2-1b:num_hidden_layers=2`).
Nothing is downloaded and no float weights exist: the build asks `Checkpoint.param_generator`
for every model parameter in the model's own layout (int4 packed words and scales for the
quantized schemes, one tensor at a time) and streams it through the normal shard writer. Values
are deterministic for a seed (`seed=N`, default 0): norms 1, biases 0, packed words uniformly
random, scales of random sign and magnitude giving weights of std ~0.02, float weights N(0, 0.02).

The tokenizer is byte-level BPE without merges over the first 256 ids (plus Llama 3's special
tokens at vocab - 256 + {0, 1, 6, 7, 9}: begin/end of text, header start/end, end of turn, and
filler tokens `<tok_N>` for every other id), so every id the model can produce decodes and the
vocabulary matches the output head. Text quality is meaningless; speed does not depend on it.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from webbuild.errors import ConfigError
from webbuild.loaders.checkpoint import Checkpoint
from webbuild.loaders.gguf_tokenizer import TOKEN_TYPE_CONTROL, TOKEN_TYPE_NORMAL, tokenizer_files_from_gguf

PREFIX = "synthetic:"
DEFAULT_CONTEXT_WINDOW = 4096  # the presets' own limits (128K for Llama 3.2) need GBs of KV cache
WEIGHT_STD = 0.02
SPECIAL_OFFSETS = {0: "<|begin_of_text|>", 1: "<|end_of_text|>", 6: "<|start_header_id|>",
                   7: "<|end_header_id|>", 9: "<|eot_id|>"}
MIN_VOCAB = 256 + max(SPECIAL_OFFSETS) + 1

_LLAMA3_COMMON = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu", "attention_bias": False,
    "mlp_bias": False, "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "vocab_size": 128256,
    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
}
PRESETS: dict[str, dict] = {
    # meta-llama/Llama-3.2-1B(-Instruct) config.json
    "llama-3.2-1b": {**_LLAMA3_COMMON, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                     "max_position_embeddings": 131072, "tie_word_embeddings": True,
                     "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}},
    # meta-llama/Meta-Llama-3-8B(-Instruct) config.json
    "llama-3-8b": {**_LLAMA3_COMMON, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                   "head_dim": 128, "max_position_embeddings": 8192, "tie_word_embeddings": False},
}
LLAMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def is_synthetic(source: str) -> bool:
    return str(source).startswith(PREFIX)


def _value(text: str):
    """An override value: int, float, true/false, or the string itself."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_source(source: str) -> tuple[str, dict, int]:
    """(preset name, HF-style config with overrides applied, seed) of a synthetic source."""
    preset, _, overrides = source[len(PREFIX):].partition(":")
    if preset not in PRESETS:
        raise ConfigError(f"unknown synthetic preset {preset!r}", where=source,
                          fix=f"use one of: {', '.join(PREFIX + p for p in PRESETS)}")
    config = {**PRESETS[preset]}
    seed = 0
    for item in filter(None, overrides.split(",")):
        key, eq, text = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"override {item!r} is not key=value", where=source,
                              fix="e.g. synthetic:llama-3.2-1b:num_hidden_layers=2,hidden_size=256")
        if key == "seed":
            seed = int(text)
        else:
            config[key] = _value(text)
    if int(config["vocab_size"]) < MIN_VOCAB:
        raise ConfigError(f"vocab_size {config['vocab_size']} is too small for the synthetic tokenizer",
                          where=f"{source}: vocab_size", fix=f"use at least {MIN_VOCAB}")
    return preset, config, seed


def _byte_chars() -> list[str]:
    """GPT-2's byte-level alphabet: the printable character standing for each byte 0..255."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def special_ids(vocab_size: int) -> dict[str, int]:
    """Special token text -> id (Llama 3's ids for a 128256 vocabulary)."""
    base = vocab_size - 256 if vocab_size >= 512 else 256
    return {text: base + offset for offset, text in SPECIAL_OFFSETS.items()}


def tokenizer_files(vocab_size: int, max_length: int) -> dict[str, bytes]:
    """tokenizer.json and tokenizer_config.json of the synthetic byte-level tokenizer."""
    specials = {i: t for t, i in special_ids(vocab_size).items()}
    tokens = _byte_chars() + [specials.get(i, f"<tok_{i}>") for i in range(256, vocab_size)]
    types = [TOKEN_TYPE_CONTROL if i in specials else TOKEN_TYPE_NORMAL for i in range(vocab_size)]
    ids = special_ids(vocab_size)
    metadata = {
        "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "llama-bpe", "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types, "tokenizer.ggml.merges": [],
        "tokenizer.ggml.bos_token_id": ids["<|begin_of_text|>"], "tokenizer.ggml.eos_token_id": ids["<|eot_id|>"],
        "tokenizer.ggml.add_bos_token": False, "tokenizer.chat_template": LLAMA3_CHAT_TEMPLATE,
    }
    return tokenizer_files_from_gguf(metadata, "synthetic tokenizer", model_max_length=max_length)


def param_generator(seed: int):
    """generate(name, shape, dtype) -> a deterministic random parameter (see the module docstring)."""

    def generate(name: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        count = int(np.prod(shape, dtype=np.int64))
        if dtype == "uint32":  # packed int4 words: 8 uniform random codes each
            return np.frombuffer(rng.bytes(4 * count), dtype=np.uint32).reshape(shape)
        if name.endswith(".q_scale"):
            # |w| = |code - 8| * |scale|; codes uniform in 0..15 have rms ~4.6
            magnitude = rng.uniform(0.5, 1.5, count) * (WEIGHT_STD / 4.6)
            return (magnitude * rng.choice((-1.0, 1.0), count)).astype(dtype).reshape(shape)
        if name.endswith("norm.weight"):
            return np.ones(shape, dtype)
        if name.endswith(".bias"):
            return np.zeros(shape, dtype)
        return (rng.standard_normal(count, dtype=np.float32) * WEIGHT_STD).astype(dtype).reshape(shape)

    return generate


def load_synthetic(source: str) -> Checkpoint:
    """The Checkpoint of a synthetic source: its config, tokenizer and parameter generator."""
    preset, config, seed = parse_source(source)
    ids = special_ids(int(config["vocab_size"]))
    config.setdefault("bos_token_id", ids["<|begin_of_text|>"])
    config.setdefault("eos_token_id", [ids["<|end_of_text|>"], ids["<|eot_id|>"]])
    context = min(DEFAULT_CONTEXT_WINDOW, int(config.get("max_position_embeddings", DEFAULT_CONTEXT_WINDOW)))
    return Checkpoint(
        source=Path(source),
        config=config,
        tensor_names=[],
        read_tensor=_no_tensors,
        tokenizer_files=tokenizer_files(int(config["vocab_size"]), context),
        chat_template=LLAMA3_CHAT_TEMPLATE,
        generation_config={"temperature": 0.6, "top_p": 0.9},
        param_generator=param_generator(seed),
        context_window=context,
    )


def model_id(source: str) -> str:
    """The default model folder name: `synthetic-<preset>`, plus `-custom` when fields are overridden."""
    preset, _, overrides = source[len(PREFIX):].partition(":")
    return f"synthetic-{preset}" + ("-custom" if overrides else "")


def _no_tensors(name: str) -> np.ndarray:
    raise KeyError(f"a synthetic checkpoint has no source tensor {name!r}")
