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
    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_embedding_length(8)
    writer.add_feed_forward_length(16)
    writer.add_head_count(2)
    writer.add_head_count_kv(1)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
    writer.add_rope_scaling_factor(2.0)
    add_tiny_tokenizer(writer)
    for key, value in (extra or {}).items():
        writer.add_uint32(key, value)
    for name, value in tensors.items():
        writer.add_tensor(name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return tensors
