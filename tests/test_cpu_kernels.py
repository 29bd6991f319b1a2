"""The CPU modules' int4 matmul kernels (webbuild/kernels/cpu_matmul.py) against numpy: the
one-token GEMV and the blocked prefill kernel (token counts that fill the last block of
TOKEN_BLOCK and ones that leave it padded), scheduled as the builds schedule them, on this
machine's CPU."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import te, tirx

from webbuild.kernels import cpu_matmul as cs
from webbuild.quant.formats import FORMATS, dequantize, pack_codes, store_groups
from webbuild.quant.group_quant import _dequantize_matmul_te, dequantize_int4, quantize_int4

ROWS, COLS, GROUP_SIZE = 24, 96, 32


@pytest.fixture(scope="module")
def weights():
    rng = np.random.default_rng(7)
    q_weight, q_scale = quantize_int4(rng.standard_normal((ROWS, COLS)).astype(np.float32), GROUP_SIZE, "float32")
    return q_weight, q_scale, dequantize_int4(q_weight, q_scale, GROUP_SIZE).astype(np.float64)


def group_quant_func(seq):
    """group_quant's own PrimFunc for x (1, seq, COLS), as the Relax export makes it."""
    x = te.placeholder((1, seq, COLS), "float32", name="x")
    w = te.placeholder((ROWS, COLS // 8), "uint32", name="w")
    s = te.placeholder((ROWS, COLS // GROUP_SIZE), "float32", name="s")
    out = _dequantize_matmul_te(x, w, s, COLS, GROUP_SIZE, "float32")
    return te.create_prim_func([x, w, s, out], index_dtype_override="int64").without_attr("global_symbol")


def compiled(seq):
    """The kernel the CPU pipeline swaps in for group_quant's, scheduled, built for this CPU."""
    func = group_quant_func(seq)
    match = cs._group_quant_matmul(func)
    assert match is not None
    cols, group_size, one_token, fmt = match
    assert fmt is None
    make = cs.gemv_int4_func if one_token else cs.gemm_int4_func
    swapped = make(func.params[0].shape, ROWS, cols, group_size)
    scheduled = cs.schedule_func(swapped)
    assert scheduled is not None, "the schedule did not apply"
    return tvm.tirx.build(tvm.IRModule({"main": scheduled.with_attr("global_symbol", "main")}),
                          target=tvm.target.Target({"kind": "llvm"}))


def run(lib, x, q_weight, q_scale):
    dev = tvm.cpu()
    out = tvm.runtime.empty((1, x.shape[1], ROWS), "float32", dev)
    lib(*(tvm.runtime.tensor(a, dev) for a in (x, q_weight, q_scale)), out)
    return out.numpy()


def test_one_token_gemv(weights):
    q_weight, q_scale, w = weights
    x = np.random.default_rng(1).standard_normal((1, 1, COLS)).astype(np.float32)
    got = run(compiled(1), x, q_weight, q_scale)
    np.testing.assert_allclose(got, x.astype(np.float64) @ w.T, rtol=1e-5, atol=1e-5)


def test_prefill_kernel_every_token_count(weights):
    """One build (dynamic seq_len), run for 1..2 TOKEN_BLOCKs + 1 tokens: full and padded blocks."""
    q_weight, q_scale, w = weights
    lib = compiled(tirx.Var("seq_len", "int64"))
    rng = np.random.default_rng(2)
    for seq in range(1, 2 * cs.TOKEN_BLOCK + 2):
        x = rng.standard_normal((1, seq, COLS)).astype(np.float32)
        np.testing.assert_allclose(run(lib, x, q_weight, q_scale), x.astype(np.float64) @ w.T,
                                   rtol=1e-5, atol=1e-5, err_msg=f"seq_len {seq}")


def test_prefill_tokens_independent_of_their_block(weights):
    """Each token of a prefill equals that token alone through the prefill kernel: rows and tokens
    do not change one another's sums (results do not depend on the token count or block)."""
    q_weight, q_scale, _ = weights
    lib = compiled(tirx.Var("seq_len", "int64"))
    x = np.random.default_rng(3).standard_normal((1, 5, COLS)).astype(np.float32)
    whole = run(lib, x, q_weight, q_scale)
    for t in range(5):
        np.testing.assert_array_equal(whole[:, t:t + 1], run(lib, x[:, t:t + 1], q_weight, q_scale))


# --- every weight format (webbuild.quant.formats) -------------------------------------------

FORMAT_NAMES = ["int4_g32_min_f16", "int4_g32_f16", "int8_g32_f16", "int8_g32_min_f16", "int8_g16", "int8_g32_min",
                "int4_g32_min"]


def format_weights(fmt, rng, cols=COLS):
    """Random codes and float16-valued scales (and mins) in `fmt`'s storage, and the float64 weight."""
    codes = rng.integers(0, fmt.max_code + 1, (ROWS, cols))
    groups = (ROWS, cols // fmt.group_size)
    scale = (rng.standard_normal(groups) * 0.05).astype(np.float16)
    scale.flat[::5] = np.float16(2.0 ** -20)  # float16 subnormals
    parts = [pack_codes(codes, fmt), store_groups(scale.astype(np.float32), fmt)]
    if fmt.has_min:
        parts.append(store_groups((rng.standard_normal(groups) * 0.5).astype(np.float16).astype(np.float32), fmt))
    w = dequantize(parts[0], parts[1], parts[2] if fmt.has_min else None, fmt).astype(np.float64)
    return parts, w


def format_func(seq, fmt, cols=COLS):
    """group_quant's PrimFunc of a `fmt` container weight for x (1, seq, cols)."""
    x = te.placeholder((1, seq, cols), "float32", name="x")
    w = te.placeholder((ROWS, cols // fmt.values_per_word), "uint32", name="w")
    s = te.placeholder(fmt.group_shape(ROWS, cols), fmt.group_dtype, name="s")
    m = te.placeholder(fmt.group_shape(ROWS, cols), fmt.group_dtype, name="m") if fmt.has_min else None
    out = _dequantize_matmul_te(x, w, s, cols, fmt.group_size, "float32", fmt, m)
    params = [x, w, s] + ([m] if m is not None else []) + [out]
    return te.create_prim_func(params, index_dtype_override="int64").without_attr("global_symbol")


def compiled_format(seq, fmt, cols=COLS):
    func = format_func(seq, fmt, cols)
    match = cs._group_quant_matmul(func)
    assert match is not None and match[3] == fmt, f"{fmt.name} not recognized"
    cols, group_size, one_token, _ = match
    make = cs.gemv_int4_func if one_token else cs.gemm_int4_func
    scheduled = cs.schedule_func(make(func.params[0].shape, ROWS, cols, group_size, fmt))
    assert scheduled is not None, "the schedule did not apply"
    return tvm.tirx.build(tvm.IRModule({"main": scheduled.with_attr("global_symbol", "main")}),
                          target=tvm.target.Target({"kind": "llvm"}))


def run_parts(lib, x, parts):
    dev = tvm.cpu()
    out = tvm.runtime.empty((1, x.shape[1], ROWS), "float32", dev)
    lib(*(tvm.runtime.tensor(a, dev) for a in (x, *parts)), out)
    return out.numpy()


# 96 columns: 2 or 3 float16-pair words per row (g32 / g16; a row tile's words are widened together,
# vectorized across its rows); 256: 4 or 8 words per row
@pytest.mark.parametrize("cols", [COLS, 256])
@pytest.mark.parametrize("name", FORMAT_NAMES)
def test_every_format_gemv_and_prefill(name, cols):
    fmt = FORMATS[name]
    rng = np.random.default_rng(11)
    parts, w = format_weights(fmt, rng, cols)
    x = rng.standard_normal((1, 1, cols)).astype(np.float32)
    want = x.astype(np.float64) @ w.T
    got = run_parts(compiled_format(1, fmt, cols), x, parts)
    assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max())
    lib = compiled_format(tirx.Var("seq_len", "int64"), fmt, cols)
    for seq in (1, 2, 3):
        x = rng.standard_normal((1, seq, cols)).astype(np.float32)
        want = x.astype(np.float64) @ w.T
        got = run_parts(lib, x, parts)
        assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max()), f"seq_len {seq}"


def test_int4_groups_of_16_are_left_to_the_generic_schedule():
    # four int4 words hold 32 values: a group of 16 is not a whole vector, so no swap
    assert cs._group_quant_matmul(format_func(1, FORMATS["int4_g16_min"])) is None
