"""The runtime, the chat page and the server together in headless chromium (WebGPU on SwiftShader).

SwiftShader is a software adapter, so backend "auto" runs the WASM module here: the tests about the
WebGPU module ask for backend "webgpu"; those where the backend does not matter (the page, caches,
errors) take what a user on this machine gets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

from browser_support import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    REPO,
    cpu_greedy_text,
    page_at,
    run_engine,
    webbuild_server,
)
from smollm_facts import QUESTION
from tiny_models import hf_greedy
from webbuild.runner import CpuModel

ANSWER_TEXT = "The capital of France is Paris."
TINY_MESSAGES = [{"role": "user", "content": "w5 w9 w33 w100 w7"}]
LOAD_TIMEOUT_MS = 300_000




TURN_JS = """async ([url, request]) => {
  const wb = await import('/dist/webbuild.js');
  window.__engine ??= await wb.createEngine(url, {backend: 'webgpu'});
  const response = await window.__engine.chat.completions.create(request);
  return {text: response.choices[0].message.content, usage: response.usage};
}"""

# non-Llama architectures decoded in the browser (tests/arch_cases.py names): recurrent state,
# learned absolute positions, parallel block with partial rotary, Gemma 3 (post norms, per-layer RoPE, window)
BROWSER_ARCHS = ("rwkv", "gpt_bigcode", "phi", "gemma3")


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_llama_dirs, model_build, arch_checkpoint):
    """A served models folder: tiny llama (q0f32, q4f32_1), SmolLM2 q0f32, tiny non-Llama models,
    and a corrupted copy."""
    root = tmp_path_factory.mktemp("served")
    tiny = tiny_llama_dirs["untied"][0]
    folders = {
        "tiny-q0f32": model_build(tiny, "q0f32", "webgpu"),
        "tiny-q4f32_1": model_build(tiny, "q4f32_1", "webgpu"),
        "smollm2-q0f32": model_build("smollm2-135m-instruct", "q0f32", "webgpu"),
        "tiny-q4f16_1": model_build(tiny, "q4f16_1", "webgpu"),
        **{f"arch-{name}": model_build(arch_checkpoint(name), "q0f32", "webgpu") for name in BROWSER_ARCHS},
    }
    for name, folder in folders.items():
        shutil.copytree(folder, root / name, copy_function=os.link)  # hard links: no copy of the weights
    corrupt = root / "tiny-corrupt"
    shutil.copytree(folders["tiny-q4f32_1"], corrupt)  # a real copy: one shard gets damaged
    shard = corrupt / "params_shard_0.bin"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    return root


@pytest.fixture(scope="module")
def server(models):
    if not (REPO / "dist" / "webbuild.js").exists():
        subprocess.run(["npm", "run", "build"], cwd=REPO, check=True)
    with webbuild_server(models) as url:
        yield url


@pytest.fixture()
def page(browser, server):
    with page_at(browser, server) as pg:
        yield pg


def test_chat_page_answers_the_capital_of_france(page, server):
    page.goto(f"{server}?model=smollm2-q0f32&autoload=1")
    page.wait_for_function("['ready','error'].includes(document.body.dataset.state)", timeout=LOAD_TIMEOUT_MS)
    assert page.evaluate("document.body.dataset.state") == "ready", page.inner_text("#error")
    assert page.evaluate("crossOriginIsolated")
    page.fill("#temperature", "0")
    page.fill("#prompt", QUESTION)
    page.press("#prompt", "Enter")
    page.wait_for_selector("#messages li.assistant[data-done]", timeout=900_000)
    assert page.inner_text("#messages li.assistant") == ANSWER_TEXT
    assert "tok/s" in page.inner_text("#stats")


@pytest.mark.parametrize("quantization", ["q0f32", "q4f32_1"])
def test_greedy_completion_equals_cpu_build(quantization, page, server, tiny_llama_dirs, model_build):
    request = {"messages": TINY_MESSAGES, "temperature": 0, "max_tokens": 32}
    result = run_engine(page, server, f"tiny-{quantization}", request, backend="webgpu")
    assert result["backend"] == "webgpu"
    cpu = model_build(tiny_llama_dirs["untied"][0], quantization, "cpu")
    # the tiny word-level vocabulary decodes ids to distinct space-separated words: equal text is equal ids
    assert result["text"].strip() == cpu_greedy_text(cpu, TINY_MESSAGES, 32).strip()
    assert result["usage"]["completion_tokens"] == 32


LOGPROBS_JS = """async ([url, options, request]) => {
  const wb = await import('/dist/webbuild.js');
  const engine = await wb.createEngine(url, options);
  try {
    const whole = await engine.chat.completions.create(request);
    const streamed = [];
    for await (const chunk of await engine.chat.completions.create({...request, stream: true})) {
      streamed.push(...(chunk.choices[0]?.logprobs?.content ?? []));
    }
    return {text: whole.choices[0].message.content, entries: whole.choices[0].logprobs.content, streamed,
            backend: engine.backend};
  } finally { await engine.unload(); }
}"""


@pytest.mark.parametrize("backend", ["webgpu", "wasm"])
def test_logprobs_equal_the_cpu_builds_log_softmax(backend, page, server, models, tiny_llama_dirs, model_build):
    """logprobs / top_logprobs of a greedy reply: each generated token's and its 5 likeliest alternatives'
    log-softmax equal the CPU build's to 1e-4; the stream reports the same tokens."""
    request = {"messages": TINY_MESSAGES, "temperature": 0, "max_tokens": 8, "logprobs": True, "top_logprobs": 5,
               "logit_bias": {"0": -100, "1": -100, "2": -100}}
    result = page.evaluate(LOGPROBS_JS, [f"{server}models/tiny-q0f32/", {"backend": backend}, request])
    assert result["backend"] == backend
    entries = result["entries"]
    assert len(entries) == 8 and [e["token"] for e in result["streamed"]] == [e["token"] for e in entries]
    # the streamed request reuses the first one's KV cache (its prompt is not prefilled again): last bits differ
    assert max(abs(a["logprob"] - b["logprob"]) for a, b in zip(result["streamed"], entries)) <= 1e-5
    tok = Tokenizer.from_file(str(models / "tiny-q0f32" / "tokenizer.json"))
    tokens = [tok.token_to_id(e["token"]) for e in entries]
    assert result["text"].strip() == _words(tokens)
    cpu = CpuModel(model_build(tiny_llama_dirs["untied"][0], "q0f32", "cpu"))
    steps = [cpu.prefill(_tiny_prompt_ids(models / "tiny-q0f32", TINY_MESSAGES))] + [cpu.decode(t) for t in tokens[:-1]]
    for entry, token, logits in zip(entries, tokens, steps):
        logits = logits.astype(np.float64)
        expected = logits - (logits.max() + np.log(np.exp(logits - logits.max()).sum()))  # log-softmax, (vocab,)
        assert abs(entry["logprob"] - expected[token]) <= 1e-4
        assert entry["bytes"] == list(entry["token"].encode())
        top = [tok.token_to_id(t["token"]) for t in entry["top_logprobs"]]
        assert top == list(np.argsort(-expected, kind="stable")[:5])
        assert max(abs(t["logprob"] - expected[i]) for t, i in zip(entry["top_logprobs"], top)) <= 1e-4


COMPLETIONS_JS = """async ([url, options, requests]) => {
  const wb = await import('/dist/webbuild.js');
  const engine = await wb.createEngine(url, options);
  try {
    const out = [];
    for (const request of requests) {
      const whole = await engine.completions.create(request);
      const chunks = [];
      for await (const chunk of await engine.completions.create({...request, stream: true})) chunks.push(chunk);
      out.push({whole, chunks});
    }
    return out;
  } finally { await engine.unload(); }
}"""
TINY_PROMPT = "w5 w9 w33 w100 w7"
BANNED = {"0": -100, "1": -100, "2": -100}  # <unk>, <s>, </s>: equal text is then equal ids


@pytest.mark.parametrize("options", [{"backend": "wasm"}, {"backend": "webgpu", "worker": True}])
def test_completions_continue_a_raw_prompt_like_the_cpu_build(options, page, server, models, tiny_llama_dirs,
                                                               model_build):
    """engine.completions.create: a raw prompt (no chat template) continued greedily gives the CPU build's ids
    with its logprobs (legacy format); echo prepends the prompt; n = 3 with a seed gives three choices, the
    same again, streamed or not."""
    greedy = {"prompt": TINY_PROMPT, "temperature": 0, "max_tokens": 8, "logprobs": 2, "logit_bias": BANNED}
    seeded = {"prompt": TINY_PROMPT, "temperature": 1, "max_tokens": 8, "n": 3, "seed": 11, "echo": True,
              "logit_bias": BANNED}
    (first, second) = page.evaluate(COMPLETIONS_JS, [f"{server}models/tiny-q0f32/", options, [greedy, seeded]])
    folder = models / "tiny-q0f32"
    config = json.loads((folder / "chat-config.json").read_text())
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    ids = tok.encode(TINY_PROMPT, add_special_tokens=False).ids
    if config.get("add_bos_token") and config.get("bos_token_id") is not None:
        ids = [config["bos_token_id"]] + ids
    cpu = CpuModel(model_build(tiny_llama_dirs["untied"][0], "q0f32", "cpu"))
    logits, tokens = cpu.prefill(ids), []
    for _ in range(8):
        logits[:3] = -np.inf  # the banned ids
        tokens.append(int(np.argmax(logits)))
        logits = cpu.decode(tokens[-1])
    whole = first["whole"]
    assert whole["object"] == "text_completion" and whole["id"].startswith("cmpl-")
    assert whole["choices"][0]["text"].strip() == _words(tokens)
    legacy = whole["choices"][0]["logprobs"]
    assert [tok.token_to_id(t) for t in legacy["tokens"]] == tokens
    assert len(legacy["top_logprobs"]) == 8 and all(len(t) == 2 for t in legacy["top_logprobs"])
    streamed = "".join(c["choices"][0]["text"] for c in first["chunks"] if c["choices"])
    assert streamed == whole["choices"][0]["text"]
    assert whole["usage"]["prompt_tokens"] == len(ids)

    texts = [c["text"] for c in second["whole"]["choices"]]
    assert [c["index"] for c in second["whole"]["choices"]] == [0, 1, 2]
    assert all(t.startswith(TINY_PROMPT) and len(t.split()) == 5 + 8 for t in texts)
    assert len(set(texts)) == 3
    again = ["".join(c["choices"][0]["text"] for c in second["chunks"]
                     if c["choices"] and c["choices"][0]["index"] == i) for i in range(3)]
    assert again == texts, "the same seed streams the same choices"
    assert second["whole"]["usage"]["completion_tokens"] == 24


def _tiny_prompt_ids(folder: Path, messages) -> list[int]:
    """The runtime's prompt ids for `messages`: chat template, then the tokenizer (no special tokens)."""
    config = json.loads((folder / "chat-config.json").read_text())
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    prompt = env.from_string(config["chat_template"]).render(messages=messages, add_generation_prompt=True)
    return Tokenizer.from_file(str(folder / "tokenizer.json")).encode(prompt, add_special_tokens=False).ids


def _words(ids: list[int]) -> str:
    """What the tiny word-level tokenizer decodes `ids` to (ids 3.. are the words w3..)."""
    return " ".join(f"w{i}" for i in ids)


@pytest.mark.parametrize("arch", BROWSER_ARCHS)
def test_non_llama_greedy_ids_equal_transformers(arch, page, server, models, arch_checkpoint):
    """Greedy decoding in chromium (WebGPU) gives transformers' greedy ids for the same prompt, over two
    turns: the second reuses the state the first left (KV cache or RNN state)."""
    source = arch_checkpoint(arch)
    served = models / f"arch-{arch}"
    messages = list(TINY_MESSAGES)
    for turn in range(2):
        ids = _tiny_prompt_ids(served, messages)
        # <unk> and <s> decode to nothing: banning them (logit_bias) makes equal text mean equal ids
        expected = [t for t in hf_greedy(source, ids, 24, banned=(0, 1)) if t != 2]
        request = {"messages": messages, "temperature": 0, "max_tokens": 24, "logit_bias": {"0": -100, "1": -100}}
        result = page.evaluate(TURN_JS, [f"{server}models/arch-{arch}/", request])
        assert result["text"].strip() == _words(expected), f"turn {turn}"
        if turn == 1:
            assert result["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
        messages += [{"role": "assistant", "content": result["text"].strip()}, {"role": "user", "content": "w8 w21"}]
    page.evaluate("async () => { await window.__engine.unload(); delete window.__engine; }")


def test_worker_mode_matches_main_thread(page, server):
    request = {"messages": TINY_MESSAGES, "temperature": 0, "max_tokens": 16, "stream": True}
    main = run_engine(page, server, "tiny-q4f32_1", request, worker=False, backend="webgpu")
    worker = run_engine(page, server, "tiny-q4f32_1", request, worker=True, backend="webgpu")
    assert worker["text"] == main["text"] and worker["finish"] == main["finish"] == "length"
    assert (worker["backend"], worker["threads"]) == (main["backend"], main["threads"]) == ("webgpu", 1)


@pytest.mark.parametrize("store", ["cache", "indexeddb", "opfs"])
def test_second_load_reads_shards_from_the_cache(store, browser, server):
    shard_requests = []
    on_request = {"request": lambda r: "params_shard_" in r.url and shard_requests.append(r.url)}
    with page_at(browser, server, on=on_request) as page:
        request = {"messages": TINY_MESSAGES, "max_tokens": 2, "temperature": 0}
        first = run_engine(page, server, "tiny-q0f32", request, cache=store)
        assert shard_requests, "the first load fetches the shards"
        shard_requests.clear()
        page.reload()
        second = run_engine(page, server, "tiny-q0f32", request, cache=store)
        assert shard_requests == []
        assert second["text"] == first["text"]


def test_corrupted_shard_gives_integrity_error(page, server):
    page.goto(f"{server}?model=tiny-corrupt&autoload=1&worker=0")
    page.wait_for_function("['ready','error'].includes(document.body.dataset.state)", timeout=LOAD_TIMEOUT_MS)
    assert page.evaluate("document.body.dataset.state") == "error"
    assert page.get_attribute("#error", "data-code") == "integrity"
    assert "params_shard_0.bin" in page.inner_text("#error")
    assert page.inner_text("#messages") == ""


ABORT_JS = """async ([url]) => {
  const wb = await import('/dist/webbuild.js');
  const engine = await wb.createEngine(url, {});
  const request = {messages: [{role: 'user', content: 'w5 w9'}], temperature: 0, max_tokens: 200, stream: true};
  const controller = new AbortController();
  let chunks = 0, abortedAt = 0, finish = null;
  for await (const chunk of await engine.chat.completions.create({...request, signal: controller.signal})) {
    chunks++;
    finish = chunk.choices[0]?.finish_reason ?? finish;
    if (chunks === 4) { abortedAt = performance.now(); controller.abort(); }
  }
  const stopSeconds = (performance.now() - abortedAt) / 1000;
  const next = await engine.chat.completions.create({...request, max_tokens: 3, stream: false});
  let interrupted = null, seen = 0;
  for await (const chunk of await engine.chat.completions.create(request)) {
    if (++seen === 3) engine.interrupt();
    interrupted = chunk.choices[0]?.finish_reason ?? interrupted;
  }
  await engine.unload();
  return {chunks, finish, stopSeconds, next: next.usage.completion_tokens, interrupted, seen};
}"""


def test_abort_stops_streaming_quickly_and_the_engine_stays_usable(page, server):
    result = page.evaluate(ABORT_JS, [f"{server}models/tiny-q0f32/"])
    assert result["finish"] == "abort" and result["chunks"] < 10
    assert result["stopSeconds"] < 1.0
    assert result["next"] == 3
    assert result["interrupted"] == "abort" and result["seen"] < 10  # engine.interrupt() ends it too


LOAD_ABORT_JS = """async ([url, options, afterMs]) => {
  const wb = await import('/dist/webbuild.js');
  const ctl = new AbortController();
  const started = performance.now();
  let abortedAt = null;
  setTimeout(() => { abortedAt = performance.now(); ctl.abort(); }, afterMs);
  try {
    const engine = await wb.createEngine(url, {...options, cache: 'none', signal: ctl.signal});
    await engine.unload();
    return {loaded: true, seconds: (performance.now() - started) / 1000};
  } catch (err) {
    return {code: err.code, latency: (performance.now() - abortedAt) / 1000};
  }
}"""


@pytest.mark.parametrize("worker", [False, True], ids=["main-thread", "worker"])
def test_an_aborted_load_rejects_with_aborted(worker, page, server):
    """createEngine's signal ends a load in progress (in a worker: the worker is terminated) with a
    typed `aborted` error, soon after the abort."""
    url = f"{server}models/smollm2-q0f32/"  # 540 MB of shards: still loading after 300 ms
    result = page.evaluate(LOAD_ABORT_JS, [url, {"worker": worker, "backend": "wasm"}, 300])
    assert result.get("code") == "aborted", result
    assert result["latency"] < 2.0, result


def test_npm_pack_tarball_runs_in_a_scratch_page(browser, models, tmp_path):
    subprocess.run(["npm", "run", "build"], cwd=REPO, check=True, capture_output=True)
    packed = subprocess.run(["npm", "pack", "--pack-destination", str(tmp_path), "--json"], cwd=REPO, check=True,
                            capture_output=True, text=True)
    tarball = tmp_path / json.loads(packed.stdout)[0]["filename"]
    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text(json.dumps({"name": "scratch-app", "private": True}))
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--offline", str(tarball)], cwd=app, check=True,
                   capture_output=True)
    (app / "index.html").write_text("<!doctype html><title>scratch</title>")
    script = """async ([url]) => {
      const { createEngine } = await import('/node_modules/webbuild/dist/webbuild.js');
      const engine = await createEngine(url);
      const messages = [{role: 'user', content: 'w5 w9 w33'}];
      const plain = await engine.chat.completions.create({messages, temperature: 0, max_tokens: 6});
      let streamed = '';
      const stream = await engine.chat.completions.create({messages, temperature: 0, max_tokens: 6, stream: true});
      for await (const c of stream)
        streamed += c.choices[0]?.delta?.content ?? '';
      await engine.unload();
      return {plain: plain.choices[0].message.content, streamed};
    }"""
    with webbuild_server(models, site=app) as url, page_at(browser, url) as page:
        result = page.evaluate(script, [f"{url}models/tiny-q4f32_1/"])
    assert result["plain"] and result["plain"] == result["streamed"]


ERROR_JS = """async ([url, request, options]) => {
  const wb = await import('/dist/webbuild.js');
  try {
    const engine = await wb.createEngine(url, options ?? {});
    try { await engine.chat.completions.create(request); } finally { await engine.unload(); }
    return null;
  } catch (err) { return {code: err.code, isWebbuildError: err instanceof wb.WebbuildError, fix: err.fix}; }
}"""


def test_missing_shader_f16_is_a_typed_error(page, server):
    """SwiftShader has no shader-f16: on WebGPU an f16 model says so and suggests the f32 variant."""
    error = page.evaluate(ERROR_JS, [f"{server}models/tiny-q4f16_1/", {"messages": TINY_MESSAGES},
                                     {"backend": "webgpu"}])
    assert error["code"] == "missing-shader-f16" and error["isWebbuildError"] and "f32" in error["fix"]


def test_context_window_exceeded_is_a_typed_error(page, server):
    long_prompt = " ".join(f"w{3 + i % 300}" for i in range(300))  # the tiny model's window is 256 tokens
    request = {"messages": [{"role": "user", "content": long_prompt}]}
    error = page.evaluate(ERROR_JS, [f"{server}models/tiny-q0f32/", request])
    assert error["code"] == "context-window-exceeded"


def test_forcing_webgpu_without_webgpu_is_a_typed_error_with_a_fix(browser, server):
    flags = [f for f in CHROMIUM_FLAGS if f != "--enable-unsafe-webgpu"] + ["--disable-webgpu"]
    plain = browser.browser_type.launch(executable_path=CHROMIUM, headless=True, args=flags)
    try:
        with page_at(plain, server) as page:
            error = page.evaluate(ERROR_JS, [f"{server}models/tiny-q0f32/", {"messages": TINY_MESSAGES},
                                             {"backend": "webgpu"}])
    finally:
        plain.close()
    assert error["code"] == "no-webgpu" and error["isWebbuildError"]
    assert '"wasm"' in error["fix"] and '"auto"' in error["fix"]


def test_seeded_sampling_is_reproducible(page, server):
    request = {"messages": TINY_MESSAGES, "temperature": 1.0, "top_p": 0.9, "seed": 1234, "max_tokens": 12}
    first = run_engine(page, server, "tiny-q4f32_1", request)
    again = run_engine(page, server, "tiny-q4f32_1", request)
    other = run_engine(page, server, "tiny-q4f32_1", {**request, "seed": 99})
    assert first["text"] == again["text"] and first["text"] != other["text"]


MULTI_TURN_JS = """async ([url, backend]) => {
  const wb = await import('/dist/webbuild.js');
  const ask = async (engine, messages) => {
    const r = await engine.chat.completions.create({messages, temperature: 0, max_tokens: 8});
    return {text: r.choices[0].message.content, usage: r.usage};
  };
  const engine = await wb.createEngine(url, {backend});
  const turn1 = [{role: 'user', content: 'w5 w9 w33'}];
  const first = await ask(engine, turn1);
  const turn2 = [...turn1, {role: 'assistant', content: first.text}, {role: 'user', content: 'w40 w41'}];
  const second = await ask(engine, turn2);
  await engine.resetChat();
  const fresh = await ask(engine, turn2);
  await engine.unload();
  return {first, second, fresh};
}"""


@pytest.mark.parametrize("backend", ["webgpu", "wasm"])
def test_multi_turn_chat_reuses_the_kv_cache(backend, page, server):
    r = page.evaluate(MULTI_TURN_JS, [f"{server}models/tiny-q0f32/", backend])
    cached = r["second"]["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached >= r["first"]["usage"]["prompt_tokens"]  # the first turn's prompt was not prefilled again
    assert cached < r["second"]["usage"]["prompt_tokens"]
    assert r["fresh"]["usage"]["prompt_tokens_details"]["cached_tokens"] == 0  # resetChat forgot it
    assert r["second"]["text"] == r["fresh"]["text"]  # reusing the cache changes nothing in the answer


# ----------------------------------------------------------------------------- the chat page: markdown,
# sampling controls, download size and "Remove from cache"

HOSTILE_MARKDOWN = """**bold** and a list:

- one
- two

| city | country |
|------|---------|
| Paris | France |

```python
print("hi")
```

<img src=x onerror="window.__pwned = 'img'"> <script>window.__pwned = 'script'</script>
[js link](javascript:window.__pwned='link') <a href="https://example.com/" onclick="window.__pwned='click'">ok</a>
"""

RENDER_JS = """async (text) => {
  const { renderMarkdownInto } = await import('/dist/site-markdown.js');
  const div = document.createElement('div');
  div.id = 'rendered';
  document.body.append(div);
  renderMarkdownInto(div, text);
  await new Promise((resolve) => setTimeout(resolve, 50));  // an onerror would have fired by now
  const q = (s) => [...div.querySelectorAll(s)];
  return {
    strong: q('strong').map((e) => e.textContent),
    items: q('ul > li').map((e) => e.textContent),
    cells: q('table th, table td').map((e) => e.textContent),
    code: q('.code-block pre code').map((e) => e.textContent),
    copyButtons: q('.code-block > button.copy').length,
    dangerous: q('img, script, iframe, style, form, input').length,
    handlers: q('*').flatMap((e) => [...e.attributes].map((a) => a.name)).filter((n) => n.startsWith('on')),
    links: q('a').map((a) => ({href: a.getAttribute('href'), rel: a.rel, target: a.target})),
    pwned: window.__pwned ?? null,
  };
}"""


def test_chat_page_markdown_renderer_keeps_markdown_and_drops_html(browser, server):
    with page_at(browser, server, permissions=["clipboard-read", "clipboard-write"]) as page:
        r = page.evaluate(RENDER_JS, HOSTILE_MARKDOWN)
        assert r["strong"] == ["bold"] and r["items"] == ["one", "two"]
        assert r["cells"] == ["city", "country", "Paris", "France"]
        assert r["code"] == ['print("hi")\n'] and r["copyButtons"] == 1
        assert r["dangerous"] == 0 and r["handlers"] == [] and r["pwned"] is None
        safe_link = {"href": "https://example.com/", "rel": "noopener noreferrer nofollow", "target": "_blank"}
        assert r["links"] == [{"href": None, "rel": "", "target": ""}, safe_link]
        page.click("#rendered button.copy")
        page.wait_for_function("document.querySelector('#rendered button.copy').textContent === 'Copied'")
        assert page.evaluate("navigator.clipboard.readText()") == 'print("hi")\n'


def _page_ready(page):
    page.wait_for_function("['ready','error'].includes(document.body.dataset.state)", timeout=LOAD_TIMEOUT_MS)
    assert page.evaluate("document.body.dataset.state") == "ready", page.inner_text("#error")


def _page_answer(page, prompt: str) -> None:
    page.fill("#prompt", prompt)
    page.press("#prompt", "Enter")
    page.wait_for_selector("#messages li.assistant[data-done]", timeout=LOAD_TIMEOUT_MS)


def test_chat_page_renders_answers_as_markdown_and_prompts_as_text(page, server):
    # markdown would make the indented line a code block; the tiny word-level tokenizer knows only
    # words "wN" (its JS library maps other text to undefined ids, so no markup characters here)
    prompt = "w5 w9\n\n    w33 w100 w7"
    page.goto(f"{server}?model=tiny-q0f32&autoload=1&max_tokens=12")
    _page_ready(page)
    page.fill("#temperature", "0")
    _page_answer(page, prompt)
    user = page.evaluate("(e => ({text: e.textContent, children: e.children.length}))"
                         "(document.querySelector('#messages li.user'))")
    assert user == {"text": prompt, "children": 0}  # the user's markup stays text
    sampling = {"temperature": 0, "top_p": float(page.input_value("#top-p")),
                "repetition_penalty": float(page.input_value("#repetition-penalty"))}
    expected = run_engine(page, server, "tiny-q0f32", {"messages": [{"role": "user", "content": prompt}],
                                                       "max_tokens": 12, **sampling})["text"]
    answer = page.evaluate("(e => ({tags: [...e.children].map((c) => c.tagName), text: e.textContent.trim()}))"
                           "(document.querySelector('#messages li.assistant'))")
    assert answer == {"tags": ["P"], "text": expected.strip()}  # the tiny model's words: one markdown paragraph


def test_chat_page_sampling_controls_show_the_models_defaults_and_requests_send_them(page, server, models):
    # a copy of tiny-q0f32 whose chat-config.json has its own sampling defaults
    folder = models / "tiny-sampling"
    if not folder.exists():
        shutil.copytree(models / "tiny-q0f32", folder, copy_function=os.link)
        config_path = folder / "chat-config.json"
        config = json.loads(config_path.read_text())
        config["sampling"].update(temperature=0.35, top_p=0.8, repetition_penalty=1.5)
        config_path.unlink()  # a hard link to the original: write a new file
        config_path.write_text(json.dumps(config))
    page.goto(f"{server}?model=tiny-sampling&autoload=1&max_tokens=16")
    _page_ready(page)
    assert [page.input_value(s) for s in ("#temperature", "#top-p", "#repetition-penalty")] == ["0.35", "0.8", "1.5"]
    page.fill("#temperature", "0")
    page.fill("#repetition-penalty", "1")
    _page_answer(page, TINY_MESSAGES[0]["content"])
    shown = page.inner_text("#messages li.assistant")
    request = {"messages": TINY_MESSAGES, "max_tokens": 16, "temperature": 0}
    sent = run_engine(page, server, "tiny-sampling", {**request, "repetition_penalty": 1.0})["text"]
    model_default = run_engine(page, server, "tiny-sampling", request)["text"]  # repetition_penalty 1.5
    assert sent != model_default, "the penalty must change this answer for the test to tell them apart"
    assert shown == sent.strip()


STORE_ENTRIES_JS = """async (kind) => {
  if (kind === 'cache') return (await (await caches.open('webbuild')).keys()).length;
  if (kind === 'indexeddb') {
    return await new Promise((resolve, reject) => {
      const open = indexedDB.open('webbuild', 1);
      open.onupgradeneeded = () => open.result.createObjectStore('files');
      open.onerror = () => reject(open.error);
      open.onsuccess = () => {
        const count = open.result.transaction('files').objectStore('files').count();
        count.onsuccess = () => { open.result.close(); resolve(count.result); };
        count.onerror = () => reject(count.error);
      };
    });
  }
  const dir = await (await navigator.storage.getDirectory()).getDirectoryHandle('webbuild', {create: true});
  let n = 0;
  for await (const _ of dir.keys()) n++;
  return n;
}"""


@pytest.mark.parametrize("store", ["cache", "indexeddb", "opfs"])
def test_chat_page_shows_the_download_size_and_removes_the_model_from_the_cache(store, browser, server, models):
    shards = json.loads((models / "tiny-q0f32" / "tensor-cache.json").read_text())["shards"]
    shard_requests = []
    on_request = {"request": lambda r: "params_shard_" in r.url and shard_requests.append(r.url)}
    info = "document.getElementById('model-info').dataset"
    with page_at(browser, f"{server}?model=tiny-q0f32&cache={store}", on=on_request) as page:
        page.wait_for_function(f"{info}.downloadBytes !== undefined")
        assert page.evaluate(f"{info}.downloadBytes") == str(sum(s["nbytes"] for s in shards))
        assert page.evaluate(f"{info}.cached") == "false"
        assert page.inner_text("#model-info").startswith("Download ") and "not cached" in page.inner_text("#model-info")
        assert page.is_disabled("#remove-cache")
        assert shard_requests == []  # the size comes from tensor-cache.json, not a download

        page.click("#load")
        _page_ready(page)
        assert len(shard_requests) == len(shards)
        page.wait_for_function(f"{info}.cached === 'true'")
        assert page.evaluate(STORE_ENTRIES_JS, store) > 0
        assert page.is_enabled("#remove-cache")

        page.click("#remove-cache")
        page.wait_for_function(f"{info}.cached === 'false' && {info}.cachedShards === '0'")
        assert page.evaluate(STORE_ENTRIES_JS, store) == 0  # shards, metadata and module copies are gone
        assert page.is_disabled("#remove-cache")

        shard_requests.clear()
        page.click("#load")  # loading again downloads the shards again
        _page_ready(page)
        assert len(shard_requests) == len(shards)


# ----------------------------------------------------------------------------- the chat page: JSON mode
# and code blocks (screenshots kept under out/test-artifacts/)

ARTIFACTS = REPO / "out" / "test-artifacts"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _screenshot(locator, name: str) -> Path:
    """`locator`'s screenshot as out/test-artifacts/<name>, checked to be a non-empty PNG."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    path.unlink(missing_ok=True)
    locator.screenshot(path=str(path))
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 0 and height > 0
    return path


def test_chat_page_json_mode_answers_with_a_pretty_printed_json_object(page, server):
    # SmolLM2 on WASM (~8 s): the tiny llama models' word-level vocabulary cannot spell JSON, and a tiny
    # random model on SmolLM2's vocabulary answers "{}" to every prompt, which shows no pretty-printing
    page.goto(f"{server}?model=smollm2-q0f32&autoload=1&backend=wasm&json=1&max_tokens=48")
    _page_ready(page)
    assert page.evaluate("document.body.dataset.backend") == "wasm"
    assert page.is_checked("#json-mode")  # &json=1 turned it on
    page.fill("#temperature", "0")
    _page_answer(page, "What is the capital of France? Answer in JSON.")
    bubble = page.locator("#messages li.assistant").last
    assert bubble.get_attribute("data-format") == "json"
    assert bubble.get_attribute("data-json") == "pretty", bubble.inner_text()
    code = bubble.locator(".code-block pre code")
    assert code.count() == 1 and "language-json" in (code.get_attribute("class") or "")
    shown = code.text_content()
    value = json.loads(shown)  # what the page shows parses: a JSON object
    assert isinstance(value, dict) and value
    assert shown == json.dumps(value, indent=2, ensure_ascii=False) + "\n"  # pretty (the model wrote it compact)
    _screenshot(bubble, "chat-page-json-mode.png")

    page.uncheck("#json-mode")  # off again: gone from the URL, and the next answer is free text
    assert "json=" not in page.url and "model=smollm2-q0f32" in page.url
    page.fill("#prompt", "Thanks! Say it in one sentence.")
    page.press("#prompt", "Enter")
    page.wait_for_function("document.querySelectorAll('#messages li.assistant[data-done]').length === 2",
                           timeout=LOAD_TIMEOUT_MS)
    second = page.locator("#messages li.assistant").last
    assert second.get_attribute("data-format") is None and second.get_attribute("data-json") is None
    page.check("#json-mode")
    assert "json=1" in page.url


FENCED = """A fenced block:

```python
def greet(name):
    return f"hello {name}"
```
"""

CHAT_BUBBLE_JS = """async (text) => {
  const { renderMarkdownInto } = await import('/dist/site-markdown.js');
  const li = document.createElement('li');  // a chat page answer bubble, as app.js adds one
  li.className = 'assistant';
  li.dataset.done = 'true';
  document.getElementById('messages').append(li);
  renderMarkdownInto(li, text);
  const code = li.querySelector('.code-block pre code');
  const style = code && getComputedStyle(code);
  return {code: code?.textContent ?? null, cls: code?.className ?? null, font: style?.fontFamily ?? null,
          whiteSpace: style ? getComputedStyle(code.parentElement).whiteSpace : null,
          copy: li.querySelectorAll('.code-block > button.copy').length};
}"""


def test_chat_page_renders_a_fenced_code_block_as_code_and_keeps_a_screenshot(page):
    r = page.evaluate(CHAT_BUBBLE_JS, FENCED)
    assert r["code"] == 'def greet(name):\n    return f"hello {name}"\n'
    assert "language-python" in r["cls"] and r["copy"] == 1
    assert "monospace" in r["font"] and r["whiteSpace"] == "pre"  # shown as code: monospace, lines kept
    path = _screenshot(page.locator("#messages li.assistant").last, "chat-page-code-block.png")
    assert path.stat().st_size > 100
