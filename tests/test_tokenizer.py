"""Tests of the tokenizer rebuilt from GGUF metadata (SmolLM2 facts plus synthetic vocabularies)."""

from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer, pre_tokenizers

from smollm_facts import ANSWER, ANSWER_IDS, PROMPT_HEAD, PROMPT_LEN, QUESTION, chat_prompt
from webbuild.errors import ConfigError, CorruptFileError
from webbuild.loaders.gguf_tokenizer import build_tokenizer, tokenizer_files_from_gguf

AWKWARD = [
    "héllo wörld ÄÖÜ ß",
    "emoji 🦙🚀👩‍👩‍👧 ok",
    "中文字符和日本語のテキスト、한국어",
    "digits 12345 and 3.14159",
    "tabs\tand   runs    of     spaces  ",
    "windows\r\nline\r\nendings\r\n",
    "\n\n\nleading newlines",
    "  ",
    "<|im_start|>user\nhi<|im_end|>\n",
    "mixed <jupyter_code>print(1)</jupyter_code>",
]


@pytest.fixture(scope="module")
def tokenizer(smollm) -> Tokenizer:
    return Tokenizer.from_str(smollm.tokenizer_files["tokenizer.json"].decode("utf-8"))


def test_chat_prompt_ids(smollm, tokenizer):
    prompt = chat_prompt(smollm.chat_template)
    assert prompt.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert prompt.endswith("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
                           "<|im_start|>assistant\n")
    ids = tokenizer.encode(prompt).ids
    assert len(ids) == PROMPT_LEN
    assert ids[:4] == PROMPT_HEAD
    assert ids[-4:] == [1, 520, 9531, 198]  # <|im_start|> assistant \n
    assert tokenizer.decode(ids, skip_special_tokens=False) == prompt


def test_answer_decodes(tokenizer):
    assert tokenizer.decode(ANSWER_IDS, skip_special_tokens=False) == ANSWER
    assert tokenizer.decode(ANSWER_IDS, skip_special_tokens=True) == ANSWER[:-len("<|im_end|>")]
    assert tokenizer.encode(ANSWER).ids == ANSWER_IDS


@pytest.mark.parametrize("text", AWKWARD)
def test_awkward_strings_round_trip(tokenizer, text):
    ids = tokenizer.encode(text).ids
    assert tokenizer.decode(ids, skip_special_tokens=False) == text


def test_digits_split_individually(tokenizer):
    encoding = tokenizer.encode("12345")
    assert encoding.tokens == ["1", "2", "3", "4", "5"]
    assert len(tokenizer.encode("year 2024!").ids) == len(tokenizer.encode("year 2!").ids) + 3


def test_control_tokens_are_special(tokenizer):
    for token_id, token in [(0, "<|endoftext|>"), (1, "<|im_start|>"), (2, "<|im_end|>"),
                            (16, "<empty_output>")]:
        assert tokenizer.token_to_id(token) == token_id
        assert tokenizer.encode(f"a{token}b").ids[1] == token_id
    assert tokenizer.decode(tokenizer.encode("<|im_start|>hi<|im_end|>").ids) == "hi"
    assert tokenizer.get_vocab_size(with_added_tokens=True) == 49152


def test_no_bos_added(tokenizer):
    assert tokenizer.encode("hi").ids[0] != 1


def test_tokenizer_config(smollm):
    config = json.loads(smollm.tokenizer_files["tokenizer_config.json"])
    assert config["bos_token"] == "<|im_start|>"
    assert config["eos_token"] == "<|im_end|>"
    assert config["add_bos_token"] is False
    assert config["chat_template"] == smollm.chat_template
    assert config["model_max_length"] == 8192


def test_transformers_reads_the_files(smollm, tmp_path):
    transformers = pytest.importorskip("transformers")
    for name, data in smollm.tokenizer_files.items():
        (tmp_path / name).write_bytes(data)
    hf = transformers.PreTrainedTokenizerFast.from_pretrained(tmp_path)
    ids = hf.apply_chat_template([{"role": "user", "content": QUESTION}],
                                 add_generation_prompt=True, tokenize=True, return_dict=False)
    assert len(ids) == 37 and ids[:4] == [1, 9690, 198, 2683]
    assert hf.eos_token_id == 2 and hf.bos_token_id == 1


# ---------- synthetic vocabularies ----------

def _metadata(**overrides) -> dict:
    """A byte-level BPE vocabulary: 2 control tokens, the 256 byte symbols, two merges."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = ["<s>", "</s>"] + alphabet + ["he", "hel"]
    metadata = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "gpt2",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.merges": ["h e", "he l"],
        "tokenizer.ggml.token_type": [3, 3] + [1] * (len(tokens) - 2),
        "tokenizer.ggml.bos_token_id": 0,
        "tokenizer.ggml.eos_token_id": 1,
    }
    metadata.update(overrides)
    return metadata


@pytest.mark.parametrize("pre", ["gpt2", "smollm", "llama-bpe", "qwen2"])
def test_supported_pre_tokenizers(pre):
    tokenizer = build_tokenizer(_metadata(**{"tokenizer.ggml.pre": pre}), where="test.gguf")
    text = "hello 123 wörld\r\n"
    encoding = tokenizer.encode(text)
    assert encoding.tokens[0] == "hel"
    assert tokenizer.decode(encoding.ids) == text


@pytest.mark.parametrize("pre, pieces", [
    ("llama-bpe", ["x", "123", "4", " ", " y"]),  # digits in runs of up to three
    ("qwen2", ["x", "1", "2", "3", "4", " ", " y"]),  # one digit each
])
def test_split_regex_pre_tokenizers_split_digits_as_their_models_do(pre, pieces):
    tokenizer = build_tokenizer(_metadata(**{"tokenizer.ggml.pre": pre}), where="test.gguf")
    split = tokenizer.pre_tokenizer.pre_tokenize_str("x1234  y")
    assert [piece.replace("\u0120", " ") for piece, _ in split] == pieces


def test_add_bos_and_eos_flags():
    metadata = _metadata(**{"tokenizer.ggml.add_bos_token": True,
                            "tokenizer.ggml.add_eos_token": True})
    tokenizer = build_tokenizer(metadata, where="test.gguf")
    ids = tokenizer.encode("he").ids
    assert ids[0] == 0 and ids[-1] == 1 and len(ids) == 3


def test_unsupported_tokenizer_model():
    with pytest.raises(ConfigError) as info:
        build_tokenizer(_metadata(**{"tokenizer.ggml.model": "rwkv"}), where="test.gguf")
    assert info.value.where.endswith("tokenizer.ggml.model")


def test_unsupported_pre_tokenizer():
    with pytest.raises(ConfigError) as info:
        build_tokenizer(_metadata(**{"tokenizer.ggml.pre": "no-such-pre"}), where="test.gguf")
    assert info.value.where.endswith("tokenizer.ggml.pre")


def test_malformed_merges():
    with pytest.raises(CorruptFileError):
        build_tokenizer(_metadata(**{"tokenizer.ggml.merges": ["hel"]}), where="test.gguf")


def test_special_id_out_of_range():
    with pytest.raises(CorruptFileError):
        tokenizer_files_from_gguf(_metadata(**{"tokenizer.ggml.eos_token_id": 10_000}),
                                  where="test.gguf")


def test_missing_tokens():
    metadata = _metadata()
    del metadata["tokenizer.ggml.tokens"]
    with pytest.raises(ConfigError):
        build_tokenizer(metadata, where="test.gguf")


def test_merge_of_tokens_outside_the_vocabulary():
    with pytest.raises(CorruptFileError) as info:
        build_tokenizer(_metadata(**{"tokenizer.ggml.merges": ["h e", "hx l"]}), where="test.gguf")
    assert info.value.where == "test.gguf: tokenizer.ggml.merges"
