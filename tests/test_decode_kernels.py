"""The WebGPU decode step's own kernels: fused GEMVs (webbuild.kernels.decode_gemv) and the greedy
argmax (webbuild.kernels.argmax) against float64 numpy in node (Dawn on SwiftShader), and the decode
function's kernel count per layer."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from node_harness import run_toy
from webbuild.compile import wasm_link, wasm_runtime
from webbuild.kernels.decode_gemv import GemvSpec, gemv_func, threads_for
from webbuild.quant.formats import FORMATS, dequantize, pack_codes, store_groups
from webbuild.quant.group_quant import dequantize_int4, quantize_int4

WASM_TARGET_HOST = {"kind": "llvm", "mtriple": "wasm32-unknown-unknown-wasm"}
# (rows, cols, quantized, prologue, act, bias, residual): every prologue, both weight kinds,
# ragged rows (not a multiple of 8), ragged chunks (threads without a word), float cols % 8 != 0
GEMV_CASES = [
    (100, 64, True, "none", "silu", False, False),
    (37, 48, False, "rms", "silu", True, True),
    (40, 96, True, "layer", "silu", False, True),
    (30, 44, False, "gated", "silu", False, False),
    (33, 64, True, "act", "silu", True, False),
    (24, 1088, True, "gated", "gelu", False, True),
    (16, 2048, True, "rms", "silu", False, False),
    (19, 72, False, "act", "gelu_tanh", True, False),
    (8, 64, True, "act", "relu", False, False),
]
# (format, rows, cols, prologue): every code width, min / no min, both group sizes, float32 and
# float16-pair scales (an odd group count: a padded last word)
FORMAT_CASES = [
    ("int4_g32_min_f16", 20, 96, "rms"),
    ("int8_g32_f16", 17, 64, "none"),
    ("int8_g32_min_f16", 9, 160, "gated"),
    ("int4_g32_f16", 8, 96, "act"),
    ("int4_g16_min", 12, 48, "none"),
    ("int8_g16", 11, 80, "layer"),
    ("int4_g32", 10, 64, "none"),
    ("int8_g32_min", 16, 64, "rms"),
    # float16 scales, groups spread evenly over the threads: a thread takes whole groups (2 each);
    # unevenly (34 groups on 16 threads): a thread takes chunks
    ("int8_g32_f16", 9, 2048, "none"),
    ("int4_g32_min_f16", 12, 1024, "gated"),
    ("int4_g32_min_f16", 12, 1088, "rms"),
]
ARGMAX_VOCAB = 1000  # not a multiple of the 256 threads


def _target():
    from tvm.target import Target

    return Target({"kind": "webgpu"}, host=WASM_TARGET_HOST)


@pytest.fixture(scope="module")
def runtime():
    return wasm_runtime.build_runtime()


def _activate(v: np.ndarray, kind: str) -> np.ndarray:
    from math import erf, pi, sqrt

    if kind == "silu":
        return v / (1 + np.exp(-v))
    if kind == "gelu":
        return 0.5 * v * (1 + np.vectorize(erf)(v / sqrt(2)))
    if kind == "gelu_tanh":
        return 0.5 * v * (1 + np.tanh(sqrt(2 / pi) * (v + 0.044715 * v**3)))
    return np.maximum(v, 0)


def _case_inputs(spec: GemvSpec, rng) -> tuple[list[np.ndarray], np.ndarray]:
    """(kernel arguments, float64 reference output) of one case."""
    x = rng.standard_normal((1, 1, spec.input_size)).astype(np.float32)
    w = rng.standard_normal((spec.rows, spec.cols)).astype(np.float32)
    args = [x]
    if spec.fmt is not None:
        args += _format_weight(spec, rng)
        w = dequantize(*args[1:3], args[3] if spec.fmt.has_min else None, spec.fmt)
    elif spec.quantized:
        q_weight, q_scale = quantize_int4(w, spec.group_size, "float32")
        args += [q_weight, q_scale]
        w = dequantize_int4(q_weight, q_scale, spec.group_size)
    else:
        args.append(w)
    v = x.reshape(-1).astype(np.float64)
    if spec.prologue in ("rms", "layer"):
        norm_w = rng.standard_normal(spec.cols).astype(np.float32)
        args.append(norm_w)
        if spec.prologue == "rms":
            v = v / np.sqrt((v * v).mean() + spec.eps) * norm_w
        else:
            norm_b = rng.standard_normal(spec.cols).astype(np.float32)
            args.append(norm_b)
            v = (v - v.mean()) / np.sqrt(v.var() + spec.eps) * norm_w + norm_b
    elif spec.prologue == "gated":
        v = _activate(v[:spec.cols], spec.act) * v[spec.cols:]
    elif spec.prologue == "act":
        v = _activate(v, spec.act)
    y = w.astype(np.float64) @ v
    if spec.bias:
        bias = rng.standard_normal(spec.rows).astype(np.float32)
        args.append(bias)
        y = y + bias
    if spec.residual:
        residual = rng.standard_normal((1, 1, spec.rows)).astype(np.float32)
        args.append(residual)
        y = y + residual.reshape(-1)
    return args, y


def _format_weight(spec: GemvSpec, rng) -> list[np.ndarray]:
    """Random codes, float16-valued scales (some float16 subnormals) and mins in `spec.fmt`'s
    storage: [q_weight, q_scale(, q_min)]."""
    fmt = spec.fmt
    codes = rng.integers(0, fmt.max_code + 1, (spec.rows, spec.cols))
    groups = (spec.rows, spec.cols // fmt.group_size)
    scale = (rng.standard_normal(groups) * (0.1 if fmt.bits == 4 else 0.01)).astype(np.float16)
    scale.flat[::7] = np.float16(2.0 ** -20)  # a float16 subnormal
    parts = [pack_codes(codes, fmt), store_groups(scale.astype(np.float32), fmt)]
    if fmt.has_min:
        parts.append(store_groups((rng.standard_normal(groups) * 0.5).astype(np.float16).astype(np.float32), fmt))
    return parts


def _toy_module(funcs: list, out_shapes: list[tuple[tuple[int, ...], str]], arg_shapes: list[list]):
    """One Relax function `main` calling every PrimFunc of `funcs` on its own arguments; returns
    the tuple of their outputs."""
    from tvm.relax.frontend import nn

    names = [[f"a{i}_{j}" for j in range(len(shapes))] for i, shapes in enumerate(arg_shapes)]
    flat = [n for group in names for n in group]

    def main(self, *args):
        outs, at = [], 0
        for func, group, (shape, dtype) in zip(funcs, names, out_shapes):
            outs.append(nn.op.tensor_ir_op(func, "kernel", list(args[at:at + len(group)]),
                                           nn.Tensor.placeholder(shape, dtype)))
            at += len(group)
        return tuple(outs)

    # export_tvm binds spec entries to named parameters: generate a method with one per argument
    namespace = {"main": main}
    exec(f"def forward(self, {', '.join(flat)}):\n    return main(self, {', '.join(flat)})", namespace)
    module = type("Toy", (nn.Module,), {"main": namespace["forward"]})()
    spec = {n: nn.spec.Tensor(list(s), d) for n, (s, d) in zip(flat, (a for shapes in arg_shapes for a in shapes))}
    mod, _ = module.export_tvm(spec={"main": {**spec, "$": {"param_mode": "plain", "effect_mode": "none"}}})
    return mod


def _compile(mod, path):
    import tvm

    wasm_link.export_wasm(tvm.compile(mod, target=_target()), path, opt_level="O1")


def test_fused_gemv_kernels_match_float64(runtime, tmp_path):
    rng = np.random.default_rng(0)
    specs = [GemvSpec(rows, cols, quantized, prologue=prologue, act=act, bias=bias, residual=residual)
             for rows, cols, quantized, prologue, act, bias, residual in GEMV_CASES]
    cases = [_case_inputs(spec, rng) for spec in specs]
    funcs = [gemv_func(spec) for spec in specs]
    mod = _toy_module(funcs, [((1, 1, s.rows), "float32") for s in specs],
                      [[(a.shape, str(a.dtype)) for a in args] for args, _ in cases])
    _compile(mod, tmp_path / "gemv.wasm")
    outputs = run_toy(tmp_path / "gemv.wasm", "main", [a for args, _ in cases for a in args])
    for spec, (_, expected), out in zip(specs, cases, outputs):
        err = np.abs(out.reshape(-1) - expected).max() / max(1.0, np.abs(expected).max())
        assert err < 2e-6, f"{spec}: relative error {err:.2e}"  # float32 rounding: measured <= 5e-7


def test_fused_gemv_reads_every_weight_format(runtime, tmp_path):
    rng = np.random.default_rng(2)
    specs = [GemvSpec(rows, cols, True, group_size=FORMATS[name].group_size, fmt=FORMATS[name], prologue=prologue)
             for name, rows, cols, prologue in FORMAT_CASES]
    cases = [_case_inputs(spec, rng) for spec in specs]
    mod = _toy_module([gemv_func(spec) for spec in specs], [((1, 1, s.rows), "float32") for s in specs],
                      [[(a.shape, str(a.dtype)) for a in args] for args, _ in cases])
    _compile(mod, tmp_path / "gemv_formats.wasm")
    outputs = run_toy(tmp_path / "gemv_formats.wasm", "main", [a for args, _ in cases for a in args])
    for spec, (_, expected), out in zip(specs, cases, outputs):
        err = np.abs(out.reshape(-1) - expected).max() / max(1.0, np.abs(expected).max())
        assert err < 1e-5, f"{spec.fmt.name}: relative error {err:.2e}"


def test_gemv_threads_scale_with_the_reduction():
    assert [threads_for(k) for k in (64, 576, 1536, 2048, 4096, 14336)] == [8, 8, 16, 32, 64, 64]


def test_argmax_kernel_is_the_runtime_argmax(runtime, tmp_path):
    from webbuild.kernels.argmax import argmax_func

    rng = np.random.default_rng(1)
    vectors = [rng.standard_normal(ARGMAX_VOCAB).astype(np.float32) for _ in range(4)]
    vectors[1][[17, 400, 999]] = 50.0  # ties: the lowest index wins
    vectors[2][[3, 700]] = np.nan  # NaN never wins
    vectors[2][998] = 9.0
    vectors[3][:] = -np.inf  # nothing above -FLT_MAX: 0
    expected = [int(np.argmax(vectors[0])), 17, 998, 0]
    func = argmax_func(ARGMAX_VOCAB, gpu=True)
    mod = _toy_module([func] * 4, [((1,), "int32")] * 4, [[((1, 1, ARGMAX_VOCAB), "float32")]] * 4)
    _compile(mod, tmp_path / "argmax.wasm")
    outputs = run_toy(tmp_path / "argmax.wasm", "main", [v.reshape(1, 1, -1) for v in vectors])
    assert [int(o.reshape(-1)[0]) for o in outputs] == expected


def _decode_calls(source, quantization: str) -> tuple[collections.Counter, int]:
    """(kernel or builtin -> calls, layers) of the WebGPU decode function after the Relax pipeline
    (where kernels are called directly, and TVM's KV-cache methods through builtins)."""
    import tvm
    from tvm import relax as rx
    from tvm.relax.expr_functor import PyExprVisitor, visitor

    from webbuild.arch import get_architecture
    from webbuild.arch.base import BuildOptions
    from webbuild.backends import get_backend
    from webbuild.loaders import load_checkpoint
    from webbuild.quant.scheme import get_scheme

    checkpoint = load_checkpoint(source)
    arch = get_architecture(checkpoint.config["model_type"])
    config = arch.parse_config(checkpoint.config, BuildOptions())
    backend = get_backend("webgpu")
    mod, _ = backend.export(arch, config, get_scheme(quantization))
    mod = backend.relax_pipeline()(mod)
    calls: collections.Counter = collections.Counter()

    @visitor
    class Calls(PyExprVisitor):
        def visit_call_(self, call):
            if isinstance(call.op, tvm.ir.GlobalVar):  # a PrimFunc: a kernel, or host shape code
                if not call.op.name_hint.startswith("compute_symbolic_expr"):
                    calls[call.op.name_hint] += 1
            elif isinstance(call.op, rx.ExternFunc):
                calls[str(call.op.global_symbol)] += 1
            for arg in call.args:
                self.visit_expr(arg)

    Calls().visit_expr(mod["decode"])
    return calls, config.num_hidden_layers


@pytest.mark.parametrize("quantization", ["q4f32_1", "q0f32"])
def test_decode_issues_four_kernels_per_layer_besides_attention(quantization, tiny_llama_dirs):
    """Per layer: the qkv (with RMSNorm), output (+ residual), gate/up (with RMSNorm) and down
    (with SiLU gate, + residual) GEMVs, plus TVM's KV-cache attention (3 kernels: split + RoPE,
    append, paged decode): 7 dispatches. Per step: those, and the output head with the final norm."""
    calls, layers = _decode_calls(tiny_llama_dirs["untied"][0], quantization)
    attention = calls.pop("vm.builtin.attention_kv_cache_attention_with_fused_qkv")
    kernels = {name: n for name, n in calls.items() if not name.startswith("vm.builtin.")}
    assert attention == layers
    assert all(name.startswith("decode_gemv_") for name in kernels), kernels
    assert sum(kernels.values()) == 4 * layers + 1
