"""Gemma (Gemma 1: gemma-2b/7b and their -it chat models): config and weight layout.

Llama-shaped (RoPE, RMSNorm, gated MLP, sequential residual) with Gemma's differences: RMSNorm
weights are stored as (w - 1) and applied as (1 + w) (the weight map adds the 1), the token
embeddings are multiplied by sqrt(hidden_size) (transformers casts that factor to the weight
dtype, as our f16 builds do), the MLP activation is the tanh approximation of GELU, `head_dim` is
explicit (gemma-7b: 256, not hidden / heads), the output head is tied, and attention is
multi-query (2b) or multi-head (7b).
"""

from __future__ import annotations

from dataclasses import replace

from ..errors import ConfigError
from .base import Architecture, BuildOptions, flag
from .gguf_layout import GGUFLayout
from .llama import LAYOUT as LLAMA_LAYOUT, llama_config
from .transformer import TransformerConfig, TransformerLM, activation, weight_map_for

LAYOUT = replace(LLAMA_LAYOUT, norm_weight=lambda w: w + 1.0)


def _activation(raw: dict) -> tuple[str, str]:
    """(config key, activation): `hidden_activation` when given (transformers 4.x configs), else
    `hidden_act`, whose legacy value "gelu" in the official releases means the tanh approximation
    (transformers maps it the same way)."""
    if raw.get("hidden_activation") is not None:
        return "hidden_activation", activation(raw["hidden_activation"], "config.json: hidden_activation")
    name = raw.get("hidden_act") or "gelu_pytorch_tanh"
    return "hidden_act", activation("gelu_pytorch_tanh" if name == "gelu" else name, "config.json: hidden_act")


def parse_config(raw: dict, options: BuildOptions) -> TransformerConfig:
    """Validate a Gemma config dict (HF `config.json` style)."""
    if raw.get("use_bidirectional_attention"):
        raise ConfigError("use_bidirectional_attention = true is not supported",
                          where="config.json: use_bidirectional_attention",
                          fix="webbuild builds causal language models; use a causal Gemma checkpoint")
    act_key, act = _activation(raw)
    attention_bias = flag(raw, "attention_bias", False)
    config = llama_config(raw, options, act_key=act_key, hidden_act=act,
                          tie_word_embeddings=flag(raw, "tie_word_embeddings", True),
                          qkv_bias=attention_bias, o_bias=attention_bias)
    return replace(config, embed_scale=float(config.hidden_size) ** 0.5)


ARCH = Architecture(
    name="gemma",
    hf_model_types=("gemma",),
    parse_config=parse_config,
    build_model=TransformerLM,
    weight_map=lambda c: weight_map_for(c, LAYOUT),
    gguf=GGUFLayout(names=("gemma",), model_type="gemma", hf_class="GemmaForCausalLM", hidden_act="gelu_pytorch_tanh",
                    norm_offset=-1.0),
)
