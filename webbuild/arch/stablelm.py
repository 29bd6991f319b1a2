"""The StableLM family (StableLM-2 1.6B/12B, StableLM-3B-4E1T, Zephyr chat models): config and weights.

LayerNorm with bias, partial rotate-half RoPE (`partial_rotary_factor`), optional q/k/v biases
(`use_qkv_bias`; o_proj never has one), SwiGLU MLP without biases, and two options of the 12B
models: `qk_layernorm` (a bias-free LayerNorm over head_dim with its own weight per head, stored
as `q_layernorm.norms.{h}.weight`) and `use_parallel_residual` (one norm per layer feeding both
attention and MLP: x + attn(ln(x)) + mlp(ln(x))). The model is the shared `TransformerLM`.
"""

from __future__ import annotations

from dataclasses import replace

from ..errors import ConfigError
from .base import Architecture, BuildOptions, ConfigReader, flag
from .gguf_layout import BLOCK_NAMES, GGUFLayout
from .llama import llama_config
from .transformer import (
    HFLayout,
    TransformerConfig,
    TransformerLM,
    rope_setting,
    rotary_dim_of,
    weight_map_for,
    window_of,
)

LAYOUT = HFLayout(
    embed="model.embed_tokens", final_norm="model.norm", lm_head="lm_head", layer="model.layers.{i}.",
    attn_norm="input_layernorm", mlp_norm="post_attention_layernorm",
    qkv=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), o="self_attn.o_proj",
    mlp_in=("mlp.gate_proj", "mlp.up_proj"), down="mlp.down_proj",
    q_norm="self_attn.q_layernorm", k_norm="self_attn.k_layernorm",
)


def parse_config(raw: dict, options: BuildOptions) -> TransformerConfig:
    """Validate a StableLM config dict (HF `config.json` style)."""
    cfg = ConfigReader(raw)
    hidden, heads = cfg.require("hidden_size"), cfg.require("num_attention_heads")
    if hidden % heads:
        raise ConfigError(
            f"hidden_size ({hidden}) is not a multiple of num_attention_heads ({heads})",
            where="config.json: num_attention_heads",
            fix="StableLM's head size is hidden_size / num_attention_heads; use a checkpoint where it divides evenly",
        )
    head_dim = hidden // heads  # StableLM ignores any `head_dim` field
    fraction = rope_setting(raw, "partial_rotary_factor", 0.25)
    max_pos = cfg.get("max_position_embeddings", 4096)  # StableLM's default limit, not Llama's 2048
    context, chunk = window_of(max_pos, options)
    return llama_config(
        raw, options,
        head_dim=head_dim,
        norm="layer",
        norm_eps=cfg.get("layer_norm_eps", 1e-5, float),
        residual="parallel_shared" if raw.get("use_parallel_residual", False) else "sequential",
        qkv_bias=flag(raw, "use_qkv_bias", False),
        qk_norm=flag(raw, "qk_layernorm", False),
        rope_theta=rope_setting(raw, "rope_theta", 10000.0),
        rotary_dim=rotary_dim_of(head_dim, fraction, "config.json: partial_rotary_factor"),
        max_position_embeddings=max_pos,
        context_window=context,
        prefill_chunk=chunk,
    )


def _per_head_norm(path: str, heads: int) -> tuple[str, ...]:
    """A StableLmLayerNormPerHead keeps one LayerNorm (weight only) per head."""
    return tuple(f"{path}.norms.{h}.weight" for h in range(heads))


def weight_map(c: TransformerConfig):
    layout = LAYOUT if c.residual == "sequential" else replace(LAYOUT, mlp_norm=None)
    return weight_map_for(c, layout, head_norm_sources=_per_head_norm)


def _gguf_config(metadata: dict, tensors: frozenset[str]) -> dict:
    """The StableLM fields a GGUF tells by its tensors: q/k/v biases, and one norm per layer
    (parallel residual) when the blocks have no ffn_norm."""
    return {"use_qkv_bias": "blk.0.attn_q.bias" in tensors,
            "use_parallel_residual": "blk.0.ffn_norm.weight" not in tensors}


ARCH = Architecture(
    name="stablelm",
    hf_model_types=("stablelm",),
    parse_config=parse_config,
    build_model=TransformerLM,
    weight_map=weight_map,
    # llama.cpp stacks the 12B models' per-head q/k norms into one tensor: no GGUF name for them here
    gguf=GGUFLayout(names=("stablelm",), model_type="stablelm", hf_class="StableLmForCausalLM", partial_rotary=True,
                    layer_norm=True,
                    block_names={k: v for k, v in BLOCK_NAMES.items() if k not in ("attn_q_norm", "attn_k_norm")},
                    extra_config=_gguf_config),
)
