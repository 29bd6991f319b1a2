"""Runs a CPU build of an embedding model folder (model.so + shards) from Python.

The same `encode` function the browser runs: a padded batch of token ids and its mask in, one
pooled (and, where the model says so, L2-normalised) vector per input out. Used by the numerical
tests and by anyone checking an embedding build.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from .errors import ConfigError, SourceNotFoundError
from .shard.reader import read_params


def pad_batch(batch: list[list[int]], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Token id lists -> (ids, mask), both (batch, longest) int32, padded on the right."""
    longest = max(len(ids) for ids in batch)
    ids = np.full((len(batch), longest), pad_id, dtype=np.int32)
    mask = np.zeros((len(batch), longest), dtype=np.int32)
    for row, tokens in enumerate(batch):
        ids[row, :len(tokens)] = tokens
        mask[row, :len(tokens)] = 1
    return ids, mask


class CpuEncoder:
    """An embedding model folder built with `--target cpu`."""

    def __init__(self, folder: Path):
        folder = Path(folder)
        lib = folder / "model.so"
        if not lib.is_file():
            raise SourceNotFoundError("model.so is missing", where=str(lib),
                                      fix="build with `--target cpu` to get a CPU-runnable folder")
        self.config = json.loads((folder / "chat-config.json").read_text())
        if self.config.get("model_kind") != "embedding":
            raise ConfigError("this folder holds a chat model, not an embedding model", where=str(folder),
                              fix="use webbuild.runner.CpuModel for chat models")
        self.device = tvm.cpu()
        self.vm = relax.VirtualMachine(tvm.runtime.load_module(str(lib)), self.device)
        self.metadata = json.loads(str(self.vm["_metadata"]()))
        arrays = read_params(folder)
        self.params = [tvm.runtime.tensor(arrays[p["name"]], self.device) for p in self.metadata["params"]]
        self.function = self.config["embedding"]["function"]

    def encode_padded(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(batch, seq) int32 ids and 0/1 mask -> (batch, dimensions) float32."""
        out = self.vm[self.function](tvm.runtime.tensor(np.ascontiguousarray(ids, dtype=np.int32), self.device),
                                     tvm.runtime.tensor(np.ascontiguousarray(mask, dtype=np.int32), self.device),
                                     self.params)
        return out.numpy()

    def encode(self, batch: list[list[int]]) -> np.ndarray:
        """Token id lists (each at most the model's max_seq_length) -> (batch, dimensions) float32."""
        return self.encode_padded(*pad_batch(batch))
