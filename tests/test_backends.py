"""The backends own every per-target decision: a fourth target is one local change, and nothing
outside webbuild/backends reads the current TVM target or compares target kinds."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from webbuild.backends import BackendEntry, check_target, get_backend, register_backend, targets, unregister_backend
from webbuild.errors import ConfigError

PACKAGE = Path(__file__).resolve().parent.parent / "webbuild"
PROMPT = [1, 5, 9, 33, 2, 17, 4, 60, 8, 12, 3]


def test_no_module_outside_backends_reads_the_target():
    ambient = re.compile(r"Target\.current|\.kind\.name\b")
    offenders = [f"{p.relative_to(PACKAGE)}:{n}" for p in PACKAGE.rglob("*.py") if "backends" not in p.parts
                 for n, line in enumerate(p.read_text().splitlines(), 1) if ambient.search(line)]
    assert offenders == []


def test_registry_and_cli_import_no_tvm():
    code = "import sys, webbuild.backends, webbuild.cli.build_cmd; print('tvm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_targets_and_unknown_target():
    assert targets() == ("webgpu", "cpu")
    with pytest.raises(ConfigError):
        check_target("wasm")  # a fallback only, not a --target
    with pytest.raises(ConfigError):
        check_target("metal")


def test_runtime_metadata_per_backend():
    meta = {name: get_backend(name).runtime_metadata() for name in ("webgpu", "wasm", "cpu")}
    assert {m["kv_page_size"] for m in meta.values()} == {16}
    assert {name: m["single_token_past_window"] for name, m in meta.items()} == {
        "webgpu": False, "wasm": True, "cpu": True}


def _plain_host_backend():
    """A test-only target: the host CPU without webbuild's CPU matmul kernels and schedules
    (TVM's legalized matmuls with dequantize inlined), in a differently named folder."""
    from tvm.target import Target

    from webbuild.backends.base import Backend
    from webbuild.kernels.inline_dequantize import inline_dequantize

    class PlainHostBackend(Backend):
        name = "plain-cpu"
        module_file = "model.so"

        def target(self):
            return Target({"kind": "llvm"})

        def runtime_metadata(self):
            return {**super().runtime_metadata(), "single_token_past_window": True}

        def after_fusion(self):
            return [inline_dequantize]

        def link(self, executable, folder, *, opt_level, progress=None):
            executable.export_library(str(folder / self.module_file))
            return {self.name: self.module_file}

    return PlainHostBackend()


@pytest.fixture
def plain_cpu_target():
    register_backend(BackendEntry("plain-cpu", _plain_host_backend, folder_suffix="-plain"))
    yield "plain-cpu"
    unregister_backend("plain-cpu")


def test_a_fourth_target_is_one_registration(plain_cpu_target, tiny_llama_dirs, model_build):
    """Registered from this test alone, the fake target builds a folder the Python runner runs, with
    the host CPU build's logits (other kernels: float32 summation order only) and greedy ids."""
    from webbuild.runner import CpuModel

    source = tiny_llama_dirs["untied"][0]
    fake = model_build(source, "q4f32_1", plain_cpu_target)
    assert fake.name.endswith("-q4f32_1-plain") and (fake / "model.so").is_file()
    assert plain_cpu_target in targets()
    ref, got = CpuModel(model_build(source, "q4f32_1", "cpu")), CpuModel(fake)
    np.testing.assert_allclose(got.prefill(PROMPT), ref.prefill(PROMPT), rtol=1e-4, atol=1e-4)
    ref.reset()
    got.reset()
    assert got.greedy(PROMPT, 8) == ref.greedy(PROMPT, 8)
