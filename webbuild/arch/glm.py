"""GLM-4 in Hugging Face format (transformers' GlmForCausalLM, e.g. THUDM/glm-4-9b-chat-hf): config and weights.

RMSNorm, grouped-query attention with an explicit `head_dim`, q/k/v biases (`attention_bias`,
on by default; o_proj has none), a fused `mlp.gate_up_proj` SwiGLU MLP, and partial RoPE
(`partial_rotary_factor`, 0.5) in the interleaved layout: each rotated pair is (2i, 2i+1). The
weight map permutes those q/k rows into rotate-half order, which the paged KV cache applies
(exact: both q and k move alike, so q.k is unchanged). The model is the shared `TransformerLM`.
The original `chatglm` checkpoints (fused `query_key_value`, remote code) are a different layout.

GGUF: llama.cpp's converter registers `GlmForCausalLM` under its ChatGLM class, so these files are
`chatglm` ones: q/k/v, o, the fused `ffn_up` (gate rows first) and the biases stored as in the HF
checkpoint, nothing permuted (llama.cpp's chatglm RoPE is its "normal" one, interleaved pairs over
`chatglm.rope.dimension_count` leading dimensions). The converter writes no key length, no RoPE base
from the config and no epsilon from `rms_norm_eps`: llama.cpp assumes head_dim = hidden / heads, base
10 000 (times `rope_ratio`, which HF configs lack), epsilon 1e-5, context = hidden size (no
`seq_length`). A `chatglm` file of an original ChatGLM checkpoint (fused `attn_qkv`) is refused.
"""

from __future__ import annotations

from .base import Architecture, BuildOptions, ConfigReader, flag
from .gguf_layout import BLOCK_NAMES, GGUFLayout
from .llama import llama_config
from .transformer import (
    HFLayout,
    TransformerConfig,
    TransformerLM,
    heads_geometry,
    rope_setting,
    rotary_dim_of,
    weight_map_for,
    window_of,
)

LAYOUT = HFLayout(
    embed="model.embed_tokens", final_norm="model.norm", lm_head="lm_head", layer="model.layers.{i}.",
    attn_norm="input_layernorm", mlp_norm="post_attention_layernorm",
    qkv=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), o="self_attn.o_proj",
    mlp_in=("mlp.gate_up_proj",), down="mlp.down_proj",
)


def parse_config(raw: dict, options: BuildOptions) -> TransformerConfig:
    """Validate a GLM config dict (HF `config.json` style)."""
    cfg = ConfigReader(raw)
    _, _, head_dim = heads_geometry(cfg, cfg.require("hidden_size"))
    fraction = rope_setting(raw, "partial_rotary_factor", 0.5)
    max_pos = cfg.get("max_position_embeddings", 131072)  # GLM-4's default limit, not Llama's 2048
    context, chunk = window_of(max_pos, options)
    return llama_config(
        raw, options,
        norm_eps=cfg.get("rms_norm_eps", 1.5625e-07, float),
        qkv_bias=flag(raw, "attention_bias", True),
        rope_theta=rope_setting(raw, "rope_theta", 10000.0),
        rotary_dim=rotary_dim_of(head_dim, fraction, "config.json: partial_rotary_factor"),
        rotary_interleaved=True,
        max_position_embeddings=max_pos,
        context_window=context,
        prefill_chunk=chunk,
    )


ARCH = Architecture(
    name="glm",
    hf_model_types=("glm",),
    parse_config=parse_config,
    build_model=TransformerLM,
    weight_map=lambda c: weight_map_for(c, LAYOUT),
    gguf=GGUFLayout(names=("chatglm",), model_type="glm", hf_class="GlmForCausalLM", partial_rotary=True,
                    block_names={**BLOCK_NAMES, "ffn_up": "mlp.gate_up_proj"}),
)
