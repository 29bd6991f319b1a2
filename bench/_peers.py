"""The machinery of the in-browser engine benchmarks (bench/peer_bench.py, bench/wasm_bench.py).

A `Config` is one engine configuration with its own headless chromium (so that the memory of a
browser's process tree is that configuration's alone): a cold load in the fresh browser, a warm load
(from the browser's caches), then generation runs. `measure` runs a warm-up round and measured rounds,
each running every configuration once (interleaved, so a change in the machine's background load hits
all alike), and keeps going when one configuration fails (it is skipped with the reason recorded).

Instrumentation is kept light: the peak memory of the browser that is working is sampled by one
thread every `interval` seconds (sum of PSS from /proc/<pid>/smaps_rollup over the chromium process
tree), and WebGPU calls are counted by wrapping a few prototype methods in the page.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from _common import REPO

sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from browser_support import launch_chromium  # noqa: E402
from webbuild.serve.app import ISOLATION_HEADERS  # noqa: E402

QUESTION = "What is the capital of France?"
WLLAMA_DIR = REPO / "node_modules" / "@wllama" / "wllama"
METRICS = ("ttft_s", "prefill_tok_s", "decode_tok_s", "client_ttft_s", "client_decode_tok_s")

# Both webbuild and wllama stream; the client timings are taken the same way for both.
STREAM_JS = """
async function drain(stream) {
  const t0 = window.__t0;
  let text = '', first = null, last = null, usage = null, timings = null, finish = null;
  for await (const c of stream) {
    const d = c.choices?.[0]?.delta?.content ?? c.choices?.[0]?.text;  // chat or raw completion chunks
    if (d) { const now = performance.now(); first ??= now; last = now; text += d; }
    finish = c.choices?.[0]?.finish_reason ?? finish;
    usage = c.usage ?? usage;
    timings = c.timings ?? timings;
  }
  const end = performance.now();
  return {text, usage, timings, finish, wall_s: (end - t0) / 1000,
          client_ttft_s: first === null ? null : (first - t0) / 1000,
          client_stream_s: first === null ? 0 : (last - first) / 1000};
}
"""

# Every engine gets the same context window (KV cache size), as wllama's n_ctx and webbuild's contextWindow.
CONTEXT_WINDOW = 1024

# The engine runs on the page's main thread (createEngine's default), where these counters see it.
WEBBUILD_LOAD_JS = """async ([url, options]) => {
  const wb = await import('/dist/webbuild.js');
  if (window.engine) { await window.engine.unload(); window.engine = null; }
  const t0 = performance.now();
  window.engine = await wb.createEngine(url, options);
  return {load_s: (performance.now() - t0) / 1000, backend: window.engine.backend,
          threads: window.engine.threads ?? null, stop_token_ids: window.engine.config.stop_token_ids};
}"""

WEBBUILD_GEN_JS = """async ([question, tokens]) => {
  %s
  const engine = window.engine;
  await engine.resetChat();  // no KV-cache reuse: every run prefills the whole prompt
  const bias = Object.fromEntries(engine.config.stop_token_ids.map((id) => [String(id), -100]));
  window.__t0 = performance.now();
  const stream = await engine.chat.completions.create({
    messages: [{role: 'user', content: question}], temperature: 0, max_tokens: tokens, logit_bias: bias,
    repetition_penalty: 1, frequency_penalty: 0, presence_penalty: 0,
    stream: true, stream_options: {include_usage: true}});
  return await drain(stream);
}""" % STREAM_JS

WLLAMA_LOAD_JS = """async ([ggufUrl, threads]) => {
  const {Wllama, LoggerWithoutDebug} = await import('/wllama/esm/index.js');
  if (window.wl) { await window.wl.exit(); window.wl = null; }
  const wl = new Wllama({default: '/wllama/esm/wasm/wllama.wasm'},
                        {suppressNativeLog: true, logger: LoggerWithoutDebug});
  const t0 = performance.now();
  await wl.loadModelFromUrl(ggufUrl, {n_threads: threads, n_gpu_layers: 0, n_ctx: %d});
  window.wl = wl;
  return {load_s: (performance.now() - t0) / 1000, threads: wl.getNumThreads(), multithread: wl.isMultithread()};
}""" % CONTEXT_WINDOW

WLLAMA_GEN_JS = """async ([question, tokens]) => {
  %s
  window.__t0 = performance.now();
  const stream = await window.wl.createChatCompletion({
    messages: [{role: 'user', content: question}], temperature: 0, max_tokens: tokens,
    ignore_eos: true, cache_prompt: false, stream: true});
  return await drain(stream);
}""" % STREAM_JS

# The prompt text webbuild's chat template renders, as a raw completion: both engines then read the
# same tokens (wllama's chat API would apply the GGUF's template, or ChatML for a file without one).
WLLAMA_RAW_GEN_JS = """async ([prompt, tokens]) => {
  %s
  window.__t0 = performance.now();
  const stream = await window.wl.createCompletion({
    prompt, temperature: 0, max_tokens: tokens, ignore_eos: true, cache_prompt: false, stream: true});
  return await drain(stream);
}""" % STREAM_JS

PAGE_INFO_JS = """() => ({hardware_concurrency: navigator.hardwareConcurrency,
                         cross_origin_isolated: self.crossOriginIsolated, user_agent: navigator.userAgent})"""

# Installed before any page script: counts WebGPU work (compute dispatches, queue submits and the
# command buffers in them, buffer uploads, buffer-to-buffer copies, mapAsync readbacks).
GPU_COUNTERS_JS = """(() => {
  if (!self.GPUComputePassEncoder || self.__gpuCounts) return;
  const c = self.__gpuCounts = {dispatch: 0, dispatch_indirect: 0, submit: 0, command_buffers: 0,
                                write_buffer: 0, copy_buffer: 0, map_async: 0};
  const wrap = (proto, name, key, extra) => {
    const orig = proto && proto[name];
    if (!orig) return;
    proto[name] = function (...args) { c[key]++; if (extra) extra(args); return orig.apply(this, args); };
  };
  wrap(GPUComputePassEncoder.prototype, 'dispatchWorkgroups', 'dispatch');
  wrap(GPUComputePassEncoder.prototype, 'dispatchWorkgroupsIndirect', 'dispatch_indirect');
  wrap(GPUQueue.prototype, 'submit', 'submit', (a) => { c.command_buffers += a[0]?.length ?? 0; });
  wrap(GPUQueue.prototype, 'writeBuffer', 'write_buffer');
  wrap(GPUCommandEncoder.prototype, 'copyBufferToBuffer', 'copy_buffer');
  wrap(GPUBuffer.prototype, 'mapAsync', 'map_async');
})();"""

GPU_COUNTS_JS = "() => self.__gpuCounts ? {...self.__gpuCounts} : null"


def gpu_delta(before: dict | None, after: dict | None) -> dict | None:
    if not before or not after:
        return None
    return {k: after[k] - before.get(k, 0) for k in after}


# ---------------------------------------------------------------------------------------------
# Servers

async def _isolate(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in ISOLATION_HEADERS.items():
        response.headers.setdefault(name, value)


@contextmanager
def isolated_server(static: dict[str, Path] | None = None, files: dict[str, Path] | None = None,
                    title: str = "bench"):
    """A cross-origin-isolated (COOP/COEP) aiohttp server on its own thread: an empty page at `/`,
    each `static` folder at `/<prefix>/`, each of `files` at `/<name>`; yields its URL."""
    app = web.Application()
    page = f"<!doctype html><meta charset=utf-8><title>{title}</title>"
    app.router.add_get("/", lambda request: web.Response(text=page, content_type="text/html"))
    for name, path in (files or {}).items():
        app.router.add_get(f"/{name}", lambda request, path=path: web.FileResponse(path))
    for prefix, folder in (static or {}).items():
        app.router.add_static(f"/{prefix}/", folder)
    app.on_response_prepare.append(_isolate)
    # everything asyncio happens on the server's own thread (the caller may be inside another loop:
    # Playwright's sync API runs one)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    ready = threading.Event()
    failure: list[BaseException] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
        except BaseException as err:  # noqa: BLE001 - handed to the caller
            failure.append(err)
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait()
    if failure:
        raise failure[0]
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()


def wllama_server(gguf: Path):
    """wllama's files at /wllama/ and the GGUF at /model.gguf, cross-origin isolated (threads need it)."""
    return isolated_server({"wllama": WLLAMA_DIR}, {"model.gguf": gguf}, title="wllama bench")


# ---------------------------------------------------------------------------------------------
# Browsers and their memory

def _chromium_pids() -> set[int]:
    import psutil

    out = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if "chrom" in p.name():
                out.add(p.pid)
        except psutil.Error:
            pass
    return out


def launch_tracked(playwright):
    """A new headless chromium and the pid of its browser process (the root of its process tree)."""
    import psutil

    before = _chromium_pids()
    browser = launch_chromium(playwright)
    new = _chromium_pids() - before
    roots = []
    for pid in new:
        try:
            if psutil.Process(pid).ppid() not in new:
                roots.append(pid)
        except psutil.Error:
            pass
    return browser, (roots[0] if len(roots) == 1 else None)


def tree_pss(root: int) -> tuple[int, int]:
    """(sum of PSS in bytes, process count) over `root` and its descendants."""
    import psutil

    try:
        procs = [psutil.Process(root)]
        procs += procs[0].children(recursive=True)
    except psutil.Error:
        return 0, 0
    total = count = 0
    for p in procs:
        try:
            with open(f"/proc/{p.pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        count += 1
                        break
        except OSError:
            pass
    return total, count


class MemorySampler:
    """Samples the process tree of the one active browser every `interval` s; keeps each one's peak,
    overall and per phase ("cold" and "warm" load, "generate")."""

    def __init__(self, interval: float = 1.5):
        self.interval = interval
        self.peaks: dict[str, dict] = {}
        self._active: tuple[str, int, str] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def sample(self, name: str, root: int | None, phase: str = "idle") -> int | None:
        if root is None:
            return None
        pss, procs = tree_pss(root)
        with self._lock:
            peak = self.peaks.setdefault(name, {"peak_pss_bytes": 0, "processes": 0, "samples": 0, "phases": {}})
            peak["samples"] += 1
            phases = peak["phases"]
            phases[phase] = max(phases.get(phase, 0), pss)
            if pss > peak["peak_pss_bytes"]:
                peak.update(peak_pss_bytes=pss, processes=procs, phase=phase)
        return pss

    @contextmanager
    def active(self, name: str, root: int | None, phase: str):
        """Sample this browser in `phase` (now, every interval while inside, and at the end)."""
        self.sample(name, root, phase)
        with self._lock:
            self._active = (name, root, phase)
        try:
            yield
        finally:
            with self._lock:
                self._active = None
            self.sample(name, root, phase)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                active = self._active
            if active:
                self.sample(*active)


# ---------------------------------------------------------------------------------------------
# Configurations and measuring

def webbuild_metrics(r: dict) -> dict:
    extra = r["usage"]["extra"]
    return {"ttft_s": extra["time_to_first_token_s"], "prefill_tok_s": extra["prefill_tokens_per_s"],
            "decode_tok_s": extra["decode_tokens_per_s"], "backend": extra.get("backend"),
            "prompt_tokens": r["usage"]["prompt_tokens"], "completion_tokens": r["usage"]["completion_tokens"]}


def wllama_metrics(r: dict) -> dict:
    t = r["timings"] or {}
    return {"ttft_s": t.get("prompt_ms", 0) / 1000, "prefill_tok_s": t.get("prompt_per_second"),
            "decode_tok_s": t.get("predicted_per_second"), "prompt_tokens": t.get("prompt_n"),
            "completion_tokens": t.get("predicted_n"), "timings": t}


def streamed_run(gen_js: str, metrics: Callable[[dict], dict], question: str = QUESTION) -> Callable:
    """generate(page, tokens) for an engine driven by `gen_js` (STREAM_JS's drain) in the page."""

    def generate(page, tokens: int) -> dict:
        r = page.evaluate(gen_js, [question, tokens])
        m = metrics(r)
        n = m["completion_tokens"] or 0
        return {**m, "finish": r["finish"], "wall_s": r["wall_s"], "client_ttft_s": r["client_ttft_s"],
                "client_decode_tok_s": (n - 1) / r["client_stream_s"] if r["client_stream_s"] > 0 else None,
                "text": r["text"]}

    return generate


def evaluate_load(js: str, args: list) -> Callable:
    return lambda page: page.evaluate(js, args)


@dataclass
class Config:
    """One engine configuration (its own browser once opened).

    `load(page)` returns {"load_s", ...} (called twice: cold, warm; the engine stays loaded).
    `generate(page, tokens)` returns the METRICS keys (None where unknown), prompt_tokens,
    completion_tokens and text."""

    name: str
    meta: dict
    url: str | None  # the page to open first (None: `load` navigates)
    generate: Callable
    tokens: int
    load: Callable
    count_gpu: bool = False
    state: dict = field(default_factory=dict)
    runs: list = field(default_factory=list)
    error: str | None = None

    def open(self, playwright, sampler: MemorySampler) -> None:
        """Fresh browser: page info, cold load, warm load (the engine stays loaded)."""
        before = os.getloadavg()
        browser, root = launch_tracked(playwright)
        self.state = {"browser": browser, "root": root, "version": browser.version}
        context = browser.new_context()
        if self.count_gpu:
            context.add_init_script(GPU_COUNTERS_JS)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        if self.url:
            page.goto(self.url)
        self.state.update(page=page, errors=errors, pss_idle_bytes=sampler.sample(self.name, root))
        with sampler.active(self.name, root, "cold"):
            self.state["cold"] = self.load(page)
        with sampler.active(self.name, root, "warm"):
            self.state["warm"] = self.load(page)
        self.state.update(info=page.evaluate(PAGE_INFO_JS), loadavg_load=[before, os.getloadavg()])

    def run(self, sampler: MemorySampler, tokens: int | None = None) -> dict:
        page = self.state["page"]
        before = os.getloadavg()
        counts = page.evaluate(GPU_COUNTS_JS) if self.count_gpu else None
        with sampler.active(self.name, self.state["root"], "generate"):
            r = self.generate(page, tokens or self.tokens)
        gpu = gpu_delta(counts, page.evaluate(GPU_COUNTS_JS)) if self.count_gpu else None
        return {**r, "gpu": gpu, "loadavg": [before, os.getloadavg()]}

    def close(self) -> None:
        browser = self.state.pop("browser", None)
        if browser is not None:
            try:
                browser.close()
            except Exception:  # noqa: BLE001 - a crashed browser is already gone
                pass

    def fail(self, stage: str, err: BaseException) -> None:
        errors = self.state.get("errors") or []
        self.error = f"{stage}: {type(err).__name__}: {err}".strip()[:2000]
        if errors:
            self.error += "\npage errors: " + "\n".join(errors)[:2000]
        print(f"{self.name} failed ({stage}): {err}", file=sys.stderr, flush=True)
        traceback.print_exc(file=sys.stderr)
        self.close()

    def gpu_per_token(self, probe: dict) -> dict | None:
        """Per decoded token: (counts of the last measured run - counts of a 1-token run) / (n - 1)."""
        last = self.runs[-1]
        n = (last["completion_tokens"] or 0) - (probe["completion_tokens"] or 0)
        if not last["gpu"] or not probe["gpu"] or n <= 0:
            return None
        return {k: (last["gpu"][k] - probe["gpu"][k]) / n for k in last["gpu"]}

    def summary(self, sampler: MemorySampler) -> dict:
        """Medians of the runs after the first (the warm-up)."""
        st = self.state
        warmup, measured = self.runs[0], self.runs[1:] or self.runs[:1]
        median = {k: statistics.median(r[k] for r in measured) for k in METRICS
                  if all(r.get(k) is not None for r in measured)}
        cold, warm = st["cold"]["load_s"], st["warm"]["load_s"]
        load_info = {k: v for k, v in st["warm"].items() if k != "load_s"}
        mem = sampler.peaks.get(self.name, {})
        return {**self.meta, "tokens": self.tokens, "page": st["info"], "chromium": st["version"],
                "load_cold_s": cold, "load_warm_s": warm, "load_info": load_info, "median": median,
                "text": measured[0]["text"], "texts_identical": len({r["text"] for r in self.runs}) == 1,
                "completion_tokens": [r["completion_tokens"] for r in measured],
                "memory": {"peak_pss_bytes": mem.get("peak_pss_bytes"), "idle_pss_bytes": st.get("pss_idle_bytes"),
                           "processes_at_peak": mem.get("processes"), "samples": mem.get("samples"),
                           "peak_phase": mem.get("phase"), "peak_pss_by_phase": mem.get("phases"),
                           "interval_s": sampler.interval, "browser_pid": st["root"]},
                "loadavg_before": measured[0]["loadavg"][0], "loadavg_after": measured[-1]["loadavg"][1],
                "loadavg_load": st["loadavg_load"], "warmup": warmup, "runs": measured,
                "page_errors": st["errors"]}


def measure(playwright, configs: list[Config], runs: int, sampler: MemorySampler,
            probe_gpu: bool = True) -> tuple[dict, dict]:
    """Open every configuration (own browser), run warm-up + `runs` interleaved rounds, then (for those
    counting WebGPU calls) a 1-token probe for the per-token counts. Returns (summaries, skipped)."""
    live: list[Config] = []
    try:
        for c in configs:
            print(f"loading {c.name} ...", file=sys.stderr, flush=True)
            try:
                c.open(playwright, sampler)
                live.append(c)
            except Exception as err:  # noqa: BLE001 - recorded, the others go on
                c.fail("load", err)
        for i in range(runs + 1):
            print(f"round {i} of {runs} (0 = warm-up) ...", file=sys.stderr, flush=True)
            for c in list(live):
                try:
                    c.runs.append(c.run(sampler))
                except Exception as err:  # noqa: BLE001
                    c.fail(f"run {i}", err)
                    live.remove(c)
        summaries = {}
        for c in live:
            summaries[c.name] = c.summary(sampler)
            if probe_gpu and c.count_gpu and c.runs[-1]["gpu"] and c.runs[-1]["gpu"]["submit"] > 0:
                try:
                    probe = c.run(sampler, tokens=1)
                    summaries[c.name]["gpu_probe_1_token"] = probe["gpu"]
                    summaries[c.name]["gpu_per_token"] = c.gpu_per_token(probe)
                except Exception as err:  # noqa: BLE001
                    summaries[c.name]["gpu_per_token_error"] = str(err)
        return summaries, {c.name: {**c.meta, "error": c.error} for c in configs if c.error}
    finally:
        for c in configs:
            c.close()


def ratios(configs: dict, ours: Callable[[str], bool]) -> dict:
    """ours / peer for decode and prefill tok/s (and time to first token), for every pair."""
    out = {}
    for a, ca in configs.items():
        if not ours(a):
            continue
        for b, cb in configs.items():
            if ours(b):
                continue
            r = {}
            for k in ("decode_tok_s", "prefill_tok_s", "ttft_s"):
                x, y = ca["median"].get(k), cb["median"].get(k)
                r[k] = round(x / y, 3) if x and y else None
            out[f"{a} / {b}"] = r
    return out


def loadavg_summary(configs: dict) -> dict:
    values = [r["loadavg"][i][0] for c in configs.values() for r in [c["warmup"], *c["runs"]] for i in (0, 1)]
    return {"min_1min": min(values), "max_1min": max(values)} if values else {}


def timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
