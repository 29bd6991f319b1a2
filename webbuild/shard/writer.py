"""Writes parameters as fixed-size shards plus `tensor-cache.json` (offsets, sizes, sha256).

All parameters form one byte stream (each tensor aligned to ALIGN bytes), cut into shards of at
most `shard_bytes`. A tensor record gives its offset and size in that stream, so a tensor may
span two shards; the runtime assembles it from the shards' bytes after verifying their sha256.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import ShardError

ALIGN = 16
DEFAULT_SHARD_BYTES = 32 * 1024 * 1024
FORMAT = "webbuild-tensor-cache/1"
SHARD_PATTERN = "params_shard_{}.bin"


@dataclass
class _OpenShard:
    index: int
    path: Path
    handle: BinaryIO
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    nbytes: int = 0


class ShardWriter:
    """Streams tensors into shards; `finish()` writes tensor-cache.json and returns its dict."""

    def __init__(self, out_dir: Path, shard_bytes: int = DEFAULT_SHARD_BYTES,
                 progress: Callable[[dict], None] | None = None):
        self.out_dir = Path(out_dir)
        self.shard_bytes = shard_bytes
        self.progress = progress or (lambda event: None)
        self.records: list[dict] = []
        self.shards: list[dict] = []
        self.offset = 0
        self._current: _OpenShard | None = None
        self._seen: set[str] = set()

    def add(self, name: str, array: np.ndarray) -> None:
        """Append one tensor to the stream."""
        if name in self._seen:
            raise ShardError(f"two tensors are named {name!r}", where="tensor-cache.json",
                             fix="this is a webbuild bug: parameter names must be unique")
        self._seen.add(name)
        array = np.ascontiguousarray(array)
        self._write(b"\0" * (-self.offset % ALIGN))
        self.records.append({"name": name, "shape": list(array.shape), "dtype": str(array.dtype),
                             "byte_offset": self.offset, "nbytes": int(array.nbytes)})
        self._write(array.data.cast("B"))

    def _write(self, data) -> None:
        data = memoryview(data)
        while len(data):
            shard = self._current or self._open()
            room = self.shard_bytes - shard.nbytes
            piece = data[:room]
            shard.handle.write(piece)
            shard.digest.update(piece)
            shard.nbytes += len(piece)
            self.offset += len(piece)
            data = data[len(piece):]
            if shard.nbytes == self.shard_bytes:
                self._close(shard)

    def _open(self) -> _OpenShard:
        index = len(self.shards)
        path = self.out_dir / SHARD_PATTERN.format(index)
        if path.exists():
            raise ShardError(f"shard file {path.name} already exists", where=str(path),
                             fix="write into an empty folder")
        self._current = _OpenShard(index, path, open(path, "xb"))
        self.shards.append({})
        return self._current

    def _close(self, shard: _OpenShard) -> None:
        shard.handle.close()
        self.shards[shard.index] = {"file": shard.path.name, "nbytes": shard.nbytes,
                                    "sha256": shard.digest.hexdigest()}
        self.progress({"stage": "shard", "file": shard.path.name, "loaded": shard.index + 1, "total": None})
        self._current = None

    def finish(self, metadata: dict) -> dict:
        """Close the last shard and write tensor-cache.json."""
        if self._current is not None:
            self._close(self._current)
        cache = {"format": FORMAT, "metadata": metadata, "total_bytes": self.offset,
                 "shards": self.shards, "records": self.records}
        (self.out_dir / "tensor-cache.json").write_text(json.dumps(cache, indent=1))
        return cache


def write_shards(out_dir: Path, tensors: Iterable[tuple[str, np.ndarray]], metadata: dict,
                 shard_bytes: int = DEFAULT_SHARD_BYTES, progress=None) -> dict:
    """Write all tensors and tensor-cache.json into out_dir; returns the cache dict."""
    writer = ShardWriter(out_dir, shard_bytes, progress)
    for name, array in tensors:
        writer.add(name, array)
    return writer.finish(metadata)
