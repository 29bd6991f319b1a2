"""Embeddings benchmark: webbuild's `engine.embeddings.create` against transformers.js'
`feature-extraction` pipeline on all-MiniLM-L6-v2, in headless chromium (TOOLCHAIN.md's flags).

Usage: python bench/embeddings_bench.py [--configs 'webbuild-*,tjs-wasm-*'] [--reps 5] [--warmup 2] [--webgpu-reps 1]
                                        [--timeout-s 300] [--json out/bench/embeddings.json] [--list]

Configurations (--configs: comma-separated names or shell patterns):
  webbuild-wasm-1t, webbuild-wasm-2t    the q0f32 build's WASM CPU module (1 thread; 2: the threaded one)
  webbuild-webgpu                       the q0f32 build's WebGPU module (--webgpu-timeout-s: on SwiftShader
                                        its attention pipelines do not finish compiling, see README)
  tjs-wasm-fp32-1t, tjs-wasm-fp32-2t, tjs-wasm-q8-1t, tjs-wasm-q8-2t, tjs-webgpu-fp32
                                        transformers.js (ONNX Runtime Web) on a local ONNX export
                                        (bench/peers/onnx_embed_export.py: fp32 and dynamic int8 "q8")
The webbuild folder is built into --models when missing (peer_bench.ensure_builds).

The inputs: 32 sentences of 18-24 tokens ([CLS] and [SEP] included) made from the test sentences
(tests/embedding_support.py); a batch of N is the first N, one call per batch (an array of N texts).
Each configuration gets its own browser: load, then per batch size --warmup untimed calls (both engines
speed up over their first calls of a shape) and --reps timed calls in the page (performance.now around
the awaited call, tokenization included for both); the median gives embeddings/s (the fastest call is
recorded too). Peak memory is the browser's process tree PSS (bench/_peers.MemorySampler)
over load and embedding. A configuration that fails or passes its time limit (the browser is killed) is
skipped with the reason. Outputs: each configuration's batch-32 embeddings against PyTorch (transformers
+ mean pooling, float32) and webbuild's against each transformers.js configuration's (cosine; fp32
must agree to >= 0.999 for the comparison to count). Ratios: webbuild WASM embeddings/s over
transformers.js WASM at the same thread count, per batch size.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import statistics
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

from _common import REPO, write_result

for _path in (REPO, REPO / "tests", REPO / "bench" / "peers"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

MODEL = "all-minilm-l6-v2"
QUANTIZATION = "q0f32"
BATCHES = (1, 8, 32)
TOKEN_RANGE = (18, 24)
MIN_FP32_COSINE = 0.999
# Why a configuration is expected to fail here, recorded next to its error when it does.
KNOWN_LIMITS = {"webbuild-webgpu": "on SwiftShader the encoder's batched attention pipelines never finish "
                                   "compiling (README toolchain notes); a replacement kernel is being written"}
# name -> (engine, device, dtype, threads; None: not applicable)
CONFIGS = {
    "webbuild-wasm-1t": ("webbuild", "wasm", QUANTIZATION, 1),
    "webbuild-wasm-2t": ("webbuild", "wasm", QUANTIZATION, 2),
    "webbuild-webgpu": ("webbuild", "webgpu", QUANTIZATION, None),
    "tjs-wasm-fp32-1t": ("transformers.js", "wasm", "fp32", 1),
    "tjs-wasm-fp32-2t": ("transformers.js", "wasm", "fp32", 2),
    "tjs-wasm-q8-1t": ("transformers.js", "wasm", "q8", 1),
    "tjs-wasm-q8-2t": ("transformers.js", "wasm", "q8", 2),
    "tjs-webgpu-fp32": ("transformers.js", "webgpu", "fp32", None),
}

WEBBUILD_LOAD_JS = """async ([url, options]) => {
  const wb = await import('/dist/webbuild.js');
  const t0 = performance.now();
  window.engine = await wb.createEngine(url, options);
  return {load_ms: performance.now() - t0, backend: window.engine.backend, threads: window.engine.threads,
          cross_origin_isolated: self.crossOriginIsolated};
}"""

WEBBUILD_EMBED_JS = """async ({texts, reps, warmup}) => {
  const embed = (input) => window.engine.embeddings.create({input});
  for (let i = 0; i < warmup; i++) await embed(texts);
  const ms = [];
  let out = null;
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    out = await embed(texts);
    ms.push(performance.now() - t0);
  }
  return {ms, embeddings: out.data.map((d) => d.embedding), usage: out.usage};
}"""

# `fn` (a JS function source) applied to `arg`, rejected after `ms` milliseconds.
WITHIN_JS = """async ([fn, arg, ms]) => Promise.race([
  (0, eval)(fn)(arg),
  new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms))])"""


def select_configs(patterns: str) -> list[str]:
    """The CONFIGS names matching comma-separated names or shell patterns, in CONFIGS order (none
    matched by a pattern: SystemExit)."""
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    for p in wanted:
        if not fnmatch.filter(CONFIGS, p):
            raise SystemExit(f"--configs: {p!r} matches none of {', '.join(CONFIGS)}")
    return [n for n in CONFIGS if any(fnmatch.fnmatch(n, p) for p in wanted)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default=",".join(CONFIGS), help="names or shell patterns, comma-separated")
    parser.add_argument("--reps", type=int, default=5, help="timed calls per batch size (after one warm-up)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per batch size first (WebGPU: 1)")
    parser.add_argument("--webgpu-reps", type=int, default=1, help="timed calls per batch size on WebGPU")
    parser.add_argument("--timeout-s", type=float, default=300, help="time limit of one configuration")
    parser.add_argument("--webgpu-timeout-s", type=float, default=120, help="time limit of webbuild-webgpu")
    parser.add_argument("--mem-interval", type=float, default=0.5, help="seconds between memory samples")
    parser.add_argument("--models", type=Path, default=REPO / "out" / "bench" / "models")
    parser.add_argument("--onnx", type=Path, default=None, help="transformers.js model folder "
                        "(default: bench/peers/onnx_embed_export.py's)")
    parser.add_argument("--json", type=Path, default=REPO / "out" / "bench" / "embeddings.json")
    parser.add_argument("--list", action="store_true", help="print the configurations and exit")
    args = parser.parse_args(argv)
    for name in ("reps", "warmup", "webgpu_reps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.timeout_s <= 0 or args.webgpu_timeout_s <= 0:
        parser.error("time limits must be positive")
    args.configs = select_configs(args.configs)
    return args


# ---------------------------------------------------------------------------------------------
# Result shaping

def throughput(batch: int, ms: list[float]) -> dict:
    """Timed calls of one batch size -> embeddings per second at their median (and at the fastest,
    which a busy machine disturbs least)."""
    median, best = statistics.median(ms), min(ms)
    return {"ms": ms, "median_ms": median, "embeddings_per_s": batch / (median / 1000),
            "best_ms": best, "best_embeddings_per_s": batch / (best / 1000)}


def ratios(configs: dict) -> dict:
    """webbuild WASM embeddings/s over transformers.js WASM (each dtype) at the same thread count, per
    batch size: {"webbuild-wasm-1t / tjs-wasm-fp32-1t": {"1": 2.3, ...}} (only pairs both measured)."""
    out = {}
    for ours, (engine, device, _, threads) in CONFIGS.items():
        if engine != "webbuild" or device != "wasm" or ours not in configs:
            continue
        for peer, (p_engine, p_device, _, p_threads) in CONFIGS.items():
            if p_engine == "webbuild" or p_device != "wasm" or p_threads != threads or peer not in configs:
                continue
            mine, theirs = configs[ours]["batches"], configs[peer]["batches"]
            out[f"{ours} / {peer}"] = {b: mine[b]["embeddings_per_s"] / theirs[b]["embeddings_per_s"]
                                       for b in mine if b in theirs}
    return out


def pick_sentences(lengths: dict[str, int], count: int = max(BATCHES),
                   span: tuple[int, int] = TOKEN_RANGE) -> list[str]:
    """The first `count` texts (in the mapping's order) whose token count lies in `span` (inclusive)."""
    chosen = [t for t, n in lengths.items() if span[0] <= n <= span[1]][:count]
    if len(chosen) < count:
        raise SystemExit(f"only {len(chosen)} candidate sentences of {span[0]}-{span[1]} tokens")
    return chosen


def candidate_sentences() -> list[str]:
    """Pairs of consecutive test sentences joined into one (~20 tokens each), without repeats."""
    from embedding_support import sentences

    simple = list(dict.fromkeys(s for s in sentences() if s.count(" ") >= 5 and s.isascii()))
    return list(dict.fromkeys(f"{a[:-1]}, and {b[0].lower()}{b[1:]}" for a, b in zip(simple, simple[1:] + simple[:1])))


# ---------------------------------------------------------------------------------------------
# Running one configuration

def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def within(page, fn_js: str, arg, seconds: float):
    """page.evaluate of `fn_js` on `arg`, rejected in the page after `seconds`."""
    return page.evaluate(WITHIN_JS, [fn_js, arg, int(seconds * 1000)])


def run_config(playwright, name: str, args, texts: list[str], urls: dict, sampler) -> dict:
    """One configuration in its own browser (killed if it outlives its time limit): load, then each batch."""
    import signal

    from _peers import launch_tracked

    engine, device, dtype, threads = CONFIGS[name]
    limit = args.webgpu_timeout_s if name == "webbuild-webgpu" else args.timeout_s
    reps, warmup = (args.webgpu_reps, 1) if device == "webgpu" else (args.reps, args.warmup)
    browser, root = launch_tracked(playwright)
    killer = threading.Timer(limit + 30, lambda: root and os.kill(root, signal.SIGKILL))
    killer.start()
    started = time.monotonic()
    stage = "load"
    try:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        with sampler.active(name, root, "load"):
            if engine == "webbuild":
                page.goto(urls["webbuild"])
                options = {"backend": device, **({"threads": threads} if threads else {})}
                info = within(page, WEBBUILD_LOAD_JS, [f"{urls['webbuild']}models/{MODEL}-{dtype}/", options],
                              limit)
            else:
                from transformersjs import _local_only

                blocked = _local_only(page, urls["tjs"])
                query = f"device={device}&dtype={dtype}&threads={threads or 1}&model={urls['onnx_name']}"
                page.goto(f"{urls['tjs']}pages/transformersjs_embed.html?{query}")
                page.wait_for_function("window.benchReady === true", timeout=60_000)
                info = within(page, "() => window.benchLoad()", None, limit)
                info["blocked_requests"] = blocked
        result = {"engine": engine, "device": device, "dtype": dtype, "threads": threads,
                  "load_s": info.pop("load_ms") / 1000, "load_info": info, "batches": {},
                  "loadavg_before": os.getloadavg()}
        with sampler.active(name, root, "embed"):
            for batch in BATCHES:
                stage = f"load done in {result['load_s']:.1f} s; embedding a batch of {batch}"
                left = limit - (time.monotonic() - started)
                js = WEBBUILD_EMBED_JS if engine == "webbuild" else "(request) => window.benchEmbed(request)"
                r = within(page, js, {"texts": texts[:batch], "reps": reps, "warmup": warmup}, max(left, 1))
                result["batches"][str(batch)] = throughput(batch, r["ms"])
                result["embeddings"] = r["embeddings"]
        result["page_errors"] = errors
        result["loadavg_after"] = os.getloadavg()
        return result
    except Exception as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RuntimeError(f"{stage}: {first_line}") from exc
    finally:
        killer.cancel()
        try:
            browser.close()
        except Exception:  # noqa: BLE001 - a browser killed at its time limit is already gone
            pass


# ---------------------------------------------------------------------------------------------
# Agreement and reporting

def agreement(configs: dict, reference) -> dict:
    """Cosine of each configuration's batch-32 embeddings against PyTorch's, and of webbuild's against
    each transformers.js configuration's; pops the embeddings."""
    import numpy as np

    from embedding_support import cosine

    vectors = {n: np.array(c.pop("embeddings"), dtype=np.float32) for n, c in configs.items()}
    out: dict = {"vs_torch": {}, "webbuild_vs_tjs": {}}
    for name, v in vectors.items():
        sim = cosine(v, reference)
        out["vs_torch"][name] = {"min": float(sim.min()), "mean": float(sim.mean())}
    for ours, v in vectors.items():
        for peer, w in vectors.items():
            if CONFIGS[ours][0] == "webbuild" and CONFIGS[peer][0] == "transformers.js":
                sim = cosine(v, w)
                out["webbuild_vs_tjs"][f"{ours} / {peer}"] = {"min": float(sim.min()), "mean": float(sim.mean())}
    fp32 = [s["min"] for k, s in out["webbuild_vs_tjs"].items() if "fp32" in k]
    out["fp32_agree"] = bool(fp32) and min(fp32) >= MIN_FP32_COSINE
    return out


def print_table(result: dict) -> None:
    print(f"\n{'configuration':<20}" + "".join(f"{'b' + str(b) + ' emb/s':>12}" for b in BATCHES)
          + f"{'load s':>9}{'peak MB':>9}")
    for name, c in result["configs"].items():
        rates = "".join(f"{c['batches'][str(b)]['embeddings_per_s']:>12.1f}" for b in BATCHES)
        print(f"{name:<20}{rates}{c['load_s']:>9.2f}{c['memory']['peak_pss_bytes'] / 2**20:>9.0f}")
    for name, skip in result["skipped"].items():
        print(f"{name:<20}not available: {skip['error'][:160]}")
    print("\nwebbuild / transformers.js (embeddings/s):")
    for pair, r in result["ratios"].items():
        print(f"  {pair:<40}" + "".join(f"  b{b}: {r[str(b)]:.2f}x" for b in BATCHES if str(b) in r))
    print("cosine webbuild vs transformers.js (batch 32): " + ", ".join(
        f"{k}: min {v['min']:.6f}" for k, v in result["agreement"]["webbuild_vs_tjs"].items()))


def main(argv: list[str] | None = None) -> None:
    import json

    from playwright.sync_api import sync_playwright

    from _peers import MemorySampler
    from browser_support import webbuild_server
    from embedding_support import minilm_folder, reference_embeddings, token_ids
    from onnx_embed_export import DEFAULT_OUT, REPORT, ensure_embed_export
    from peer_bench import ensure_builds
    from transformersjs import serve, versions

    args = parse_args(argv)
    if args.list:
        print("\n".join(CONFIGS))
        return
    start_uptime = uptime()
    folder = minilm_folder()
    candidates = candidate_sentences()
    lengths = dict(zip(candidates, map(len, token_ids(folder, candidates, 256))))
    texts = pick_sentences(lengths)
    reference = reference_embeddings(folder, token_ids(folder, texts, 256), "mean", True)  # (32, 384)
    onnx_dir = ensure_embed_export(args.onnx or DEFAULT_OUT)
    ensure_builds(args.models, MODEL, MODEL, [QUANTIZATION])
    result: dict = {
        "benchmark": "embeddings", "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": MODEL, "webbuild_quantization": QUANTIZATION, "transformers_js": versions(),
        "machine": {"cpus": os.cpu_count(), "uptime_start": start_uptime, "loadavg_start": os.getloadavg()},
        "texts": texts, "tokens": [lengths[t] for t in texts], "batches": list(BATCHES),
        "reps": args.reps, "warmup": args.warmup, "webgpu_reps": args.webgpu_reps,
        "onnx_export": json.loads((onnx_dir / REPORT).read_text()), "configs": {}, "skipped": {}}
    with ExitStack() as stack, MemorySampler(args.mem_interval) as sampler:
        urls = {"webbuild": stack.enter_context(webbuild_server(args.models)),
                "tjs": stack.enter_context(serve(onnx_dir)), "onnx_name": onnx_dir.name}
        p = stack.enter_context(sync_playwright())
        for name in args.configs:
            print(f"{name} ...", file=sys.stderr, flush=True)
            try:
                c = run_config(p, name, args, texts, urls, sampler)
            except Exception as exc:  # noqa: BLE001 - recorded, the other configurations still run
                result["skipped"][name] = {"error": str(exc)[:2000], "known_limit": KNOWN_LIMITS.get(name),
                                           **dict(zip(("engine", "device", "dtype", "threads"), CONFIGS[name]))}
                continue
            c["memory"] = sampler.peaks.get(name, {})
            result["configs"][name] = c
    result["agreement"] = agreement(result["configs"], reference)
    result["ratios"] = ratios(result["configs"])
    result["machine"]["uptime_end"] = uptime()
    result["machine"]["loadavg_end"] = os.getloadavg()
    write_result(args.json, result, echo=False)
    print_table(result)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
