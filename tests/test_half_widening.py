"""`group_quant.widen_half`: float16 scales and mins (two per uint32 word) widened to float32 in the
kernels with integer operations. Every finite float16 bit pattern must give numpy's float32 value
exactly, on the host CPU and on WebGPU (node, Dawn on SwiftShader), and the expression must
have no Select: in dlight's prefill matmuls a Select became nested WGSL `if`s that SwiftShader ran
for minutes per prefill call."""

from __future__ import annotations

import numpy as np
import pytest

from node_harness import node_available, run_toy, tensor_arg
from webbuild.quant.group_quant import widen_half, widen_half_cpu

HALVES = np.arange(65536, dtype="<u2").view("<f2")  # every float16 bit pattern
FINITE = np.isfinite(HALVES)


def _widen_func(n: int = 65536, widen=widen_half, lanes: int = 0):
    """out[i] = widen(h[i]); `lanes`: the loop vectorized by that many lanes (SIMD code)."""
    from tvm import s_tir, te

    h = te.placeholder((n,), "uint32", name="h")
    out = te.compute((n,), lambda i: widen(h[i]), name="widened")
    func = te.create_prim_func([h, out]).with_attr("global_symbol", "widen_half")
    if lanes:
        sch = s_tir.Schedule(func)
        (loop,) = sch.get_loops(sch.get_sblock("widened"))
        sch.vectorize(sch.split(loop, [None, lanes])[1])
        func = sch.mod["main"]
    return func


def _toy(func):
    """A Relax module whose `main` applies PrimFunc `func` to a (65536,) uint32 tensor."""
    from tvm.relax.frontend import nn

    class Toy(nn.Module):
        def main(self, h):
            return nn.op.tensor_ir_op(func, "widen", [h], nn.Tensor.placeholder((65536,), "float32"))

    mod, _ = Toy().export_tvm(spec={"main": {"h": nn.spec.Tensor([65536], "uint32"),
                                             "$": {"param_mode": "plain", "effect_mode": "none"}}})
    return mod


def _assert_exact(widened: np.ndarray) -> None:
    """Equal values (so bit-equal, except that -0.0 may come back as 0.0: SwiftShader's stores
    give +0, and a zero scale or min of either sign gives the same dequantized weights)."""
    assert widened.dtype == np.float32
    assert np.array_equal(widened.reshape(-1)[FINITE], HALVES[FINITE].astype(np.float32))


@pytest.mark.parametrize("widen", [widen_half, widen_half_cpu], ids=["integer", "cpu"])
@pytest.mark.parametrize("lanes", [0, 4], ids=["scalar", "simd"])
def test_every_finite_half_widens_exactly_on_the_host_cpu(widen, lanes):
    import tvm

    ex = tvm.compile(tvm.IRModule({"main": _widen_func(widen=widen, lanes=lanes)}), target="llvm")
    out = tvm.runtime.tensor(np.zeros(65536, np.float32))
    ex["main"](tvm.runtime.tensor(np.arange(65536, dtype=np.uint32)), out)
    _assert_exact(out.numpy())


@pytest.mark.skipif(not node_available(), reason="needs node and the npm packages (make deps-js)")
def test_cpu_widening_is_exact_in_webassembly_simd(tmp_path):
    """widen_half_cpu relies on float32 subnormals surviving a multiply: WebAssembly (scalar and
    SIMD128) keeps them, as the CPU modules (model-cpu.wasm) need."""
    import tvm

    from webbuild.backends import get_backend
    from webbuild.compile import wasm_link, wasm_runtime

    wasm_runtime.build_runtime()
    mod = _toy(_widen_func(widen=widen_half_cpu, lanes=4))
    wasm_link.export_wasm(tvm.compile(mod, target=get_backend("wasm").target()), tmp_path / "widen_cpu.wasm",
                          opt_level="O1")
    (out,) = run_toy(tmp_path / "widen_cpu.wasm", "main", [tensor_arg(np.arange(65536, dtype=np.uint32), "cpu")],
                     device="cpu")
    _assert_exact(out)


def test_widening_has_no_select():
    text = _widen_func(8).script()
    assert "widened" in text and "Select" not in text and "if_then_else" not in text


@pytest.mark.skipif(not node_available(), reason="needs node and the npm packages (make deps-js)")
def test_every_finite_half_widens_exactly_on_webgpu(tmp_path):
    import tvm
    from tvm.target import Target

    from webbuild.compile import wasm_link, wasm_runtime

    wasm_runtime.build_runtime()
    mod = _toy(_widen_func())
    target = Target({"kind": "webgpu"}, host={"kind": "llvm", "mtriple": "wasm32-unknown-unknown-wasm"})
    wasm_link.export_wasm(tvm.compile(mod, target=target), tmp_path / "widen.wasm", opt_level="O1")
    (out,) = run_toy(tmp_path / "widen.wasm", "main", [np.arange(65536, dtype=np.uint32)])
    _assert_exact(out)
