"""SentencePiece tokenizers from GGUF metadata (`tokenizer.ggml.model == "llama"`: Llama 2, Mistral,
TinyLlama, Phi-3, Gemma files): the tokenizer.json webbuild writes gives the same ids as transformers'
own conversion of the same file (`AutoTokenizer.from_pretrained(dir, gguf_file=...)`) on hard
strings, decodes them back, and loads in the browser runtime's tokenizer (node) with the same ids.

The vocabulary is made here: a BPE trained on a small mixed corpus with SentencePiece's `▁`
spaces, written as llama.cpp writes a SentencePiece vocabulary (<unk>, <s>, </s>, the 256 <0xXX>
byte tokens, then the pieces with falling scores).
"""

from __future__ import annotations

import json

import gguf
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from hf_to_gguf import finish_gguf, gguf_metadata
from webbuild.loaders.gguf_tokenizer import build_tokenizer, tokenizer_files_from_gguf

CORPUS = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs on.",
    "def tokenize(text):\n    return [t for t in text.split() if t]\n",
    "Numbers like 12345, 3.14159 and 2026-12-07 appear in dates and prices: $19.99.",
    "Café, naïve, résumé, Zürich, São Paulo, Ελληνικά, русский, 日本語のテキスト, 中文文本.",
    "    indented lines\tand tabs\n\n\nand blank lines between them.",
    "Hello world! Hello there, hello again. HELLO?",
]
HARD = [
    "Hello world",
    "  two leading spaces and  double  spaces ",
    "tabs\tand\nnewlines\n\n\nend",
    "numbers 12345 3.14 and 2026",
    "café naïve Zürich 日本語 中文",
    "an emoji 🙂 and a rare ǅ letter",  # not in the vocabulary: byte fallback
    "x = [a, b]; y = {'k': 1}\n    return x",
    "<s>special</s> tokens inside text",
    "",
    " ",
]


def _write_spm_gguf(path, add_space_prefix: bool | None = None) -> None:
    trainer = trainers.BpeTrainer(vocab_size=420, show_progress=False)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    bpe.train_from_iterator(CORPUS * 3, trainer)
    pieces = [t for t, _ in sorted(bpe.get_vocab().items(), key=lambda kv: kv[1])]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + pieces
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * 259 + [-float(i) for i in range(len(pieces))])
    writer.add_token_types([2, 3, 3] + [6] * 256 + [1] * len(pieces))
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    if add_space_prefix is not None:
        writer.add_add_space_prefix(add_space_prefix)
    finish_gguf(writer)


@pytest.fixture(scope="module")
def spm(tmp_path_factory):
    folder = tmp_path_factory.mktemp("spm")
    _write_spm_gguf(folder / "spm.gguf")
    return folder


def test_ids_equal_transformers_conversion_of_the_same_file(spm):
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(spm, gguf_file="spm.gguf")
    ours = build_tokenizer(gguf_metadata(spm / "spm.gguf"), where="spm.gguf")
    for text in HARD:
        expected = reference(text)["input_ids"]
        got = ours.encode(text).ids
        assert got == expected, (text, got, expected)
        assert got[0] == 1  # BOS: llama.cpp's default for SentencePiece
        assert ours.decode(got, skip_special_tokens=True) == reference.decode(expected, skip_special_tokens=True)


def test_decoding_gives_the_text_back(spm):
    """Except one leading space: as in transformers' conversion, a text that already starts with a
    space gets no extra `▁`, and decoding drops the first space."""
    ours = build_tokenizer(gguf_metadata(spm / "spm.gguf"), where="spm.gguf")
    for text in HARD:
        if "<s>" not in text:
            expected = text[1:] if text.startswith(" ") else text
            assert ours.decode(ours.encode(text).ids, skip_special_tokens=True) == expected


def test_byte_fallback_and_space_prefix(spm, tmp_path):
    ours = build_tokenizer(gguf_metadata(spm / "spm.gguf"), where="spm.gguf")
    assert ours.encode("🙂", add_special_tokens=False).tokens[-4:] == ["<0xF0>", "<0x9F>", "<0x99>", "<0x82>"]
    assert ours.encode("Hello", add_special_tokens=False).tokens[0].startswith("\u2581")
    _write_spm_gguf(tmp_path / "nospace.gguf", add_space_prefix=False)
    plain = build_tokenizer(gguf_metadata(tmp_path / "nospace.gguf"), where="nospace.gguf")
    assert not plain.encode("Hello", add_special_tokens=False).tokens[0].startswith("\u2581")


def test_the_browser_tokenizer_gives_the_same_ids(spm, tmp_path):
    from test_js_tokenizer import run_js_tokenizer

    files = tokenizer_files_from_gguf(gguf_metadata(spm / "spm.gguf"), where="spm.gguf")
    ours = Tokenizer.from_str(files["tokenizer.json"].decode())
    config = json.loads(files["tokenizer_config.json"])
    assert config["add_bos_token"] is True
    texts = [t for t in HARD if t]
    python_ids = [ours.encode(t, add_special_tokens=False).ids for t in texts]
    result = run_js_tokenizer(tmp_path, {
        "tokenizer": json.loads(files["tokenizer.json"]), "config": config,
        "chat": {"chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}", "bos_token_id": None,
                 "add_bos_token": False},
        "question": "hi", "texts": texts, "python_ids": python_ids})
    assert [case["ids"] for case in result["cases"]] == python_ids
    assert [case["decoded"] for case in result["cases"]] == [ours.decode(i, skip_special_tokens=False)
                                                             for i in python_ids]
    assert ["".join(case["deltas"]) for case in result["cases"]] == [case["decoded"] for case in result["cases"]]
