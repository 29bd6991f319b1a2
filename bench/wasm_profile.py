"""Where a WASM decode's CPU time goes, in headless chromium: V8's sampling profiler over greedy
decoding on the page's main thread, grouped by WebAssembly function (the kernels' own names, from
the module's name section), for each thread count.

The engine runs on the main thread (`worker: false`) so the profiler sees it; with threads > 1 the
main thread runs its share of every parallel loop and then waits for the other threads, so a kernel
whose work splits badly keeps its time (or moves it to the wait). Per kernel (the compiled PrimFunc a
sample is in, with its parallel lambdas and waits), and per function: self time (samples with it on
top of the stack) and total time (samples with it anywhere in the stack), in ms per decoded token;
the sum of self times is the step (the prompt's prefill included, a few percent). It says where the
time goes; it does not change the model. The profiler costs some speed (~10% here).

Usage: python bench/wasm_profile.py [--models out/bench/models]
                                    [--model smollm2-135m-instruct-source] [--threads 1 2]
                                    [--tokens 64] [--top 25] [--json out/bench/wasm-profile.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

from _common import REPO, write_result

sys.path.insert(0, str(REPO / "tests"))

from browser_support import launch_chromium, page_at, webbuild_server  # noqa: E402

KERNEL_PREFIX = "__tvm_ffi_"  # the exported name of a compiled PrimFunc
LOAD_JS = """async ([url, threads]) => {
  const wb = await import('/dist/webbuild.js');
  self.__engine = await wb.createEngine(url, {backend: 'wasm', threads, worker: false, cache: 'none'});
  return self.__engine.threads;
}"""

# `tokens` greedy tokens with the stop tokens banned (as bench/peer_bench.py does)
GENERATE_JS = """async ([tokens, stops]) => {
  const engine = self.__engine;
  await engine.resetChat();
  const started = performance.now();
  const logit_bias = Object.fromEntries(stops.map((id) => [id, -100]));
  const reply = await engine.chat.completions.create({messages: [{role: 'user', content: 'Hi'}], temperature: 0,
                                                      max_tokens: tokens, logit_bias});
  return {seconds: (performance.now() - started) / 1000, usage: reply.usage};
}"""


def aggregate(profile: dict) -> tuple[Counter, Counter, Counter, float]:
    """(self µs, total µs per function name, µs per kernel, whole µs) of a CDP Profiler profile.
    A sample's kernel is its innermost `__tvm_ffi_*` frame (a compiled PrimFunc: its parallel
    lambdas and the wait for the other threads count to it), else "(outside kernels)"."""
    nodes = {n["id"]: n for n in profile["nodes"]}
    parent = {child: n["id"] for n in profile["nodes"] for child in n.get("children", [])}
    self_us: Counter = Counter()
    total_us: Counter = Counter()
    kernel_us: Counter = Counter()
    whole = 0.0
    for node_id, delta in zip(profile["samples"], profile["timeDeltas"][1:] + [0], strict=True):
        name = nodes[node_id]["callFrame"]["functionName"] or "(anonymous)"
        if name in ("(idle)", "(program)", "(garbage collector)"):
            continue
        whole += delta
        self_us[name] += delta
        seen = set()
        kernel = None
        while node_id is not None:
            frame = nodes[node_id]["callFrame"]["functionName"] or "(anonymous)"
            if kernel is None and frame.startswith(KERNEL_PREFIX):
                kernel = frame[len(KERNEL_PREFIX):]
            if frame not in seen:
                seen.add(frame)
                total_us[frame] += delta
            node_id = parent.get(node_id)
        kernel_us[kernel or "(outside kernels)"] += delta
    return self_us, total_us, kernel_us, whole


def profile_threads(browser, url: str, stops: list[int], threads: int, tokens: int, top: int) -> dict:
    with page_at(browser, url.split("models/")[0]) as page:
        got = page.evaluate(LOAD_JS, [url, threads])
        page.evaluate(GENERATE_JS, [8, stops])  # warm-up: first calls, allocations
        cdp = page.context.new_cdp_session(page)
        cdp.send("Profiler.enable")
        cdp.send("Profiler.setSamplingInterval", {"interval": 100})
        cdp.send("Profiler.start")
        run = page.evaluate(GENERATE_JS, [tokens, stops])
        profile = cdp.send("Profiler.stop")["profile"]
    decoded = max(1, run["usage"]["completion_tokens"] - 1)
    self_us, total_us, kernel_us, whole = aggregate(profile)
    per_token = 1000.0 * decoded  # µs -> ms per decoded token
    kernels = [{"kernel": name, "ms": round(us / per_token, 3)} for name, us in kernel_us.most_common(top)]
    rows = [{"function": name, "self_ms": round(us / per_token, 3), "total_ms": round(total_us[name] / per_token, 3)}
            for name, us in self_us.most_common(top)]
    return {"threads": got, "tokens": run["usage"]["completion_tokens"], "seconds": run["seconds"],
            "decode_tok_s": run["usage"].get("extra", {}).get("decode_tokens_per_s"),
            "sampled_ms_per_token": round(whole / per_token, 3), "kernels": kernels, "functions": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=str(REPO / "out" / "bench" / "models"))
    ap.add_argument("--model", default="smollm2-135m-instruct-source")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--json", default=str(REPO / "out" / "bench" / "wasm-profile.json"))
    args = ap.parse_args(argv)
    folder = Path(args.models) / args.model
    if not (folder / "chat-config.json").is_file():
        print(f"error: {folder} is no model folder\nfix: build it (bench/wasm_bench.py builds its models into "
              f"--models) or pass --models/--model", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    stops = json.loads((folder / "chat-config.json").read_text()).get("stop_token_ids", [])

    result = {"benchmark": "wasm-profile", "model": args.model, "loadavg_start": list(os.getloadavg()), "runs": []}
    with webbuild_server(Path(args.models)) as server, sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            for threads in args.threads:
                run = profile_threads(browser, f"{server}models/{args.model}/", stops, threads, args.tokens, args.top)
                result["runs"].append(run)
                print(f"\n{args.model}: {run['threads']} thread(s), {run['decode_tok_s']} decode tok/s, "
                      f"{run['sampled_ms_per_token']} ms/token sampled on the main thread")
                for row in run["kernels"]:
                    print(f"  {row['ms']:8.3f} ms/token  {row['kernel']}")
                print("  by function:")
                for row in run["functions"]:
                    print(f"  {row['self_ms']:8.3f} self {row['total_ms']:8.3f} total ms/token  {row['function']}")
        finally:
            browser.close()
    result["loadavg_end"] = list(os.getloadavg())
    write_result(args.json, result, echo=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
