"""Mistral (Mistral 7B v0.1 - v0.3 and Mistral-shaped fine-tunes): config and weight layout.

Llama-shaped (RMSNorm, SwiGLU, grouped-query attention, no biases) with an optional explicit
`head_dim` and an optional `sliding_window`: with window W, the query at position i attends the
keys at positions (i - W, i] in every layer (v0.1 uses W = 4096; v0.2 / v0.3 have none). The
window is compiled into the paged KV cache's attention kernels (see `create_kv_cache`); prefill
chunks are capped at W - 1 tokens so every query sees exactly the keys transformers lets it see.
"""

from __future__ import annotations

from ..errors import ConfigError
from .base import Architecture, BuildOptions, ConfigReader
from .llama import LAYOUT, llama_config
from .transformer import TransformerConfig, TransformerLM, rope_setting, weight_map_for


def sliding_window_of(raw: dict, key: str = "sliding_window") -> int | None:
    """The attention window in tokens from `config.json: <key>` (None or absent: no window)."""
    return ConfigReader(raw).get(key, None)


def parse_config(raw: dict, options: BuildOptions) -> TransformerConfig:
    """Validate a Mistral config dict (HF `config.json` style)."""
    for key in ("attention_bias", "mlp_bias"):
        if raw.get(key):
            raise ConfigError(f"{key} is set, but Mistral's projections have no biases", where=f"config.json: {key}",
                              fix="remove the field, or build the checkpoint as its real architecture (e.g. llama)")
    return llama_config(raw, options, rope_theta=rope_setting(raw, "rope_theta", 10000.0),
                        sliding_window=sliding_window_of(raw))


ARCH = Architecture(
    name="mistral",
    hf_model_types=("mistral",),
    parse_config=parse_config,
    build_model=TransformerLM,
    weight_map=lambda c: weight_map_for(c, LAYOUT),
)
