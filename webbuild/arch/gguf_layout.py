"""How llama.cpp writes an architecture into a GGUF file, as data for the GGUF loader.

An architecture that llama.cpp's converter writes names its `general.architecture` values, the HF
`model_type` (and class) its config becomes, the GGUF tensor names of its weights (stems without
`.weight` / `.bias`: global ones, and per block `blk.{i}.<stem>` under `model.layers.{i}.`), and the
projections whose rows the converter permuted for llama.cpp's interleaved RoPE (Llama's q and k;
the others are stored as in the HF checkpoint), and what else differs from the HF tensors (Gemma's
norm weights are stored plus one). The config fields come from the `<arch>.*` metadata
keys every llama-shaped GGUF has (see webbuild.loaders.gguf_loader).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
BLOCK_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}


@dataclass(frozen=True)
class GGUFLayout:
    """One architecture's GGUF conventions (llama.cpp's names)."""

    names: tuple[str, ...]  # general.architecture values
    model_type: str  # the HF model_type its config is given
    hf_class: str  # the HF architectures entry, e.g. "LlamaForCausalLM"
    # block stems whose rows llama.cpp permuted (pairs (2i, 2i+1) of each head -> halves)
    permuted: tuple[str, ...] = ()
    global_names: dict[str, str] = field(default_factory=lambda: dict(GLOBAL_NAMES))
    block_names: dict[str, str] = field(default_factory=lambda: dict(BLOCK_NAMES))
    hidden_act: str = "silu"
    # True: `<arch>.rope.dimension_count` may cover part of a head (partial_rotary_factor)
    partial_rotary: bool = False
    # added to every `*norm.weight` read (Gemma: llama.cpp stores 1 + w where HF stores w)
    norm_offset: float = 0.0
    # LayerNorm models: the epsilon is `<arch>.attention.layer_norm_epsilon`, given as `layer_norm_eps`
    layer_norm: bool = False
    # more HF config fields from (metadata, tensor names), e.g. biases told by which tensors exist
    extra_config: Callable[[dict, frozenset[str]], dict] | None = None

    def hf_name(self, gguf_name: str) -> str | None:
        """The HF name of GGUF tensor `gguf_name`; None when it has no counterpart."""
        stem, dot, suffix = gguf_name.rpartition(".")
        if not dot or suffix not in ("weight", "bias"):
            return None
        if stem in self.global_names:
            return f"{self.global_names[stem]}.{suffix}"
        parts = stem.split(".")
        if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in self.block_names:
            return f"model.layers.{int(parts[1])}.{self.block_names[parts[2]]}.{suffix}"
        return None
