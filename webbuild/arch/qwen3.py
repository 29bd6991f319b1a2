"""Qwen3 (0.6B - 32B dense): config and weight layout.

Llama-shaped with Qwen3's differences: an RMSNorm over each head of q and of k before RoPE (one
(head_dim,) weight per projection, `self_attn.q_norm` / `k_norm`), no q/k/v biases unless
`attention_bias`, an explicit `head_dim` (128 in every release, not hidden / heads), RoPE theta 1e6,
tied heads in the small models. Windows (`use_sliding_window`) follow Qwen2's rules.
"""

from __future__ import annotations

from dataclasses import replace

from .base import Architecture, BuildOptions, flag
from .gguf_layout import GGUFLayout
from .llama import LAYOUT as LLAMA_LAYOUT, llama_config
from .qwen2 import window_fields
from .transformer import TransformerConfig, TransformerLM, rope_setting, weight_map_for

LAYOUT = replace(LLAMA_LAYOUT, q_norm="self_attn.q_norm", k_norm="self_attn.k_norm")


def parse_config(raw: dict, options: BuildOptions) -> TransformerConfig:
    """Validate a Qwen3 config dict (HF `config.json` style)."""
    return llama_config(raw, options, rope_theta=rope_setting(raw, "rope_theta", 10000.0),
                        qkv_bias=flag(raw, "attention_bias", False), qk_norm=True, qk_norm_kind="rms",
                        **window_fields(raw))


ARCH = Architecture(
    name="qwen3",
    hf_model_types=("qwen3",),
    parse_config=parse_config,
    build_model=TransformerLM,
    weight_map=lambda c: weight_map_for(c, LAYOUT),
    gguf=GGUFLayout(names=("qwen3",), model_type="qwen3", hf_class="Qwen3ForCausalLM"),
)
