"""The WebAssembly CPU module (model-cpu.wasm): where WebGPU is missing, the same model folder answers.

Its threaded twin (model-cpu-threads.wasm: shared memory, matmul row tiles on Web Workers) runs
when the page is cross-origin isolated (`webbuild serve` sends COOP/COEP) and more than one thread
is asked for (default: navigator.hardwareConcurrency); it must give the same tokens.

Chromium started without --enable-unsafe-webgpu has no WebGPU adapter here, and with it only
SwiftShader (a software adapter): on both, the engine's "auto" backend runs the CPU module and says
why. Backends "wasm" and "webgpu" force one module, so one browser compares the two token for token
against the Python CPU build.
"""

from __future__ import annotations

import os
import shutil

import pytest
from playwright.sync_api import sync_playwright

from browser_support import CHROMIUM, CHROMIUM_FLAGS, cpu_greedy_text, launch_chromium, run_engine, webbuild_server
from smollm_facts import QUESTION
from webbuild.compile.wasm_link import unexpected_imports, wasm_imports

ANSWER_TEXT = "The capital of France is Paris."
TINY_MESSAGES = [{"role": "user", "content": "w5 w9 w33 w100 w7"}]
SMOLLM = "smollm2-135m-instruct"
LOAD_TIMEOUT_MS = 300_000

PROGRESS_JS = """async ([url, options]) => {
  const wb = await import('/dist/webbuild.js');
  const events = [];
  const engine = await wb.createEngine(url, {...options, onProgress: (e) => events.push(e)});
  const response = await engine.chat.completions.create({messages: [{role: 'user', content: 'w5 w9'}],
                                                         max_tokens: 2, temperature: 0});
  const backend = engine.backend, fallbackReason = engine.fallbackReason;
  await engine.unload();
  return {backend, fallbackReason, ready: events.filter((e) => e.stage === 'ready'), usage: response.usage};
}"""

ADAPTER_JS = """async () => {
  const adapter = await navigator.gpu.requestAdapter({powerPreference: 'high-performance'});
  return {fallback: adapter.info.isFallbackAdapter ?? adapter.isFallbackAdapter ?? false,
          architecture: adapter.info.architecture};
}"""


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_llama_dirs, model_build):
    root = tmp_path_factory.mktemp("served_wasm")
    tiny = tiny_llama_dirs["untied"][0]
    folders = {
        "tiny-q0f32": model_build(tiny, "q0f32", "webgpu"),
        "tiny-q4f32_1": model_build(tiny, "q4f32_1", "webgpu"),
        "smollm2-q0f32": model_build(SMOLLM, "q0f32", "webgpu"),
        "smollm2-q4f32_1": model_build(SMOLLM, "q4f32_1", "webgpu"),
    }
    for name, folder in folders.items():
        shutil.copytree(folder, root / name, copy_function=os.link)
    return root


@pytest.fixture(scope="module")
def server(served):
    with webbuild_server(served) as url:
        yield url


@pytest.fixture(scope="module")
def playwright():
    with sync_playwright() as p:
        yield p


@pytest.fixture()
def no_gpu_page(playwright, server):
    """A page in chromium started without --enable-unsafe-webgpu (no WebGPU adapter)."""
    flags = [f for f in CHROMIUM_FLAGS if f != "--enable-unsafe-webgpu"]
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=flags, headless=True)
    page = browser.new_page()
    page.goto(server)
    yield page
    browser.close()


@pytest.fixture()
def gpu_page(playwright, server):
    browser = launch_chromium(playwright)
    page = browser.new_page()
    page.goto(server)
    yield page
    browser.close()


def test_webgpu_builds_carry_a_cpu_module_sharing_the_shards(served):
    import json

    for name in ("tiny-q4f32_1", "smollm2-q4f32_1"):
        config = json.loads((served / name / "chat-config.json").read_text())
        assert config["model_libs"] == {"webgpu": "model.wasm", "wasm": "model-cpu.wasm",
                                        "wasm-threads": "model-cpu-threads.wasm"}
        assert config["wasm_threads"]["memory_pages"]["maximum"] >= config["wasm_threads"]["memory_pages"]["initial"]
        for module in ("model-cpu.wasm", "model-cpu-threads.wasm"):
            assert unexpected_imports(served / name / module) == []
        kinds = {(m, n): k for m, n, k in wasm_imports(served / name / "model-cpu-threads.wasm")}
        assert kinds.get(("env", "memory")) == "memory", "the threaded module imports its (shared) memory"
        assert not list((served / name).glob("*cpu*.bin")), "one set of shards for both modules"


def test_chat_page_answers_on_the_cpu_without_webgpu(no_gpu_page, server):
    page = no_gpu_page
    assert page.evaluate("navigator.gpu ? navigator.gpu.requestAdapter().then((a) => a === null) : true")
    page.goto(f"{server}?model=smollm2-q0f32&autoload=1")
    page.wait_for_function("['ready','error'].includes(document.body.dataset.state)", timeout=LOAD_TIMEOUT_MS)
    assert page.evaluate("document.body.dataset.state") == "ready", page.inner_text("#error")
    assert page.evaluate("document.body.dataset.backend") == "wasm"
    page.fill("#temperature", "0")
    page.fill("#prompt", QUESTION)
    page.press("#prompt", "Enter")
    page.wait_for_selector("#messages li.assistant[data-done]", timeout=600_000)
    assert page.inner_text("#messages li.assistant") == ANSWER_TEXT
    assert "WASM" in page.inner_text("#stats") and "tok/s" in page.inner_text("#stats")


@pytest.mark.parametrize("threads", [1, 2])
def test_q4f32_1_runs_on_the_cpu_without_webgpu_as_the_python_build_does(threads, no_gpu_page, server, model_build):
    request = {"messages": [{"role": "user", "content": QUESTION}], "temperature": 0, "max_tokens": 32}
    result = run_engine(no_gpu_page, server, "smollm2-q4f32_1", request, threads=threads)
    assert result["usage"]["extra"]["backend"] == "wasm"
    assert result["usage"]["extra"]["threads"] == threads
    expected = cpu_greedy_text(model_build(SMOLLM, "q4f32_1", "cpu"), request["messages"], 32)
    assert result["text"] == expected


def test_auto_reports_the_cpu_backend_and_why(no_gpu_page, server):
    result = no_gpu_page.evaluate(PROGRESS_JS, [f"{server}models/tiny-q0f32/", {}])
    assert result["backend"] == "wasm" and result["usage"]["extra"]["backend"] == "wasm"
    assert result["ready"] and result["ready"][-1]["backend"] == "wasm"
    assert result["ready"][-1]["fallbackReason"] == "no-webgpu" == result["fallbackReason"]


@pytest.mark.parametrize("worker", [False, True], ids=["main-thread", "worker"])
def test_auto_runs_the_cpu_module_on_a_software_adapter_and_says_why(worker, gpu_page, server):
    """Chromium's WebGPU here is SwiftShader (a CPU implementation): "auto" picks the WASM module and
    reports "software-adapter"; backend "webgpu" still runs WebGPU on it."""
    adapter = gpu_page.evaluate(ADAPTER_JS)
    assert adapter["fallback"] is True and adapter["architecture"] == "swiftshader", adapter
    url = f"{server}models/tiny-q0f32/"
    auto = gpu_page.evaluate(PROGRESS_JS, [url, {"worker": worker}])
    assert auto["backend"] == "wasm" and auto["usage"]["extra"]["backend"] == "wasm"
    assert auto["fallbackReason"] == "software-adapter"
    assert auto["ready"][-1]["fallbackReason"] == "software-adapter"
    assert "swiftshader" in auto["ready"][-1]["fallbackDetail"]
    forced = gpu_page.evaluate(PROGRESS_JS, [url, {"worker": worker, "backend": "webgpu"}])
    assert forced["backend"] == "webgpu" and forced["usage"]["extra"]["backend"] == "webgpu"
    assert forced["fallbackReason"] is None and "fallbackReason" not in forced["ready"][-1]


@pytest.mark.parametrize("quantization", ["q0f32", "q4f32_1"])
def test_cpu_module_greedy_ids_equal_webgpu_module_and_python_build(quantization, gpu_page, server, model_build,
                                                                     tiny_llama_dirs):
    """32 greedy tokens: the tiny vocabulary decodes ids to distinct words, so equal text is equal ids."""
    request = {"messages": TINY_MESSAGES, "temperature": 0, "max_tokens": 32}
    wasm = run_engine(gpu_page, server, f"tiny-{quantization}", request, backend="wasm", threads=1)
    threaded = run_engine(gpu_page, server, f"tiny-{quantization}", request, backend="wasm", threads=2)
    webgpu = run_engine(gpu_page, server, f"tiny-{quantization}", request, backend="webgpu")
    python = cpu_greedy_text(model_build(tiny_llama_dirs["untied"][0], quantization, "cpu"), TINY_MESSAGES, 32)
    assert wasm["usage"]["extra"]["backend"] == "wasm" and webgpu["usage"]["extra"]["backend"] == "webgpu"
    assert (wasm["usage"]["extra"]["threads"], threaded["usage"]["extra"]["threads"]) == (1, 2)
    assert wasm["usage"]["completion_tokens"] == threaded["usage"]["completion_tokens"] == 32
    assert webgpu["usage"]["completion_tokens"] == 32
    assert wasm["text"].strip() == threaded["text"].strip() == webgpu["text"].strip() == python.strip()
