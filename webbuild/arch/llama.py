"""The Llama family (Llama 2/3, SmolLM2, CodeLlama, Vicuna, ...): config and weight layout.

RoPE (with theta and optional rope scaling), grouped-query attention, RMSNorm, SwiGLU MLP, tied
or separate output head, optional attention / MLP biases. The model is the shared
`TransformerLM`; q/k/v and gate/up are fused into one matmul each by the weight map.
`llama_config` is also the base of the Llama-shaped architectures (Mistral, Qwen2, ...).
"""

from __future__ import annotations

from ..errors import ConfigError
from .base import Architecture, BuildOptions, ConfigReader, flag
from .gguf_layout import GGUFLayout
from .transformer import (
    HFLayout,
    TransformerConfig,
    TransformerLM,
    activation,
    check_rope_scaling,
    heads_geometry,
    rope_scaling_of,
    rope_setting,
    weight_map_for,
    window_of,
)

LAYOUT = HFLayout(
    embed="model.embed_tokens", final_norm="model.norm", lm_head="lm_head", layer="model.layers.{i}.",
    attn_norm="input_layernorm", mlp_norm="post_attention_layernorm",
    qkv=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), o="self_attn.o_proj",
    mlp_in=("mlp.gate_proj", "mlp.up_proj"), down="mlp.down_proj",
)


def llama_config(raw: dict, options: BuildOptions, *, act_key: str = "hidden_act", default_act: str = "silu",
                 **overrides) -> TransformerConfig:
    """A Llama-shaped config (RMSNorm, gated MLP, sequential residual) from HF fields; `overrides`
    set the fields the architecture decides (biases, sliding window, ...)."""
    cfg = ConfigReader(raw)
    hidden = cfg.require("hidden_size")
    heads, kv_heads, head_dim = heads_geometry(cfg, hidden)
    act = activation(raw.get(act_key) or default_act, f"config.json: {act_key}")
    max_pos = cfg.get("max_position_embeddings", 2048)
    context, chunk = window_of(max_pos, options)
    fields = dict(
        hidden_size=hidden,
        intermediate_size=cfg.require("intermediate_size"),
        num_hidden_layers=cfg.require("num_hidden_layers"),
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=cfg.require("vocab_size"),
        norm="rms",
        norm_eps=cfg.get("rms_norm_eps", 1e-6, float),
        hidden_act=act,
        gated_mlp=True,
        residual="sequential",
        max_position_embeddings=max_pos,
        context_window=context,
        prefill_chunk=chunk,
        rope_theta=rope_setting(raw, "rope_theta", 10000.0),
        rope_scaling=rope_scaling_of(raw),
        tie_word_embeddings=flag(raw, "tie_word_embeddings", False),
    )
    fields.update(overrides)
    fields["rope_scaling"] = check_rope_scaling(fields["rope_scaling"])
    return TransformerConfig(**fields)


def parse_config(raw: dict, options: BuildOptions) -> TransformerConfig:
    """Validate a Llama config dict (HF `config.json` style)."""
    if raw.get("hidden_act", "silu") != "silu":
        raise ConfigError(
            f"hidden_act {raw.get('hidden_act')!r} is not supported by the llama architecture",
            where="config.json: hidden_act",
            fix="the Llama family uses 'silu'; check that model_type is right",
        )
    attention_bias = flag(raw, "attention_bias", False)
    return llama_config(raw, options, qkv_bias=attention_bias, o_bias=attention_bias,
                        mlp_bias=flag(raw, "mlp_bias", False))


ARCH = Architecture(
    name="llama",
    hf_model_types=("llama",),
    parse_config=parse_config,
    build_model=TransformerLM,
    weight_map=lambda c: weight_map_for(c, LAYOUT),
    gguf=GGUFLayout(names=("llama",), model_type="llama", hf_class="LlamaForCausalLM", permuted=("attn_q", "attn_k")),
)
