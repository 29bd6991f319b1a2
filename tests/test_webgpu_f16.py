"""The f16 WebGPU builds (`q4f16_1`, `q0f16`) executed: WebGPU in node (Dawn) on Mesa's lavapipe,
the one adapter here with `shader-f16` (SwiftShader, chromium's, has none).

`make deps` installs lavapipe from bookworm-backports (Mesa 25): bookworm's own Mesa 22.3 lacks the
Vulkan features Dawn requires. Chromium does not offer lavapipe to WebGPU (see the README's notes), so
these modules run through tests/js/tvm_node.mjs, the same harness as the f32 WebGPU parity tests.

Tolerance: both sides compute in float16, in different orders (GPU tiles and reductions vs the CPU
build's loops), so the logits may differ by a few f16 rounding steps of their own magnitude:
at most 8 units in the last place of float16 at the largest |logit| (measured: 4 for q4f16_1, 5.5 for
q0f16 on the tiny model); greedy ids must be equal.
"""

from __future__ import annotations

import numpy as np
import pytest

from node_harness import LAVAPIPE_ICD, node_available, run_model
from webbuild.runner import CpuModel

PROMPT = [1, 5, 9, 3, 11, 12, 4, 2, 7, 40]
DECODE = 8
F16_ULPS = 8

pytestmark = pytest.mark.skipif(not node_available(), reason="needs node and npm ci (make deps)")


@pytest.mark.parametrize("quantization", ["q4f16_1", "q0f16"])
def test_f16_webgpu_module_matches_its_cpu_build_on_lavapipe(quantization, tiny_llama_dirs, model_build):
    assert LAVAPIPE_ICD.exists(), f"{LAVAPIPE_ICD} is missing: `make deps` installs it (bookworm-backports)"
    source = tiny_llama_dirs["untied"][0]
    result = run_model(model_build(source, quantization, "webgpu"), PROMPT, decode=DECODE, packed_params=True,
                       vulkan_icd=LAVAPIPE_ICD)
    adapter = result["adapter"]
    assert "shader-f16" in adapter["features"] and "llvmpipe" in adapter["description"], adapter

    cpu = CpuModel(model_build(source, quantization, "cpu"))
    want = np.asarray(cpu.prefill(PROMPT), dtype=np.float32).reshape(-1)  # (vocab,)
    got = np.asarray(result["logits"], dtype=np.float32).reshape(-1)[-want.size:]  # (vocab,) last position
    ulp = float(np.spacing(np.float16(np.abs(want).max())))
    worst = float(np.abs(got - want).max())
    print(f"{quantization} on lavapipe: max |delta logit| {worst:.2e} = {worst / ulp:.1f} f16 ulps")
    assert worst <= F16_ULPS * ulp
    cpu.reset()
    assert result["tokens"] == cpu.greedy(PROMPT, DECODE)
