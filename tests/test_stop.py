"""Stop ends a generation within 100 ms on every backend, and the page stays responsive meanwhile.

A wasm forward call is synchronous: the runtime gives the event loop a turn between model calls
(runtime_js/src/event_loop.ts), so `interrupt()`, an AbortSignal (in a worker: the abort message)
and the chat page's Stop button take effect between two calls, in the prefill too. Latencies are
measured in the page with performance.now(), from the abort call to the stream's end or the
request's promise settling. The model is the tiny test Llama with a 2048-token context, so an
answer lasts long enough to be stopped in the middle (its greedy answer to PROMPT never ends).
"""

from __future__ import annotations

import os
import shutil

import pytest

from browser_support import page_at, webbuild_server
from tiny_models import save_tiny_llama

PROMPT = "w5 w9 w33 w100 w7"
MAX_TOKENS = 1500
STOP_MS = 100
TIMER_GAP_MS = 50
LOAD_TIMEOUT_MS = 300_000
BACKENDS = {"wasm-1": {"backend": "wasm", "threads": 1}, "wasm-2": {"backend": "wasm", "threads": 2},
            "webgpu": {"backend": "webgpu"}}

# engines are kept in the page (one per options) across tests, warmed by a first short request
ENGINE_JS = """async ([url, options]) => {
  window.__engines ??= {};
  const key = JSON.stringify(options);
  if (!window.__engines[key]) {
    const wb = await import('/dist/webbuild.js');
    const engine = await wb.createEngine(url, options);
    // warm: a WebGPU kernel's pipeline is compiled at its first call (prefetchShaders compiles
    // them at load), synchronously: a stop waits for that compile (~1 s on SwiftShader)
    await engine.chat.completions.create({messages: [{role: 'user', content: 'w5 w9'}], max_tokens: 2});
    window.__engines[key] = engine;
  }
  return window.__engines[key];
}"""

# One request stopped by `trigger` ("interrupt" or "signal"), fired from a timer `delay` ms after
# the first content chunk arrives (streaming) or after the request starts (non-streaming), then a
# short request on the same engine.
STOP_JS = """async ([url, options, request, trigger, delay]) => {
  const engine = await (ENGINE)([url, options]);
  const ctl = new AbortController();
  let abortAt = null, timer = null;
  const fire = () => { abortAt = performance.now(); trigger === 'interrupt' ? engine.interrupt() : ctl.abort(); };
  const arm = () => { timer ??= setTimeout(fire, delay); };
  let text = '', finish = null, usage = null, chunksAfter = 0;
  if (request.stream) {
    for await (const chunk of await engine.chat.completions.create({...request, signal: ctl.signal})) {
      const delta = chunk.choices[0]?.delta?.content ?? '';
      if (delta) arm();
      if (abortAt !== null) chunksAfter++;
      text += delta;
      finish = chunk.choices[0]?.finish_reason ?? finish;
      usage = chunk.usage ?? usage;
    }
  } else {
    arm();
    const reply = await engine.chat.completions.create({...request, signal: ctl.signal});
    text = reply.choices[0].message.content; finish = reply.choices[0].finish_reason; usage = reply.usage;
  }
  const settled = performance.now();
  const next = await engine.chat.completions.create({messages: request.messages, max_tokens: 8, temperature: 0});
  return {latency: abortAt === null ? null : settled - abortAt, finish, tokens: usage.completion_tokens, chunksAfter,
          backend: engine.backend, threads: engine.threads,
          next: {finish: next.choices[0].finish_reason, tokens: next.usage.completion_tokens,
                 text: next.choices[0].message.content}};
}""".replace("ENGINE", ENGINE_JS)

# Abort as soon as the stream's first chunk (the role, sent before the prefill) arrives: the
# prefill is under way. A prompt starting the same then finds only the tokens prefilled before the
# stop in the KV cache.
PREFILL_JS = """async ([url, options, messages, nextMessages]) => {
  const engine = await (ENGINE)([url, options]);
  await engine.resetChat();
  const ctl = new AbortController();
  let abortAt = null, finish = null, usage = null;
  const stream = await engine.chat.completions.create({messages, stream: true, stream_options: {include_usage: true},
                                                       temperature: 0, max_tokens: 4, signal: ctl.signal});
  for await (const chunk of stream) {
    if (abortAt === null) { abortAt = performance.now(); ctl.abort(); }
    finish = chunk.choices[0]?.finish_reason ?? finish;
    usage = chunk.usage ?? usage;
  }
  const latency = performance.now() - abortAt;
  const next = await engine.chat.completions.create({messages: nextMessages, max_tokens: 4, temperature: 0});
  return {latency, finish, tokens: usage.completion_tokens, prompt: next.usage.prompt_tokens,
          next: {finish: next.choices[0].finish_reason, tokens: next.usage.completion_tokens,
                 cached: next.usage.prompt_tokens_details.cached_tokens}};
}""".replace("ENGINE", ENGINE_JS)

# A 10 ms interval timer during a whole answer on the main thread: the largest gap between ticks.
TIMER_JS = """async ([url, options, request]) => {
  const engine = await (ENGINE)([url, options]);
  const ticks = [];
  const start = performance.now();
  const timer = setInterval(() => ticks.push(performance.now()), 10);
  const reply = await engine.chat.completions.create(request);
  const end = performance.now();
  clearInterval(timer);
  const times = [start, ...ticks, end];
  const gaps = times.slice(1).map((t, i) => t - times[i]);
  return {maxGap: Math.max(...gaps), ticks: ticks.length, ms: end - start, tokens: reply.usage.completion_tokens};
}""".replace("ENGINE", ENGINE_JS)

REPORT: list[str] = []


def report(line: str) -> None:
    """A measured number: printed now (pytest -s) and again after the module's tests."""
    REPORT.append(line)
    print(line, flush=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_build):
    hf = tmp_path_factory.mktemp("tiny_long") / "hf"
    save_tiny_llama(hf, seed=0, max_position_embeddings=2048)
    root = tmp_path_factory.mktemp("served_stop")
    shutil.copytree(model_build(hf, "q0f32", "webgpu"), root / "tiny", copy_function=os.link)
    with webbuild_server(root) as url:
        yield url


@pytest.fixture(scope="module")
def browser(browser):
    """conftest's chromium; the measured stop latencies are printed when the module is done."""
    yield browser
    if REPORT:
        print("\n" + "\n".join(REPORT) + f"\nload average: {os.getloadavg()}")


@pytest.fixture(scope="module")
def engine_page(browser, server):
    """One page for the engine tests: the engines it creates are reused."""
    with page_at(browser, server) as page:
        yield page


def _request(stream: bool) -> dict:
    return {"messages": [{"role": "user", "content": PROMPT}], "temperature": 0, "max_tokens": MAX_TOKENS,
            "stream": stream, "stream_options": {"include_usage": True} if stream else None}


@pytest.mark.parametrize("worker", [False, True], ids=["main", "worker"])
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_stop_ends_generation_within_100_ms(backend, worker, engine_page, server):
    options = {**BACKENDS[backend], "worker": worker}
    for trigger in ("interrupt", "signal"):
        for stream in (True, False):
            result = engine_page.evaluate(STOP_JS, [f"{server}models/tiny/", options, _request(stream), trigger, 20])
            where = f"{backend} {'worker' if worker else 'main'} {trigger} {'stream' if stream else 'await'}"
            report(f"stop latency {where}: {result['latency']:.1f} ms after {result['tokens']} tokens")
            assert result["backend"] == options["backend"] and result["threads"] == options.get("threads", 1)
            assert result["latency"] is not None, where
            # (not streaming, the abort may come before the first token: WebGPU prefill is slow on SwiftShader)
            assert result["finish"] == "abort" and result["tokens"] < MAX_TOKENS, (where, result)
            assert result["tokens"] > 0 or not stream, (where, result)
            assert result["latency"] <= STOP_MS, (where, result)
            assert result["next"]["finish"] == "length" and result["next"]["tokens"] == 8, (where, result)
            assert result["next"]["text"].strip(), where


@pytest.mark.parametrize("worker", [False, True], ids=["main", "worker"])
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_abort_during_prefill(backend, worker, engine_page, server):
    # a prompt of ~1500 tokens takes several prefill calls (the first one 16 tokens)
    words = [f"w{3 + i % 300}" for i in range(1500)]
    # then the first words again (fewer on WebGPU, whose prefill is slow on SwiftShader)
    again = words if backend.startswith("wasm") else words[:64]
    messages, next_messages = ([{"role": "user", "content": " ".join(w)}] for w in (words, again))
    options = {**BACKENDS[backend], "worker": worker}
    result = engine_page.evaluate(PREFILL_JS, [f"{server}models/tiny/", options, messages, next_messages])
    report(f"prefill stop latency {backend} {'worker' if worker else 'main'}: {result['latency']:.1f} ms, "
                  f"{result['next']['cached']} prompt tokens prefilled")
    assert result["finish"] == "abort" and result["tokens"] == 0, result
    assert result["latency"] <= STOP_MS, result
    assert 0 < result["next"]["cached"] < result["prompt"] - 1, "stopped between two prefill calls"
    assert result["next"]["finish"] == "length" and result["next"]["tokens"] == 4, result


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_a_timer_keeps_firing_while_the_main_thread_generates(backend, engine_page, server):
    tokens = 600 if backend.startswith("wasm") else 150
    request = {"messages": [{"role": "user", "content": PROMPT}], "temperature": 0, "max_tokens": tokens}
    result = engine_page.evaluate(TIMER_JS, [f"{server}models/tiny/", {**BACKENDS[backend], "worker": False}, request])
    report(f"main thread {backend}: largest timer gap {result['maxGap']:.1f} ms over {result['ms']:.0f} ms "
                  f"({result['ticks']} ticks, {result['tokens']} tokens)")
    assert result["tokens"] == tokens
    assert result["maxGap"] <= TIMER_GAP_MS, result


def _page_stop(page, prompt: str, turn: int) -> dict:
    """Send `prompt` on the chat page; Stop is clicked (from a timer, set once the answer has three
    words: on WebGPU the decode kernel's first call compiles its pipeline) and the answer ends."""
    page.evaluate("window.__armed = true")
    page.fill("#temperature", "0")  # greedy: the tiny model runs to max_tokens (sampled, it may stop early)
    page.fill("#prompt", prompt)
    page.press("#prompt", "Enter")
    page.wait_for_function("document.body.dataset.state === 'ready' && "
                           f"document.querySelectorAll('#messages li.assistant[data-done]').length === {turn}",
                           timeout=LOAD_TIMEOUT_MS)
    return page.evaluate("""() => ({latency: __doneAt.at(-1) - __stopAt.at(-1), clicks: __stopAt.length,
      words: [...document.querySelectorAll('#messages li.assistant')].at(-1).textContent.trim().split(/\\s+/).length,
      stats: document.getElementById('stats').textContent, error: document.getElementById('error').hidden})""")


@pytest.mark.parametrize("backend,worker", [("wasm-1", True), ("wasm-2", True), ("webgpu", True), ("wasm-1", False)],
                         ids=["wasm-1-worker", "wasm-2-worker", "webgpu-worker", "wasm-1-main"])
def test_chat_page_stop_button(backend, worker, browser, server):
    options = BACKENDS[backend]
    query = f"?model=tiny&autoload=1&backend={options['backend']}&max_tokens={MAX_TOKENS}&worker={int(worker)}"
    if "threads" in options:
        query += f"&threads={options['threads']}"
    with page_at(browser, server + query) as page:
        page.wait_for_function("['ready','error'].includes(document.body.dataset.state)", timeout=LOAD_TIMEOUT_MS)
        assert page.evaluate("document.body.dataset.state") == "ready", page.inner_text("#error")
        # the click's time (capture phase: before the page's own handler), when the answer is done;
        # the click itself comes from a timer: the tiny model answers faster than a driven click
        page.evaluate("""() => {
          window.__stopAt = []; window.__doneAt = [];
          window.addEventListener('click', (e) => {
            if (e.target.id === 'stop') window.__stopAt.push(performance.now());
          }, {capture: true});
          new MutationObserver(() => {
            if (window.__stopAt.length > window.__doneAt.length && document.body.dataset.state === 'ready') {
              window.__doneAt.push(performance.now());
            }
          }).observe(document.body, {attributes: true, attributeFilter: ['data-state']});
          window.__armed = false;
          new MutationObserver(() => {
            const answer = [...document.querySelectorAll('#messages li.assistant')].at(-1);
            if (window.__armed && answer?.textContent.trim().split(/\\s+/).length >= 3) {
              window.__armed = false;
              setTimeout(() => document.getElementById('stop').click(), 0);
            }
          }).observe(document.getElementById('messages'), {childList: true, subtree: true, characterData: true});
        }""")
        for turn in (1, 2):  # the second turn: the next request after a stop answers (and stops) too
            result = _page_stop(page, PROMPT, turn)
            report(f"chat page Stop {backend} {'worker' if worker else 'main'} turn {turn}: "
                          f"{result['latency']:.1f} ms ({result['stats']})")
            assert result["error"], page.inner_text("#error")
            assert result["clicks"] == turn and 0 < result["words"] < MAX_TOKENS, result
            assert result["latency"] <= STOP_MS, result
        assert page.evaluate("document.body.dataset.backend") == options["backend"]
