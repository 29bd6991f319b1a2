"""The parity cases of every architecture: a tiny random transformers config per entry.

Adding an architecture means adding one `ArchCase` here; tests/test_arch_parity.py builds each
case through `webbuild build` (CPU q0f32 and q4f32_1, WebGPU) and compares it with transformers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tiny_models import tiny_tokenizer

VOCAB = 320
# the shape every tiny case shares unless it says otherwise (head_dim 16; two layers)
COMMON = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
              max_position_embeddings=256, bos_token_id=1, eos_token_id=2)


def default_init(model) -> None:
    """Larger-than-default random weights so logits are not all near zero; norms near 1."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.08)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.05)
            else:
                p.uniform_(0.8, 1.2)


def gemma_init(model) -> None:
    """default_init, but norm weights near 0: Gemma stores them as (w - 1), so 0 is the identity."""
    import torch

    default_init(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(-0.2, 0.2)


@dataclass(frozen=True)
class ArchCase:
    """One tiny checkpoint: transformers classes (by name), config kwargs and weight init."""

    name: str
    config_class: str
    model_class: str
    config: dict
    init: Callable = field(default=default_init)
    # tokens of the parity prompt may not exceed this (models with small position tables)
    max_tokens: int = 256


def rwkv_init(model) -> None:
    """Default init, then time-mix ratios in [0, 1] and spread decays, as trained RWKV models have."""
    import torch

    default_init(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "time_mix" in name:
                p.uniform_(0.0, 1.0)
            elif name.endswith("time_decay"):
                p.normal_(0.0, 1.0)


CASES: list[ArchCase] = [
    # Llama with GQA and a non-default RoPE theta (transformers 5 saves it inside rope_parameters)
    ArchCase("llama", "LlamaConfig", "LlamaForCausalLM",
             dict(COMMON, intermediate_size=160, num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=5000.0)),
    # Llama with linear RoPE scaling (positions divided by the factor, in the KV cache's RoPE kernels)
    ArchCase("llama_rope_linear", "LlamaConfig", "LlamaForCausalLM",
             dict(COMMON, intermediate_size=160, num_key_value_heads=2, rms_norm_eps=1e-5,
                  rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 5000.0})),
    # Mistral: sliding window 5, so the 12-token prompt and 8 decode steps (crossing a 16-token KV
    # page) run far past it; explicit head_dim 24 != 64/4, GQA, theta 1e6
    ArchCase("mistral", "MistralConfig", "MistralForCausalLM",
             dict(COMMON, intermediate_size=160, num_key_value_heads=2, head_dim=24, sliding_window=5,
                  rope_theta=1e6, rms_norm_eps=1e-5)),
    # Qwen2.5-0.5B shape: q/k/v biases (no o bias), tied head, GQA, theta 1e6, no window
    ArchCase("qwen2", "Qwen2Config", "Qwen2ForCausalLM",
             dict(COMMON, intermediate_size=160, num_key_value_heads=2, rope_theta=1e6, rms_norm_eps=1e-6,
                  tie_word_embeddings=True)),
    # Qwen2 with use_sliding_window: layer 0 full attention, layer 1 windowed to 6 (max_window_layers 1)
    ArchCase("qwen2_sliding", "Qwen2Config", "Qwen2ForCausalLM",
             dict(COMMON, intermediate_size=160, num_key_value_heads=2, use_sliding_window=True, sliding_window=6,
                  max_window_layers=1, rms_norm_eps=1e-6)),
    # Qwen3-0.6B shape: per-head q/k RMSNorm (one weight each), explicit head_dim (24 != 64/4), GQA, no
    # biases, tied head, theta 1e6
    ArchCase("qwen3", "Qwen3Config", "Qwen3ForCausalLM",
             dict(COMMON, intermediate_size=160, num_key_value_heads=2, head_dim=24, rope_theta=1e6, rms_norm_eps=1e-6,
                  tie_word_embeddings=True)),
    # RWKV-4: recurrent state instead of a KV cache; rescale_every=1 exercises the inference-time halving
    ArchCase("rwkv", "RwkvConfig", "RwkvForCausalLM",
             dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, intermediate_size=160, context_length=256,
                  layer_norm_epsilon=1e-5, rescale_every=1, bos_token_id=1, eos_token_id=2), init=rwkv_init),
    # StarCoder shape: learned positions, multi-query attention (2 query heads share 1 kv head), fused c_attn,
    # LayerNorm and biases. head_dim 32: TVM 0.27's WebGPU prefill kernels fail to build for 1 kv head of <= 16 dims
    ArchCase("gpt_bigcode", "GPTBigCodeConfig", "GPTBigCodeForCausalLM",
             dict(COMMON, num_attention_heads=2, n_inner=160, multi_query=True, layer_norm_epsilon=1e-5)),
    # SantaCoder-style multi-head GPTBigCode: c_attn rows per head [q_h; k_h; v_h]; exact-erf GELU
    ArchCase("gpt_bigcode_mha", "GPTBigCodeConfig", "GPTBigCodeForCausalLM",
             dict(COMMON, n_inner=128, multi_query=False, activation_function="gelu", layer_norm_epsilon=1e-5)),
    # Gemma-2b shape: (1 + w) RMSNorm, sqrt(hidden) embedding scale, GELU-tanh gated MLP, head_dim 24 != 64/4, MQA
    ArchCase("gemma", "GemmaConfig", "GemmaForCausalLM",
             dict(COMMON, intermediate_size=160, num_key_value_heads=1, head_dim=24, rms_norm_eps=1e-6,
                  rope_parameters={"rope_type": "default", "rope_theta": 5000.0}, pad_token_id=0),
             init=gemma_init),
    # Gemma 3 shape: four norms per block, per-head q/k RMSNorm, scores scaled by query_pre_attn_scalar (32, not
    # head_dim 24), a sliding layer (window 6, RoPE base 100) then a global one (base 5000, linear scaling x2)
    ArchCase("gemma3", "Gemma3TextConfig", "Gemma3ForCausalLM",
             dict(COMMON, intermediate_size=160, num_key_value_heads=1, head_dim=24, rms_norm_eps=1e-6,
                  query_pre_attn_scalar=32, sliding_window=6, layer_types=["sliding_attention", "full_attention"],
                  rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
                                   "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 5000.0}},
                  pad_token_id=0),
             init=gemma_init),
    # Gemma 2 shape: four norms per block, scores scaled by query_pre_attn_scalar (32, not head_dim 24), a
    # sliding layer (window 6) then a global one, attention scores capped at 1 and logits at 2 (tanh), MQA
    ArchCase("gemma2", "Gemma2Config", "Gemma2ForCausalLM",
             dict(COMMON, intermediate_size=160, num_key_value_heads=1, head_dim=24, rms_norm_eps=1e-6,
                  query_pre_attn_scalar=32, sliding_window=6, attn_logit_softcapping=1.0,
                  final_logit_softcapping=2.0, rope_parameters={"rope_type": "default", "rope_theta": 5000.0},
                  pad_token_id=0),
             init=gemma_init),
    # StableLM-2 1.6B shape: LayerNorm with bias, q/k/v biases, GQA, a quarter of each head rotated
    ArchCase("stablelm", "StableLmConfig", "StableLmForCausalLM",
             dict(COMMON, intermediate_size=160, num_key_value_heads=2, use_qkv_bias=True, partial_rotary_factor=0.25,
                  rope_theta=5000.0, layer_norm_eps=1e-5)),
    # StableLM-2 12B shape: per-head q/k LayerNorm (one weight per head), parallel residual with one norm
    ArchCase("stablelm_qknorm_parallel", "StableLmConfig", "StableLmForCausalLM",
             dict(COMMON, intermediate_size=160, num_key_value_heads=2, use_qkv_bias=False, qk_layernorm=True,
                  use_parallel_residual=True, partial_rotary_factor=0.5, layer_norm_eps=1e-5)),
    # GLM-4: RMSNorm, q/k/v biases, fused gate_up_proj, explicit head_dim (32 != 64/4), GQA, interleaved half RoPE
    ArchCase("glm", "GlmConfig", "GlmForCausalLM",
             dict(COMMON, intermediate_size=160, num_key_value_heads=2, head_dim=32, attention_bias=True,
                  partial_rotary_factor=0.5, rope_theta=5000.0, rms_norm_eps=1e-5, pad_token_id=0)),
    # GPT-NeoX: parallel residual, partial rotate-half RoPE (half of each head), biases everywhere
    ArchCase("gpt_neox", "GPTNeoXConfig", "GPTNeoXForCausalLM",
             dict(COMMON, intermediate_size=160, rotary_pct=0.5, rotary_emb_base=5000.0, layer_norm_eps=1e-5,
                  use_parallel_residual=True, attention_bias=True, hidden_act="gelu")),
    # GPT-NeoX: sequential residual, no attention biases, tied output head, a quarter of each head rotated
    ArchCase("gpt_neox_sequential", "GPTNeoXConfig", "GPTNeoXForCausalLM",
             dict(COMMON, intermediate_size=128, rotary_pct=0.25, layer_norm_eps=1e-5, use_parallel_residual=False,
                  attention_bias=False, hidden_act="gelu_new", tie_word_embeddings=True)),
    # GPT-J: one shared LayerNorm, interleaved partial RoPE (8 of 16 dims), bias-free attention, lm_head bias
    ArchCase("gptj", "GPTJConfig", "GPTJForCausalLM",
             dict(COMMON, n_inner=160, rotary_dim=8, activation_function="gelu_new", layer_norm_epsilon=1e-5)),
    # Phi-2 shape: one shared LayerNorm (parallel attn + MLP), biases everywhere incl. lm_head, 6 of 16 dims rotated
    ArchCase("phi", "PhiConfig", "PhiForCausalLM",
             dict(COMMON, intermediate_size=160, partial_rotary_factor=0.375, hidden_act="gelu_new",
                  layer_norm_eps=1e-5)),
    # Phi with qk_layernorm (one LayerNorm with bias shared by all q heads, one by all k heads), GQA, theta 5000
    ArchCase("phi_qk_layernorm", "PhiConfig", "PhiForCausalLM",
             dict(COMMON, intermediate_size=160, num_key_value_heads=2, qk_layernorm=True, partial_rotary_factor=0.5,
                  rope_theta=5000.0, layer_norm_eps=1e-5)),
    # Phi-3 / Phi-4-mini shape: fused qkv_proj and gate_up_proj, RMSNorm, GQA, 12 of 16 dims rotated; the
    # sliding window (64) is longer than the parity sequence, so it does not change the logits
    ArchCase("phi3", "Phi3Config", "Phi3ForCausalLM",
             dict(COMMON, intermediate_size=160, num_key_value_heads=2, partial_rotary_factor=0.75, rope_theta=5000.0,
                  rms_norm_eps=1e-5, sliding_window=64, pad_token_id=0)),
]


def save_case(case: ArchCase, folder: Path, seed: int = 0) -> Path:
    """Save the case's random model (safetensors) and tokenizer files into `folder`."""
    import torch
    import transformers

    torch.manual_seed(seed)
    cfg = getattr(transformers, case.config_class)(**case.config)
    model = getattr(transformers, case.model_class)(cfg).eval()
    case.init(model)
    model.save_pretrained(folder, safe_serialization=True)
    tiny_tokenizer(cfg.vocab_size).save(str(Path(folder) / "tokenizer.json"))
    (Path(folder) / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>",
         "chat_template": "{% for m in messages %}{{ m['content'] }} {% endfor %}"}))
    return Path(folder)
