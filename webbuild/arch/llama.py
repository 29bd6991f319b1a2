"""The Llama family (Llama 2/3, SmolLM2, CodeLlama, Vicuna, ...): config, Relax model, weight map.

RoPE (with theta and optional rope scaling), grouped-query attention through TVM's paged KV
cache, RMSNorm, SwiGLU MLP, tied or separate output head. Q/K/V and gate/up projections are
fused into one matmul each; the weight map concatenates the source tensors accordingly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache

from ..errors import ConfigError
from ..quant import layers
from ..quant.scheme import QuantScheme
from .base import Architecture, BuildOptions, ConfigReader, WeightMap, WeightSource, concat_rows
from .kv_model import KVCacheSpec, create_kv_cache, kv_model_spec, last_token


@dataclass(frozen=True)
class LlamaConfig:
    """The fields of a Hugging Face Llama `config.json` the model needs."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict | None
    tie_word_embeddings: bool
    attention_bias: bool
    mlp_bias: bool
    max_position_embeddings: int
    context_window: int
    prefill_chunk: int

    @property
    def kv(self) -> KVCacheSpec:
        return KVCacheSpec(
            num_layers=self.num_hidden_layers,
            num_heads=self.num_attention_heads,
            num_kv_heads=self.num_key_value_heads,
            head_dim=self.head_dim,
            rope_theta=self.rope_theta,
            rope_scaling=self.rope_scaling,
            rotary_dim=self.head_dim,
        )


def parse_config(raw: dict, options: BuildOptions) -> LlamaConfig:
    """Validate a Llama config dict (HF `config.json` style)."""
    cfg = ConfigReader(raw)
    hidden = cfg.require("hidden_size")
    heads = cfg.require("num_attention_heads")
    kv_heads = cfg.get("num_key_value_heads", heads)
    if heads % kv_heads:
        raise ConfigError(
            f"num_attention_heads ({heads}) is not a multiple of num_key_value_heads ({kv_heads})",
            where="config.json: num_key_value_heads",
            fix="use a checkpoint whose query heads divide evenly into key/value heads",
        )
    head_dim = cfg.get("head_dim", hidden // heads)
    act = raw.get("hidden_act", "silu")
    if act != "silu":
        raise ConfigError(
            f"hidden_act {act!r} is not supported by the llama architecture",
            where="config.json: hidden_act",
            fix="the Llama family uses 'silu'; check that model_type is right",
        )
    rope_scaling = raw.get("rope_scaling")
    if rope_scaling is not None and not isinstance(rope_scaling, dict):
        raise ConfigError("rope_scaling must be an object", where="config.json: rope_scaling",
                          fix="remove it or give it as in the original config")
    max_pos = cfg.get("max_position_embeddings", 2048)
    context = min(options.context_window or max_pos, max_pos)
    return LlamaConfig(
        hidden_size=hidden,
        intermediate_size=cfg.require("intermediate_size"),
        num_hidden_layers=cfg.require("num_hidden_layers"),
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=cfg.require("vocab_size"),
        rms_norm_eps=cfg.get("rms_norm_eps", 1e-6, float),
        rope_theta=cfg.get("rope_theta", 10000.0, float),
        rope_scaling=rope_scaling,
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        attention_bias=bool(raw.get("attention_bias", False)),
        mlp_bias=bool(raw.get("mlp_bias", False)),
        max_position_embeddings=max_pos,
        context_window=context,
        prefill_chunk=min(options.prefill_chunk, context),
    )


class LlamaAttention(nn.Module):
    def __init__(self, c: LlamaConfig, scheme: QuantScheme):
        self.num_heads = c.num_attention_heads
        self.num_kv_heads = c.num_key_value_heads
        self.head_dim = c.head_dim
        qkv_rows = (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
        self.qkv_proj = layers.linear(c.hidden_size, qkv_rows, scheme, bias=c.attention_bias)
        self.o_proj = layers.linear(self.num_heads * self.head_dim, c.hidden_size, scheme, bias=c.attention_bias)

    def forward(self, x: Tensor, cache: PagedKVCache, layer_id: int) -> Tensor:
        b, s, _ = x.shape
        qkv = self.qkv_proj(x)  # (b, s, (heads + 2 * kv_heads) * head_dim)
        qkv = op.reshape(qkv, (b, s, self.num_heads + 2 * self.num_kv_heads, self.head_dim))
        out = cache.attention_with_fused_qkv(layer_id, qkv, self.num_heads, sm_scale=self.head_dim**-0.5)
        # out: (b, s, heads, head_dim)
        return self.o_proj(op.reshape(out, (b, s, self.num_heads * self.head_dim)))


class LlamaMLP(nn.Module):
    def __init__(self, c: LlamaConfig, scheme: QuantScheme):
        self.intermediate = c.intermediate_size
        self.gate_up_proj = layers.linear(c.hidden_size, 2 * c.intermediate_size, scheme, bias=c.mlp_bias)
        self.down_proj = layers.linear(c.intermediate_size, c.hidden_size, scheme, bias=c.mlp_bias)

    def forward(self, x: Tensor) -> Tensor:
        gate_up = self.gate_up_proj(x)  # (b, s, 2 * intermediate)
        gate, up = op.split(gate_up, 2, axis=-1)  # 2 x (b, s, intermediate)
        return self.down_proj(op.silu(gate) * up)


class LlamaDecoderLayer(nn.Module):
    def __init__(self, c: LlamaConfig, scheme: QuantScheme):
        self.input_layernorm = nn.RMSNorm(c.hidden_size, -1, c.rms_norm_eps, bias=False, dtype=scheme.dtype)
        self.self_attn = LlamaAttention(c, scheme)
        self.post_attention_layernorm = nn.RMSNorm(c.hidden_size, -1, c.rms_norm_eps, bias=False, dtype=scheme.dtype)
        self.mlp = LlamaMLP(c, scheme)

    def forward(self, x: Tensor, cache: PagedKVCache, layer_id: int) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cache, layer_id)  # (b, s, hidden)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaBody(nn.Module):
    def __init__(self, c: LlamaConfig, scheme: QuantScheme):
        self.embed_tokens = layers.embedding(c.vocab_size, c.hidden_size, scheme)
        self.layers = nn.ModuleList([LlamaDecoderLayer(c, scheme) for _ in range(c.num_hidden_layers)])
        self.norm = nn.RMSNorm(c.hidden_size, -1, c.rms_norm_eps, bias=False, dtype=scheme.dtype)

    def forward(self, x: Tensor, cache: PagedKVCache) -> Tensor:
        for layer_id, layer in enumerate(self.layers):
            x = layer(x, cache, layer_id)
        return self.norm(x)  # (b, s, hidden)


class LlamaForCausalLM(nn.Module):
    """The exported model: embed, prefill, decode and create_paged_kv_cache."""

    def __init__(self, c: LlamaConfig, scheme: QuantScheme):
        self.config = c
        self.dtype = scheme.dtype
        self.model = LlamaBody(c, scheme)
        self.lm_head = None if c.tie_word_embeddings else layers.linear(c.hidden_size, c.vocab_size, scheme)

    def _logits(self, hidden: Tensor) -> Tensor:
        if self.lm_head is None:
            logits = layers.tied_lm_head(self.model.embed_tokens, hidden)
        else:
            logits = self.lm_head(hidden)
        return logits.astype("float32") if logits.dtype != "float32" else logits  # (b, s, vocab)

    def embed(self, input_ids: Tensor) -> Tensor:
        return self.model.embed_tokens(input_ids)  # (seq, hidden)

    def prefill(self, input_embed: Tensor, paged_kv_cache: PagedKVCache):
        hidden = self.model(input_embed, paged_kv_cache)  # (1, seq, hidden)
        return self._logits(last_token(hidden)), paged_kv_cache  # logits: (1, 1, vocab)

    def decode(self, input_embed: Tensor, paged_kv_cache: PagedKVCache):
        hidden = self.model(input_embed, paged_kv_cache)  # (1, 1, hidden)
        return self._logits(hidden), paged_kv_cache

    def create_paged_kv_cache(self, max_batch_size, max_total_seq_len, prefill_chunk_size, page_size,
                              support_sliding_window) -> PagedKVCache:
        return create_kv_cache(self.config.kv, self.dtype, max_batch_size, max_total_seq_len,
                               prefill_chunk_size, page_size, support_sliding_window)

    def get_default_spec(self):
        return kv_model_spec(self.config.hidden_size, self.dtype)


_LAYER = re.compile(r"model\.layers\.(\d+)\.")


def weight_map(c: LlamaConfig) -> WeightMap:
    """Model float weight -> HF tensor names (q/k/v and gate/up are concatenated)."""
    weights: dict[str, WeightSource] = {"model.embed_tokens.weight": WeightSource(("model.embed_tokens.weight",)),
                                        "model.norm.weight": WeightSource(("model.norm.weight",))}
    if not c.tie_word_embeddings:
        weights["lm_head.weight"] = WeightSource(("lm_head.weight",))
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        attn = p + "self_attn."
        weights[attn + "qkv_proj.weight"] = WeightSource(
            tuple(attn + f"{n}_proj.weight" for n in "qkv"), concat_rows)
        if c.attention_bias:
            weights[attn + "qkv_proj.bias"] = WeightSource(tuple(attn + f"{n}_proj.bias" for n in "qkv"), concat_rows)
        gate_up = (p + "mlp.gate_proj", p + "mlp.up_proj")
        params = ["weight"] + (["bias"] if c.mlp_bias else [])
        for kind in params:
            weights[f"{p}mlp.gate_up_proj.{kind}"] = WeightSource(tuple(f"{g}.{kind}" for g in gate_up), concat_rows)
            weights[f"{p}mlp.down_proj.{kind}"] = WeightSource((f"{p}mlp.down_proj.{kind}",))
        for kind in ["weight"] + (["bias"] if c.attention_bias else []):
            weights[f"{attn}o_proj.{kind}"] = WeightSource((f"{attn}o_proj.{kind}",))
        for norm in ("input_layernorm", "post_attention_layernorm"):
            weights[p + norm + ".weight"] = WeightSource((p + norm + ".weight",))

    def unused(name: str) -> bool:
        return name.endswith("rotary_emb.inv_freq") or (c.tie_word_embeddings and name == "lm_head.weight")

    return WeightMap(weights, unused)


ARCH = Architecture(
    name="llama",
    hf_model_types=("llama",),
    parse_config=parse_config,
    build_model=LlamaForCausalLM,
    weight_map=weight_map,
)
