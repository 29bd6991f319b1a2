"""Sentence-embedding heads read from a sentence-transformers folder, and applied in Relax.

A sentence-transformers checkpoint lists its modules in `modules.json` (Transformer, Pooling,
optionally Normalize); the Pooling module's `config.json` (usually `1_Pooling/config.json`) says
which tokens' states become the sentence vector: the mean over the real tokens, the first
([CLS]) token or the last real token. `sentence_bert_config.json` gives the longest input the
model was used with. A folder without `modules.json` is a plain encoder: mean pooling, no
normalisation (what sentence-transformers does for such a folder).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tvm import te
from tvm.relax.frontend.nn import Tensor, op

from ..errors import ConfigError, CorruptFileError

POOLING_MODES = ("mean", "cls", "lasttoken")
# pooling_mode_* flags of 1_Pooling/config.json -> our name
_FLAGS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_lasttoken": "lasttoken"}
_UNSUPPORTED_FLAGS = ("pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens",
                      "pooling_mode_weightedmean_tokens")
_KNOWN_MODULES = ("sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
                  "sentence_transformers.models.Normalize")
NORM_EPS = 1e-12  # torch.nn.functional.normalize's default, which sentence-transformers' Normalize uses
MEAN_EPS = 1e-9  # sentence-transformers clamps the token count of mean pooling at this


@dataclass(frozen=True)
class Pooling:
    """How token states become one sentence vector."""

    mode: str = "mean"
    normalize: bool = False
    max_seq_length: int | None = None  # sentence_bert_config.json's max_seq_length, when given


def _json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise CorruptFileError(f"cannot read {path.name} ({type(err).__name__})", where=str(path),
                               fix="restore the file from the original sentence-transformers model") from None


def _mode(config: object, where: str) -> str:
    if not isinstance(config, dict):
        raise CorruptFileError("the pooling config must be a JSON object", where=where,
                               fix="restore it from the original sentence-transformers model")
    if config.get("pooling_mode") in POOLING_MODES:  # newer sentence-transformers' single field
        return str(config["pooling_mode"])
    used = [key for key in (*_FLAGS, *_UNSUPPORTED_FLAGS) if config.get(key) is True]
    if len(used) != 1 or used[0] not in _FLAGS:
        raise ConfigError(f"pooling {', '.join(used) or 'none'} is not supported", where=where,
                          fix=f"webbuild pools with exactly one of: {', '.join(_FLAGS)}")
    return _FLAGS[used[0]]


def read_pooling(folder: Path) -> Pooling:
    """The pooling and normalisation of a sentence-transformers folder (mean, unnormalised without
    `modules.json`)."""
    folder = Path(folder)
    modules_file = folder / "modules.json"
    if not folder.is_dir() or not modules_file.is_file():
        return Pooling()
    modules = _json(modules_file)
    if not isinstance(modules, list) or not all(isinstance(m, dict) and isinstance(m.get("type"), str)
                                                for m in modules):
        raise CorruptFileError("modules.json must be a list of objects with a type", where=str(modules_file),
                               fix="restore it from the original sentence-transformers model")
    unknown = [m["type"] for m in modules if m["type"] not in _KNOWN_MODULES]
    if unknown:
        raise ConfigError(f"sentence-transformers module {unknown[0]} is not supported", where=str(modules_file),
                          fix="webbuild builds Transformer + Pooling (+ Normalize) pipelines")
    pooling_modules = [m for m in modules if m["type"].endswith(".Pooling")]
    mode = "mean"
    if pooling_modules:
        where = folder / str(pooling_modules[0].get("path", "")) / "config.json"
        mode = _mode(_json(where), str(where))
    max_len = None
    bert_config = folder / "sentence_bert_config.json"
    if bert_config.is_file():
        value = _json(bert_config)
        length = value.get("max_seq_length") if isinstance(value, dict) else None
        if isinstance(length, int) and not isinstance(length, bool) and length > 0:
            max_len = length
    normalize = any(m["type"].endswith(".Normalize") for m in modules)
    return Pooling(mode, normalize, max_len)


def pool(hidden: Tensor, mask: Tensor, pooling: Pooling) -> Tensor:
    """(b, s, d) token states and (b, s) float 0/1 mask (real tokens first) -> (b, d) sentence vectors."""
    if pooling.mode == "mean":
        summed = op.sum(hidden * op.unsqueeze(mask, -1), axis=1)  # (b, d)
        count = op.maximum(op.sum(mask, axis=1, keepdims=True), op.full((1, 1), MEAN_EPS, "float32"))  # (b, 1)
        out = summed / count
    elif pooling.mode == "cls":
        out = op.tensor_expr_op(lambda x: te.compute((x.shape[0], x.shape[2]), lambda i, k: x[i, 0, k],
                                                     name="first_token"), "first_token", args=[hidden])
    else:
        out = op.tensor_expr_op(_last_real, "last_real_token", args=[hidden, mask])
    if not pooling.normalize:
        return out
    norm = op.sqrt(op.sum(out * out, axis=1, keepdims=True))  # (b, 1)
    return out / op.maximum(norm, op.full((1, 1), NORM_EPS, "float32"))


def _last_real(x: te.Tensor, mask: te.Tensor) -> te.Tensor:
    """The state of each row's last real token: index sum(mask) - 1 (right padding)."""
    b, s, d = x.shape
    j = te.reduce_axis((0, s), name="j")
    length = te.compute((b,), lambda i: te.sum(mask[i, j], axis=j), name="real_tokens")  # (b,) float
    return te.compute((b, d), lambda i, k: x[i, te.max(length[i].astype("int32") - 1, 0), k], name="last_token")
