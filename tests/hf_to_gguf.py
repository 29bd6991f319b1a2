"""Write a Hugging Face checkpoint (one of tests/arch_cases.py's tiny models) as a GGUF file the way
llama.cpp's converter lays it out: its tensor names (from the architecture's `GGUFLayout`), the q/k
rows of llama permuted for interleaved RoPE, GPT-NeoX's per-head query_key_value rows reordered
to [q; k; v], the `<arch>.*` hyperparameter keys (for phi2, gptneox, starcoder and chatglm exactly the
keys their converter classes write, e.g. `feed_forward_length` as 4 * hidden for phi2 and starcoder,
no RoPE base for phi2 and gptneox, GLM's base 10 000 and epsilon 1e-5 whatever its config says), and
a byte-level BPE vocabulary of the model's size. Matrices can be stored as Q8_0 (`gguf.quants.quantize`);
`q8_0_round_trip` gives those matrices as the file holds them.

Written here from the GGUF format and the `gguf` package's writer; the oracle for such files is
transformers itself loading them (`from_pretrained(dir, gguf_file=...)`), not this writer, or where
transformers cannot read a family as llama.cpp does, the HF folder the file was written from.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType
from safetensors.numpy import load_file

from webbuild.arch import get_architecture


def permute_like_llama_cpp(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF rotate-half rows -> GGUF interleaved rows (the converter's direction); w (n_out, ...)."""
    n_out, rest = w.shape[0], w.shape[1:]
    return w.reshape(n_head, 2, n_out // n_head // 2, *rest).swapaxes(1, 2).reshape(w.shape)


def per_head_qkv_to_blocks_like_llama_cpp(w: np.ndarray, n_head: int) -> np.ndarray:
    """GPT-NeoX's query_key_value rows (heads, [q, k, v], head_dim) -> [q; k; v], as the converter
    stores them (weight or bias); w (3 * hidden, ...)."""
    per_head = w.reshape(n_head, 3, w.shape[0] // n_head // 3, *w.shape[1:])
    return np.concatenate([per_head[:, part].reshape(-1, *w.shape[1:]) for part in range(3)], axis=0)


def _byte_chars() -> list[str]:
    """GPT-2's byte-to-unicode table: the 256 single-character tokens of a byte-level BPE."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def add_bpe_vocabulary(writer: gguf.GGUFWriter, vocab_size: int, pre: str) -> None:
    """`vocab_size` tokens: <unk>, <s>, </s> (control), the 256 byte tokens, fillers `f0`, `f1`, ..."""
    tokens = ["<unk>", "<s>", "</s>"] + _byte_chars()
    tokens += [f"f{i}" for i in range(vocab_size - len(tokens))]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_merges(["f 0"])
    writer.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)


def add_sentencepiece_vocabulary(writer: gguf.GGUFWriter, vocab_size: int) -> None:
    """`vocab_size` SentencePiece tokens as llama.cpp writes them: <unk>, <s>, </s>, the 256
    <0xXX> byte tokens, then `▁f0`, `▁f1`, ... with falling scores."""
    pieces = [f"\u2581f{i}" for i in range(vocab_size - 259)]
    writer.add_tokenizer_model("llama")
    writer.add_token_list(["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + pieces)
    writer.add_token_scores([0.0] * 259 + [-float(i) for i in range(len(pieces))])
    writer.add_token_types([2, 3, 3] + [6] * 256 + [1] * len(pieces))
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)


def _llama_like_hparams(writer: gguf.GGUFWriter, config: dict, name: str, layer_norm: bool) -> None:
    """The keys llama.cpp's converter writes for the llama-shaped families (TextModel's defaults)."""
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads", config["num_attention_heads"])
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    rope = config.get("rope_parameters") or {}
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_pad_token_id(0)
    if layer_norm:
        writer.add_layer_norm_eps(config["layer_norm_eps"])
    else:
        writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    rope = rope.get("full_attention", rope)  # Gemma 3 keeps one entry per layer kind: the file has the global base
    writer.add_rope_freq_base(float(rope.get("rope_theta", config.get("rope_theta", 10000.0))))
    fraction = rope.get("partial_rotary_factor", config.get("partial_rotary_factor")) or 1.0
    writer.add_rope_dimension_count(int(fraction * head_dim))
    if name in ("phi3", "gemma2", "gemma3") and config.get("sliding_window"):  # the converters that write the window
        writer.add_sliding_window(config["sliding_window"])
    if name == "gemma2":
        writer.add_attn_logit_softcapping(config["attn_logit_softcapping"])
        writer.add_final_logit_softcapping(config["final_logit_softcapping"])


def _rotary_fraction(config: dict, old_name: str) -> float:
    rope = config.get("rope_parameters") or {}
    return float(rope.get("partial_rotary_factor", config.get("partial_rotary_factor", config.get(old_name))))


def _phi2_hparams(writer: gguf.GGUFWriter, config: dict) -> None:
    """Phi2Model.set_gguf_parameters: no RoPE base, no key length, the MLP width as 4 * hidden."""
    n_embd, n_head = config["hidden_size"], config["num_attention_heads"]
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(n_embd)
    writer.add_feed_forward_length(4 * n_embd)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_layer_norm_eps(config["layer_norm_eps"])
    writer.add_rope_dimension_count(int(_rotary_fraction(config, "partial_rotary_factor") * n_embd) // n_head)
    writer.add_add_bos_token(False)


def _gptneox_hparams(writer: gguf.GGUFWriter, config: dict) -> None:
    """GPTNeoXModel.set_gguf_parameters: no RoPE base, no key/value head count."""
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(hidden)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_rope_dimension_count(int(_rotary_fraction(config, "rotary_pct") * (hidden // heads)))
    writer.add_head_count(heads)
    writer.add_parallel_residual(config.get("use_parallel_residual", True))
    writer.add_layer_norm_eps(config["layer_norm_eps"])


def _starcoder_hparams(writer: gguf.GGUFWriter, config: dict) -> None:
    """StarCoderModel.set_gguf_parameters: one key/value head and 4 * n_embd whatever the config says."""
    writer.add_context_length(config["n_positions"])
    writer.add_embedding_length(config["n_embd"])
    writer.add_feed_forward_length(4 * config["n_embd"])
    writer.add_block_count(config["n_layer"])
    writer.add_head_count(config["n_head"])
    writer.add_head_count_kv(1)
    writer.add_layer_norm_eps(config["layer_norm_epsilon"])


def _chatglm_hparams(writer: gguf.GGUFWriter, config: dict) -> None:
    """ChatGLMModel.set_gguf_parameters (it converts GlmForCausalLM): no key length, the context as
    `seq_length` or the hidden size, the epsilon as `layernorm_epsilon` or 1e-5, RoPE over a fraction
    (top-level `partial_rotary_factor`, else 0.5) of hidden / heads, base 10 000 times `rope_ratio`."""
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    writer.add_context_length(config.get("seq_length", hidden))
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(config.get("ffn_hidden_size", config.get("intermediate_size", 4 * hidden)))
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("multi_query_group_num", config.get("num_key_value_heads", heads)))
    writer.add_layer_norm_rms_eps(config.get("layernorm_epsilon", 1e-5))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    rope_dim = config.get("attention_dim", hidden // heads)
    writer.add_rope_dimension_count(int(rope_dim * config.get("partial_rotary_factor", 0.5)))
    writer.add_add_bos_token(False)
    writer.add_rope_freq_base(10000 * config.get("rope_ratio", 1))


HPARAMS = {"phi2": _phi2_hparams, "gptneox": _gptneox_hparams, "starcoder": _starcoder_hparams,
           "chatglm": _chatglm_hparams}


def _gguf_stem(hf_base: str, layout) -> str:
    """The GGUF stem (`token_embd`, `blk.3.attn_qkv`) of an HF tensor name without its suffix."""
    to_gguf = {hf: stem for stem, hf in layout.global_names.items()}
    if hf_base in to_gguf:
        return to_gguf[hf_base]
    head, tail = layout.layer_prefix.split("{i}")
    match = re.fullmatch(re.escape(head) + r"(\d+)" + re.escape(tail) + r"(.+)", hf_base)
    if match is None:
        raise KeyError(f"{hf_base!r} has no GGUF name in the {layout.names[0]} layout")
    block = {hf: stem for stem, hf in layout.block_names.items()}[match.group(2)]
    return f"blk.{int(match.group(1))}.{block}"


def _layout_of(folder: Path):
    config = json.loads((folder / "config.json").read_text())
    layout = get_architecture(config["model_type"]).gguf
    assert layout is not None, f"{config['model_type']} has no GGUF layout"
    return config, layout


def q8_0_round_trip(folder: Path, q8_0: tuple[str, ...]) -> dict[str, np.ndarray]:
    """HF name -> values of the matrices `write_hf_as_gguf(folder, ..., q8_0)` stores as Q8_0, as
    the file holds them (quantized and dequantized; row reorders commute with Q8_0's row blocks)."""
    _, layout = _layout_of(folder)
    stored = {}
    for hf_name, value in load_file(str(folder / "model.safetensors")).items():
        stem = _gguf_stem(hf_name.rpartition(".")[0], layout)
        if stem.split(".")[-1] in q8_0 and value.ndim == 2:
            packed = gguf.quants.quantize(value.astype(np.float32), GGMLQuantizationType.Q8_0)
            stored[hf_name] = gguf.quants.dequantize(packed, GGMLQuantizationType.Q8_0).reshape(value.shape)
    return stored


def write_hf_as_gguf(folder: Path, path: Path, q8_0: tuple[str, ...] = (), pre: str = "gpt2") -> Path:
    """`folder` (config.json + model.safetensors) as a GGUF at `path`; GGUF block stems listed in
    `q8_0` (e.g. "ffn_up") are stored as Q8_0, everything else as F32. `pre`: the byte-level BPE
    pre-tokenizer, or "sentencepiece" for a SentencePiece vocabulary."""
    config, layout = _layout_of(folder)
    name = layout.names[0]
    heads = config.get("num_attention_heads")  # (GPT-2 style configs have n_head, and no permuted rows)
    kv_heads = config.get("num_key_value_heads", heads)
    writer = gguf.GGUFWriter(path, name)
    if name in HPARAMS:
        HPARAMS[name](writer, config)
    else:
        _llama_like_hparams(writer, config, name, layout.layer_norm)
    if pre == "sentencepiece":
        add_sentencepiece_vocabulary(writer, config["vocab_size"])
    else:
        add_bpe_vocabulary(writer, config["vocab_size"], pre)

    weights = load_file(str(folder / "model.safetensors"))
    for hf_name, value in weights.items():
        base, _, suffix = hf_name.rpartition(".")
        stem = _gguf_stem(base, layout)
        value = value.astype(np.float32) - np.float32(layout.norm_offset if stem.endswith("norm") else 0.0)
        kind = stem.split(".")[-1]
        if kind in layout.permuted:
            value = permute_like_llama_cpp(value, heads if kind == "attn_q" else kv_heads)
        if name == "gptneox" and kind == "attn_qkv":
            value = per_head_qkv_to_blocks_like_llama_cpp(value, heads)
        if kind in q8_0 and value.ndim == 2:
            writer.add_tensor(f"{stem}.{suffix}", gguf.quants.quantize(value, GGMLQuantizationType.Q8_0),
                              raw_dtype=GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(f"{stem}.{suffix}", np.ascontiguousarray(value))
    finish_gguf(writer)
    return path


def finish_gguf(writer: gguf.GGUFWriter) -> None:
    """Write the header, metadata and tensors the writer holds, and close the file."""
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def gguf_metadata(path) -> dict:
    """A GGUF file's metadata as the `gguf` package reads it (key -> value)."""
    reader = gguf.GGUFReader(path)
    return {name: field.contents() for name, field in reader.fields.items()}
