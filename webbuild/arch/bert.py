"""BERT encoders (HF `bert`: all-MiniLM, BGE, E5 and other sentence-embedding models): config,
model and weight layout.

Learned absolute positions plus token type 0 (folded into the position table at build time, which
is exact up to float rounding), post-LayerNorm blocks (x = LN(x + attn(x)); x = LN(x + mlp(x))),
bidirectional attention with a padding mask, a GELU MLP, then the sentence-transformers pooling
(webbuild.arch.pooling). The module exports one function, `encode`: a padded batch of token ids and
its 0/1 mask, both (batch, seq) int32 with dynamic batch and seq, -> (batch, hidden) float32
sentence embeddings. No KV cache: each call sees whole inputs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tvm import te
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op

from ..errors import ConfigError
from ..kernels.activations import activate
from ..kernels.encoder_attention import MASK_BIAS
from ..kernels.model_kernels import ModelKernels
from ..quant import layers
from ..quant.scheme import QuantScheme
from .base import Architecture, BuildOptions, ConfigReader, WeightMap, WeightSource, concat_rows
from .pooling import Pooling, pool, read_pooling
from .transformer import activation


@dataclass(frozen=True)
class BertConfig:
    """An encoder's shapes, its pooling, and the fields the build's shared steps read."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    vocab_size: int
    max_position_embeddings: int
    norm_eps: float
    hidden_act: str
    context_window: int  # the longest input (positions the model has)
    prefill_chunk: int  # kept for the build's shared memory estimate
    pooling: Pooling = Pooling()

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def state_metadata(self) -> dict:
        """No sequence state: every call encodes whole inputs."""
        return {"kv_state": "none", "sliding_window": None}

    def state_bytes(self, dsize: int) -> tuple[int, int]:
        return 0, 0

    @property
    def activation_width(self) -> int:
        return max(3 * self.hidden_size, self.intermediate_size)

    @property
    def embedding(self) -> dict:
        """chat-config.json's `embedding` block: what the runtime needs to batch and post-process."""
        max_len = min(self.pooling.max_seq_length or self.context_window, self.context_window)
        return {"dimensions": self.hidden_size, "pooling": self.pooling.mode, "normalize": self.pooling.normalize,
                "max_seq_length": max_len, "function": "encode"}


def parse_config(raw: dict, options: BuildOptions) -> BertConfig:
    """Validate a BERT config dict (HF `config.json`)."""
    cfg = ConfigReader(raw)
    hidden = cfg.require("hidden_size")
    heads = cfg.require("num_attention_heads")
    if hidden % heads:
        raise ConfigError(f"hidden_size ({hidden}) is not a multiple of num_attention_heads ({heads})",
                          where="config.json: num_attention_heads", fix="BERT heads split hidden_size evenly")
    kind = raw.get("position_embedding_type", "absolute")
    if kind not in (None, "absolute"):
        raise ConfigError(f"position_embedding_type {kind!r} is not supported", where="config.json: "
                          "position_embedding_type", fix="webbuild builds BERT with absolute position embeddings")
    max_pos = cfg.get("max_position_embeddings", 512)
    context = min(options.context_window or max_pos, max_pos)
    return BertConfig(
        hidden_size=hidden,
        intermediate_size=cfg.require("intermediate_size"),
        num_hidden_layers=cfg.require("num_hidden_layers"),
        num_attention_heads=heads,
        vocab_size=cfg.require("vocab_size"),
        max_position_embeddings=max_pos,
        norm_eps=cfg.get("layer_norm_eps", 1e-12, float),
        hidden_act=activation(raw.get("hidden_act") or "gelu", "config.json: hidden_act"),
        context_window=context,
        prefill_chunk=min(options.prefill_chunk, context),
    )


def with_pooling(config: BertConfig, folder: Path) -> BertConfig:
    """The config with the source folder's sentence-transformers pooling (webbuild.arch.pooling)."""
    return dataclasses.replace(config, pooling=read_pooling(folder))


class SelfAttention(nn.Module):
    """Bidirectional multi-head attention over a padded batch; one fused [q; k; v] matmul. The
    target's encoder attention kernel when it has one (WebGPU: webbuild.kernels.encoder_attention),
    else Relax matmuls and softmax; Linear layers through the target's encoder GEMM where it has one
    (ModelKernels.encoder_linear)."""

    def __init__(self, c: BertConfig, scheme: QuantScheme, kernels: ModelKernels):
        self.heads, self.head_dim = c.num_attention_heads, c.head_dim
        self.kernels = kernels
        self.qkv = layers.linear(c.hidden_size, 3 * c.hidden_size, scheme, bias=True)
        self.o = layers.linear(c.hidden_size, c.hidden_size, scheme, bias=True)

    def forward(self, x: Tensor, mask: Tensor, bias: Tensor | None) -> Tensor:
        """x (b, s, hidden), mask (b, s) int32 1 real / 0 padding, bias (b, 1, 1, s) the additive key
        mask (None with a kernel) -> (b, s, hidden)."""
        b, s, hidden = x.shape
        linear = self.kernels.encoder_linear
        if bias is None:
            return linear(self.o, self.kernels.encoder_attention(linear(self.qkv, x), mask, self.heads))
        qkv = op.reshape(linear(self.qkv, x), (b, s, 3, self.heads, self.head_dim))
        q, k, v = (op.permute_dims(op.squeeze(t, axis=2), (0, 2, 1, 3))  # each (b, heads, s, head_dim)
                   for t in op.split(qkv, 3, axis=2))
        scores = op.matmul(q, op.permute_dims(k, (0, 1, 3, 2))) * (self.head_dim ** -0.5)  # (b, heads, s, s)
        probs = op.softmax(scores + bias, axis=-1)
        out = op.permute_dims(op.matmul(probs, v), (0, 2, 1, 3))  # (b, s, heads, head_dim)
        return linear(self.o, op.reshape(out, (b, s, hidden)))


class Layer(nn.Module):
    def __init__(self, c: BertConfig, scheme: QuantScheme, kernels: ModelKernels):
        self.act = c.hidden_act
        self.kernels = kernels
        self.attn = SelfAttention(c, scheme, kernels)
        self.attn_norm = nn.LayerNorm(c.hidden_size, c.norm_eps, dtype=scheme.dtype)
        self.up = layers.linear(c.hidden_size, c.intermediate_size, scheme, bias=True)
        self.down = layers.linear(c.intermediate_size, c.hidden_size, scheme, bias=True)
        self.mlp_norm = nn.LayerNorm(c.hidden_size, c.norm_eps, dtype=scheme.dtype)

    def forward(self, x: Tensor, mask: Tensor, bias: Tensor | None) -> Tensor:
        x = self.attn_norm(x + self.attn(x, mask, bias))  # (b, s, hidden)
        linear = self.kernels.encoder_linear
        return self.mlp_norm(x + linear(self.down, activate(linear(self.up, x), self.act)))


class BertEncoder(nn.Module):
    """The exported model: `encode` (padded ids and mask -> pooled, maybe normalised, embeddings)."""

    def __init__(self, c: BertConfig, scheme: QuantScheme, kernels: ModelKernels):
        self.config = c
        self.dtype = scheme.dtype
        self.tok_embed = layers.embedding(c.vocab_size, c.hidden_size, scheme)
        # position_embeddings + token_type_embeddings[0] (every input is one segment)
        self.pos_embed = nn.Parameter((c.max_position_embeddings, c.hidden_size), dtype=scheme.dtype)
        self.embed_norm = nn.LayerNorm(c.hidden_size, c.norm_eps, dtype=scheme.dtype)
        self.kernel_attention = kernels.encoder_attention_func is not None
        self.layers = nn.ModuleList([Layer(c, scheme, kernels) for _ in range(c.num_hidden_layers)])

    def encode(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        b, s = input_ids.shape
        tokens = op.reshape(self.tok_embed(op.reshape(input_ids, (b * s,))), (b, s, self.config.hidden_size))
        positions = op.tensor_expr_op(
            lambda table, ids: te.compute((ids.shape[1], table.shape[1]), lambda i, k: table[i, k], name="positions"),
            "positions", args=[self.pos_embed, input_ids])  # (s, hidden): rows 0 .. s-1
        x = self.embed_norm(tokens.astype(self.dtype) + positions)  # (b, s, hidden)
        mask = attention_mask.astype("float32")  # (b, s) 1 real, 0 padding
        bias = None if self.kernel_attention else op.reshape((1.0 - mask) * MASK_BIAS, (b, 1, 1, s)).astype(self.dtype)
        for layer in self.layers:
            x = layer(x, attention_mask, bias)
        return pool(x.astype("float32"), mask, self.config.pooling)  # (b, hidden)

    def get_default_spec(self):
        packed = {"param_mode": "packed", "effect_mode": "none"}
        return {"encode": {"input_ids": nn.spec.Tensor(["batch", "seq"], "int32"),
                           "attention_mask": nn.spec.Tensor(["batch", "seq"], "int32"), "$": packed}}


def _plus_type0(arrays: list[np.ndarray]) -> np.ndarray:
    """position_embeddings (max_pos, hidden) + token_type_embeddings[0] (hidden,)."""
    return arrays[0] + arrays[1][0]


def weight_map(c: BertConfig) -> WeightMap:
    weights = {
        "tok_embed.weight": WeightSource(("embeddings.word_embeddings.weight",)),
        "pos_embed": WeightSource(("embeddings.position_embeddings.weight", "embeddings.token_type_embeddings.weight"),
                                  _plus_type0),
        "embed_norm.weight": WeightSource(("embeddings.LayerNorm.weight",)),
        "embed_norm.bias": WeightSource(("embeddings.LayerNorm.bias",)),
    }
    for i in range(c.num_hidden_layers):
        src, dst = f"encoder.layer.{i}.", f"layers.{i}."
        for kind in ("weight", "bias"):
            weights[f"{dst}attn.qkv.{kind}"] = WeightSource(
                tuple(f"{src}attention.self.{p}.{kind}" for p in ("query", "key", "value")), concat_rows)
            for name, path in (("attn.o", "attention.output.dense"), ("attn_norm", "attention.output.LayerNorm"),
                               ("up", "intermediate.dense"), ("down", "output.dense"),
                               ("mlp_norm", "output.LayerNorm")):
                weights[f"{dst}{name}.{kind}"] = WeightSource((f"{src}{path}.{kind}",))

    def unused(name: str) -> bool:
        # the pooler (a classification head sentence-transformers does not use) and index buffers
        return name.startswith("pooler.") or name.endswith(("position_ids", "token_type_ids"))

    return WeightMap(weights, unused)


ARCH = Architecture(
    name="bert",
    hf_model_types=("bert",),
    parse_config=parse_config,
    build_model=BertEncoder,
    weight_map=weight_map,
    model_kind="embedding",
    source_extras=with_pooling,
)
