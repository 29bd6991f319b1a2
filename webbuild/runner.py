"""Runs a CPU build of a model folder from Python through TVM's Relax VM.

Used by the parity and quantization tests and by anyone checking a build numerically: the same
Relax functions (embed / prefill / decode with a paged KV cache) the browser runs, on the CPU.
"""

from __future__ import annotations

import json
from collections.abc import Set as AbstractSet
from pathlib import Path

import numpy as np
import tvm
from tvm import relax
from tvm.runtime import ShapeTuple

from .errors import ConfigError, SourceNotFoundError
from .shard.reader import read_params

RUNTIME_KEYS = ("kv_page_size", "single_token_past_window")  # written by every backend (webbuild.backends)


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
        missing = [key for key in RUNTIME_KEYS if key not in self.metadata]
        if missing:
            raise ConfigError(f"model.so's _metadata lacks {', '.join(missing)}", where=str(lib),
                              fix="rebuild the folder with this webbuild (`webbuild build ... --target cpu`)")
        arrays = read_params(folder)
        self.params = [tvm.runtime.tensor(arrays[p["name"]], self.device) for p in self.metadata["params"]]
        self.context_window = self.metadata["context_window"]
        # The build caps it below a sliding window (window - 1: see arch/transformer.py); read, not re-derived.
        self.prefill_chunk = self.metadata["prefill_chunk"]
        self.sliding_window = self.metadata.get("sliding_window")
        self.single_token_past_window = self.metadata["single_token_past_window"]
        self._kv_add = tvm.get_global_func("vm.builtin.kv_state_add_sequence")
        self._kv_begin = tvm.get_global_func("vm.builtin.kv_state_begin_forward")
        self._kv_end = tvm.get_global_func("vm.builtin.kv_state_end_forward")
        self.reset()

    def reset(self) -> None:
        """Forget the conversation: a fresh KV cache (or RNN state) with one empty sequence."""
        if self.metadata["kv_state"] == "rnn_state":
            if "rnn_history" not in self.metadata:
                raise ConfigError("model.so's _metadata lacks rnn_history", where=str(self.folder),
                                  fix="rebuild the folder with this webbuild (`webbuild build ... --target cpu`)")
            self.kv = self.vm["create_rnn_state"](ShapeTuple([1]), ShapeTuple([self.metadata["rnn_history"]]))
        else:
            self.kv = self.vm["create_paged_kv_cache"](
                ShapeTuple([1]), ShapeTuple([self.context_window]), ShapeTuple([self.prefill_chunk]),
                ShapeTuple([self.metadata["kv_page_size"]]), ShapeTuple([0]))
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

    def prefill(self, ids: list[int]) -> np.ndarray | None:
        """Append tokens (chunked); returns the logits after the last one (None for no ids)."""
        if self.length + len(ids) > self.context_window:
            raise ValueError(f"context window {self.context_window} exceeded")
        logits = None
        start = 0
        while start < len(ids):
            size = self._call_size()
            logits = self._step("prefill", ids[start:start + size])
            start += size
        return logits

    def _call_size(self) -> int:
        """Tokens the next forward call may append. With a sliding window W, once W tokens are
        cached every multi-token call has a first query whose first cached key is outside the
        window, and TVM 0.27's CPU prefill kernel then reads its running max before writing it
        (NaN at random); from there on a CPU module (its `_metadata` says
        `single_token_past_window`) appends one token per call, through the decode kernel, which
        reads only the window. (WebGPU kernels start that max at -5e4: chunks of W - 1 stay.)"""
        if self.sliding_window and self.single_token_past_window and self.length >= self.sliding_window:
            return 1
        return self.prefill_chunk

    def decode(self, token: int) -> np.ndarray:
        """Append one token through the decode function; returns its logits."""
        return self._step("decode", [token])

    def greedy(self, prompt: list[int], max_new: int, stop: AbstractSet[int] = frozenset()) -> list[int]:
        """Greedy token ids after the prompt, stopping after a stop id."""
        out: list[int] = []
        logits = self.prefill(prompt)
        while len(out) < max_new:
            # an empty prompt leaves logits None, and argmax(None) is 0 (kept as it was; see prefill)
            out.append(int(np.argmax(logits)))  # type: ignore[arg-type]
            if out[-1] in stop or len(out) == max_new:
                break
            logits = self.decode(out[-1])
        return out
