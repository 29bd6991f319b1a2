"""Shared pieces of recurrent language models (RWKV): TVM's runtime RNN state and the export spec.

The state lives in the runtime's `vm.builtin.rnn_state_*` object (a KVState, so the same
add-sequence / begin-forward / end-forward / pop-n calls the paged KV cache takes drive it).
It stores, per layer, a few fixed-size vectors per sequence plus a short history of them for
rolling back single decode steps. This module writes the TIR getter and setter kernels the
runtime calls to copy a batch's vectors out of and into that storage.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import relax as rx, tirx
from tvm.relax.frontend.nn import Object, Tensor, op
from tvm.script import tirx as T

from .kv_model import model_spec

#: RNN state slots per sequence, written into `_metadata` (rnn_history) for the runtimes that create
#: the state: each forward reads one slot and writes the other.
RNN_HISTORY = 2


@dataclass(frozen=True)
class StateVector:
    """One per-layer state vector and the values a fresh sequence starts with: `init` lists
    (length, value) segments that add up to the vector's size."""

    init: tuple[tuple[int, float], ...]
    dtype: str = "float32"

    @property
    def size(self) -> int:
        return sum(length for length, _ in self.init)

    def initial(self) -> Tensor:
        parts = [op.full((length,), value, dtype=self.dtype) for length, value in self.init]
        return parts[0] if len(parts) == 1 else op.concat(parts, dim=0)


def _state_getter(size: int, dtype: str):
    """out[b, :] = storage[seq_slot[b], history_slot[b], :]."""

    @T.prim_func(s_tir=True)
    def rnn_state_get(var_storage: T.handle, var_seq_slots: T.handle, var_history_slots: T.handle, var_out: T.handle):
        T.func_attr({"tirx.noalias": True})
        num_seq, max_history, batch = T.int64(), T.int64(), T.int64()
        storage = T.match_buffer(var_storage, (num_seq, max_history, size), dtype)
        seq_slots = T.match_buffer(var_seq_slots, (batch,), "int32")
        history_slots = T.match_buffer(var_history_slots, (batch,), "int32")
        out = T.match_buffer(var_out, (batch, size), dtype)
        for b, i in T.grid(batch, size):
            with T.sblock("copy_out"):
                vb, vi = T.axis.remap("SS", [b, i])
                out[vb, vi] = storage[seq_slots[vb], history_slots[vb], vi]

    return rnn_state_get


def _state_setter(size: int, dtype: str):
    """storage[seq_slot[b], (history_slot[b] + 1) % max_history, :] = data[b, :] (the next round's slot)."""

    @T.prim_func(s_tir=True)
    def rnn_state_set(var_storage: T.handle, var_seq_slots: T.handle, var_history_slots: T.handle, var_data: T.handle):
        T.func_attr({"tirx.noalias": True})
        num_seq, max_history, batch = T.int64(), T.int64(), T.int64()
        storage = T.match_buffer(var_storage, (num_seq, max_history, size), dtype)
        seq_slots = T.match_buffer(var_seq_slots, (batch,), "int32")
        history_slots = T.match_buffer(var_history_slots, (batch,), "int32")
        data = T.match_buffer(var_data, (batch, size), dtype)
        for b, i in T.grid(batch, size):
            with T.sblock("copy_in"):
                vb, vi = T.axis.remap("SS", [b, i])
                storage[seq_slots[vb], T.Cast("int64", history_slots[vb] + 1) % max_history, vi] = data[vb, vi]

    return rnn_state_set


class RNNState(Object):
    """The runtime RNN state object: `get` / `set` one state vector of one layer for the batch."""

    @staticmethod
    def create(num_layers: int, vectors: list[StateVector], max_batch_size: tirx.Var,
               max_history: tirx.Var) -> RNNState:
        bb = rx.BlockBuilder.current()
        def add(func, name: str):
            return bb.add_func(func.with_attr("global_symbol", name), name)

        getters = [add(_state_getter(v.size, v.dtype), f"rnn_state_get_{i}") for i, v in enumerate(vectors)]
        setters = [add(_state_setter(v.size, v.dtype), f"rnn_state_set_{i}") for i, v in enumerate(vectors)]
        inits = [v.initial()._expr for v in vectors]
        return RNNState(
            _expr=rx.call_pure_packed(
                "vm.builtin.rnn_state_create", rx.prim_value(num_layers), max_batch_size, max_history,
                rx.Tuple(getters), rx.Tuple(setters), rx.Tuple(inits), ty_args=rx.AnyType()),
            _name="rnn_state",
        )

    def get(self, layer_id: int, state_id: int, batch, size: int, dtype: str = "float32") -> Tensor:
        """The (batch, size) vector `state_id` of layer `layer_id` for the sequences in this forward."""
        return Tensor(_expr=rx.BlockBuilder.current().emit(rx.call_dps_packed(
            "vm.builtin.rnn_state_get", [self._expr, rx.prim_value(layer_id), rx.prim_value(state_id)],
            out_ty=rx.TensorType((batch, size), dtype))))

    def set(self, layer_id: int, state_id: int, value: Tensor) -> RNNState:
        """Store a (batch, size) vector as the state after this forward; returns the state."""
        return RNNState(
            _expr=rx.call_pure_packed("vm.builtin.rnn_state_set", self._expr, rx.prim_value(layer_id),
                                      rx.prim_value(state_id), value._expr, ty_args=rx.AnyType()),
            _name="rnn_state_set",
        )


def rnn_model_spec(hidden_size: int, dtype: str, vocab_size: int | None = None) -> dict:
    """The spec of an RNN-state model (see `kv_model.model_spec`)."""
    create = {"create_rnn_state": dict.fromkeys(("max_batch_size", "max_history"), int)}
    return model_spec(hidden_size, dtype, "rnn_state", RNNState, create, vocab_size=vocab_size)
