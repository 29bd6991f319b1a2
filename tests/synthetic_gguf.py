"""Writes tiny synthetic llama GGUF files with PyPI `gguf`, for loader and build error tests."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np


def add_tiny_tokenizer(writer: gguf.GGUFWriter) -> None:
    """A 16-token byte-level BPE vocabulary: two control tokens, 13 letters, one merge."""
    tokens = ["<s>", "</s>"] + list("abcdefghijklm") + ["ab"]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_merges(["a b"])
    writer.add_token_types([3, 3] + [1] * 14)
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(1)


def write_gguf(path: Path, arch: str = "llama", tensors: dict | None = None,
                extra: dict | None = None) -> dict[str, np.ndarray]:
    """A tiny 1-layer llama GGUF (hidden 8, 2 heads, 1 KV head) with F32 tensors."""
    rng = np.random.default_rng(0)
    default = {
        "token_embd.weight": rng.standard_normal((16, 8), dtype=np.float32),
        "output_norm.weight": rng.standard_normal(8, dtype=np.float32),
        "output.weight": rng.standard_normal((16, 8), dtype=np.float32),
        "blk.0.attn_q.weight": rng.standard_normal((8, 8), dtype=np.float32),
        "blk.0.attn_k.weight": rng.standard_normal((4, 8), dtype=np.float32),
    }
    tensors = default if tensors is None else {**default, **tensors}
    writer = _tiny_writer(path, arch)
    writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
    writer.add_rope_scaling_factor(2.0)
    for key, value in (extra or {}).items():
        writer.add_uint32(key, value)
    _write_tensors(writer, tensors)
    return tensors


def _tiny_writer(path: Path, arch: str) -> gguf.GGUFWriter:
    """A writer with the tiny model's hyperparameters (1 layer, hidden 8, FFN 16, 2 heads, 1 KV head)
    and vocabulary."""
    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_embedding_length(8)
    writer.add_feed_forward_length(16)
    writer.add_head_count(2)
    writer.add_head_count_kv(1)
    writer.add_layer_norm_rms_eps(1e-6)
    add_tiny_tokenizer(writer)
    return writer


def _write_tensors(writer: gguf.GGUFWriter, tensors: dict[str, np.ndarray]) -> None:
    for name, value in tensors.items():
        writer.add_tensor(name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_tiny_llama_gguf(path: Path, seed: int = 1) -> Path:
    """A complete tiny llama GGUF (1 layer, hidden 8, 2 heads, 1 KV head, untied output, F32) with
    the 16-token vocabulary and a plain chat template: small enough for llama.cpp (wllama) to run
    in a few milliseconds per token."""
    rng = np.random.default_rng(seed)

    def r(*shape):
        return (rng.standard_normal(shape) * 0.3).astype(np.float32)

    ones = np.ones(8, dtype=np.float32)
    tensors = {
        "token_embd.weight": r(16, 8), "output_norm.weight": ones, "output.weight": r(16, 8),
        "blk.0.attn_norm.weight": ones, "blk.0.attn_q.weight": r(8, 8), "blk.0.attn_k.weight": r(4, 8),
        "blk.0.attn_v.weight": r(4, 8), "blk.0.attn_output.weight": r(8, 8), "blk.0.ffn_norm.weight": ones,
        "blk.0.ffn_gate.weight": r(16, 8), "blk.0.ffn_up.weight": r(16, 8), "blk.0.ffn_down.weight": r(8, 16),
    }
    writer = _tiny_writer(path, "llama")
    writer.add_rope_dimension_count(4)
    writer.add_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    _write_tensors(writer, tensors)
    return path
