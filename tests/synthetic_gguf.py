"""Writes tiny synthetic llama GGUF files with PyPI `gguf`, for loader and build error tests, and
GGUF files of any supported block type from random valid blocks, for exact-weight and kernel tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

# Byte offsets, inside one block, of each type's float16 super-scale fields (d, and m or dmin):
# the only bytes of a block whose random contents could be inf/NaN. Every other bit pattern of a
# block of these types is a valid block.
F16_FIELDS: dict[GGMLQuantizationType, tuple[int, ...]] = {
    GGMLQuantizationType.Q4_0: (0,), GGMLQuantizationType.Q4_1: (0, 2),
    GGMLQuantizationType.Q5_0: (0,), GGMLQuantizationType.Q5_1: (0, 2),
    GGMLQuantizationType.Q8_0: (0,),
    GGMLQuantizationType.Q2_K: (80, 82), GGMLQuantizationType.Q3_K: (108,),
    GGMLQuantizationType.Q4_K: (0, 2), GGMLQuantizationType.Q5_K: (0, 2),
    GGMLQuantizationType.Q6_K: (208,),
}
FLOAT_TYPES = {GGMLQuantizationType.F32: np.float32, GGMLQuantizationType.F16: np.float16}


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


def random_f16(rng: np.random.Generator, n: int, any_finite: bool = False) -> np.ndarray:
    """(n,) float16 super-scales. Typical: magnitudes 2^-12..2^3 with random mantissa and sign.
    any_finite: uniformly random finite bit patterns (zeros, subnormals and 65504 included)."""
    if any_finite:
        bits = rng.integers(0, 1 << 16, n, dtype=np.uint16)
        bits = np.where((bits & 0x7C00) == 0x7C00, bits & 0x83FF, bits)  # inf/NaN exponent -> zero exponent
        return bits.astype(np.uint16).view(np.float16)
    magnitude = rng.uniform(1.0, 2.0, n) * np.exp2(rng.integers(-12, 3, n))
    return (magnitude * rng.choice([-1.0, 1.0], n)).astype(np.float16)


def random_blocks(ggml_type: GGMLQuantizationType, shape: tuple[int, int], rng: np.random.Generator,
                  any_finite: bool = False) -> np.ndarray:
    """Random valid data of a (rows, cols) tensor stored as `ggml_type`, as the stored bytes
    (rows, bytes per row) uint8 (GGUFReader's shape). Quantized types: random bytes with finite
    float16 scale fields (see `random_f16`); F32/F16/BF16: standard normal values."""
    rows, cols = shape
    if ggml_type == GGMLQuantizationType.BF16:
        values = rng.standard_normal((rows, cols)).astype(np.float32)
        return (values.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)  # (rows, cols * 2), truncated
    if ggml_type in FLOAT_TYPES:
        values = rng.standard_normal((rows, cols)).astype(FLOAT_TYPES[ggml_type])
        return values.view(np.uint8)  # (rows, cols * itemsize)
    block, type_size = GGML_QUANT_SIZES[ggml_type]
    raw = rng.integers(0, 256, (rows * (cols // block), type_size), dtype=np.uint8)  # (n_blocks, type_size)
    for at in F16_FIELDS[ggml_type]:
        raw[:, at:at + 2] = random_f16(rng, raw.shape[0], any_finite).view(np.uint8).reshape(-1, 2)
    return raw.reshape(rows, cols // block * type_size)


def write_typed_gguf(path: Path, tensors: dict[str, tuple[GGMLQuantizationType, tuple[int, int]]],
                     seed: int = 0, arch: str = "llama",
                     metadata: Callable[[gguf.GGUFWriter], None] | None = None) -> dict[str, np.ndarray]:
    """A GGUF holding each named (rows, cols) tensor in its ggml type, from `random_blocks`.

    Only the architecture key is written unless `metadata(writer)` adds more. Returns each
    tensor's stored bytes, (rows, bytes per row) uint8, as GGUFReader will give them back.
    """
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(path, arch)
    if metadata is not None:
        metadata(writer)
    written = {}
    for name, (ggml_type, shape) in tensors.items():
        raw = random_blocks(ggml_type, shape, rng)
        writer.add_tensor(name, raw, raw_dtype=ggml_type)
        written[name] = raw
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return written
