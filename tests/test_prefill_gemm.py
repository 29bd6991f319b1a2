"""WebGPU prefill matmuls (webbuild.kernels.prefill_gemm): the register-tiled GEMM against float64
numpy for every weight format, in node (Dawn on SwiftShader); the pass swaps exactly the many-token
group-quantized matmuls in; a tiny model's WebGPU prefill through it equals its CPU build."""

from __future__ import annotations

import numpy as np
import pytest

from node_harness import run_model, run_toy
from test_decode_kernels import _compile, _toy_module
from webbuild.compile import wasm_runtime
from webbuild.kernels.prefill_gemm import (
    OPAQUE,
    THREADS,
    GemmSpec,
    covers,
    gemm_func,
    match_prefill_matmul,
    prefill_gemm_pass,
)
from webbuild.quant.formats import FORMATS, dequantize, pack_codes, store_groups
from webbuild.quant.group_quant import dequantize_int4, quantize_int4
from webbuild.runner import CpuModel

TINY_PROMPT = [1, 5, 9, 33, 100, 7, 250, 3, 11, 12, 40, 41, 60, 2, 17, 90, 21]  # 17: a ragged token tile
# rows: not a multiple of a workgroup's rows (ragged row tiles) and smaller than one workgroup
ROWS_CASES = (100, 20)


@pytest.fixture(scope="module")
def runtime():
    return wasm_runtime.build_runtime()


def _weights(fmt, rows: int, cols: int, rng) -> tuple[list[np.ndarray], np.ndarray]:
    """(q_weight, q_scale(, q_min)) in `fmt`'s storage (None: today's int4) and the dequantized
    (rows, cols) float64 matrix (numpy's own decoding, `formats.dequantize` / `dequantize_int4`)."""
    if fmt is None:
        q_weight, q_scale = quantize_int4(rng.standard_normal((rows, cols)).astype(np.float32), 32, "float32")
        return [q_weight, q_scale], dequantize_int4(q_weight, q_scale, 32).astype(np.float64)
    codes = rng.integers(0, fmt.max_code + 1, (rows, cols))
    groups = (rows, cols // fmt.group_size)
    scale = (rng.standard_normal(groups) * (0.1 if fmt.bits == 4 else 0.01)).astype(np.float16)
    scale.flat[::7] = np.float16(2.0 ** -20)  # a float16 subnormal
    parts = [pack_codes(codes, fmt), store_groups(scale.astype(np.float32), fmt)]
    if fmt.has_min:
        parts.append(store_groups((rng.standard_normal(groups) * 0.5).astype(np.float16).astype(np.float32), fmt))
    w = dequantize(parts[0], parts[1], parts[2] if fmt.has_min else None, fmt)
    return parts, np.asarray(w, np.float64)


@pytest.mark.parametrize("seq", [37, 5])
def test_prefill_gemm_reads_every_weight_format(runtime, tmp_path, seq):
    """Today's int4 and each of the 16 `formats` containers (int4 / int8, with / without a min,
    groups of 16 / 32, float32 / float16-pair scales, an odd group count: a padded half word),
    37 and 5 tokens (ragged token tiles), ragged row tiles."""
    rng = np.random.default_rng(seq)
    formats = [None, *FORMATS.values()]
    cases = []
    for i, fmt in enumerate(formats):
        rows, cols = ROWS_CASES[i % 2], (96 if i % 3 else 160)
        weights, w = _weights(fmt, rows, cols, rng)
        x = rng.standard_normal((1, seq, cols)).astype(np.float32)
        spec = GemmSpec(rows, cols, fmt.group_size if fmt is not None else 32, fmt)
        cases.append((spec, [x, *weights], x[0].astype(np.float64) @ w.T))
    mod = _toy_module([gemm_func(spec) for spec, _, _ in cases], [((1, seq, s.rows), "float32") for s, _, _ in cases],
                      [[(a.shape, str(a.dtype)) for a in args] for _, args, _ in cases])
    _compile(mod, tmp_path / "gemm.wasm")
    outputs = run_toy(tmp_path / "gemm.wasm", "main", [a for _, args, _ in cases for a in args])
    for (spec, _, expected), out in zip(cases, outputs):
        err = np.abs(out[0] - expected).max() / max(1.0, np.abs(expected).max())
        assert err < 1e-5, f"{spec}: relative error {err:.2e}"  # float32 rounding


def _quantized_linear_module(fmt):
    """A Relax module with one group-quantized linear layer (format `fmt`), exported with a
    many-token `prefill` and a one-token `decode` function."""
    from tvm.relax.frontend import nn

    from webbuild.quant.group_quant import GroupQuantLinear

    class Layer(nn.Module):
        def __init__(self):
            self.proj = GroupQuantLinear(64, 40, False, "float32", 32, fmt)

        def prefill(self, x):
            return self.proj(x)

        def decode(self, x):
            return self.proj(x)

    spec = {"prefill": {"x": nn.spec.Tensor([1, "seq_len", 64], "float32"), "$": {"param_mode": "plain"}},
            "decode": {"x": nn.spec.Tensor([1, 1, 64], "float32"), "$": {"param_mode": "plain"}}}
    mod, _ = Layer().export_tvm(spec=spec)
    return mod


@pytest.mark.parametrize("fmt", [None, FORMATS["int8_g16_min_f16"], FORMATS["int4_g32_min"]], ids=str)
def test_pass_swaps_only_prefill_matmuls(fmt):
    """The many-token matmul becomes the opaque scheduled GEMM; the one-token one is left alone."""
    from tvm import tirx

    mod = _quantized_linear_module(fmt)
    before = {g.name_hint: f for g, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)}
    matched = [name for name, f in before.items() if match_prefill_matmul(f) is not None]
    assert len(before) == 2 and len(matched) == 1
    after = prefill_gemm_pass()(mod)
    swapped = [g.name_hint for g, f in after.functions_items()
               if isinstance(f, tirx.PrimFunc) and f.attrs and int(f.attrs.get("op_pattern", -1)) == OPAQUE
               and f.attrs.get("tirx.is_scheduled", False)]
    assert swapped == matched


def test_workgroup_grid_stays_within_every_adapters_limits():
    assert covers(GemmSpec(49152, 576))
    assert not covers(GemmSpec(65535 * 8 * THREADS + 8, 64))
    with pytest.raises(ValueError):
        GemmSpec(10, 72, 32)  # not whole groups


def test_tiny_model_webgpu_prefill_equals_cpu_build(tiny_llama_dirs, model_build):
    """A q4f32_1 tiny Llama's WebGPU prefill (17 tokens in one chunk: every matmul through the GEMM,
    a ragged token tile) gives the CPU build's logits to 1e-4, and the same greedy tokens after."""
    source = tiny_llama_dirs["untied"][0]
    web = model_build(source, "q4f32_1", "webgpu")
    cpu = CpuModel(model_build(source, "q4f32_1", "cpu"))
    result = run_model(web, TINY_PROMPT, decode=4, packed_params=True, no_prefetch_shaders=True)
    expected = cpu.prefill(TINY_PROMPT)
    got = np.asarray(result["logits"], np.float32).reshape(-1)
    assert np.abs(got - expected).max() <= 1e-4 * max(1.0, float(np.abs(expected).max()))
    cpu.reset()
    assert result["tokens"] == cpu.greedy(TINY_PROMPT, 4)
