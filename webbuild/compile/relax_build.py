"""Lowers an architecture's Relax model for a target and compiles it with TVM.

Module kinds: "webgpu" (WGSL kernels + wasm32 host code, linked into model.wasm), "wasm" (the
same model for the browser's CPU: wasm32 + SIMD128, linked into model-cpu.wasm, the fallback where
WebGPU is missing) and "cpu" (the host CPU through LLVM; model.so, run from Python by
`webbuild.runner` for parity tests).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import tvm
from tvm import relax as rx
from tvm.target import Target

from ..arch.base import Architecture
from ..quant.scheme import QuantScheme
from .cpu_schedule import int4_matmul_pass, schedule_pass
from .kv_cache_patch import install_let_free_llama3_rope, install_precise_webgpu_trig, replace_racy_merge_state

WASM_TRIPLE = "wasm32-unknown-unknown-wasm"


@tvm.transform.module_pass(opt_level=0, name="InlineDequantize")
def inline_dequantize(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Inline every `dequantize` stage into the kernel stage that reads it (for targets without
    dlight, which otherwise leaves a whole dequantized weight allocated inside the kernel)."""
    from tvm import s_tir

    for gvar, func in list(mod.functions_items()):
        if not isinstance(func, tvm.tirx.PrimFunc) or (func.attrs and func.attrs.get("tirx.is_scheduled", False)):
            continue
        sch = s_tir.Schedule(func)
        try:
            sch.compute_inline(sch.get_sblock("dequantize"))
        except (s_tir.ScheduleError, ValueError):
            continue  # no dequantize stage, or it is the kernel's output (embedding rows)
        mod[gvar] = sch.mod["main"]
    return mod


def relax_pipeline(target: Target):
    """TVM's generic pipeline for the target, plus: transposes folded into matmuls (no transposed
    weight copies at run time), for the CPU targets (wasm32, native) the 4-lane matmul kernels of
    `cpu_schedule` (row tiles split across threads on wasm32: webbuild_threads.cc runs them) and, for WebGPU, dlight's GPU schedules."""
    from tvm import s_tir
    from tvm.relax.backend.cpu_generic import pipeline as cpu_generic
    from tvm.relax.backend.gpu_generic import pipeline as gpu_generic

    dl = s_tir.dlight
    if target.kind.name == "llvm":
        backend, rules = cpu_generic, []  # dlight's CPU rules made decode slower and compiles 5x longer
        wasm = str(target.attrs.get("mtriple", "")).startswith("wasm32")
        before, extra = [int4_matmul_pass()], [schedule_pass(parallel=wasm), inline_dequantize]
    else:
        backend = gpu_generic
        rules = [dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.Fallback()]
        before, extra = [], []
    legalize = [
        rx.transform.LegalizeOps(),
        rx.transform.AnnotateTIROpPattern(),
        rx.transform.FoldConstant(),
        rx.transform.FuseOps(),
        rx.transform.FuseTIR(),
    ] + extra + ([dl.ApplyDefaultSchedule(*rules)] if rules else [])

    @tvm.transform.module_pass(opt_level=0)
    def _pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        with target:
            passes = (backend.library_dispatch_passes(target) + before + [rx.transform.FuseTransposeMatmul()]
                      + legalize + backend.dataflow_lower_passes(target) + backend.finalize_passes(target))
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline


def make_target(name: str) -> Target:
    """The TVM target for a module kind: "webgpu" (WGSL + wasm32 host), "wasm" (the browser's CPU:
    wasm32 with SIMD128, the WebGPU build's fallback) or "cpu" (this machine, for Python)."""
    if name == "webgpu":
        return Target({"kind": "webgpu"}, host={"kind": "llvm", "mtriple": WASM_TRIPLE})
    if name == "wasm":
        return Target({"kind": "llvm", "mtriple": WASM_TRIPLE, "mattr": ["+simd128"]})
    return Target({"kind": "llvm"})


@dataclass
class LoweredModel:
    """The compiled executable and the parameters it expects, in call order."""

    executable: object
    params: list[tuple[str, tuple[int, ...], str]]  # (name, shape, dtype)
    metadata: dict


def _with_metadata(mod: tvm.IRModule, metadata: dict) -> tvm.IRModule:
    """Add `_metadata()`, a Relax function returning the model's metadata as a JSON string."""
    bb = rx.BlockBuilder(mod)
    with bb.function("_metadata", params=[]):
        bb.emit_func_output(tvm.ir.StringImm(json.dumps(metadata, sort_keys=True)))
    return bb.get()


def lower(arch: Architecture, config, scheme: QuantScheme, target_name: str) -> LoweredModel:
    """Build the nn.Module, export its Relax functions and compile them for the target."""
    target = make_target(target_name)
    install_let_free_llama3_rope()  # before export: the KV-cache kernels are made there
    with target:
        model = arch.build_model(config, scheme)
        mod, named_params = model.export_tvm(spec=model.get_default_spec())
    params = [(name, tuple(int(d) for d in p.shape), p.dtype) for name, p in named_params]
    metadata = {
        "architecture": arch.name,
        "quantization": scheme.name,
        **config.state_metadata,
        "context_window": config.context_window,
        "prefill_chunk": config.prefill_chunk,
        "params": [{"name": n, "shape": list(s), "dtype": d} for n, s, d in params],
    }
    mod = _with_metadata(mod, metadata)
    if target_name == "webgpu":
        mod = replace_racy_merge_state(mod)
        install_precise_webgpu_trig()  # WGSL sin/cos are ~2e-4 off: precise RoPE
    executable = tvm.compile(mod, target=target, relax_pipeline=relax_pipeline(target))
    return LoweredModel(executable, params, metadata)


def export_cpu_library(executable, path) -> None:
    """Write a CPU build as a shared library loadable with tvm.runtime.load_module."""
    executable.export_library(str(path))
