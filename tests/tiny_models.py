"""Tiny random-init Hugging Face checkpoints saved to disk, for parity tests (transformers + torch CPU)."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers

TINY_LLAMA = dict(
    hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    vocab_size=320, max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0,
    tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
)


def tiny_tokenizer(vocab_size: int) -> Tokenizer:
    """A word-level tokenizer with `vocab_size` entries (enough for the model folder)."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"w{i}": i for i in range(3, vocab_size)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def save_tiny_llama(folder: Path, seed: int = 0, **overrides) -> dict:
    """Save a random LlamaForCausalLM (safetensors) plus tokenizer files; returns its config dict."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(**{**TINY_LLAMA, **overrides})
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # larger-than-default init so logits are not all near zero
        for p in model.parameters():
            p.normal_(0.0, 0.08) if p.dim() > 1 else p.uniform_(0.8, 1.2)
    model.save_pretrained(folder, safe_serialization=True)
    tiny_tokenizer(cfg.vocab_size).save(str(Path(folder) / "tokenizer.json"))
    (Path(folder) / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>",
         "chat_template": "{% for m in messages %}{{ m['content'] }} {% endfor %}"}))
    return cfg.to_dict()


def hf_logits(folder: Path, ids: list[int]):
    """transformers' float32 logits (seq, vocab) for ids, on the CPU."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def hf_greedy(folder: Path, ids: list[int], max_new: int, eos: int = 2, banned: tuple[int, ...] = ()) -> list[int]:
    """transformers' greedy continuation of `ids` (float32, CPU), never picking `banned`, stopping after `eos`."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).eval()
    out: list[int] = []
    with torch.no_grad():
        while len(out) < max_new and (not out or out[-1] != eos):
            logits = model(torch.tensor([ids + out])).logits[0, -1]
            logits[list(banned)] = float("-inf")
            out.append(int(torch.argmax(logits)))
    return out
