"""The model's special token ids (bos, eos) as its configs give them, checked before any compile.

generation_config.json wins over config.json (as transformers reads them). Each id must be a whole
number inside the vocabulary (eos may be a list of them): a string "2", 1.5, -1 or an id past the
vocabulary used to build a folder whose runtime never stops or crashes on its first token.
"""

from __future__ import annotations

from .errors import ConfigError


def _checked(value, vocab_size: int, where: str) -> None:
    ids = value if isinstance(value, list) else [value]
    for token in ids:
        if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < vocab_size:
            raise ConfigError(f"{token!r} is not a token id of this model (whole numbers 0 to {vocab_size - 1})",
                              where=where, fix="give the id as a JSON number inside the vocabulary (a list for "
                                               "several eos ids), or remove the field")


def check_special_ids(config: dict, generation_config: dict, vocab_size: int) -> None:
    """ConfigError naming the file and field of the first bos / eos id that is not a vocabulary id."""
    for key in ("bos_token_id", "eos_token_id"):
        for source, name in ((generation_config, "generation_config.json"), (config, "config.json")):
            if source.get(key) is not None:
                _checked(source[key], vocab_size, f"{name}: {key}")
