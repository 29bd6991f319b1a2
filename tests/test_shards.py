"""Parameter shards: size limit, tensors spanning shards, sha256, and reading back."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from webbuild.errors import CorruptFileError
from webbuild.shard.reader import read_params
from webbuild.shard.writer import ALIGN, write_shards


def _tensors():
    rng = np.random.default_rng(1)
    return [("a", rng.standard_normal((3, 5)).astype(np.float32)),
            ("big", rng.integers(0, 2**32, size=(100, 7), dtype=np.uint32)),
            ("half", rng.standard_normal(33).astype(np.float16)),
            ("tail", rng.standard_normal((2, 2)).astype(np.float32))]


def test_shards_respect_the_size_limit_and_round_trip(tmp_path):
    tensors = _tensors()
    cache = write_shards(tmp_path, tensors, {"note": "x"}, shard_bytes=1024)
    sizes = [s["nbytes"] for s in cache["shards"]]
    assert all(size <= 1024 for size in sizes) and len(sizes) >= 3
    assert sum(sizes) == cache["total_bytes"]
    for shard in cache["shards"]:
        assert hashlib.sha256((tmp_path / shard["file"]).read_bytes()).hexdigest() == shard["sha256"]
    big = next(r for r in cache["records"] if r["name"] == "big")
    assert big["byte_offset"] // 1024 != (big["byte_offset"] + big["nbytes"] - 1) // 1024  # spans shards
    assert all(r["byte_offset"] % ALIGN == 0 for r in cache["records"])
    assert json.loads((tmp_path / "tensor-cache.json").read_text()) == cache
    back = read_params(tmp_path)
    assert list(back) == [name for name, _ in tensors]
    for name, array in tensors:
        assert back[name].dtype == array.dtype and np.array_equal(back[name], array)


def test_corrupted_shard_is_detected(tmp_path):
    cache = write_shards(tmp_path, _tensors(), {}, shard_bytes=1024)
    path = tmp_path / cache["shards"][1]["file"]
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError) as info:
        read_params(tmp_path)
    assert info.value.where.endswith(path.name)
