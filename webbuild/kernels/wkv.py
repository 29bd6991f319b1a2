"""The RWKV-4 WKV recurrence as one TIR kernel: a serial loop per (sequence, channel) for CPU
targets, the same loop bound to GPU threads (one thread per sequence and channel) for WebGPU.

The decaying, numerically stabilised weighted average of past values that RWKV uses in place of
attention; its numpy reference is in tests/test_arch_parity.py (transformers' RwkvForCausalLM).
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.script import tirx as T

THREADS = 64  # GPU threads per workgroup


def wkv_func(size: int) -> tirx.PrimFunc:
    """The WKV recurrence over a chunk, one thread per (sequence, channel), state in registers.

    k, v: (batch, seq, size); wu: (2, size) = [-exp(time_decay); time_first]; the state
    [numerator; denominator; running max] comes in and goes out as (batch, 3 * size). Six
    buffers: WebGPU guarantees only eight storage buffers per kernel."""

    @T.prim_func(s_tir=True)
    def wkv(var_k: T.handle, var_v: T.handle,
            wu: T.Buffer((2, size), "float32"),  # type: ignore[valid-type]  # TVMScript's buffer annotation
            var_state: T.handle, var_out: T.handle, var_new_state: T.handle):
        T.func_attr({"tirx.noalias": True})
        batch, seq = T.int64(), T.int64()
        k = T.match_buffer(var_k, (batch, seq, size), "float32")
        v = T.match_buffer(var_v, (batch, seq, size), "float32")
        state = T.match_buffer(var_state, (batch, 3 * size), "float32")
        out = T.match_buffer(var_out, (batch, seq, size), "float32")
        new_state = T.match_buffer(var_new_state, (batch, 3 * size), "float32")
        for b, c in T.grid(batch, size):
            with T.sblock("wkv"):
                vb, vc = T.axis.remap("SS", [b, c])
                # acc: numerator, denominator, running max, then this step's key and stabilisers
                acc = T.sblock_alloc_buffer((6,), "float32", scope="local")
                acc[0] = state[vb, vc]
                acc[1] = state[vb, size + vc]
                acc[2] = state[vb, 2 * size + vc]
                for t in range(seq):
                    acc[3] = k[vb, t, vc]
                    acc[4] = T.max(acc[2], acc[3] + wu[1, vc])  # stabiliser of this output
                    out[vb, t, vc] = (
                        T.exp(acc[2] - acc[4]) * acc[0] + T.exp(acc[3] + wu[1, vc] - acc[4]) * v[vb, t, vc]) / (
                        T.exp(acc[2] - acc[4]) * acc[1] + T.exp(acc[3] + wu[1, vc] - acc[4]))
                    acc[5] = T.max(acc[2] + wu[0, vc], acc[3])  # stabiliser of the decayed state
                    acc[0] = T.exp(acc[2] + wu[0, vc] - acc[5]) * acc[0] + T.exp(acc[3] - acc[5]) * v[vb, t, vc]
                    acc[1] = T.exp(acc[2] + wu[0, vc] - acc[5]) * acc[1] + T.exp(acc[3] - acc[5])
                    acc[2] = acc[5]
                new_state[vb, vc] = acc[0]
                new_state[vb, size + vc] = acc[1]
                new_state[vb, 2 * size + vc] = acc[2]

    return wkv


def wkv_func_gpu(size: int) -> tirx.PrimFunc:
    """`wkv_func` with (sequence x channel) bound to GPU threads, `THREADS` per workgroup."""
    func = wkv_func(size)
    sch = s_tir.Schedule(func)
    b, c = sch.get_loops(sch.get_sblock("wkv"))
    blocks, threads = sch.split(sch.fuse(b, c), [None, THREADS])
    sch.bind(blocks, "blockIdx.x")
    sch.bind(threads, "threadIdx.x")
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)
