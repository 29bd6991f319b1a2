"""GPT-J (EleutherAI GPT-J-6B and its fine-tunes such as GPT4All-J): config and weight layout.

One LayerNorm per block feeding both branches (`x + attn(ln_1(x)) + mlp(ln_1(x))`), interleaved
("rotate every two") RoPE over the first `rotary_dim` dims of each head with theta 10000,
bias-free q/k/v/out projections, a plain MLP fc_in -> act -> fc_out with biases, a final `ln_f`
and a separate `lm_head` with a bias. The model is the shared `TransformerLM`; the weight map
fuses q/k/v and permutes the rotary rows of q and k to the rotate-half order the KV cache uses.
"""

from __future__ import annotations

from ..errors import ConfigError
from .base import Architecture, BuildOptions, ConfigReader
from .transformer import HFLayout, TransformerConfig, TransformerLM, activation, weight_map_for, window_of

LAYOUT = HFLayout(
    embed="transformer.wte", final_norm="transformer.ln_f", lm_head="lm_head", layer="transformer.h.{i}.",
    attn_norm="ln_1", qkv=("attn.q_proj", "attn.k_proj", "attn.v_proj"), o="attn.out_proj",
    mlp_in=("mlp.fc_in",), down="mlp.fc_out",
    # causal-mask buffers and the sinusoid table that checkpoints written by older transformers carry
    unused_suffixes=(".attn.bias", ".attn.masked_bias", "embed_positions"),
)
ROPE_THETA = 10000.0  # fixed in GPT-J (not a config field)


def parse_config(raw: dict, options: BuildOptions) -> TransformerConfig:
    """Validate a GPT-J config dict (HF `config.json` style: n_embd, n_head, n_layer, n_positions)."""
    cfg = ConfigReader(raw)
    hidden = cfg.require("n_embd")
    heads = cfg.require("n_head")
    if hidden % heads:
        raise ConfigError(f"n_embd ({hidden}) is not a multiple of n_head ({heads})", where="config.json: n_head",
                          fix="GPT-J heads split n_embd evenly; check the config")
    head_dim = hidden // heads
    rotary_dim = cfg.require("rotary_dim")
    if rotary_dim % 2 or rotary_dim > head_dim:
        raise ConfigError(f"rotary_dim {rotary_dim} does not fit head_dim {head_dim}", where="config.json: rotary_dim",
                          fix="rotary_dim must be an even number of dims no larger than n_embd / n_head")
    if raw.get("tie_word_embeddings", False):
        raise ConfigError("a tied output head is not supported for gptj (its lm_head has a bias of its own)",
                          where="config.json: tie_word_embeddings",
                          fix="GPT-J checkpoints keep a separate lm_head; set tie_word_embeddings to false")
    max_pos = cfg.get("n_positions", 2048)
    context, chunk = window_of(max_pos, options)
    return TransformerConfig(
        hidden_size=hidden,
        intermediate_size=cfg.get("n_inner", 4 * hidden),
        num_hidden_layers=cfg.require("n_layer"),
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=head_dim,
        vocab_size=cfg.require("vocab_size"),
        norm="layer",
        norm_eps=cfg.get("layer_norm_epsilon", 1e-5, float),
        hidden_act=activation(raw.get("activation_function") or "gelu_new", "config.json: activation_function"),
        gated_mlp=False,
        residual="parallel_shared",
        max_position_embeddings=max_pos,
        context_window=context,
        prefill_chunk=chunk,
        mlp_bias=True,
        rope_theta=ROPE_THETA,
        rotary_dim=rotary_dim,
        rotary_interleaved=True,
        lm_head_bias=True,
    )


ARCH = Architecture(
    name="gptj",
    hf_model_types=("gptj",),
    parse_config=parse_config,
    build_model=TransformerLM,
    weight_map=lambda c: weight_map_for(c, LAYOUT),
)
