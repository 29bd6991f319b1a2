"""Constrained decoding on the device: a grammar's token bitmask applied to a logits vector in place.

Every model exports `apply_token_bitmask(logits, bitmask)`: logits (1, 1, vocab) float32 and bitmask
(ceil(vocab / 32),) int32, xgrammar's layout (token i is allowed when bit i % 32 of word i // 32 is
set); the logits of disallowed tokens become -inf on CPU targets and -FLT_MAX, the lowest finite
float32, on WebGPU (WGSL has no infinity: a constant one is a shader-creation error, and
implementations may assume finite math), the others stay as they are, and the logits tensor is
returned (the call is in place: no new buffer). Either value loses every argmax to an allowed
token (webbuild.kernels.argmax starts at -FLT_MAX and takes only a larger value) and has zero
probability in the runtime's softmax. A runtime decoding under a grammar uploads
the mask (vocab / 8 bytes) instead of reading the logits back to mask them itself; greedy decoding
then reads back only the device argmax (webbuild.kernels.argmax) of the masked logits.

WebGPU: one thread per token, `THREADS` per workgroup. CPU targets: one serial loop. Which one a
model gets is its backend's choice (webbuild.kernels.model_kernels.ModelKernels).
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

THREADS = 256
BITS = 32  # tokens per mask word


def mask_words(vocab: int) -> int:
    """The bitmask's length in int32 words for a vocabulary of `vocab` tokens."""
    return -(-vocab // BITS)


def token_bitmask_func(vocab: int, gpu: bool) -> tirx.PrimFunc:
    """The PrimFunc, in place: logits (1, 1, vocab) float32, bitmask (ceil(vocab / 32),) int32."""
    words = mask_words(vocab)
    blocks = -(-vocab // THREADS)
    neg_inf = T.float32("-inf")
    # -FLT_MAX by its bits (0xff7fffff): TVM prints a float32 constant with 6 digits, one ulp above it
    lowest = T.reinterpret("float32", T.int32(-8388609))

    if not gpu:
        @T.prim_func(s_tir=True, private=True)
        def token_bitmask_cpu(l_h: T.handle, m_h: T.handle):
            T.func_attr({"tirx.noalias": True})
            L = T.match_buffer(l_h, (1, 1, vocab), "float32")
            M = T.match_buffer(m_h, (words,), "int32")
            for w in T.serial(words):
                with T.sblock("token_bitmask"):
                    if M[w] != -1:  # a word of allowed tokens only is skipped
                        for b in T.serial(BITS):
                            if w * BITS + b < vocab:
                                if T.bitwise_and(T.shift_right(M[w], b), 1) == 0:
                                    L[0, 0, w * BITS + b] = neg_inf

        return token_bitmask_cpu

    @T.prim_func(s_tir=True, private=True)
    def token_bitmask_gpu(l_h: T.handle, m_h: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        L = T.match_buffer(l_h, (1, 1, vocab), "float32")
        M = T.match_buffer(m_h, (words,), "int32")
        for bx in T.thread_binding(blocks, thread="blockIdx.x"):
            for tx in T.thread_binding(THREADS, thread="threadIdx.x"):
                with T.sblock("token_bitmask"):
                    if bx * THREADS + tx < vocab:
                        if T.bitwise_and(T.shift_right(M[(bx * THREADS + tx) // BITS], (bx * THREADS + tx) % BITS),
                                         1) == 0:
                            L[0, 0, bx * THREADS + tx] = lowest

    return token_bitmask_gpu
