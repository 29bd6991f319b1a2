"""Gemma 3 text models (gemma-3-270m, 1b and the text part of 4b-27b; `gemma3_text`): config and layout.

Gemma's base (RMSNorm applied as (1 + w), sqrt(hidden) embedding scale in the weight dtype,
GELU-tanh gated MLP, explicit head_dim, tied head) with Gemma 3's differences: an RMSNorm over each
head of q and of k before RoPE (one (head_dim,) weight each, also stored as w - 1), four norms per
block (before and after attention, before and after the MLP; the "post" norms apply to the
sublayer's output before its residual add), attention scores scaled by
`query_pre_attn_scalar ** -0.5` rather than head_dim ** -0.5, and layers of two kinds: sliding-window
layers (query i sees keys (i - W, i]) whose RoPE base is the local one (10 000), and global layers
(one in six by default) with the global base (1 000 000) and the checkpoint's RoPE scaling. The two
bases mean RoPE is applied by the model per layer (TransformerConfig.layer_rope), not by the cache.
"""

from __future__ import annotations

from dataclasses import replace

from ..errors import ConfigError
from .base import Architecture, BuildOptions, ConfigReader, flag
from .gemma import LAYOUT as GEMMA_LAYOUT, parse_config as gemma_config
from .gguf_layout import BLOCK_NAMES, GGUFLayout
from .transformer import TransformerConfig, TransformerLM, check_rope_scaling, weight_map_for

LAYOUT = replace(GEMMA_LAYOUT, mlp_norm="pre_feedforward_layernorm", post_attn_norm="post_attention_layernorm",
                 post_mlp_norm="post_feedforward_layernorm", q_norm="self_attn.q_norm", k_norm="self_attn.k_norm")
LAYER_TYPES = ("sliding_attention", "full_attention")
DEFAULT_THETA = {"full_attention": 1_000_000.0, "sliding_attention": 10_000.0}


def layer_types(raw: dict, layers: int, default_pattern: int = 6) -> list[str]:
    """Each layer's attention kind: `layer_types`, else every `sliding_window_pattern`-th layer
    global (default 6; Gemma 2: 2), as transformers derives it."""
    types = raw.get("layer_types")
    if types is None:
        pattern = ConfigReader(raw).get("sliding_window_pattern", default_pattern)
        return ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(layers)]
    if not isinstance(types, list) or len(types) != layers or any(t not in LAYER_TYPES for t in types):
        raise ConfigError(f"layer_types should list {layers} entries from {', '.join(LAYER_TYPES)}",
                          where="config.json: layer_types",
                          fix="give one attention type per layer, or remove it to use sliding_window_pattern")
    return types


def rope_of(raw: dict, kind: str) -> tuple[float, dict | None]:
    """(theta, scaling) of one layer kind: from `rope_parameters[kind]` (transformers >= 5), else
    `rope_theta` + `rope_scaling` (global) or `rope_local_base_freq` (local; never scaled)."""
    params = raw.get("rope_parameters")
    if isinstance(params, dict) and isinstance(params.get(kind), dict):
        entry = params[kind]
        where = f"config.json: rope_parameters.{kind}"
        theta = ConfigReader(entry, where).get("rope_theta", DEFAULT_THETA[kind], float)
        scaling = {k: v for k, v in entry.items() if k != "rope_theta"}
        return theta, check_rope_scaling(None if scaling.get("rope_type", "default") == "default" else scaling, where)
    cfg = ConfigReader(raw)
    if kind == "sliding_attention":
        return cfg.get("rope_local_base_freq", DEFAULT_THETA[kind], float), None
    given = raw.get("rope_scaling")
    if given is not None and not isinstance(given, dict):
        raise ConfigError("rope_scaling must be an object", where="config.json: rope_scaling",
                          fix="remove it or give it as in the original config")
    default = given is None or given.get("rope_type", given.get("type")) == "default"
    return cfg.get("rope_theta", DEFAULT_THETA[kind], float), None if default else check_rope_scaling(given)


def parse_config(raw: dict, options: BuildOptions) -> TransformerConfig:
    """Validate a Gemma 3 text config dict (HF `config.json` style)."""
    for key in ("attn_logit_softcapping", "final_logit_softcapping"):
        if raw.get(key) is not None:
            raise ConfigError(f"{key} is set, but Gemma 3 models do not soft-cap (nor does webbuild's Gemma 3)",
                              where=f"config.json: {key}", fix="set it to null as in the released checkpoints")
    base = gemma_config({**raw, "rope_scaling": None, "rope_parameters": None}, options)
    cfg = ConfigReader(raw)
    types = layer_types(raw, base.num_hidden_layers)
    ropes = {kind: rope_of(raw, kind) for kind in LAYER_TYPES}
    return replace(
        base,
        qk_norm=True, qk_norm_kind="rms", post_norms=True,
        attn_scale=cfg.get("query_pre_attn_scalar", 256, float) ** -0.5,
        tie_word_embeddings=flag(raw, "tie_word_embeddings", True),
        layer_rope=tuple(ropes[t] for t in types),
        rope_theta=ropes["full_attention"][0],
        sliding_window=cfg.get("sliding_window", 4096),  # TransformerConfig drops it when >= the context
        sliding_layers=tuple(i for i, t in enumerate(types) if t == "sliding_attention"),
    )


def _gguf_config(meta: dict, tensors: frozenset[str]) -> dict:
    """What llama.cpp's gemma3 files leave implicit: the attention scale is 1/sqrt(head_dim), the
    local RoPE base 10 000 and every sixth layer global (llama.cpp fixes all three for gemma3)."""
    head_dim = meta.get("gemma3.attention.key_length")
    fields = {"rope_local_base_freq": 10_000.0, "sliding_window_pattern": 6}
    if head_dim is not None:
        fields["query_pre_attn_scalar"] = head_dim
    return fields


ARCH = Architecture(
    name="gemma3",
    hf_model_types=("gemma3_text",),
    parse_config=parse_config,
    build_model=TransformerLM,
    weight_map=lambda c: weight_map_for(c, LAYOUT),
    gguf=GGUFLayout(names=("gemma3",), model_type="gemma3_text", hf_class="Gemma3ForCausalLM",
                    hidden_act="gelu_pytorch_tanh", norm_offset=-1.0, extra_config=_gguf_config,
                    block_names={**BLOCK_NAMES, "ffn_norm": "pre_feedforward_layernorm",
                                 "post_attention_norm": "post_attention_layernorm",
                                 "post_ffw_norm": "post_feedforward_layernorm"}),
)
