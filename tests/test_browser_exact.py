"""SmolLM2's faithful build (`--quantization source`, the default: the GGUF's own Q4_1 / Q8_0
blocks) in the browser's modules:
- in node, the WebGPU module (Dawn on SwiftShader) and the WASM CPU module give the logits of the
  file's dequantized model (the `q0f32` CPU build: gguf-py's dequantization, proven against
  transformers elsewhere) within 1e-3 over the chat prompt's prefill and 64 greedy decode steps;
- in headless chromium, on WebGPU and on the WASM backend (1 and 2 threads), the greedy answers to
  three chat prompts are the CPU build's, token for token, for 64 tokens (stop ids biased -100 so
  that every answer runs the full length). The CPU build itself is proven against the file's
  dequantized model in test_smollm2.py."""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest

from browser_support import REPO, chat_prompt_ids, cpu_greedy_ids, decode_text, page_at, run_engine, webbuild_server
from webbuild.runner import CpuModel

MODEL = "smollm2-135m-instruct"
TOKENS = 64
PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a haiku about autumn leaves."}],
    [{"role": "user", "content": "Explain in two sentences why the sky is blue."}],
]


@pytest.fixture(scope="module")
def builds(model_build, tmp_path_factory):
    root = tmp_path_factory.mktemp("served_exact")
    web = model_build(MODEL, "source", "webgpu")
    shutil.copytree(web, root / "smollm2-source", copy_function=os.link)  # hard links: no copy
    return root, web, model_build(MODEL, "source", "cpu")


@pytest.fixture(scope="module")
def server(builds):
    if not (REPO / "dist" / "webbuild.js").exists():
        subprocess.run(["npm", "run", "build"], cwd=REPO, check=True)
    with webbuild_server(builds[0]) as url:
        yield url


@pytest.fixture(scope="module")
def expected(builds):
    """Per prompt: the CPU build's greedy text (stop ids biased -100, as in the browser request)."""
    import json

    cpu = builds[2]
    stops = json.loads((cpu / "chat-config.json").read_text())["stop_token_ids"]
    bias = {int(t): -100.0 for t in stops}
    return bias, [decode_text(cpu, cpu_greedy_ids(cpu, messages, TOKENS, bias)) for messages in PROMPTS]


@pytest.mark.parametrize("module", ["webgpu", "wasm-cpu"])
def test_browser_modules_give_the_files_logits(module, builds, model_build):
    """Prefill of the France chat prompt and 64 greedy decode steps in node: every step's logits
    within 1e-3 of the q0f32 CPU build fed the same tokens, and the same greedy tokens."""
    from node_harness import run_model

    web = builds[1]
    ids = chat_prompt_ids(web, PROMPTS[0])
    options = {"device": "cpu", "wasm": "model-cpu.wasm"} if module == "wasm-cpu" else {}
    result = run_model(web, ids, decode=TOKENS + 1, packed_params=True, all_logits=True,
                       prefill_chunk=len(ids), timeout=1200, **options)
    got = [np.asarray(result["logits"], np.float32).reshape(-1)]
    got += [np.asarray(step, np.float32).reshape(-1) for step in result["decode_logits"]]
    reference = CpuModel(model_build(MODEL, "q0f32", "cpu"))
    want = [reference.prefill(ids)] + [reference.decode(t) for t in result["tokens"][:TOKENS]]
    assert len(got) == len(want) == TOKENS + 1
    assert result["tokens"] == [int(np.argmax(w)) for w in want]
    worst = max(float(np.abs(a - b).max()) for a, b in zip(got, want))
    print(f"{module}: max |delta logit| {worst:.2e} over prefill + {TOKENS} decode steps")
    assert worst <= 1e-3


@pytest.mark.parametrize("options", [{"backend": "webgpu"}, {"backend": "wasm", "threads": 1},
                                     {"backend": "wasm", "threads": 2}],
                         ids=["webgpu", "wasm-1t", "wasm-2t"])
def test_source_build_answers_like_its_cpu_build(options, browser, server, expected):
    bias, texts = expected
    with page_at(browser, server) as page:
        for messages, want in zip(PROMPTS, texts):
            request = {"messages": messages, "temperature": 0, "max_tokens": TOKENS,
                       "logit_bias": {str(t): b for t, b in bias.items()}}
            result = run_engine(page, server, "smollm2-source", request, **options)
            assert result["backend"] == options["backend"]
            assert result["usage"]["completion_tokens"] == TOKENS
            assert result["text"].strip() == want.strip()
