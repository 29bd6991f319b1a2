"""Microsoft Phi (phi-1, phi-1.5, phi-2; HF `model_type` "phi"): config and weight layout.

A parallel block with one LayerNorm per layer, `x + attn(ln(x)) + mlp(ln(x))`; LayerNorms with
bias (`layer_norm_eps`); partial rotary (`partial_rotary_factor` of each head, rotate-half);
q/k/v and the output projection `dense` with bias; a plain MLP fc1 -> gelu_new -> fc2 with bias;
`final_layernorm`; an untied `lm_head` with bias. `qk_layernorm` adds one LayerNorm over head_dim
(with bias) shared by all query heads and one by all key heads, applied before RoPE; the weight
map tiles each shared row over the heads. The model is the shared `TransformerLM`.

GGUF (`phi2`): llama.cpp's converter writes transformers' Phi checkpoints with separate q/k/v
(no permutation: Phi's RoPE is rotate-half, llama.cpp's NeoX kind), the LayerNorm epsilon,
`rope.dimension_count` (the rotary fraction) and `feed_forward_length` as 4 * hidden (llama.cpp
reads no other MLP width), but no RoPE base (10 000, Phi's). It has no tensor names for
`qk_layernorm`, and files converted from Microsoft's earlier checkpoint layout keep q/k/v fused in
one `attn_qkv`; neither loads here (a WeightMappingError names the tensor).
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
    heads_geometry,
    rope_scaling_of,
    rope_setting,
    rotary_dim_of,
    weight_map_for,
    window_of,
)

LAYOUT = HFLayout(
    embed="model.embed_tokens", final_norm="model.final_layernorm", lm_head="lm_head", layer="model.layers.{i}.",
    attn_norm="input_layernorm",
    qkv=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), o="self_attn.dense",
    mlp_in=("mlp.fc1",), down="mlp.fc2",
    q_norm="self_attn.q_layernorm", k_norm="self_attn.k_layernorm",
)

# transformers' PhiConfig default when neither spelling of the field is given
DEFAULT_ROTARY_FRACTION = 0.5


def parse_config(raw: dict, options: BuildOptions) -> TransformerConfig:
    """Validate a Phi config dict (HF `config.json` style)."""
    cfg = ConfigReader(raw)
    hidden = cfg.require("hidden_size")
    heads, kv_heads, head_dim = heads_geometry(cfg, hidden)
    scaling = rope_scaling_of(raw)
    if scaling is not None:
        kind = scaling.get("rope_type", scaling.get("type"))
        where = "config.json: rope_scaling" if raw.get("rope_scaling") is not None else "config.json: rope_parameters"
        raise ConfigError(f"RoPE scaling {kind!r} is not supported for phi", where=where,
                          fix="phi-1/1.5/2 checkpoints use plain RoPE; remove rope_scaling (or set rope_type "
                              "'default') to build with the unscaled rotary embedding")
    if raw.get("tie_word_embeddings", False):
        raise ConfigError("tied input/output embeddings are not supported for phi",
                          where="config.json: tie_word_embeddings",
                          fix="Phi's lm_head has its own weight and bias; set tie_word_embeddings to false")
    qk_norm = flag(raw, "qk_layernorm", False)
    if qk_norm and head_dim != hidden // heads:
        raise ConfigError(f"qk_layernorm normalizes hidden_size // num_attention_heads ({hidden // heads}) dims, "
                          f"but head_dim is {head_dim}", where="config.json: head_dim",
                          fix="remove head_dim or set it to hidden_size // num_attention_heads")
    fraction = rope_setting(raw, "partial_rotary_factor", DEFAULT_ROTARY_FRACTION)
    max_pos = cfg.get("max_position_embeddings", 2048)
    context, chunk = window_of(max_pos, options)
    return TransformerConfig(
        hidden_size=hidden,
        intermediate_size=cfg.require("intermediate_size"),
        num_hidden_layers=cfg.require("num_hidden_layers"),
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=cfg.require("vocab_size"),
        norm="layer",
        norm_eps=cfg.get("layer_norm_eps", 1e-5, float),
        hidden_act=activation(raw.get("hidden_act") or "gelu_new", "config.json: hidden_act"),
        gated_mlp=False,
        residual="parallel_shared",
        max_position_embeddings=max_pos,
        context_window=context,
        prefill_chunk=chunk,
        qkv_bias=True,
        o_bias=True,
        mlp_bias=True,
        qk_norm=qk_norm,
        qk_norm_bias=qk_norm,
        rope_theta=rope_setting(raw, "rope_theta", 10000.0),
        rotary_dim=rotary_dim_of(head_dim, fraction, "config.json: partial_rotary_factor"),
        tie_word_embeddings=False,
        lm_head_bias=True,
    )


GGUF = GGUFLayout(
    names=("phi2",), model_type="phi", hf_class="PhiForCausalLM", hidden_act="gelu_new",
    partial_rotary=True, layer_norm=True, layer_prefix=LAYOUT.layer,
    global_names={"token_embd": LAYOUT.embed, "output_norm": LAYOUT.final_norm, "output": LAYOUT.lm_head},
    block_names={"attn_norm": LAYOUT.attn_norm, **dict(zip(("attn_q", "attn_k", "attn_v"), LAYOUT.qkv)),
                 "attn_output": LAYOUT.o, "ffn_up": LAYOUT.mlp_in[0], "ffn_down": LAYOUT.down},
)

ARCH = Architecture(
    name="phi",
    hf_model_types=("phi",),
    parse_config=parse_config,
    build_model=TransformerLM,
    weight_map=lambda c: weight_map_for(c, LAYOUT),
    gguf=GGUF,
)
