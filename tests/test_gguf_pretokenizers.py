"""Byte-level BPE pre-tokenizers from GGUF metadata (`tokenizer.ggml.pre`): for every name webbuild
supports, the tokenizer.json it writes from a GGUF file splits hard strings exactly as llama.cpp
does for that name.

The reference is written here, independently of webbuild's table: llama.cpp's regex list per
pre-tokenizer type and its name -> type map, transcribed from its src/llama-vocab.cpp in its own
spelling (escaped as in the C source), applied with Python's `regex` module the way llama.cpp's
unicode_regex_split applies them: every regex splits every piece the previous one made, the text
between two matches is a piece of its own, and matching sees each non-ASCII whitespace character as
`\\v` (llama.cpp does that substitution before running std::regex).

Where transformers builds the same split for a file (its GGUF tokenizer conversion: GPT-2's regex by
default, Llama 3's and Qwen2's by name), the token ids of the same file must agree too. The
vocabulary is a byte-level BPE trained with no pre-tokenizer, so its merges cross every boundary a
split can draw and the ids show a split that differs. The browser tokenizer (node) gives the same ids
for two types with long regex sequences (tekken: lookaheads; deepseek-llm: six regexes, astral ranges).
"""

from __future__ import annotations

import json

import gguf
import pytest
import regex
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from hf_to_gguf import finish_gguf, gguf_metadata
from webbuild.errors import ConfigError
from webbuild.loaders.gguf_tokenizer import (
    PRE_TOKENIZERS,
    REFUSED_PRE_TOKENIZERS,
    build_tokenizer,
    tokenizer_files_from_gguf,
)

# ---- llama.cpp, transcribed (src/llama-vocab.cpp: llm_tokenizer_bpe and the tokenizer_pre names) ----

_GPT2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
_DEEPSEEK_CJK = "[一-龥ࠀ-一가-퟿]+"
LLAMA_CPP_REGEXES = {
    "GPT2": ["'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"],
    "STARCODER": ["\\p{N}", "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"],
    "LLAMA3": ["(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"
               "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"],
    "QWEN2": ["(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}"
              "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"],
    "QWEN35": ["(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+"
               "|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"],
    "TEKKEN": ["[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+"
               "|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*"
               "|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"],
    "GPT4O": ["[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+"
              "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?"
              "|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*"
              "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?"
              "|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"],
    "FALCON": ["[\\p{P}\\$\\+<=>\\^~\\|]+", _GPT2, "[0-9][0-9][0-9]"],
    "DEFAULT": ["[\\p{P}\\$\\+<=>\\^~\\|]+", _GPT2, "\\p{N}+", "[0-9][0-9][0-9]"],
    "DEEPSEEK_LLM": [
        "[\r\n]",
        "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\u1f7dᾀ-ᾴᾶ-ᾼ\u1fbeῂ-ῄῆ-ῌῐ-\u1fd3ῖ-\u1fdbῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\u2126ℨ\u212a-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
        "\\s?[!-/:-~！-／：-～‘-‟　-。]+",
        "\\s+$",
        _DEEPSEEK_CJK,
        "\\p{N}+",
    ],
    "DEEPSEEK_CODER": ["[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", _DEEPSEEK_CJK, "\\p{N}"],
}
LLAMA_CPP_TYPES = {
    **dict.fromkeys(["gpt-2", "phi-2", "jais", "trillion", "gigachat", "a.x-4.0", "mellum", "exaone4",
                     "granite-docling", "mpt", "olmo"], "GPT2"),
    **dict.fromkeys(["starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b", "mellum2"],
                    "STARCODER"),
    **dict.fromkeys(["llama-bpe", "llama3", "llama-v3", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
                     "dbrx", "smaug-bpe", "chatglm-bpe", "glm4"], "LLAMA3"),  # CHATGLM4: Llama 3's regex
    **dict.fromkeys(["qwen2", "deepseek-r1-qwen", "kormo", "megrez", "hunyuan", "solar-open", "stablelm2"], "QWEN2"),
    "qwen35": "QWEN35",
    **dict.fromkeys(["gpt-4o", "llama4", "kanana2", "minimax-m2"], "GPT4O"),
    "tekken": "TEKKEN",
    "falcon": "FALCON",
    "default": "DEFAULT",
    "deepseek-llm": "DEEPSEEK_LLM",
    "deepseek-coder": "DEEPSEEK_CODER",
}
# llama.cpp's ignore_merges is set for these names
IGNORE_MERGES = {"llama-bpe", "llama3", "llama-v3", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "tekken"}
# Unicode White_Space above ASCII: llama.cpp matches each as \v
UNICODE_SPACES = frozenset([0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F, 0x3000])


def llama_cpp_split(text: str, regexes: list[str]) -> list[str]:
    view = "".join("\v" if ord(c) in UNICODE_SPACES else c for c in text)
    spans = [(0, len(text))]
    for expr in regexes:
        pattern = regex.compile(expr)
        cut = []
        for start, end in spans:
            at = start
            for match in pattern.finditer(view[start:end]):
                assert match.end() > match.start(), (expr, text)
                if start + match.start() > at:
                    cut.append((at, start + match.start()))
                cut.append((start + match.start(), start + match.end()))
                at = start + match.end()
            if at < end:
                cut.append((at, end))
        spans = cut
    return [text[start:end] for start, end in spans]


HARD = [
    "12345 6789 1,234.56 and 3.14159",
    "I'm can't we'LL THEY'RE it's 'tis O'Neil bleſſ'ſt",  # llama.cpp's contractions are ASCII-cased: not 'ſ
    "héllo 世界 naïve Zürich",
    "  two  spaces   three\n\n\nnewlines \n \r\n\ttabs\t\t end   ",
    "def f(x):\n    return x**2\n",
    "Hello, world! (a+b)^c|d~e $100 <= 200; x->y && z // `code` #tag @me",
    "emoji 🦙🚀 and ZWJ 👩‍👩‍👧 ok!!",
    "CamelCase HTTPServer aÉb ÉCOLE École ǅemal",
    "Ελληνικά русский עברית العربية 한국어 テキスト",
    "ＡＢＣａｂｃ full-width，标点。「引号」",
    "ideographic\u3000space, \u3000\u3000two, nbsp\xa0here and em\u2003space",
    "end!\u3000\u3000。 世界\u3000中文 한국\u2003어",  # Unicode spaces next to DeepSeek's literal ranges
    "e\u0301 combining, Deseret 𐐀𐐨, letterlike \u2126\u212a\u1fbe\u1fd3\u1fdb\u1f7d",
    ".\n\n:\n  - item\n",
    "",
    " ",
    "\n",
]
CORPUS = HARD + [
    "The quick brown fox jumps over the lazy dog. 0123456789 9876543210",
    "for i in range(10):\n    print(i ** 2, end=', ')\n\n",
    "It's what they've said; we'd go, you'll see. I'M SURE!",
]
SPECIALS = ["<|endoftext|>", "<|im_start|>"]


def _trained_vocabulary() -> tuple[list[str], list[str]]:
    """Tokens (byte-level, ids in order) and merges of a BPE trained without any split."""
    trainer = trainers.BpeTrainer(vocab_size=700, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    bpe.train_from_iterator(CORPUS * 4, trainer)
    tokens = [t for t, _ in sorted(bpe.get_vocab().items(), key=lambda kv: kv[1])]
    merges = [" ".join(pair) for pair in json.loads(bpe.to_str())["model"]["merges"]]
    return tokens, merges


def write_bpe_gguf(path, pre: str | None, vocabulary: tuple[list[str], list[str]]) -> None:
    tokens, merges = vocabulary
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_tokenizer_model("gpt2")
    if pre is not None:
        writer.add_tokenizer_pre(pre)
    writer.add_token_list(SPECIALS + tokens)
    writer.add_token_merges(merges)
    writer.add_token_types([3] * len(SPECIALS) + [1] * len(tokens))
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)
    finish_gguf(writer)


def _byte_of_symbol() -> dict[str, int]:
    """GPT-2's byte -> symbol table, inverted."""
    printable = [b for b in range(256) if 0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or 0xAE <= b <= 0xFF]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[chr(b)] = b
        else:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def pieces_of(tokenizer: Tokenizer, text: str) -> list[str]:
    """The pre-tokenizer's pieces of `text`, byte symbols turned back into text."""
    byte_of = _byte_of_symbol()
    return [bytes(byte_of[c] for c in piece).decode("utf-8")
            for piece, _ in tokenizer.pre_tokenizer.pre_tokenize_str(text)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """pre name -> (folder, GGUF file name), one file per name (and one without tokenizer.ggml.pre)."""
    folder = tmp_path_factory.mktemp("bpe_pre")
    vocabulary = _trained_vocabulary()
    made = {}
    for pre in [*PRE_TOKENIZERS, None]:
        name = f"{pre or 'missing'}.gguf"
        write_bpe_gguf(folder / name, pre, vocabulary)
        made[pre] = (folder, name)
    return made


def _written_tokenizer(files, pre) -> Tokenizer:
    """The tokenizer.json webbuild writes for the file of `pre`, loaded back."""
    folder, name = files[pre]
    written = tokenizer_files_from_gguf(gguf_metadata(folder / name), where=name)
    return Tokenizer.from_str(written["tokenizer.json"].decode("utf-8"))


def test_every_supported_name_is_a_llama_cpp_name():
    assert set(PRE_TOKENIZERS) - {"gpt2"} == set(LLAMA_CPP_TYPES)
    assert PRE_TOKENIZERS["gpt2"].regexes == PRE_TOKENIZERS["gpt-2"].regexes  # webbuild's own test writer


@pytest.mark.parametrize("pre", sorted(LLAMA_CPP_TYPES))
def test_pieces_equal_llama_cpp_split(files, pre):
    tokenizer = _written_tokenizer(files, pre)
    for text in HARD:
        expected = llama_cpp_split(text, LLAMA_CPP_REGEXES[LLAMA_CPP_TYPES[pre]])
        assert pieces_of(tokenizer, text) == expected, (pre, text)


def test_a_file_without_pre_is_split_as_llama_cpp_default(files):
    tokenizer = _written_tokenizer(files, None)
    for text in HARD:
        assert pieces_of(tokenizer, text) == llama_cpp_split(text, LLAMA_CPP_REGEXES["DEFAULT"]), text


@pytest.mark.parametrize("pre", sorted(LLAMA_CPP_TYPES))
def test_ignore_merges_as_llama_cpp_sets_it(files, pre):
    tokenizer = _written_tokenizer(files, pre)
    assert json.loads(tokenizer.to_str())["model"]["ignore_merges"] == (pre in IGNORE_MERGES)


def test_splits_differ_between_types(files):
    """The hard strings tell the regex lists apart: one set of pieces per llama.cpp type."""
    by_type: dict[str, list] = {}
    for pre, kind in LLAMA_CPP_TYPES.items():
        by_type.setdefault(kind, [pieces_of(_written_tokenizer(files, pre), t) for t in HARD])
    seen = [json.dumps(v) for v in by_type.values()]
    assert len(set(seen)) == len(seen)


# transformers' conversion of a GGUF splits these names as llama.cpp does: GPT-2's regex (its default)
# and, by name, Llama 3's, Qwen2's and Qwen3.5's. The others it splits otherwise: starcoder-like names,
# stablelm2, hunyuan, solar-open, chatglm-bpe, glm4, falcon, default and deepseek-* with GPT-2's regex;
# tekken and gpt-4o with Mistral's and OpenAI's \p{Lu}/\p{Ll} classes (a non-ASCII letter has one case there, marks join
# words), and gpt-4o's `(?i:'s)` also takes `'ſ`
TRANSFORMERS_SAME_SPLIT = sorted(
    [name for name, kind in LLAMA_CPP_TYPES.items()
     if kind in ("GPT2", "LLAMA3", "QWEN35") and name not in ("chatglm-bpe", "glm4")]
    + ["qwen2", "deepseek-r1-qwen", "kormo", "megrez"])


@pytest.mark.parametrize("pre", TRANSFORMERS_SAME_SPLIT)
def test_ids_equal_transformers_conversion_of_the_same_file(files, pre):
    from transformers import AutoTokenizer

    folder, name = files[pre]
    reference = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    ours = build_tokenizer(gguf_metadata(folder / name), where=name)
    for text in HARD + ["<|endoftext|>text<|im_start|>"]:
        expected = reference(text, add_special_tokens=False)["input_ids"]
        assert ours.encode(text, add_special_tokens=False).ids == expected, (pre, text)
        assert ours.decode(expected, skip_special_tokens=False) == text


@pytest.mark.parametrize("pre", sorted(LLAMA_CPP_TYPES))
def test_decoding_gives_the_text_back(files, pre):
    folder, name = files[pre]
    ours = build_tokenizer(gguf_metadata(folder / name), where=name)
    for text in HARD:
        assert ours.decode(ours.encode(text, add_special_tokens=False).ids) == text


@pytest.mark.parametrize("pre", ["kimi-k2", "afmoe", "superbpe", "gemma4", "whitespace", "no-such-pre"])
def test_refused_pre_tokenizers_are_typed_errors(pre):
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    metadata = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": pre, "tokenizer.ggml.tokens": alphabet,
                "tokenizer.ggml.merges": []}
    with pytest.raises(ConfigError) as info:
        build_tokenizer(metadata, where="x.gguf")
    assert info.value.where == "x.gguf: tokenizer.ggml.pre"
    assert repr(pre) in info.value.message and "deepseek-coder, deepseek-llm" in info.value.message
    assert (pre in REFUSED_PRE_TOKENIZERS) == (REFUSED_PRE_TOKENIZERS.get(pre, "@") in info.value.message)


@pytest.mark.parametrize("pre", ["tekken", "deepseek-llm"])
def test_the_browser_tokenizer_gives_the_same_ids(files, pre, tmp_path):
    from test_js_tokenizer import run_js_tokenizer

    folder, name = files[pre]
    written = tokenizer_files_from_gguf(gguf_metadata(folder / name), where=name)
    ours = Tokenizer.from_str(written["tokenizer.json"].decode("utf-8"))
    texts = [t for t in HARD if t]
    python_ids = [ours.encode(t, add_special_tokens=False).ids for t in texts]
    result = run_js_tokenizer(tmp_path, {
        "tokenizer": json.loads(written["tokenizer.json"]), "config": json.loads(written["tokenizer_config.json"]),
        "chat": {"chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}", "bos_token_id": None,
                 "add_bos_token": False},
        "question": "hi", "texts": texts, "python_ids": python_ids})
    for text, ids, case in zip(texts, python_ids, result["cases"]):
        assert case["ids"] == ids, (pre, text)
        assert case["decoded"] == text
