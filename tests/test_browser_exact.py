"""SmolLM2's faithful build (`--quantization source`: the GGUF's own Q4_1 / Q8_0 blocks) in
headless chromium on the WASM CPU backend (1 and 2 threads): its greedy answers to three chat
prompts are the CPU build's, token for token, for 64 tokens (stop ids biased -100 so that every
answer runs the full length). The CPU build itself is proven against the file's dequantized model
in test_smollm2.py. WebGPU is not here yet: its prefill of these containers is too slow on
SwiftShader (see the README's known limitations)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from browser_support import REPO, cpu_greedy_ids, decode_text, page_at, run_engine, webbuild_server

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


@pytest.mark.parametrize("options", [{"backend": "wasm", "threads": 1}, {"backend": "wasm", "threads": 2}],
                         ids=["wasm-1t", "wasm-2t"])
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
