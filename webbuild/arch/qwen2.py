"""Qwen2 and Qwen2.5 (0.5B - 72B, Coder, Math): config and weight layout.

Llama-shaped with biases on the q/k/v projections (none on o_proj or the MLP), grouped-query
attention, RoPE theta usually 1e6 and, in the small models, a tied output head. Checkpoints that
enable `use_sliding_window` window only some layers: those listed as "sliding_attention" in
`layer_types`, or (older configs) the layers from `max_window_layers` on; the others see the
whole context. Each windowed layer's query at position i attends keys (i - W, i].
"""

from __future__ import annotations

from ..errors import ConfigError
from .base import Architecture, BuildOptions, ConfigReader
from .gguf_layout import GGUFLayout
from .llama import LAYOUT, llama_config
from .mistral import sliding_window_of
from .transformer import TransformerConfig, TransformerLM, rope_setting, weight_map_for

LAYER_TYPES = ("full_attention", "sliding_attention")


def windowed_layers(raw: dict, layers: int) -> tuple[int, ...]:
    """The layers a Qwen2 checkpoint with `use_sliding_window` limits to the window."""
    types = raw.get("layer_types")
    if types is None:
        first = raw.get("max_window_layers", 28)  # transformers' default
        if not isinstance(first, int) or isinstance(first, bool) or first < 0:
            raise ConfigError(f"max_window_layers should be a non-negative integer, got {first!r}",
                              where="config.json: max_window_layers", fix="set it to the first windowed layer")
        return tuple(range(first, layers))
    if not isinstance(types, list) or len(types) != layers or any(t not in LAYER_TYPES for t in types):
        raise ConfigError(f"layer_types should list {layers} entries from {', '.join(LAYER_TYPES)}",
                          where="config.json: layer_types",
                          fix="give one attention type per layer, or remove layer_types to use max_window_layers")
    return tuple(i for i, t in enumerate(types) if t == "sliding_attention")


def window_fields(raw: dict) -> dict:
    """`sliding_window` and `sliding_layers` of a Qwen2 / Qwen3 config (none unless `use_sliding_window`)."""
    use_window = raw.get("use_sliding_window", False)
    if not isinstance(use_window, bool):
        raise ConfigError(f"use_sliding_window should be true or false, got {use_window!r}",
                          where="config.json: use_sliding_window", fix="set it to true or false")
    window = sliding_window_of(raw) if use_window else None
    layers = ConfigReader(raw).require("num_hidden_layers")
    return {"sliding_window": window, "sliding_layers": windowed_layers(raw, layers) if window else None}


def parse_config(raw: dict, options: BuildOptions) -> TransformerConfig:
    """Validate a Qwen2 config dict (HF `config.json` style)."""
    return llama_config(raw, options, rope_theta=rope_setting(raw, "rope_theta", 10000.0), qkv_bias=True,
                        **window_fields(raw))


ARCH = Architecture(
    name="qwen2",
    hf_model_types=("qwen2",),
    parse_config=parse_config,
    build_model=TransformerLM,
    weight_map=lambda c: weight_map_for(c, LAYOUT),
    gguf=GGUFLayout(names=("qwen2",), model_type="qwen2", hf_class="Qwen2ForCausalLM"),
)
