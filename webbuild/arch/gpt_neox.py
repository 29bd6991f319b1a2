"""GPT-NeoX (Pythia, RedPajama-INCITE, GPT-NeoX-20B, Dolly v2): config and weight layout.

LayerNorm with bias, partial rotate-half RoPE over the first `rotary_pct` of each head, one fused
`query_key_value` projection stored per head as (heads, [q, k, v], head_dim) rows, optional
attention biases, a plain MLP (dense_h_to_4h -> act -> dense_4h_to_h, with biases), parallel
(`x + attn(ln1(x)) + mlp(ln2(x))`) or sequential residual, and a separate `embed_out` head unless
the embeddings are tied. The model is the shared `TransformerLM`.

Configs come in two spellings: transformers >= 5 writes `rope_parameters` (`rope_theta`,
`partial_rotary_factor`, `rope_type`); older checkpoints write `rotary_emb_base` / `rotary_pct`
(and maybe `rope_scaling`). Both are read.

GGUF (`gptneox`): llama.cpp's converter stores `query_key_value` with its rows reordered from per
head (heads, [q, k, v], head_dim) to [q; k; v] blocks (weight and bias); the layout's `row_order`
puts them back. It writes `rope.dimension_count` (the rotary fraction), `use_parallel_residual`
and the LayerNorm epsilon, but no RoPE base (llama.cpp then uses 10 000) and no activation: llama.cpp
computes GELU's tanh form; HF GPT-NeoX configs (Pythia, RedPajama-INCITE, Dolly v2) say `gelu`,
which is what the file is read as.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..errors import ConfigError
from .base import Architecture, BuildOptions, ConfigReader, flag
from .gguf_layout import GGUFLayout
from .transformer import (
    HFLayout,
    TransformerConfig,
    TransformerLM,
    activation,
    rope_scaling_of,
    rotary_dim_of,
    weight_map_for,
    window_of,
)

LAYOUT = HFLayout(
    embed="gpt_neox.embed_in", final_norm="gpt_neox.final_layer_norm", lm_head="embed_out",
    layer="gpt_neox.layers.{i}.", attn_norm="input_layernorm", mlp_norm="post_attention_layernorm",
    qkv=("attention.query_key_value",), o="attention.dense",
    mlp_in=("mlp.dense_h_to_4h",), down="mlp.dense_4h_to_h",
    # causal-mask and rotary buffers that checkpoints written by older transformers carry
    unused_suffixes=("rotary_emb.inv_freq", ".attention.bias", ".attention.masked_bias"),
)
# RoPE types the paged KV cache reproduces exactly for this family (dynamic NTK cannot be static)
_ROPE_TYPES = ("default", "linear")


def per_head_qkv_to_blocks(heads: int, head_dim: int):
    """Rows (heads, 3, head_dim) of GPT-NeoX's fused projection -> (3, heads, head_dim), i.e. [q; k; v]."""

    def reorder(rows: np.ndarray) -> np.ndarray:
        shaped = rows.reshape(heads, 3, head_dim, *rows.shape[1:])  # (heads, 3, head_dim, ...)
        return np.swapaxes(shaped, 0, 1).reshape(rows.shape)  # (3 * heads * head_dim, ...)

    return reorder


def blocks_to_per_head_qkv(heads: int, head_dim: int):
    """Rows [q; k; v] (each (heads, head_dim), as llama.cpp stores `attn_qkv`) -> per head
    (heads, [q, k, v], head_dim), HF's order: the inverse of `per_head_qkv_to_blocks`."""

    def reorder(rows: np.ndarray) -> np.ndarray:
        shaped = rows.reshape(3, heads, head_dim, *rows.shape[1:])  # (3, heads, head_dim, ...)
        return np.swapaxes(shaped, 0, 1).reshape(rows.shape)  # (heads * 3 * head_dim, ...)

    return reorder


def _rope(raw: dict) -> tuple[float, float, str, dict | None]:
    """(theta, rotary fraction, where the fraction was read, rope scaling or None) from either spelling."""
    params = raw.get("rope_parameters")
    if params is None:
        cfg = ConfigReader(raw)
        return (cfg.get("rotary_emb_base", 10000.0, float), cfg.get("rotary_pct", 0.25, float),
                "config.json: rotary_pct", _check_scaling(rope_scaling_of(raw), "config.json: rope_scaling"))
    where = "config.json: rope_parameters"
    if not isinstance(params, dict):
        raise ConfigError("rope_parameters must be an object", where=where,
                          fix='give it as transformers writes it, e.g. {"rope_type": "default", "rope_theta": 10000}')
    cfg = ConfigReader(params, where=where)
    theta = cfg.get("rope_theta", ConfigReader(raw).get("rotary_emb_base", 10000.0, float), float)
    fraction = cfg.get("partial_rotary_factor", ConfigReader(raw).get("rotary_pct", 0.25, float), float)
    scaling = {k: v for k, v in params.items() if k not in ("rope_theta", "partial_rotary_factor")}
    if scaling.get("rope_type", scaling.get("type", "default")) == "default":
        return theta, fraction, f"{where}: partial_rotary_factor", None
    return theta, fraction, f"{where}: partial_rotary_factor", _check_scaling(scaling, where)


def _check_scaling(scaling: dict | None, where: str) -> dict | None:
    if scaling is None:
        return None
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind not in _ROPE_TYPES:
        raise ConfigError(f"RoPE type {kind!r} is not supported for gpt_neox", where=f"{where}: rope_type",
                          fix=f"supported: {', '.join(_ROPE_TYPES)} (dynamic scaling cannot be compiled statically)")
    if kind == "linear" and not isinstance(scaling.get("factor"), (int, float)):
        raise ConfigError("linear RoPE scaling needs a numeric factor", where=f"{where}: factor",
                          fix="set factor to the position interpolation factor, e.g. 2.0")
    return scaling


def parse_config(raw: dict, options: BuildOptions) -> TransformerConfig:
    """Validate a GPT-NeoX config dict (HF `config.json` style)."""
    cfg = ConfigReader(raw)
    hidden = cfg.require("hidden_size")
    heads = cfg.require("num_attention_heads")
    if hidden % heads:
        raise ConfigError(f"hidden_size ({hidden}) is not a multiple of num_attention_heads ({heads})",
                          where="config.json: num_attention_heads",
                          fix="GPT-NeoX heads split hidden_size evenly; check the config")
    head_dim = hidden // heads
    theta, fraction, fraction_where, scaling = _rope(raw)
    max_pos = cfg.get("max_position_embeddings", 2048)
    context, chunk = window_of(max_pos, options)
    attention_bias = raw.get("attention_bias", True)
    if not isinstance(attention_bias, bool):
        raise ConfigError(f"attention_bias should be true or false, got {attention_bias!r}",
                          where="config.json: attention_bias", fix="set attention_bias to true or false")
    parallel = raw.get("use_parallel_residual", True)
    if not isinstance(parallel, bool):
        raise ConfigError(f"use_parallel_residual should be true or false, got {parallel!r}",
                          where="config.json: use_parallel_residual", fix="set use_parallel_residual to true or false")
    return TransformerConfig(
        hidden_size=hidden,
        intermediate_size=cfg.require("intermediate_size"),
        num_hidden_layers=cfg.require("num_hidden_layers"),
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=head_dim,
        vocab_size=cfg.require("vocab_size"),
        norm="layer",
        norm_eps=cfg.get("layer_norm_eps", 1e-5, float),
        hidden_act=activation(raw.get("hidden_act") or "gelu", "config.json: hidden_act"),
        gated_mlp=False,
        residual="parallel" if parallel else "sequential",
        max_position_embeddings=max_pos,
        context_window=context,
        prefill_chunk=chunk,
        qkv_bias=attention_bias,
        o_bias=attention_bias,
        mlp_bias=True,
        rope_theta=theta,
        rope_scaling=scaling,
        rotary_dim=rotary_dim_of(head_dim, fraction, fraction_where),
        tie_word_embeddings=flag(raw, "tie_word_embeddings", False),
    )


def weight_map(c: TransformerConfig):
    layout = replace(LAYOUT, qkv_rows=per_head_qkv_to_blocks(c.num_attention_heads, c.head_dim))
    return weight_map_for(c, layout)


def _gguf_config(metadata: dict, tensors: frozenset[str]) -> dict:
    """The GPT-NeoX fields of a `gptneox` GGUF: the residual kind, and attention biases told by the tensors."""
    return {"use_parallel_residual": metadata.get("gptneox.use_parallel_residual", True),
            "attention_bias": "blk.0.attn_qkv.bias" in tensors}


GGUF = GGUFLayout(
    names=("gptneox",), model_type="gpt_neox", hf_class="GPTNeoXForCausalLM", hidden_act="gelu",
    partial_rotary=True, layer_norm=True, layer_prefix=LAYOUT.layer,
    global_names={"token_embd": LAYOUT.embed, "output_norm": LAYOUT.final_norm, "output": LAYOUT.lm_head},
    block_names={"attn_norm": "input_layernorm", "attn_qkv": "attention.query_key_value",
                 "attn_output": "attention.dense", "ffn_norm": "post_attention_layernorm",
                 "ffn_up": "mlp.dense_h_to_4h", "ffn_down": "mlp.dense_4h_to_h"},
    row_order={"attn_qkv": lambda c: blocks_to_per_head_qkv(c["num_attention_heads"], c["head_dim"])},
    # the older spellings, which parse_config reads when there is no rope_parameters
    config_aliases={"partial_rotary_factor": ("rotary_pct",), "rope_theta": ("rotary_emb_base",)},
    extra_config=_gguf_config,
)

ARCH = Architecture(
    name="gpt_neox",
    hf_model_types=("gpt_neox",),
    parse_config=parse_config,
    build_model=TransformerLM,
    weight_map=weight_map,
    gguf=GGUF,
)
