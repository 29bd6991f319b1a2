"""Attention-score soft-capping (Gemma 2) in TVM's paged-KV-cache kernels (a TIR rewrite).

Gemma 2 caps every attention score before the softmax: s -> cap * tanh(s / cap), with s = q.k *
scale. TVM's attention kernels have no such option (MLC LLM leaves it out of its Gemma 2), so
`softcap_cache_kernels` rewrites the kernels a `TIRPagedKVCache` create call names: prefill,
decode, ragged prefill and tree attention, CPU and GPU, plus webbuild's fused decode kernel.

Every one of them keeps a score in the log2 domain, v = q.k * sm_scale * log2(e), and soft-maxes
with exp2; capping that is v -> C * tanh(v / C) with C = cap * log2(e). The rewrite finds the one
place in each kernel where a score is complete (the dot product summed, scaled, not yet masked or
maxed), by three shapes of TIR statement:

- the GPU tiled kernels' `S_store` block (`S_smem[i, j] = S_local[i, j]`, after the `S_gemm`
  reduction that scales as it sums);
- a scalar score scaled in one statement (`S_val[0] *= sm_scale * log2e`, or
  `score[0] = sum[0] * log2e * sm_scale`): a product of exactly one buffer load and load-free
  factors, `sm_scale` among them (the per-element products inside a dot product load two
  buffers; the masked constant `-5e4 * ... * sm_scale` loads none);
- the GPU decode kernel's store of a cross-thread reduction result (`S_local[j] = t0[0]`, t0
  written by `tvm_thread_allreduce`).

Each kernel must match exactly once; anything else is a ToolchainError (TVM changed its kernels).
"""

from __future__ import annotations

import math

import tvm
import tvm_ffi
from tvm import relax as rx, tirx
from tvm.ir import StringImm
from tvm.s_tir import SBlock

from ..errors import ToolchainError
from .pinned import UPGRADE_FIX

SCORE_BLOCK = "S_store"  # TVM's GPU tiled kernels: the block that stores finished scores
SCALE_PARAM = "sm_scale"  # every attention kernel's score-scale parameter
_ALLREDUCE = "tirx.tvm_thread_allreduce"
_LOG2E = math.log2(math.e)


def _factors(expr) -> list:
    return _factors(expr.a) + _factors(expr.b) if isinstance(expr, tirx.Mul) else [expr]


def _contains(expr, kind, test=lambda node: True) -> bool:
    found = []
    tvm_ffi.structural_walk(expr, [(kind, lambda node: found.append(node) if test(node) else None)])
    return bool(found)


def _loads(expr) -> bool:
    return _contains(expr, tvm.ir.expr.TensorLoad)


def _is_scaled_score(value) -> bool:
    """A product of exactly one bare buffer load and load-free factors, `sm_scale` among them."""
    factors = _factors(value)
    loading = [f for f in factors if _loads(f)]
    return (len(factors) > 1 and len(loading) == 1 and isinstance(loading[0], tvm.ir.expr.TensorLoad)
            and any(_contains(f, tvm.ir.expr.Var, lambda v: v.name == SCALE_PARAM) for f in factors))


def _allreduce_results(body) -> set[str]:
    """Names of the buffers that receive a `tvm_thread_allreduce` result."""
    names: set[str] = set()

    def note(call) -> None:
        if isinstance(call.op, tvm.ir.Op) and call.op.name == _ALLREDUCE:
            names.update(a.source.name for a in call.args if isinstance(a, tvm.ir.expr.TensorLoad))

    tvm_ffi.structural_walk(body, [(tvm.ir.Call, note)])
    return names


def softcap_scores(func: tirx.PrimFunc, cap: float, name: str = "attention kernel") -> tirx.PrimFunc:
    """`func` with its scores capped at `cap` (see the module docstring); ToolchainError unless
    exactly one statement is rewritten."""
    c = tirx.const(cap * _LOG2E, "float32")
    rewritten = []

    def capped(store: tirx.BufferStore) -> tirx.BufferStore:
        rewritten.append(store)
        return tirx.BufferStore(store.buffer, c * tirx.tanh(store.value / c), store.indices)

    def score_block(block: SBlock) -> SBlock:
        if block.name_hint != SCORE_BLOCK:
            return block
        return tvm_ffi.structural_map(block, [(tirx.BufferStore, capped)])

    reduced = _allreduce_results(func.body)

    def score_store(store: tirx.BufferStore) -> tirx.BufferStore:
        value = store.value
        if _is_scaled_score(value):
            return capped(store)
        if (isinstance(value, tvm.ir.expr.TensorLoad) and value.source.name in reduced
                and value.source.name != store.buffer.name):
            return capped(store)
        return store

    out = tvm_ffi.structural_map(func, [(SBlock, score_block)], order="pre")
    out = tvm_ffi.structural_map(out, [(tirx.BufferStore, score_store)])
    if len(rewritten) != 1:
        raise ToolchainError(f"{name}: found {len(rewritten)} places where attention scores are complete, "
                             "expected exactly one; the soft-capping rewrite no longer fits TVM's kernels",
                             fix=UPGRADE_FIX)
    return out


def softcap_cache_kernels(cache_var: rx.Var, cap: float) -> list[str]:
    """Rewrite, in the current BlockBuilder, every attention kernel named by the create call bound
    to `cache_var` (its `(tag, kernel, ...)` entries); returns the kernels' names."""
    bb = rx.BlockBuilder.current()
    call = bb.lookup_binding(cache_var)
    if not isinstance(call, rx.Call):
        raise ToolchainError("the paged KV cache is not bound to its create call", fix=UPGRADE_FIX)
    done: dict[str, rx.GlobalVar] = {}
    for arg in call.args:
        if not (isinstance(arg, rx.Tuple) and arg.fields and isinstance(arg.fields[0], StringImm)):
            continue
        for field in arg.fields[1:]:
            if isinstance(field, rx.GlobalVar) and field.name_hint not in done:
                done[field.name_hint] = field
    if not done:
        raise ToolchainError("the paged KV cache's create call names no attention kernels", fix=UPGRADE_FIX)
    module = bb.get()
    for name, gvar in done.items():
        bb.update_func(gvar, softcap_scores(module[gvar], cap, name))
    return sorted(done)
