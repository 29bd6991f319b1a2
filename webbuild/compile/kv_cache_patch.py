"""Fixes for TVM's WebGPU paged-KV-cache kernels: the attention-state merge race, RoPE's sin/cos,
and llama3 RoPE scaling's let-bindings (see :func:`install_let_free_llama3_rope`).

``tvm.relax.frontend.nn.llm.kv_cache.TIRPagedKVCache`` merges partial attention results
(``tir_attention_merge_state``) with a kernel in which several threads read ``S[token, head]``
and then write it back, with no barrier in between. On GPUs that run those threads in
lockstep the race is invisible; on SwiftShader (and by the WebGPU spec, anywhere) threads
that read late see an already-updated ``S`` and produce wrong outputs. The merge runs when a
prefill chunk is appended to a sequence that already has KV history (a prompt longer than the
prefill chunk, a second chat turn), so such prefills give wrong logits there; single-chunk
prefill and single-token decode do not use it.

:func:`replace_racy_merge_state` swaps in a race-free kernel (one thread per (token, head);
the merge is a tiny fraction of the attention cost). Apply it to the exported IRModule before
``tvm.compile``.

WebGPU's built-in ``sin``/``cos`` are imprecise: WGSL only promises an absolute error of 2^-11
(on SwiftShader they are off by up to 1.9e-4 even inside [-pi, pi], and more outside). TVM's
paged KV cache applies RoPE with them (``tir_split_rotary``, and the inline-RoPE branches of the
attention kernels), so every query and key at a position > 0 carries a ~2e-4 relative error,
which grows to ~5e-3 in SmolLM2's logits (a 1-token prefill, position 0, is exact).
:func:`install_precise_webgpu_trig` makes TVM lower ``sin``/``cos`` for the WebGPU target to a
Cody-Waite range reduction plus minimax polynomials (float32, ~8e-8 absolute error, like libm)
instead. The attention kernels themselves (paged / ragged prefill, decode) were checked and are
exact to float32 rounding once RoPE is.
"""

from __future__ import annotations

import math
import threading

import numpy as np
from tvm import ir, tirx
from tvm.script import tirx as T

MERGE_STATE_SYMBOL = "tir_attention_merge_state"
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
                                (T.Cast("float32", V[(bx * _THREADS + tx) // H, (bx * _THREADS + tx) % H, d]) * w_self[0]
                                 + T.Cast("float32", V_other[(bx * _THREADS + tx) // H, (bx * _THREADS + tx) % H, d])
                                 * w_other[0]) / (w_self[0] + w_other[0]))
                        S[(bx * _THREADS + tx) // H, (bx * _THREADS + tx) % H] = T.log2(w_self[0] + w_other[0]) + top[0]

    return merge_state_inplace


def replace_racy_merge_state(mod: ir.IRModule) -> ir.IRModule:
    """Return ``mod`` with every ``tir_attention_merge_state*`` PrimFunc made race-free.

    Only GPU (scheduled) merge kernels are replaced; CPU builds use a serial kernel
    (``tir_attention_merge_state_cpu``) that is already correct and is left alone.
    """
    updates = {}
    for gv, func in mod.functions.items():
        if not isinstance(func, tirx.PrimFunc):
            continue
        symbol = str(func.attrs["global_symbol"]) if func.attrs and "global_symbol" in func.attrs else gv.name_hint
        if not symbol.startswith(MERGE_STATE_SYMBOL) or symbol.endswith("_cpu"):
            continue
        dtype = str(func.params[0].dtype)  # the V tensor's element type
        if dtype not in ("float16", "float32", "bfloat16"):
            raise ValueError(f"cannot tell the value dtype of {symbol} (got {dtype!r})")
        new = merge_state_kernel(dtype).with_attr("global_symbol", symbol)
        updates[gv] = new
    if not updates:
        return mod
    functions = {gv: updates.get(gv, func) for gv, func in mod.functions.items()}
    return ir.IRModule(functions, attrs=mod.attrs)


# ----------------------------------------------------------------------------- precise sin/cos


def _split_bits(value: float, bits: int) -> float:
    """``value`` truncated to its leading ``bits`` significant bits (exact in float32)."""
    mantissa, exponent = math.frexp(value)
    return math.ldexp(math.floor(math.ldexp(mantissa, bits)), exponent - bits)


# pi/2 = _PIO2_A + _PIO2_B + _PIO2_C (Cody-Waite): A and B have 8 significant bits, so j * A and
# j * B are exact in float32 for quadrant counts |j| < 2^16 (|x| < ~1e5); C holds the next 24.
_PIO2_A = _split_bits(math.pi / 2, 8)
_PIO2_B = _split_bits(math.pi / 2 - _PIO2_A, 8)
_PIO2_C = float(np.float32(math.pi / 2 - _PIO2_A - _PIO2_B))
# Cephes sinf/cosf minimax coefficients on [-pi/4, pi/4] (~1 ulp in float32).
_SIN = (-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1)
_COS = (2.443315711809948e-5, -1.388731625493765e-3, 4.166664568298827e-2)


def _exact_f32(value: float) -> tirx.PrimExpr:
    """A float32 constant that survives WGSL printing bit-exactly.

    TVM's WGSL code generator prints float literals with 7 significant digits (1.5703125 comes
    out as ``1.570312e+00f``), which would break the Cody-Waite split; a bitcast of the
    constant's bit pattern does not round.
    """
    bits = int(np.array(value, dtype=np.float32).view(np.uint32))
    return tirx.reinterpret("float32", tirx.const(bits, "uint32"))


def precise_sin_cos(x: tirx.PrimExpr, which: str) -> tirx.PrimExpr:
    """float32 TIR expression for sin(x) or cos(x) using only +, *, round and selects."""
    f32 = lambda v: tirx.const(v, "float32")  # noqa: E731
    dtype = str(x.ty.dtype)
    xv = tirx.Var("trig_x", "float32")
    jv = tirx.Var("trig_j", "float32")
    rv = tirx.Var("trig_r", "float32")
    zv = tirx.Var("trig_z", "float32")
    sv = tirx.Var("trig_s", "float32")
    cv = tirx.Var("trig_c", "float32")
    qv = tirx.Var("trig_q", "int32")
    s3, s2, s1 = (f32(c) for c in _SIN)
    c3, c2, c1 = (f32(c) for c in _COS)
    # sin(x) = [s, c, -s, -c][j mod 4](r) and cos(x) = sin(x + pi/2), with x = j*pi/2 + r
    shift = 1 if which == "cos" else 0
    pick = tirx.Select(qv == 0, sv, tirx.Select(qv == 1, cv, tirx.Select(qv == 2, -sv, -cv)))
    body = tirx.Let(qv, tirx.floormod(tirx.Cast("int32", jv) + shift, 4), pick)
    body = tirx.Let(cv, ((c3 * zv + c2) * zv + c1) * zv * zv - f32(0.5) * zv + f32(1.0), body)
    body = tirx.Let(sv, ((s3 * zv + s2) * zv + s1) * zv * rv + rv, body)
    body = tirx.Let(zv, rv * rv, body)
    a, b, c = (_exact_f32(v) for v in (_PIO2_A, _PIO2_B, _PIO2_C))
    body = tirx.Let(rv, ((xv - jv * a) - jv * b) - jv * c, body)
    body = tirx.Let(jv, tirx.round(xv * f32(2 / math.pi)), body)
    body = tirx.Let(xv, x if dtype == "float32" else tirx.Cast("float32", x), body)
    return body if dtype == "float32" else tirx.Cast(dtype, body)


_INSTALLED = False
_INSTALL_LOCK = threading.Lock()
_LOWER_LEVEL = 50  # above TVM's own WebGPU rules (level 10)


def install_precise_webgpu_trig() -> None:
    """Lower ``tirx.sin`` / ``tirx.cos`` for the ``webgpu`` target with :func:`precise_sin_cos`.

    Process-wide and idempotent (TVM's intrinsic-lowering registry is global); other targets
    keep their own rules. Importing this module calls it, so every WebGPU compile in a process
    that uses these patches gets it; calling it again before ``tvm.compile`` documents intent.
    """
    global _INSTALLED
    with _INSTALL_LOCK:
        if _INSTALLED:
            return
        for which in ("sin", "cos"):
            def lower(call, which=which):
                if str(call.ty.dtype) not in ("float16", "float32"):
                    return tirx.call_pure_extern(str(call.ty.dtype), which, *call.args)  # TVM's own rule
                return precise_sin_cos(call.args[0], which)

            tirx.op.register_intrin_lowering(f"tirx.{which}", "webgpu", f=lower, level=_LOWER_LEVEL)
        _INSTALLED = True


install_precise_webgpu_trig()


# ----------------------------------------------------------------------------- llama3 RoPE


def _rope_freq_llama3_inline(s, d, d_range: int, theta: float, dtype: str, factor: float, low_freq_factor: float,
                             high_freq_factor: float, original_max_position_embeddings: float):
    """TVM's ``rope_freq_llama3`` (cos, sin, let-bindings) with the frequency written out in full:
    no let-bound variables, so no variable is bound once for the cos and again for the sin."""
    orig_freq = tirx.const(1, "float32") / tirx.power(theta, d * 2 % d_range / tirx.const(d_range, "float32"))
    inv_diff_freq_factor = 1.0 / (high_freq_factor - low_freq_factor)
    alpha = original_max_position_embeddings / (2 * math.pi) * inv_diff_freq_factor
    beta = low_freq_factor * inv_diff_freq_factor
    smooth = tirx.max(0.0, tirx.min(1.0, alpha * orig_freq - beta))
    freq = s * ((1.0 - smooth) * orig_freq * (1.0 / factor) + smooth * orig_freq)
    return tirx.cos(freq).astype(dtype), tirx.sin(freq).astype(dtype), {}


def install_let_free_llama3_rope() -> None:
    """Use :func:`_rope_freq_llama3_inline` for llama3 RoPE scaling (Llama 3.1 / 3.2).

    TVM 0.27's version returns its frequency as let-bindings that the KV-cache kernels wrap
    around both the cos and the sin expression, binding the same variables twice; with head_dim
    64 the WebGPU build of ``tir_split_rotary`` and the tree-attention kernel then fails in TIR's
    common-subexpression elimination ("variable cse_v... has been used before definition").
    Process-wide and idempotent; the computed values are the same.
    """
    from tvm.relax.frontend.nn.llm import position_embedding

    position_embedding.rope_freq_llama3 = _rope_freq_llama3_inline
