r"""Rebuild Hugging Face `tokenizer.json` / `tokenizer_config.json` from GGUF tokenizer metadata.

Two tokenizer models: SentencePiece (`tokenizer.ggml.model == "llama"`: Llama 2, Mistral, TinyLlama,
Phi-3, Gemma) and byte-level BPE (`"gpt2"`).

SentencePiece: the pieces with their scores, `<0xXX>` byte tokens for byte fallback and `▁` for a
space. llama.cpp merges adjacent pieces by the score of the piece they make (highest first); as a
`tokenizers` BPE that is one merge per way to split each piece into two pieces, ranked by the
merged piece's score (then id). A `▁` is prepended to the text (unless
`tokenizer.ggml.add_space_prefix` is false) and spaces become `▁` (Metaspace, prepended to the first
section only and not to a text that already starts with a space, as transformers' conversion of
such files does; llama.cpp always prepends); decoding turns `▁` back into spaces, joins byte tokens
into UTF-8 and drops the leading space. BOS is added unless
`tokenizer.ggml.add_bos_token` is false (llama.cpp's default for SentencePiece).

Byte-level BPE: text is split as llama.cpp splits it for the file's `tokenizer.ggml.pre`, then
each piece becomes GPT-2 byte symbols and is merged. llama.cpp maps each `tokenizer.ggml.pre` name
to a pre-tokenizer type (`LLAMA_VOCAB_PRE_TYPE_*` in its src/llama-vocab.cpp) and each type to a list
of regexes applied in order: each regex splits every piece the previous one made, and the text
between two matches stays a piece of its own. `PRE_TOKENIZERS` states that list per name; it becomes
a `tokenizers` Sequence of `Split(regex, behavior="isolated")`, one per regex, then a ByteLevel
pre-tokenizer with its own GPT-2 regex off (`use_regex=False`: that regex would split again pieces
such as Llama 3's ".\n"). Details of llama.cpp kept: its case-insensitive contractions are written
`'[sS]|'[tT]|...` (what llama.cpp matches; `(?i:'s)` would also take `'ſ`); before a regex without
a `\p{..}` class llama.cpp replaces every non-ASCII whitespace character with `\v`, so a literal
range that spans a Unicode space (DeepSeek's U+0800-U+4E00 and U+3000-U+3002) never matches that
space here either; its ignore_merges (a piece that is a whole token is not merged) is set for the
names llama.cpp sets it for (the Llama 3 names and `tekken`). A file without `tokenizer.ggml.pre`
is split as llama.cpp's `default` type; `gpt2` (the writer in tests/hf_to_gguf.py, not a llama.cpp
name) is read as `gpt-2`.

Supported (name -> llama.cpp type): gpt-2, phi-2, gpt2, mpt, olmo, jais, trillion, gigachat,
a.x-4.0, mellum, exaone4, granite-docling -> GPT2 (GPT-2's regex); starcoder, refact, command-r,
smollm, codeshell, exaone, minerva-7b, mellum2 -> STARCODER (single digits, then GPT-2's regex);
llama-bpe, llama3, llama-v3, falcon3, falcon-h1, pixtral, midm-2.0, lfm2 -> LLAMA3 (digits in
threes); dbrx, smaug-bpe, chatglm-bpe and glm4 (-> CHATGLM4) (Llama 3's regex, no ignore_merges);
qwen2, stablelm2, deepseek-r1-qwen, kormo, megrez, hunyuan, solar-open -> QWEN2 (Llama 3's with
single digits; like llama.cpp, without Qwen's NFC normalizer); qwen35 (marks join letters); gpt-4o,
llama4, kanana2, minimax-m2 -> GPT4O and tekken (case-aware words, written with llama.cpp's
lookaheads: any non-ASCII letter counts as both cases); falcon and default (punctuation runs first,
then GPT-2's regex, then digit runs or threes); deepseek-llm and deepseek-coder (newlines,
Latin/Greek/Cyrillic words, punctuation, CJK and Hangul runs, digits).

Refused with a ConfigError naming `tokenizer.ggml.pre`: `kimi-k2` and `afmoe` (llama.cpp splits
them with hand-written code, not with the regexes it lists: Han-excluding letter runs, digit runs cut
by their length modulo three), `superbpe` (empty lookahead matches cut digit runs; `tokenizers`
drops empty matches), `gemma4`, `sarvam-moe`, `granite-embed-multi-311m` and `whitespace` (not
byte-level: BPE over raw UTF-8, llama.cpp does no GPT-2 byte mapping), and every name not in the
table (the message lists the known ones).

Control tokens become special added tokens, user-defined tokens plain added tokens.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from webbuild.errors import ConfigError, CorruptFileError

TOKEN_TYPE_NORMAL = 1
TOKEN_TYPE_UNKNOWN = 2
TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4
TOKEN_TYPE_BYTE = 6
SPACE = "\u2581"  # SentencePiece's visible space
HF_FOLDER_FIX = "build from the model's Hugging Face folder (it has tokenizer.json)"

# ---- llama.cpp's pre-tokenizer regexes (src/llama-vocab.cpp, llm_tokenizer_bpe), as data ----

# GPT-2's split as llama.cpp lists it: no final `|\s+`, a lone whitespace before a non-space that no
# branch takes stays a piece by itself, which is what `\s+` would have made of it
GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
# Llama 3's `(?i:'s|'t|'re|'ve|'m|'ll|'d)` as llama.cpp matches it (ASCII case only)
CONTRACTIONS = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
LLAMA3_REGEX = (CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = LLAMA3_REGEX.replace(r"\p{N}{1,3}", r"\p{N}")
QWEN35_REGEX = (CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# tekken / GPT-4o words: upper-case letters then lower-case ones, or the reverse. llama.cpp writes
# \p{Lu}... as "a letter that is not a-z" and \p{Ll}... as "a letter that is not A-Z", so a non-ASCII
# letter is either
_UPPER = r"((?=[\p{L}])([^a-z]))"
_LOWER = r"((?=[\p{L}])([^A-Z]))"
TEKKEN_REGEX = (rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*"
                r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
GPT4O_REGEX = (rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+{CONTRACTIONS}?"
               rf"|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*{CONTRACTIONS}?"
               r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# falcon and default: runs of punctuation and these ASCII symbols come off first
PUNCTUATION_RUNS = r"[\p{P}\$\+<=>\^~\|]+"
THREE_ASCII_DIGITS = r"[0-9][0-9][0-9]"


def _char_class(ranges: tuple[tuple[int, int], ...]) -> str:
    return "".join(chr(a) if a == b else f"{chr(a)}-{chr(b)}" for a, b in ranges)


# DeepSeek LLM's word characters: the cased letters of Latin, Greek, Cyrillic, Armenian, Georgian,
# Cherokee, Glagolitic, Coptic, Deseret, Osage, Old Hungarian, Warang Citi, Adlam... (codepoint ranges)
DEEPSEEK_CASED = _char_class((
    (0x41, 0x5A), (0x61, 0x7A), (0xB5, 0xB5), (0xC0, 0xD6), (0xD8, 0xF6), (0xF8, 0x1BA), (0x1BC, 0x1BF),
    (0x1C4, 0x293), (0x295, 0x2AF), (0x370, 0x373), (0x376, 0x377), (0x37B, 0x37D), (0x37F, 0x37F),
    (0x386, 0x386), (0x388, 0x38A), (0x38C, 0x38C), (0x38E, 0x3A1), (0x3A3, 0x3F5), (0x3F7, 0x481),
    (0x48A, 0x52F), (0x531, 0x556), (0x10A0, 0x10C5), (0x13A0, 0x13F5), (0x13F8, 0x13FD),
    (0x1C90, 0x1CBA), (0x1CBD, 0x1CBF), (0x1D00, 0x1D2B), (0x1D6B, 0x1D77), (0x1D79, 0x1D9A),
    (0x1E00, 0x1F15), (0x1F18, 0x1F1D), (0x1F20, 0x1F45), (0x1F48, 0x1F4D), (0x1F50, 0x1F57),
    (0x1F59, 0x1F59), (0x1F5B, 0x1F5B), (0x1F5D, 0x1F5D), (0x1F5F, 0x1F7D), (0x1F80, 0x1FB4),
    (0x1FB6, 0x1FBC), (0x1FBE, 0x1FBE), (0x1FC2, 0x1FC4), (0x1FC6, 0x1FCC), (0x1FD0, 0x1FD3),
    (0x1FD6, 0x1FDB), (0x1FE0, 0x1FEC), (0x1FF2, 0x1FF4), (0x1FF6, 0x1FFC), (0x2102, 0x2102),
    (0x2107, 0x2107), (0x210A, 0x2113), (0x2115, 0x2115), (0x2119, 0x211D), (0x2124, 0x2124),
    (0x2126, 0x2126), (0x2128, 0x2128), (0x212A, 0x212D), (0x212F, 0x2134), (0x2139, 0x2139),
    (0x213C, 0x213F), (0x2145, 0x2149), (0x214E, 0x214E), (0x2183, 0x2184), (0x2C00, 0x2C7B),
    (0x2C7E, 0x2CE4), (0x2CEB, 0x2CEE), (0x2CF2, 0x2CF3), (0xA640, 0xA66D), (0xA680, 0xA69B),
    (0xA722, 0xA76F), (0xA771, 0xA787), (0xA78B, 0xA78E), (0xAB70, 0xABBF), (0xFB00, 0xFB06),
    (0xFB13, 0xFB17), (0xFF21, 0xFF3A), (0xFF41, 0xFF5A), (0x10400, 0x1044F), (0x104B0, 0x104D3),
    (0x104D8, 0x104FB), (0x10C80, 0x10CB2), (0x10CC0, 0x10CF2), (0x118A0, 0x118DF), (0x1E900, 0x1E943),
))
# ASCII and full-width punctuation, quotes, ideographic comma and full stop. llama.cpp's range starts
# at U+3000 (ideographic space), but a space never reaches that class there (see the docstring)
DEEPSEEK_PUNCTUATION = r"!-/:-~" + _char_class(((0xFF01, 0xFF0F), (0xFF1A, 0xFF5E), (0x2018, 0x201F),
                                                 (0x3001, 0x3002)))
# CJK ideographs, U+0800..U+4E00 and Hangul; the Unicode spaces inside U+0800..U+4E00 are left out,
# as in llama.cpp
DEEPSEEK_CJK = r"(?:(?!\s)[" + _char_class(((0x4E00, 0x9FA5), (0x0800, 0x4E00), (0xAC00, 0xD7FF))) + "])+"


class PreTokenizerSpec(NamedTuple):
    """How llama.cpp splits text for one `tokenizer.ggml.pre` name."""

    kind: str  # llama.cpp's LLAMA_VOCAB_PRE_TYPE_<kind>
    regexes: tuple[str, ...]  # applied in order, each to every piece of the one before
    ignore_merges: bool = False  # a piece that is a whole token is that token


_GPT2 = PreTokenizerSpec("GPT2", (GPT2_REGEX,))
_STARCODER = PreTokenizerSpec("STARCODER", (r"\p{N}", GPT2_REGEX))
_LLAMA3 = PreTokenizerSpec("LLAMA3", (LLAMA3_REGEX,), ignore_merges=True)
_QWEN2 = PreTokenizerSpec("QWEN2", (QWEN2_REGEX,))
_GPT4O = PreTokenizerSpec("GPT4O", (GPT4O_REGEX,))

PRE_TOKENIZERS: dict[str, PreTokenizerSpec] = {
    **dict.fromkeys(("gpt-2", "phi-2", "gpt2", "jais", "trillion", "gigachat", "a.x-4.0", "mellum", "exaone4",
                     "granite-docling"), _GPT2),
    "mpt": _GPT2._replace(kind="MPT"),
    "olmo": _GPT2._replace(kind="OLMO"),
    **dict.fromkeys(("starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b", "mellum2"),
                    _STARCODER),
    **dict.fromkeys(("llama-bpe", "llama3", "llama-v3", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"),
                    _LLAMA3),
    "dbrx": PreTokenizerSpec("DBRX", (LLAMA3_REGEX,)),
    "smaug-bpe": PreTokenizerSpec("SMAUG", (LLAMA3_REGEX,)),
    **dict.fromkeys(("chatglm-bpe", "glm4"), PreTokenizerSpec("CHATGLM4", (LLAMA3_REGEX,))),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "kormo", "megrez", "hunyuan", "solar-open"), _QWEN2),
    "stablelm2": _QWEN2._replace(kind="STABLELM2"),
    "qwen35": PreTokenizerSpec("QWEN35", (QWEN35_REGEX,)),
    **dict.fromkeys(("gpt-4o", "llama4", "kanana2", "minimax-m2"), _GPT4O),
    "tekken": PreTokenizerSpec("TEKKEN", (TEKKEN_REGEX,), ignore_merges=True),
    "falcon": PreTokenizerSpec("FALCON", (PUNCTUATION_RUNS, GPT2_REGEX, THREE_ASCII_DIGITS)),
    "default": PreTokenizerSpec("DEFAULT", (PUNCTUATION_RUNS, GPT2_REGEX, r"\p{N}+", THREE_ASCII_DIGITS)),
    # `$`: end of the piece (the first regex leaves no newline inside a piece for Oniguruma's
    # end-of-line `$` to stop before)
    "deepseek-llm": PreTokenizerSpec("DEEPSEEK_LLM", (
        r"[\r\n]", rf"\s?[{DEEPSEEK_CASED}]+", rf"\s?[{DEEPSEEK_PUNCTUATION}]+", r"\s+$", DEEPSEEK_CJK, r"\p{N}+")),
    "deepseek-coder": PreTokenizerSpec("DEEPSEEK_CODER", (
        r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", DEEPSEEK_CJK, r"\p{N}")),
}
# names llama.cpp knows whose split `tokenizers` cannot reproduce, and why
REFUSED_PRE_TOKENIZERS = {
    "kimi-k2": "llama.cpp splits it with hand-written code (Han-excluding letter runs), not a regex",
    "afmoe": "llama.cpp cuts digit runs with hand-written code (by their length modulo three)",
    "superbpe": "its empty lookahead matches cut digit runs; tokenizers' Split drops empty matches",
    **dict.fromkeys(("gemma4", "sarvam-moe", "granite-embed-multi-311m", "whitespace"),
                    "not byte-level: llama.cpp runs BPE over raw UTF-8 for it"),
}
# what llama.cpp uses for a byte-level vocabulary without tokenizer.ggml.pre
MISSING_PRE = "default"


def pre_tokenizer_spec(pre: str, where: str) -> PreTokenizerSpec:
    """The split of `tokenizer.ggml.pre` = `pre`, or a ConfigError naming the field."""
    if pre in PRE_TOKENIZERS:
        return PRE_TOKENIZERS[pre]
    why = REFUSED_PRE_TOKENIZERS.get(pre, "not a pre-tokenizer webbuild knows")
    raise ConfigError(f"pre-tokenizer {pre!r} is not supported ({why}); known: {', '.join(sorted(PRE_TOKENIZERS))}",
                      where=f"{where}: tokenizer.ggml.pre", fix=HF_FOLDER_FIX)


def _pre_tokenizer(spec: PreTokenizerSpec) -> pre_tokenizers.PreTokenizer:
    splits = [pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False) for regex in spec.regexes]
    return pre_tokenizers.Sequence(
        splits + [pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])


def _field(metadata: dict, key: str, where: str) -> Any:
    if key not in metadata:
        raise ConfigError(f"tokenizer metadata {key!r} is missing", where=f"{where}: {key}",
                          fix=HF_FOLDER_FIX)
    return metadata[key]


def _merges(metadata: dict, where: str) -> list[tuple[str, str]]:
    pairs = []
    for merge in _field(metadata, "tokenizer.ggml.merges", where):
        left, space, right = merge.partition(" ")
        if not space or not left or not right:
            raise CorruptFileError(f"merge {merge!r} is not two tokens separated by a space",
                                   where=f"{where}: tokenizer.ggml.merges", fix=HF_FOLDER_FIX)
        pairs.append((left, right))
    return pairs


def _vocab(tokens: list[str]) -> dict[str, int]:
    """token -> id; a duplicated token keeps its first id."""
    vocab: dict[str, int] = {}
    for token_id, token in enumerate(tokens):
        vocab.setdefault(token, token_id)
    return vocab


def _added_tokens(tokens: list[str], token_types: list[int]) -> list[AddedToken]:
    added = []
    for token, kind in zip(tokens, token_types):
        if kind in (TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED):
            added.append(AddedToken(token, special=kind == TOKEN_TYPE_CONTROL,
                                    normalized=False, single_word=False, lstrip=False,
                                    rstrip=False))
    return added


def _special_token(metadata: dict, name: str, tokens: list[str], where: str) -> str | None:
    """The text of the special token `name` (bos, eos, unknown, padding), or None."""
    key = f"tokenizer.ggml.{name}_token_id"
    if key not in metadata:
        return None
    token_id = int(metadata[key])
    if not 0 <= token_id < len(tokens):
        raise CorruptFileError(f"{name} token id {token_id} is outside the vocabulary "
                               f"of {len(tokens)}", where=f"{where}: {key}", fix=HF_FOLDER_FIX)
    return tokens[token_id]


def _post_processor(metadata: dict, tokens: list[str], where: str,
                    byte_level: processors.PostProcessor | None) -> processors.PostProcessor | None:
    """`byte_level` (offsets of byte-level BPE), plus BOS/EOS insertion when the GGUF asks for it."""
    bos = _flagged_token(metadata, "bos", tokens, where)
    eos = _flagged_token(metadata, "eos", tokens, where)
    if bos is None and eos is None:
        return byte_level
    head = [bos[0]] if bos else []
    tail = [eos[0]] if eos else []
    single = head + ["$A"] + tail
    pair = single + head + ["$B:1"] + tail
    template = processors.TemplateProcessing(
        single=" ".join(single), pair=" ".join(pair),
        special_tokens=[t for t in (bos, eos) if t is not None])
    return template if byte_level is None else processors.Sequence([byte_level, template])


def _adds(metadata: dict, name: str) -> bool:
    """Whether the tokenizer adds the `name` (bos, eos) token: the file's flag, else llama.cpp's
    default (BOS for SentencePiece vocabularies)."""
    default = name == "bos" and metadata.get("tokenizer.ggml.model") == "llama"
    return bool(metadata.get(f"tokenizer.ggml.add_{name}_token", default))


def _flagged_token(metadata: dict, name: str, tokens: list[str], where: str):
    """(token, id) when the tokenizer adds token `name`, else None."""
    if not _adds(metadata, name):
        return None
    token = _special_token(metadata, name, tokens, where)
    if token is None:
        return None
    return token, int(metadata[f"tokenizer.ggml.{name}_token_id"])


def build_tokenizer(metadata: dict, where: str) -> Tokenizer:
    """A `tokenizers.Tokenizer` equivalent to the GGUF's tokenizer (SentencePiece or byte-level BPE)."""
    model = _field(metadata, "tokenizer.ggml.model", where)
    if model == "llama":
        return _sentencepiece_tokenizer(metadata, where)
    if model != "gpt2":
        raise ConfigError(f"tokenizer model {model!r} is not supported (known: 'llama' (SentencePiece), "
                          "'gpt2' (byte-level BPE))", where=f"{where}: tokenizer.ggml.model", fix=HF_FOLDER_FIX)
    tokens = list(_field(metadata, "tokenizer.ggml.tokens", where))
    token_types = list(metadata.get("tokenizer.ggml.token_type", [TOKEN_TYPE_NORMAL] * len(tokens)))
    spec = pre_tokenizer_spec(str(metadata.get("tokenizer.ggml.pre", MISSING_PRE)), where)
    try:
        bpe = models.BPE(vocab=_vocab(tokens), merges=_merges(metadata, where), fuse_unk=False,
                         byte_fallback=False, ignore_merges=spec.ignore_merges)
    except Exception as exc:  # tokenizers raises plain Exception, e.g. a merge of unknown tokens
        raise CorruptFileError(f"the BPE vocabulary and merges do not fit together: {exc}",
                               where=f"{where}: tokenizer.ggml.merges",
                               fix="re-download the file or re-convert it with llama.cpp's "
                                   "convert_hf_to_gguf.py") from exc
    tokenizer = Tokenizer(bpe)
    tokenizer.pre_tokenizer = _pre_tokenizer(spec)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = _post_processor(metadata, tokens, where, processors.ByteLevel(trim_offsets=False))
    tokenizer.add_tokens(_added_tokens(tokens, token_types))
    return tokenizer


def _sentencepiece_merges(tokens: list[str], scores: list[float], token_types: list[int]) -> list[tuple[str, str]]:
    """Every split of a normal piece into two pieces, ranked as llama.cpp merges: the merged
    piece's score, highest first (then its id, then the left piece's length)."""
    vocab = _vocab(tokens)
    mergeable = {t for t, kind in zip(tokens, token_types) if kind in (TOKEN_TYPE_NORMAL, TOKEN_TYPE_USER_DEFINED)}
    ranked = []
    for token_id, (token, kind) in enumerate(zip(tokens, token_types)):
        if kind != TOKEN_TYPE_NORMAL or vocab[token] != token_id:
            continue
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in mergeable and right in mergeable:
                ranked.append((-scores[token_id], token_id, cut, left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def _sentencepiece_tokenizer(metadata: dict, where: str) -> Tokenizer:
    tokens = list(_field(metadata, "tokenizer.ggml.tokens", where))
    raw_scores = _field(metadata, "tokenizer.ggml.scores", where)
    token_types = list(metadata.get("tokenizer.ggml.token_type", [TOKEN_TYPE_NORMAL] * len(tokens)))
    try:
        scores = [float(x) for x in raw_scores]
        if not all(isinstance(t, str) for t in tokens) or not all(isinstance(k, int) for k in token_types):
            raise TypeError("tokens must be strings and token types integers")
    except (TypeError, ValueError) as exc:
        raise CorruptFileError(f"the SentencePiece vocabulary is malformed: {exc}",
                               where=f"{where}: tokenizer.ggml.scores", fix=HF_FOLDER_FIX) from exc
    if not len(scores) == len(token_types) == len(tokens):
        raise CorruptFileError(f"{len(tokens)} tokens but {len(scores)} scores and {len(token_types)} token types",
                               where=f"{where}: tokenizer.ggml.scores", fix=HF_FOLDER_FIX)
    unknown = _special_token(metadata, "unknown", tokens, where)
    if unknown is None:
        unknown = next((t for t, kind in zip(tokens, token_types) if kind == TOKEN_TYPE_UNKNOWN), None)
    try:
        bpe = models.BPE(vocab=_vocab(tokens), merges=_sentencepiece_merges(tokens, scores, token_types),
                         unk_token=unknown, fuse_unk=True, byte_fallback=True)
    except Exception as exc:  # tokenizers raises plain Exception
        raise CorruptFileError(f"the SentencePiece vocabulary cannot be rebuilt: {exc}",
                               where=f"{where}: tokenizer.ggml.tokens", fix=HF_FOLDER_FIX) from exc
    tokenizer = Tokenizer(bpe)
    prefix = bool(metadata.get("tokenizer.ggml.add_space_prefix", True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="first" if prefix else "never",
                                                       split=False)
    tokenizer.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
                                          + ([decoders.Strip(" ", 1, 0)] if prefix else []))
    post = _post_processor(metadata, tokens, where, None)
    if post is not None:
        tokenizer.post_processor = post
    tokenizer.add_tokens(_added_tokens(tokens, token_types))
    return tokenizer


def tokenizer_config(metadata: dict, where: str, model_max_length: int | None = None) -> dict:
    """A `tokenizer_config.json`-style dict: special tokens, flags and chat template."""
    tokens = _field(metadata, "tokenizer.ggml.tokens", where)
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": _adds(metadata, "bos"),
        "add_eos_token": _adds(metadata, "eos"),
        "clean_up_tokenization_spaces": False,
    }
    for name, field in (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding")):
        token = _special_token(metadata, field, tokens, where)
        if token is not None:
            config[f"{name}_token"] = token
    if model_max_length is not None:
        config["model_max_length"] = int(model_max_length)
    if "tokenizer.chat_template" in metadata:
        config["chat_template"] = metadata["tokenizer.chat_template"]
    return config


def tokenizer_files_from_gguf(metadata: dict, where: str,
                              model_max_length: int | None = None) -> dict[str, bytes]:
    """`tokenizer.json` and `tokenizer_config.json` contents, as UTF-8 bytes."""
    tokenizer = build_tokenizer(metadata, where)
    config = tokenizer_config(metadata, where, model_max_length)
    return {
        "tokenizer.json": tokenizer.to_str().encode("utf-8"),
        "tokenizer_config.json": json.dumps(config, indent=2, ensure_ascii=False).encode("utf-8"),
    }
