"""GPTBigCode (StarCoder, SantaCoder, WizardCoder): config and weight layout.

A GPT-2-shaped decoder: learned absolute position embeddings (`transformer.wpe`, added to the
token embeddings; no RoPE), multi-query attention when `multi_query` (one key/value head shared
by all query heads) or ordinary multi-head attention otherwise, one fused `c_attn` projection,
LayerNorm with bias, a plain c_fc -> activation -> c_proj MLP with biases, and an output head
tied to the token embeddings. The model is the shared `TransformerLM`.

`c_attn` rows are [q; k; v] with multi-query attention, but per head [q_h; k_h; v_h] without it
(transformers views the output as (heads, 3 * head_dim)); the weight map reorders the latter.

GGUF (`starcoder`): llama.cpp's converter stores the tensors as they are (`c_attn` [q; k; v]),
`position_embd` for `wpe`, and always writes one key/value head and `feed_forward_length` as
4 * n_embd (llama.cpp reads no other MLP width); a file with more key/value heads is refused.
llama.cpp computes GELU's tanh form, the HF default `gelu_pytorch_tanh`.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .base import Architecture, BuildOptions, ConfigReader, flag
from .gguf_layout import GGUFLayout
from .transformer import HFLayout, TransformerConfig, TransformerLM, activation, weight_map_for, window_of


def _per_head_to_blocks(heads: int, head_dim: int):
    """Rows (heads, [q, k, v], head_dim) -> [q; k; v] (each (heads, head_dim)), for weights and biases."""

    def reorder(rows: np.ndarray) -> np.ndarray:
        shaped = rows.reshape(heads, 3, head_dim, *rows.shape[1:])  # (heads, 3, head_dim, ...)
        return np.swapaxes(shaped, 0, 1).reshape(rows.shape)  # (3, heads, head_dim, ...) flattened

    return reorder


def layout_for(c: TransformerConfig) -> HFLayout:
    """Where `GPTBigCodeForCausalLM.save_pretrained` keeps each weight of the model `c`."""
    per_head = c.num_key_value_heads == c.num_attention_heads
    return HFLayout(
        embed="transformer.wte", pos_embed="transformer.wpe", final_norm="transformer.ln_f", lm_head="lm_head",
        layer="transformer.h.{i}.", attn_norm="ln_1", mlp_norm="ln_2",
        qkv=("attn.c_attn",), o="attn.c_proj", mlp_in=("mlp.c_fc",), down="mlp.c_proj",
        qkv_rows=_per_head_to_blocks(c.num_attention_heads, c.head_dim) if per_head else None,
        unused_suffixes=(),
    )


def _require_flag(raw: dict, key: str, expected: bool, why: str) -> None:
    value = raw.get(key, expected)
    if value is None:
        return
    if not isinstance(value, bool):
        raise ConfigError(f"field {key!r} should be a boolean, got {value!r}", where=f"config.json: {key}",
                          fix=f"set {key!r} to true or false")
    if value != expected:
        raise ConfigError(f"{key} = {str(value).lower()} is not supported", where=f"config.json: {key}",
                          fix=why)


def parse_config(raw: dict, options: BuildOptions) -> TransformerConfig:
    """Validate a GPTBigCode config dict (HF `config.json`, GPT-2 field names)."""
    cfg = ConfigReader(raw)
    _require_flag(raw, "scale_attn_weights", True,
                  "webbuild's attention always scales scores by 1/sqrt(head_dim); unscaled "
                  "GPTBigCode checkpoints are not supported")
    _require_flag(raw, "add_cross_attention", False,
                  "only decoder-only GPTBigCode models are supported (no cross-attention)")
    multi_query = raw.get("multi_query", True)
    if not isinstance(multi_query, bool):
        raise ConfigError(f"field 'multi_query' should be a boolean, got {multi_query!r}",
                          where="config.json: multi_query", fix="set multi_query to true or false")
    hidden = cfg.require("n_embd")
    heads = cfg.require("n_head")
    if hidden % heads:
        raise ConfigError(f"n_embd ({hidden}) is not a multiple of n_head ({heads})", where="config.json: n_head",
                          fix="GPTBigCode heads split n_embd evenly; check the config")
    max_pos = cfg.require("n_positions")  # the learned position table bounds the context window
    context, chunk = window_of(max_pos, options)
    return TransformerConfig(
        hidden_size=hidden,
        intermediate_size=cfg.get("n_inner", 4 * hidden),
        num_hidden_layers=cfg.require("n_layer"),
        num_attention_heads=heads,
        num_key_value_heads=1 if multi_query else heads,
        head_dim=hidden // heads,
        vocab_size=cfg.require("vocab_size"),
        norm="layer",
        norm_eps=cfg.get("layer_norm_epsilon", 1e-5, float),
        hidden_act=activation(raw.get("activation_function") or "gelu_pytorch_tanh",
                              "config.json: activation_function"),
        gated_mlp=False,
        residual="sequential",
        max_position_embeddings=max_pos,
        context_window=context,
        prefill_chunk=chunk,
        qkv_bias=True,
        o_bias=True,
        mlp_bias=True,
        rope=False,
        tie_word_embeddings=flag(raw, "tie_word_embeddings", True),
    )


def _gguf_config(metadata: dict, tensors: frozenset[str]) -> dict:
    """llama.cpp's StarCoder is multi-query only: its converter writes one key/value head."""
    kv_heads = metadata.get("starcoder.attention.head_count_kv", 1)
    if kv_heads != 1:
        raise ConfigError(f"starcoder GGUF with {kv_heads!r} key/value heads; llama.cpp's StarCoder has one "
                          "(multi-query attention)", where="GGUF metadata: starcoder.attention.head_count_kv",
                          fix="build from the model's HF folder")
    return {"multi_query": True}


GGUF = GGUFLayout(
    names=("starcoder",), model_type="gpt_bigcode", hf_class="GPTBigCodeForCausalLM",
    hidden_act="gelu_pytorch_tanh", layer_norm=True, layer_prefix="transformer.h.{i}.",
    global_names={"token_embd": "transformer.wte", "position_embd": "transformer.wpe",
                  "output_norm": "transformer.ln_f", "output": "lm_head"},
    block_names={"attn_norm": "ln_1", "attn_qkv": "attn.c_attn", "attn_output": "attn.c_proj",
                 "ffn_norm": "ln_2", "ffn_up": "mlp.c_fc", "ffn_down": "mlp.c_proj"},
    # parse_config reads GPT-2's field names
    config_aliases={"hidden_size": ("n_embd",), "num_attention_heads": ("n_head",),
                    "num_hidden_layers": ("n_layer",), "max_position_embeddings": ("n_positions",),
                    "intermediate_size": ("n_inner",), "layer_norm_eps": ("layer_norm_epsilon",),
                    "hidden_act": ("activation_function",)},
    extra_config=_gguf_config,
)

ARCH = Architecture(
    name="gpt_bigcode",
    hf_model_types=("gpt_bigcode",),
    parse_config=parse_config,
    build_model=TransformerLM,
    weight_map=lambda c: weight_map_for(c, layout_for(c)),
    gguf=GGUF,
)
