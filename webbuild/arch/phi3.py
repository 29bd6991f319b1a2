"""Microsoft Phi-3 / Phi-3.5-mini / Phi-4-mini (HF `model_type` "phi3"): config and weight layout.

Llama-shaped (RMSNorm, SwiGLU, sequential residual, grouped-query attention, no biases) with the
checkpoint's projections already fused: `self_attn.qkv_proj` holds [q; k; v] and
`mlp.gate_up_proj` holds [gate; up], exactly the shared decoder's own fused layout. Optional
partial rotary (`partial_rotary_factor`) and tied embeddings; `sliding_window` is carried into the
model's state metadata. Phi-3's long-context RoPE ("longrope", older spellings "su"/"yarn") needs
per-dimension frequency factors the TVM kernels are not given here, so such configs are refused.
"""

from __future__ import annotations

from ..errors import ConfigError
from .base import Architecture, BuildOptions, ConfigReader
from .gguf_layout import BLOCK_NAMES, GGUFLayout
from .llama import llama_config
from .transformer import (
    HFLayout,
    TransformerConfig,
    TransformerLM,
    rope_scaling_of,
    rope_setting,
    rotary_dim_of,
    weight_map_for,
)

LAYOUT = HFLayout(
    embed="model.embed_tokens", final_norm="model.norm", lm_head="lm_head", layer="model.layers.{i}.",
    attn_norm="input_layernorm", mlp_norm="post_attention_layernorm",
    qkv=("self_attn.qkv_proj",), o="self_attn.o_proj",
    mlp_in=("mlp.gate_up_proj",), down="mlp.down_proj",
)


def parse_config(raw: dict, options: BuildOptions) -> TransformerConfig:
    """Validate a Phi-3 config dict (HF `config.json` style)."""
    scaling = rope_scaling_of(raw)
    if scaling is not None:
        kind = scaling.get("rope_type", scaling.get("type"))
        raise ConfigError(
            f"RoPE scaling {kind!r} is not supported for phi3",
            where=f"config.json: {'rope_scaling' if raw.get('rope_scaling') is not None else 'rope_parameters'}",
            fix="use a checkpoint with plain RoPE (e.g. microsoft/Phi-3-mini-4k-instruct); the 128k "
                "'longrope' variants need per-dimension RoPE factors webbuild does not pass to its kernels",
        )
    cfg = ConfigReader(raw)
    window = cfg.get("sliding_window", None)
    hidden = cfg.require("hidden_size")
    head_dim = cfg.get("head_dim", None) or hidden // cfg.require("num_attention_heads")
    fraction = rope_setting(raw, "partial_rotary_factor", 1.0)
    return llama_config(
        raw, options,
        rope_theta=rope_setting(raw, "rope_theta", 10000.0),
        rope_scaling=None,
        rotary_dim=rotary_dim_of(head_dim, fraction, "config.json: partial_rotary_factor"),
        sliding_window=window,
    )


ARCH = Architecture(
    name="phi3",
    hf_model_types=("phi3",),
    parse_config=parse_config,
    build_model=TransformerLM,
    weight_map=lambda c: weight_map_for(c, LAYOUT),
    gguf=GGUFLayout(names=("phi3",), model_type="phi3", hf_class="Phi3ForCausalLM", partial_rotary=True,
                    block_names={**BLOCK_NAMES, "attn_qkv": "self_attn.qkv_proj", "ffn_up": "mlp.gate_up_proj"}),
)
