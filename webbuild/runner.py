"""Runs a CPU build of a model folder from Python through TVM's Relax VM.

Used by the parity and quantization tests and by anyone checking a build numerically: the same
Relax functions (embed / prefill / decode with a paged KV cache) the browser runs, on the CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tvm
from tvm import relax
from tvm.runtime import ShapeTuple

from .errors import SourceNotFoundError
from .shard.reader import read_params

PAGE_SIZE = 16


class CpuModel:
    """One sequence's chat state over a CPU-built model folder (model.so + shards)."""

    def __init__(self, folder: Path):
        folder = self.folder = Path(folder)
        lib = folder / "model.so"
        if not lib.is_file():
            raise SourceNotFoundError("model.so is missing", where=str(lib),
                                      fix="build with `--target cpu` to get a CPU-runnable folder")
        self.config = json.loads((folder / "chat-config.json").read_text())
        self.device = tvm.cpu()
        self.vm = relax.VirtualMachine(tvm.runtime.load_module(str(lib)), self.device)
        self.metadata = json.loads(str(self.vm["_metadata"]()))
        arrays = read_params(folder)
        self.params = [tvm.runtime.tensor(arrays[p["name"]], self.device) for p in self.metadata["params"]]
        self.context_window = self.metadata["context_window"]
        self.prefill_chunk = self.metadata["prefill_chunk"]
        self._kv_add = tvm.get_global_func("vm.builtin.kv_state_add_sequence")
        self._kv_begin = tvm.get_global_func("vm.builtin.kv_state_begin_forward")
        self._kv_end = tvm.get_global_func("vm.builtin.kv_state_end_forward")
        self.reset()

    def reset(self) -> None:
        """Forget the conversation: a fresh KV cache with one empty sequence."""
        self.kv = self.vm["create_paged_kv_cache"](
            ShapeTuple([1]), ShapeTuple([self.context_window]), ShapeTuple([self.prefill_chunk]),
            ShapeTuple([PAGE_SIZE]), ShapeTuple([0]))
        self._kv_add(self.kv, 0)
        self.length = 0

    def _embed(self, ids: list[int]) -> tvm.runtime.Tensor:
        embeds = self.vm["embed"](tvm.runtime.tensor(np.asarray(ids, dtype="int32"), self.device), self.params)
        return embeds.numpy()[None]  # (1, seq, hidden)

    def _step(self, fname: str, ids: list[int]) -> np.ndarray:
        self._kv_begin(self.kv, ShapeTuple([0]), ShapeTuple([len(ids)]))
        out = self.vm[fname](tvm.runtime.tensor(self._embed(ids), self.device), self.kv, self.params)
        self._kv_end(self.kv)
        self.length += len(ids)
        return out[0].numpy()[0, -1].astype(np.float32)  # (vocab,)

    def prefill(self, ids: list[int]) -> np.ndarray:
        """Append tokens (chunked); returns the logits after the last one."""
        if self.length + len(ids) > self.context_window:
            raise ValueError(f"context window {self.context_window} exceeded")
        logits = None
        for start in range(0, len(ids), self.prefill_chunk):
            logits = self._step("prefill", ids[start:start + self.prefill_chunk])
        return logits

    def decode(self, token: int) -> np.ndarray:
        """Append one token through the decode function; returns its logits."""
        return self._step("decode", [token])

    def greedy(self, prompt: list[int], max_new: int, stop: set[int] = frozenset()) -> list[int]:
        """Greedy token ids after the prompt, stopping after a stop id."""
        out: list[int] = []
        logits = self.prefill(prompt)
        while len(out) < max_new:
            out.append(int(np.argmax(logits)))
            if out[-1] in stop or len(out) == max_new:
                break
            logits = self.decode(out[-1])
        return out
