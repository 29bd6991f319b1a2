"""Rebuild Hugging Face `tokenizer.json` / `tokenizer_config.json` from GGUF tokenizer metadata.

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

Byte-level BPE: the pre-tokenizer follows
`tokenizer.ggml.pre`: `smollm` (single digits, then GPT-2 ByteLevel splitting), `gpt2`
(ByteLevel splitting), `llama-bpe` (the Llama 3 split regex, then ByteLevel) or `qwen2` (Llama 3's
regex with single digits, as Qwen2/2.5/3's tokenizer.json; like llama.cpp, without its NFC
normalizer). Control tokens
become special added tokens, user-defined tokens plain added tokens.
"""

from __future__ import annotations

import json
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from webbuild.errors import ConfigError, CorruptFileError

TOKEN_TYPE_NORMAL = 1
TOKEN_TYPE_UNKNOWN = 2
TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4
TOKEN_TYPE_BYTE = 6
SPACE = "\u2581"  # SentencePiece's visible space

LLAMA3_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT_REGEX = LLAMA3_SPLIT_REGEX.replace(r"\p{N}{1,3}", r"\p{N}")
SPLIT_REGEXES = {"llama-bpe": LLAMA3_SPLIT_REGEX, "qwen2": QWEN2_SPLIT_REGEX}
HF_FOLDER_FIX = "build from the model's Hugging Face folder (it has tokenizer.json)"


def _pre_tokenizer(pre: str, where: str) -> pre_tokenizers.PreTokenizer:
    if pre == "smollm":
        return pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ])
    if pre == "gpt2":
        return pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    if pre in SPLIT_REGEXES:
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(SPLIT_REGEXES[pre]), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ])
    raise ConfigError(f"pre-tokenizer {pre!r} is not supported (known: smollm, gpt2, {', '.join(SPLIT_REGEXES)})",
                      where=f"{where}: tokenizer.ggml.pre", fix=HF_FOLDER_FIX)


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
    pre = metadata.get("tokenizer.ggml.pre", "gpt2")
    try:
        bpe = models.BPE(vocab=_vocab(tokens), merges=_merges(metadata, where), fuse_unk=False,
                         byte_fallback=False, ignore_merges=pre == "llama-bpe")
    except Exception as exc:  # tokenizers raises plain Exception, e.g. a merge of unknown tokens
        raise CorruptFileError(f"the BPE vocabulary and merges do not fit together: {exc}",
                               where=f"{where}: tokenizer.ggml.merges",
                               fix="re-download the file or re-convert it with llama.cpp's "
                                   "convert_hf_to_gguf.py") from exc
    tokenizer = Tokenizer(bpe)
    tokenizer.pre_tokenizer = _pre_tokenizer(pre, where)
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
