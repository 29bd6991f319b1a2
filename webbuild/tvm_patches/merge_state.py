"""Race-free attention-state merge for TVM's GPU paged-KV-cache kernels (a TIR rewrite).

``tvm.relax.frontend.nn.llm.kv_cache.TIRPagedKVCache`` merges partial attention results
(``tir_attention_merge_state``) with a kernel in which several threads read ``S[token, head]``
and then write it back, with no barrier in between. On GPUs that run those threads in
lockstep the race is invisible; on SwiftShader (and by the WebGPU spec, anywhere) threads
that read late see an already-updated ``S`` and produce wrong outputs. The merge runs when a
prefill chunk is appended to a sequence that already has KV history (a prompt longer than the
prefill chunk, a second chat turn), so such prefills give wrong logits there; single-chunk
prefill and single-token decode do not use it.

:func:`replace_racy_merge_state` swaps in a race-free kernel (one thread per (token, head);
the merge is a tiny fraction of the attention cost). The WebGPU backend applies it to the
exported IRModule before ``tvm.compile``; it fails loudly when a module with a paged KV cache
has no merge kernel to replace (TVM renamed or restructured it: re-check the race).
"""

from __future__ import annotations

from tvm import ir, tirx
from tvm.script import tirx as T

from ..errors import ToolchainError
from .pinned import UPGRADE_FIX

MERGE_STATE_SYMBOL = "tir_attention_merge_state"
PAGED_KV_SYMBOL = "batch_decode_paged_kv"  # a kernel every paged KV cache has
_THREADS = 64


def merge_state_kernel(dtype: str) -> tirx.PrimFunc:
    """In-place merge of (V, S) with (V_other, S_other); S holds log2-sum-exp2 scores."""

    @T.prim_func(s_tir=True)
    def merge_state_inplace(v: T.handle, s: T.handle, v_other: T.handle, s_other: T.handle):
        T.func_attr({"tirx.is_scheduled": True})
        N = T.int32()
        H = T.int32()
        D = T.int32()
        V = T.match_buffer(v, (N, H, D), dtype)
        S = T.match_buffer(s, (N, H), "float32")
        V_other = T.match_buffer(v_other, (N, H, D), dtype)
        S_other = T.match_buffer(s_other, (N, H), "float32")
        for bx in T.thread_binding(T.ceildiv(N * H, _THREADS), thread="blockIdx.x"):
            for tx in T.thread_binding(_THREADS, thread="threadIdx.x"):
                with T.sblock("merge"):
                    w_self = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    w_other = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    top = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    if bx * _THREADS + tx < N * H:
                        top[0] = T.max(S[(bx * _THREADS + tx) // H, (bx * _THREADS + tx) % H],
                                       S_other[(bx * _THREADS + tx) // H, (bx * _THREADS + tx) % H])
                        w_self[0] = T.exp2(S[(bx * _THREADS + tx) // H, (bx * _THREADS + tx) % H] - top[0])
                        w_other[0] = T.exp2(S_other[(bx * _THREADS + tx) // H, (bx * _THREADS + tx) % H] - top[0])
                        for d in T.serial(D):
                            V[(bx * _THREADS + tx) // H, (bx * _THREADS + tx) % H, d] = T.Cast(
                                dtype,
                                (T.Cast("float32", V[(bx * _THREADS + tx) // H, (bx * _THREADS + tx) % H, d])
                                 * w_self[0]
                                 + T.Cast("float32", V_other[(bx * _THREADS + tx) // H, (bx * _THREADS + tx) % H, d])
                                 * w_other[0]) / (w_self[0] + w_other[0]))
                        S[(bx * _THREADS + tx) // H, (bx * _THREADS + tx) % H] = T.log2(w_self[0] + w_other[0]) + top[0]

    return merge_state_inplace


def _symbol(gv: ir.GlobalVar, func: tirx.PrimFunc) -> str:
    return str(func.attrs["global_symbol"]) if func.attrs and "global_symbol" in func.attrs else gv.name_hint


def replace_racy_merge_state(mod: ir.IRModule) -> ir.IRModule:
    """Return ``mod`` with every ``tir_attention_merge_state*`` PrimFunc made race-free.

    Only GPU (scheduled) merge kernels are replaced; CPU builds use a serial kernel
    (``tir_attention_merge_state_cpu``) that is already correct and is left alone.
    """
    updates = {}
    for gv, func in mod.functions.items():
        if not isinstance(func, tirx.PrimFunc):
            continue
        symbol = _symbol(gv, func)
        if not symbol.startswith(MERGE_STATE_SYMBOL) or symbol.endswith("_cpu"):
            continue
        dtype = str(func.params[0].dtype)  # the V tensor's element type
        if dtype not in ("float16", "float32", "bfloat16"):
            raise ToolchainError(f"cannot tell the value dtype of {symbol} (got {dtype!r})", fix=UPGRADE_FIX)
        new = merge_state_kernel(dtype).with_attr("global_symbol", symbol)
        updates[gv] = new
    if not updates:
        if any(_symbol(gv, func).startswith(PAGED_KV_SYMBOL) for gv, func in mod.functions.items()
               if isinstance(func, tirx.PrimFunc)):
            raise ToolchainError(f"TVM's paged KV cache has no {MERGE_STATE_SYMBOL} kernel to make race-free",
                                 fix=UPGRADE_FIX)
        return mod
    functions = {gv: updates.get(gv, func) for gv, func in mod.functions.items()}
    return ir.IRModule(functions, attrs=mod.attrs)
