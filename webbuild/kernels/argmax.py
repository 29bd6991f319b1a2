"""Greedy decoding on the device: the argmax of a logits vector as one token id.

Every model exports `argmax(logits)`: (1, 1, vocab) float32 -> (1,) int32, the index of the
largest logit, the lowest index among equal ones; NaN never wins, and a vector without any value
above -FLT_MAX gives 0 (the runtime's CPU `argmax` in sampling.ts, exactly). A runtime decoding
greedily without logit processors (bias, penalties) reads back these 4 bytes per token instead
of the whole logits vector.

WebGPU: one workgroup of `THREADS` threads; thread t scans t, t + THREADS, ... (coalesced), and
thread 0 merges the per-thread winners after one barrier. CPU targets: one serial loop. Which one
a model gets is its backend's choice (webbuild.kernels.model_kernels.ModelKernels).
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

THREADS = 256


def argmax_func(vocab: int, gpu: bool) -> tirx.PrimFunc:
    """The PrimFunc: logits (1, 1, vocab) float32 -> out (1,) int32."""
    steps = -(-vocab // THREADS)
    lowest = T.min_value("float32")

    if not gpu:
        @T.prim_func(s_tir=True, private=True)
        def argmax_cpu(l_h: T.handle, o_h: T.handle):
            T.func_attr({"tirx.noalias": True})
            L = T.match_buffer(l_h, (1, 1, vocab), "float32")
            O = T.match_buffer(o_h, (1,), "int32")
            with T.sblock("argmax"):
                best_v = T.sblock_alloc_buffer((1,), "float32", scope="local")
                best_i = T.sblock_alloc_buffer((1,), "int32", scope="local")
                best_v[0] = lowest
                best_i[0] = 0
                for i in T.serial(vocab):
                    if L[0, 0, i] > best_v[0]:
                        best_v[0] = L[0, 0, i]
                        best_i[0] = i
                O[0] = best_i[0]

        return argmax_cpu

    @T.prim_func(s_tir=True, private=True)
    def argmax_gpu(l_h: T.handle, o_h: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        L = T.match_buffer(l_h, (1, 1, vocab), "float32")
        O = T.match_buffer(o_h, (1,), "int32")
        for bx in T.thread_binding(1, thread="blockIdx.x"):
            for tx in T.thread_binding(THREADS, thread="threadIdx.x"):
                with T.sblock("argmax"):
                    best_v = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    best_i = T.sblock_alloc_buffer((1,), "int32", scope="local")
                    cand_v = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    cand_i = T.sblock_alloc_buffer((1,), "int32", scope="local")
                    part_v = T.sblock_alloc_buffer((THREADS,), "float32", scope="shared")
                    part_i = T.sblock_alloc_buffer((THREADS,), "int32", scope="shared")
                    best_v[0] = lowest
                    best_i[0] = vocab  # none yet
                    for c in T.serial(steps):
                        if c * THREADS + tx < vocab:
                            if L[0, 0, c * THREADS + tx] > best_v[0]:
                                best_v[0] = L[0, 0, c * THREADS + tx]
                                best_i[0] = c * THREADS + tx
                    part_v[tx] = best_v[0]
                    part_i[tx] = best_i[0]
                    T.tvm_storage_sync("shared")
                    if tx == 0:
                        for t in T.serial(THREADS):
                            cand_v[0] = part_v[t]
                            cand_i[0] = part_i[t]
                            if cand_v[0] > best_v[0] or (cand_v[0] == best_v[0] and cand_i[0] < best_i[0]):
                                best_v[0] = cand_v[0]
                                best_i[0] = cand_i[0]
                        O[0] = T.if_then_else(best_i[0] == vocab, 0, best_i[0])

    return argmax_gpu
