"""WASM CPU benchmark: webbuild's WebAssembly CPU module against wllama (llama.cpp in WASM), in one
headless chromium, on SmolLM2-135M-Instruct.

Usage: python bench/wasm_bench.py [--models out/bench/models] [--tokens 128] [--runs 3]
                                  [--json out/bench/wasm.json]

Configurations: webbuild `backend: "wasm"` (model-cpu.wasm; single-threaded, recorded as threads=1)
for the q4f32_1 and q0f32 builds (built into --models when missing), and @wllama/wllama (npm
devDependency) on the GGUF those builds come from, with n_threads 1 and 2 (WebGPU off:
n_gpu_layers 0). Every configuration gets a fresh browser context: a cold load (nothing cached), an
unload, a warm load (from the browser's caches). Then come a warm-up round and --runs measured
rounds, each running every configuration once (interleaved, so drifting background load on the
machine hits all configurations alike); medians of the measured runs are reported. All use the same
ChatML prompt (the GGUF's default system prompt + the question), greedy sampling, the prompt
re-prefilled each run, and the stop token banned so that every run generates exactly --tokens tokens
(webbuild: logit_bias -100 on its stop ids; wllama: ignore_eos). Pages are cross-origin isolated
(COOP/COEP), which wllama needs for threads. The load average is recorded around every run: on a
shared 2-core machine, background load hurts the 2-thread configuration most.

Metrics are each engine's own accounting — webbuild `usage.extra`, llama.cpp's `timings` — plus the
same client-side timings for both (request -> first streamed text, first -> last streamed text).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from aiohttp import web

from _common import REPO, write_result

sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from browser_support import launch_chromium, webbuild_server  # noqa: E402

from webbuild.catalog import resolve_source  # noqa: E402
from webbuild.serve.app import ISOLATION_HEADERS  # noqa: E402

MODEL = "smollm2-135m-instruct"
QUANTIZATIONS = ("q4f32_1", "q0f32")
WLLAMA_THREADS = (1, 2)
WLLAMA_DIR = REPO / "node_modules" / "@wllama" / "wllama"
QUESTION = "What is the capital of France?"
METRICS = ("ttft_s", "prefill_tok_s", "decode_tok_s", "client_ttft_s", "client_decode_tok_s")

# Both engines stream; the client timings are taken the same way for both.
STREAM_JS = """
async function drain(stream) {
  const t0 = window.__t0;
  let text = '', first = null, last = null, usage = null, timings = null, finish = null;
  for await (const c of stream) {
    const d = c.choices?.[0]?.delta?.content;
    if (d) { const now = performance.now(); first ??= now; last = now; text += d; }
    finish = c.choices?.[0]?.finish_reason ?? finish;
    usage = c.usage ?? usage;
    timings = c.timings ?? timings;
  }
  const end = performance.now();
  return {text, usage, timings, finish, wall_s: (end - t0) / 1000,
          client_ttft_s: (first - t0) / 1000, client_stream_s: (last - first) / 1000};
}
"""

WEBBUILD_LOAD_JS = """async ([url]) => {
  const wb = await import('/dist/webbuild.js');
  if (window.engine) { await window.engine.unload(); window.engine = null; }
  const t0 = performance.now();
  window.engine = await wb.createEngine(url, {backend: 'wasm'});
  return {load_s: (performance.now() - t0) / 1000, backend: window.engine.backend,
          stop_token_ids: window.engine.config.stop_token_ids};
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
  await wl.loadModelFromUrl(ggufUrl, {n_threads: threads, n_gpu_layers: 0, n_ctx: 1024});
  window.wl = wl;
  return {load_s: (performance.now() - t0) / 1000, threads: wl.getNumThreads(), multithread: wl.isMultithread()};
}"""

WLLAMA_GEN_JS = """async ([question, tokens]) => {
  %s
  window.__t0 = performance.now();
  const stream = await window.wl.createChatCompletion({
    messages: [{role: 'user', content: question}], temperature: 0, max_tokens: tokens,
    ignore_eos: true, cache_prompt: false, stream: true});
  return await drain(stream);
}""" % STREAM_JS

PAGE_INFO_JS = """() => ({hardware_concurrency: navigator.hardwareConcurrency,
                         cross_origin_isolated: self.crossOriginIsolated, user_agent: navigator.userAgent})"""


# ---------------------------------------------------------------------------------------------
# Model folders and servers

def ensure_builds(models: Path) -> dict[str, str]:
    """The folder name of each quantization's build under `models`, building the missing ones."""
    from webbuild.build import BuildRequest, build, model_folder_name

    folders = {}
    for q in QUANTIZATIONS:
        name = model_folder_name(MODEL, q, "webgpu")
        if not (models / name / "chat-config.json").is_file():
            print(f"building {name} ...", file=sys.stderr, flush=True)
            build(BuildRequest(MODEL, q, models, target="webgpu"))
        folders[q] = name
    return folders


async def _isolate(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in ISOLATION_HEADERS.items():
        response.headers.setdefault(name, value)


def _wllama_app(gguf: Path) -> web.Application:
    app = web.Application()
    page = "<!doctype html><meta charset=utf-8><title>wllama bench</title>"
    app.router.add_get("/", lambda request: web.Response(text=page, content_type="text/html"))
    app.router.add_get("/model.gguf", lambda request: web.FileResponse(gguf))
    app.router.add_static("/wllama/", WLLAMA_DIR)
    app.on_response_prepare.append(_isolate)
    return app


@contextmanager
def wllama_server(gguf: Path):
    """A cross-origin-isolated aiohttp server (own thread) for wllama's files and the GGUF; yields its URL."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(_wllama_app(gguf), access_log=None)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.run_until_complete(runner.cleanup())
        loop.close()


# ---------------------------------------------------------------------------------------------
# Measuring

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


def one_run(page, gen_js: str, metrics, tokens: int) -> dict:
    r = page.evaluate(gen_js, [QUESTION, tokens])
    m = metrics(r)
    n = m["completion_tokens"] or 0
    return {**m, "finish": r["finish"], "wall_s": r["wall_s"], "client_ttft_s": r["client_ttft_s"],
            "client_decode_tok_s": (n - 1) / r["client_stream_s"] if r["client_stream_s"] > 0 else None,
            "text": r["text"]}


@dataclass
class Config:
    """One engine configuration, and its browser context once opened."""

    name: str
    meta: dict
    url: str
    load: tuple[str, list]
    gen_js: str
    metrics: Callable[[dict], dict]
    state: dict = field(default_factory=dict)
    runs: list = field(default_factory=list)

    def open(self, browser) -> None:
        """A fresh context: page info, cold load, warm load (the engine stays loaded)."""
        before = os.getloadavg()
        context = browser.new_context()
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(self.url)
        info = page.evaluate(PAGE_INFO_JS)
        cold = page.evaluate(*self.load)
        warm = page.evaluate(*self.load)
        self.state = {"context": context, "page": page, "errors": errors, "info": info, "cold": cold, "warm": warm,
                      "loadavg_load": [before, os.getloadavg()]}

    def run(self, tokens: int) -> None:
        before = os.getloadavg()
        try:
            r = one_run(self.state["page"], self.gen_js, self.metrics, tokens)
        except Exception:
            print("\n".join(self.state["errors"]), file=sys.stderr)
            raise
        self.runs.append({**r, "loadavg": [before, os.getloadavg()]})

    def close(self) -> None:
        if self.state:
            self.state.pop("context").close()

    def summary(self) -> dict:
        """Medians of the runs after the first (the warm-up)."""
        warmup, measured = self.runs[0], self.runs[1:]
        median = {k: statistics.median(r[k] for r in measured) for k in METRICS
                  if all(r[k] is not None for r in measured)}
        st = self.state
        return {**self.meta, "page": st["info"],
                "load_cold_s": st["cold"]["load_s"], "load_warm_s": st["warm"]["load_s"],
                "load_info": {k: v for k, v in st["warm"].items() if k != "load_s"}, "median": median,
                "text": measured[0]["text"], "texts_identical": len({r["text"] for r in self.runs}) == 1,
                "completion_tokens": [r["completion_tokens"] for r in measured],
                "loadavg_before": measured[0]["loadavg"][0], "loadavg_after": measured[-1]["loadavg"][1],
                "loadavg_load": st["loadavg_load"], "warmup": warmup, "runs": measured, "page_errors": st["errors"]}


def measure(browser, configs: list[Config], tokens: int, runs: int) -> dict:
    """Load every configuration in its own context, then run warm-up + `runs` rounds, one run of each
    configuration per round (interleaved, so a change in the machine's background load hits all alike)."""
    try:
        for c in configs:
            print(f"loading {c.name} ...", file=sys.stderr, flush=True)
            c.open(browser)
        for i in range(runs + 1):
            print(f"round {i} of {runs} (0 = warm-up) ...", file=sys.stderr, flush=True)
            for c in configs:
                c.run(tokens)
        return {c.name: c.summary() for c in configs}
    finally:
        for c in configs:
            c.close()


def ratios(configs: dict) -> dict:
    """webbuild / wllama for decode and prefill tok/s, per webbuild build and wllama thread count."""
    out = {}
    for wb_name, wb in configs.items():
        if not wb_name.startswith("webbuild"):
            continue
        for wl_name, wl in configs.items():
            if wl_name.startswith("wllama"):
                out[f"{wb_name} / {wl_name}"] = {
                    k: round(wb["median"][k] / wl["median"][k], 3) for k in ("decode_tok_s", "prefill_tok_s")}
    return out


# ---------------------------------------------------------------------------------------------
# Report

def print_table(configs: dict, result: dict) -> None:
    head = (f"{'configuration':<26}{'threads':>8}{'decode':>9}{'prefill':>9}{'TTFT':>8}{'cTTFT':>8}"
            f"{'cDecode':>9}{'cold':>7}{'warm':>7}{'tokens':>8}  load avg")
    print(head)
    print("-" * len(head))
    for name, c in configs.items():
        m = c["median"]
        print(f"{name:<26}{c['threads']:>8}{m['decode_tok_s']:>9.2f}{m['prefill_tok_s']:>9.1f}{m['ttft_s']:>8.3f}"
              f"{m['client_ttft_s']:>8.3f}{m['client_decode_tok_s']:>9.2f}{c['load_cold_s']:>7.2f}"
              f"{c['load_warm_s']:>7.2f}{min(c['completion_tokens']):>8}  "
              f"{c['loadavg_before'][0]:.2f} -> {c['loadavg_after'][0]:.2f}")
    print("decode/prefill: tok/s (engine's own accounting); TTFT s; c*: client-side; cold/warm: load s")
    for name, r in result["ratios"].items():
        print(f"  {name:<48} decode x{r['decode_tok_s']:.3f}  prefill x{r['prefill_tok_s']:.3f}")
    for name, c in configs.items():
        same = "" if c["texts_identical"] else "  (texts differ between runs!)"
        print(f"  {name} text{same}: {c['text'][:160]!r}")
    print(f"hardwareConcurrency {result['machine']['hardware_concurrency']}, "
          f"bench took {result['seconds']} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=str(REPO / "out" / "bench" / "models"))
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", default=str(REPO / "out" / "bench" / "wasm.json"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    started = time.monotonic()
    models = Path(args.models)
    folders = ensure_builds(models)
    gguf = resolve_source(MODEL)
    wllama_version = json.loads((WLLAMA_DIR / "package.json").read_text())["version"]
    with webbuild_server(models) as wb_url, wllama_server(gguf) as wl_url, sync_playwright() as p:
        specs = [Config(f"webbuild-wasm-{q}", {"engine": "webbuild", "quantization": q, "threads": 1}, wb_url,
                        (WEBBUILD_LOAD_JS, [f"{wb_url}models/{folder}/"]), WEBBUILD_GEN_JS, webbuild_metrics)
                 for q, folder in folders.items()]
        specs += [Config(f"wllama-{n}t", {"engine": "wllama", "version": wllama_version, "weights": gguf.name,
                                          "threads": n}, wl_url,
                         (WLLAMA_LOAD_JS, [f"{wl_url}model.gguf", n]), WLLAMA_GEN_JS, wllama_metrics)
                  for n in WLLAMA_THREADS]
        browser = launch_chromium(p)
        configs = measure(browser, specs, args.tokens, args.runs)
        browser_version = browser.version
        browser.close()
    first = next(iter(configs.values()))["page"]
    result = {"benchmark": "wasm", "model": MODEL, "question": QUESTION, "max_tokens": args.tokens,
              "runs": args.runs, "greedy": True, "stop_tokens_banned": True,
              "machine": {"cpus": os.cpu_count(), "hardware_concurrency": first["hardware_concurrency"],
                          "cross_origin_isolated": first["cross_origin_isolated"], "chromium": browser_version},
              "configs": configs, "ratios": ratios(configs), "seconds": round(time.monotonic() - started, 1)}
    write_result(args.json, result, echo=False)
    print_table(configs, result)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
