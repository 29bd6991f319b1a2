"""Write a Hugging Face checkpoint (one of tests/arch_cases.py's tiny models) as a GGUF file the way
llama.cpp's converter lays it out: its tensor names (from the architecture's `GGUFLayout`), the q/k
rows of llama permuted for interleaved RoPE, the `<arch>.*` hyperparameter keys, and a byte-level
BPE vocabulary of the model's size. Matrices can be stored as Q8_0 (`gguf.quants.quantize`).

Written here from the GGUF format and the `gguf` package's writer; the oracle for such files is
transformers itself loading them (`from_pretrained(dir, gguf_file=...)`), not this writer.
"""

from __future__ import annotations

import json
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


def write_hf_as_gguf(folder: Path, path: Path, q8_0: tuple[str, ...] = (), pre: str = "gpt2") -> Path:
    """`folder` (config.json + model.safetensors) as a GGUF at `path`; GGUF block stems listed in
    `q8_0` (e.g. "ffn_up") are stored as Q8_0, everything else as F32. `pre`: the byte-level BPE
    pre-tokenizer, or "sentencepiece" for a SentencePiece vocabulary."""
    config = json.loads((folder / "config.json").read_text())
    arch = get_architecture(config["model_type"])
    layout = arch.gguf
    assert layout is not None, f"{arch.name} has no GGUF layout"
    name = layout.names[0]
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads", config["num_attention_heads"])
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    rope = config.get("rope_parameters") or {}
    writer = gguf.GGUFWriter(path, name)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_pad_token_id(0)
    if layout.layer_norm:
        writer.add_layer_norm_eps(config["layer_norm_eps"])
    else:
        writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    rope = rope.get("full_attention", rope)  # Gemma 3 keeps one entry per layer kind: the file has the global base
    writer.add_rope_freq_base(float(rope.get("rope_theta", config.get("rope_theta", 10000.0))))
    fraction = rope.get("partial_rotary_factor", config.get("partial_rotary_factor")) or 1.0
    writer.add_rope_dimension_count(int(fraction * head_dim))
    if name in ("phi3", "gemma3") and config.get("sliding_window"):  # the converters that write the window
        writer.add_sliding_window(config["sliding_window"])
    if pre == "sentencepiece":
        add_sentencepiece_vocabulary(writer, config["vocab_size"])
    else:
        add_bpe_vocabulary(writer, config["vocab_size"], pre)

    to_gguf = {f"{hf}": stem for stem, hf in layout.global_names.items()}
    weights = load_file(str(folder / "model.safetensors"))
    for hf_name, value in weights.items():
        base, _, suffix = hf_name.rpartition(".")
        parts = base.split(".")
        if base in to_gguf:
            stem = to_gguf[base]
        else:  # model.layers.{i}.<path>
            i, path_in_block = int(parts[2]), ".".join(parts[3:])
            block = {hf: stem for stem, hf in layout.block_names.items()}[path_in_block]
            stem = f"blk.{i}.{block}"
        value = value.astype(np.float32) - np.float32(layout.norm_offset if stem.endswith("norm") else 0.0)
        kind = stem.split(".")[-1]
        if kind in layout.permuted:
            value = permute_like_llama_cpp(value, heads if kind == "attn_q" else kv_heads)
        if kind in q8_0 and value.ndim == 2:
            writer.add_tensor(f"{stem}.{suffix}", gguf.quants.quantize(value, GGMLQuantizationType.Q8_0),
                              raw_dtype=GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(f"{stem}.{suffix}", np.ascontiguousarray(value))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
