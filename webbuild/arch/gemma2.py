"""Gemma 2 (gemma-2-2b/9b/27b and their -it chat models; HF `model_type` "gemma2"): config and layout.

Gemma's base ((1 + w) RMSNorm stored as w, sqrt(hidden) embedding scale, GELU-tanh gated MLP,
explicit head_dim, tied head) with Gemma 2's differences: four norms per block (before and after
attention, before and after the MLP; the "post" norms apply to the sublayer's output before its
residual add), attention scores scaled by `query_pre_attn_scalar ** -0.5`, sliding-window layers
(query i sees keys (i - W, i]) alternating with global ones (the first is sliding), one RoPE base
for all layers, and soft-capping, x -> cap * tanh(x / cap), of the attention scores
(`attn_logit_softcapping`, inside the attention kernels: webbuild.tvm_patches.attention_softcap)
and of the output logits (`final_logit_softcapping`).
"""

from __future__ import annotations

from dataclasses import replace

from .base import Architecture, BuildOptions, ConfigReader
from .gemma import parse_config as gemma_config
from .gemma3 import LAYOUT as GEMMA3_LAYOUT, layer_types
from .gguf_layout import BLOCK_NAMES, GGUFLayout
from .transformer import TransformerConfig, TransformerLM, weight_map_for

LAYOUT = replace(GEMMA3_LAYOUT, q_norm=None, k_norm=None)
SOFTCAPS = ("attn_logit_softcapping", "final_logit_softcapping")


def parse_config(raw: dict, options: BuildOptions) -> TransformerConfig:
    """Validate a Gemma 2 config dict (HF `config.json` style); a soft-cap of null means none."""
    base = gemma_config(raw, options)
    cfg = ConfigReader(raw)
    types = layer_types(raw, base.num_hidden_layers, default_pattern=2)
    attn_cap, final_cap = (cfg.get(key, None, float) for key in SOFTCAPS)
    return replace(
        base,
        post_norms=True,
        attn_scale=cfg.get("query_pre_attn_scalar", 256, float) ** -0.5,
        sliding_window=cfg.get("sliding_window", 4096),  # TransformerConfig drops it when >= the context
        sliding_layers=tuple(i for i, t in enumerate(types) if t == "sliding_attention"),
        attn_softcap=attn_cap,
        final_softcap=final_cap,
    )


def _gguf_config(meta: dict, tensors: frozenset[str]) -> dict:
    """What llama.cpp's gemma2 files say or leave implicit: the soft-caps (written), every other
    layer sliding starting with the first, and the attention scale: 1/sqrt(head_dim), except for
    the 46-layer 27B model, where llama.cpp uses 1/sqrt(hidden / heads) as the released config does."""
    fields: dict = {"sliding_window_pattern": 2}
    for key in SOFTCAPS:
        if f"gemma2.{key}" in meta:
            fields[key] = float(meta[f"gemma2.{key}"])
    head_dim = meta.get("gemma2.attention.key_length")
    if meta.get("gemma2.block_count") == 46:
        head_dim = meta["gemma2.embedding_length"] // meta["gemma2.attention.head_count"]
    if head_dim is not None:
        fields["query_pre_attn_scalar"] = head_dim
    return fields


ARCH = Architecture(
    name="gemma2",
    hf_model_types=("gemma2",),
    parse_config=parse_config,
    build_model=TransformerLM,
    weight_map=lambda c: weight_map_for(c, LAYOUT),
    gguf=GGUFLayout(names=("gemma2",), model_type="gemma2", hf_class="Gemma2ForCausalLM",
                    hidden_act="gelu_pytorch_tanh", norm_offset=-1.0, extra_config=_gguf_config,
                    block_names={**BLOCK_NAMES, "ffn_norm": "pre_feedforward_layernorm",
                                 "post_attention_norm": "post_attention_layernorm",
                                 "post_ffw_norm": "post_feedforward_layernorm"}),
)
