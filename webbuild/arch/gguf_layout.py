"""How llama.cpp writes an architecture into a GGUF file, as data for the GGUF loader.

An architecture that llama.cpp's converter writes names its `general.architecture` values, the HF
`model_type` (and class) its config becomes, the GGUF tensor names of its weights (stems without
`.weight` / `.bias`: global ones, and per block `blk.{i}.<stem>` under the HF checkpoint's block
prefix, `model.layers.{i}.` unless the layout says otherwise, e.g. `gpt_neox.layers.{i}.`), and what
differs from the HF tensors: the projections whose rows the converter permuted for llama.cpp's
interleaved RoPE (Llama's q and k; the others are stored as in the HF checkpoint), fused tensors
whose rows it reordered (GPT-NeoX's per-head q/k/v, stored as [q; k; v]; `row_order` undoes it),
and Gemma's norm weights stored plus one. The config fields come from the `<arch>.*` metadata keys
every such GGUF has (see webbuild.loaders.gguf_loader), plus each layout's `extra_config`; GPT-2
style configs get them under their own names (`config_aliases`, e.g. `n_embd`).

Loaded: llama, qwen2, qwen3, phi3, gemma, gemma2, gemma3, stablelm, phi2 (HF `phi`), gptneox (HF
`gpt_neox`), starcoder (HF `gpt_bigcode`), chatglm (HF `glm`: llama.cpp's converter registers
`GlmForCausalLM` under its ChatGLM class; separate q/k/v with biases, fused gate+up `ffn_up`,
nothing permuted, RoPE over `chatglm.rope.dimension_count` interleaved dimensions; no key length,
RoPE base or epsilon read from the HF config, so llama.cpp assumes head_dim = hidden / heads, base
10 000 and 1e-5; files of the original ChatGLM checkpoints, with a fused `attn_qkv`, are a
WeightMappingError). Registered architectures without a layout, because llama.cpp writes no GGUF of
them: `gptj` (its converter registers no `GPTJForCausalLM` and llama.cpp has no GPT-J graph; the
`gptj` name in gguf-py's constants is unused) and `rwkv` (HF RWKV-4: llama.cpp converts only RWKV-6
/ RWKV-7 checkpoints, architectures `rwkv6`, `rwkv6qwen2`, `rwkv7`, `arwkv7`, with other tensors and
state). Mistral files are `llama` ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
    # where the HF checkpoint keeps block i's tensors
    layer_prefix: str = "model.layers.{i}."
    # block stem -> (HF config -> rows -> rows): undo a row order the converter gave a fused tensor
    # (applied to its weight and bias rows, and to each row-wise array of an exact container)
    row_order: dict[str, Callable[[dict], Callable[[Any], Any]]] = field(default_factory=dict)
    # config field -> more names to give it, for configs that spell fields GPT-2's way (`n_embd`)
    config_aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def hf_name(self, gguf_name: str) -> str | None:
        """The HF name of GGUF tensor `gguf_name`; None when it has no counterpart."""
        stem, dot, suffix = gguf_name.rpartition(".")
        if not dot or suffix not in ("weight", "bias"):
            return None
        if stem in self.global_names:
            return f"{self.global_names[stem]}.{suffix}"
        parts = stem.split(".")
        if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in self.block_names:
            return f"{self.layer_prefix.format(i=int(parts[1]))}{self.block_names[parts[2]]}.{suffix}"
        return None
