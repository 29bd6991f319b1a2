"""The parity cases of every architecture: a tiny random transformers config per entry.

Adding an architecture means adding one `ArchCase` here; tests/test_arch_parity.py builds each
case through `webbuild build` (CPU q0f32 and q4f32_1, WebGPU) and compares it with transformers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

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


CASES: list[ArchCase] = [
    ArchCase("llama", "LlamaConfig", "LlamaForCausalLM",
             dict(COMMON, intermediate_size=160, num_key_value_heads=2, rms_norm_eps=1e-5)),
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
