"""Precise ``sin``/``cos`` for TVM's WebGPU target (an intrinsic-lowering override).

WebGPU's built-in ``sin``/``cos`` are imprecise: WGSL only promises an absolute error of 2^-11
(on SwiftShader they are off by up to 1.9e-4 even inside [-pi, pi], and more outside). TVM's
paged KV cache applies RoPE with them (``tir_split_rotary``, and the inline-RoPE branches of the
attention kernels), so every query and key at a position > 0 carries a ~2e-4 relative error,
which grows to ~5e-3 in SmolLM2's logits (a 1-token prefill, position 0, is exact).
:func:`install_precise_webgpu_trig` makes TVM lower ``sin``/``cos`` for the WebGPU target to a
Cody-Waite range reduction plus minimax polynomials (float32, ~8e-8 absolute error, like libm)
instead. The WebGPU backend installs it before it compiles (nothing happens at import). The
attention kernels themselves (paged / ragged prefill, decode) were checked and are exact to
float32 rounding once RoPE is.
"""

from __future__ import annotations

import math
import threading

import numpy as np
from tvm import tirx


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
    keep their own rules. The WebGPU backend calls it before every compile.
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


def installed() -> bool:
    """Whether this process lowers WebGPU sin/cos with :func:`precise_sin_cos`."""
    return _INSTALLED
