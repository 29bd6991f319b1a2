"""Reads a model folder's shards back into numpy arrays, verifying each shard's sha256."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ..errors import CorruptFileError, SourceNotFoundError
from .writer import FORMAT


def load_tensor_cache(folder: Path) -> dict:
    """Parse tensor-cache.json of a model folder."""
    path = Path(folder) / "tensor-cache.json"
    if not path.is_file():
        raise SourceNotFoundError("tensor-cache.json is missing", where=str(path),
                                  fix="point at a folder written by `python -m webbuild build`")
    try:
        cache = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptFileError(f"not valid JSON ({err})", where=str(path), fix="rebuild the model folder") from None
    if cache.get("format") != FORMAT:
        raise CorruptFileError(f"unknown format {cache.get('format')!r}", where=f"{path}: format",
                               fix="rebuild the model folder with this version of webbuild")
    return cache


def read_params(folder: Path) -> dict[str, np.ndarray]:
    """All tensors of a model folder by name, in record order (shards verified first)."""
    folder = Path(folder)
    cache = load_tensor_cache(folder)
    stream = bytearray()
    for shard in cache["shards"]:
        path = folder / shard["file"]
        if not path.is_file():
            raise SourceNotFoundError("shard file is missing", where=str(path), fix="rebuild the model folder")
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != shard["sha256"]:
            raise CorruptFileError("sha256 does not match tensor-cache.json", where=str(path),
                                   fix="the shard is corrupt; rebuild the model folder")
        stream += data
    params = {}
    for rec in cache["records"]:
        start = rec["byte_offset"]
        raw = bytes(stream[start:start + rec["nbytes"]])
        params[rec["name"]] = np.frombuffer(raw, dtype=rec["dtype"]).reshape(rec["shape"])
    return params
