"""Structured-output cost: decode tokens/s of one model folder in headless chromium with and without a
response_format (a JSON Schema), one run per backend, plus the grammar's compile time, per-token mask
cost and where the mask was applied (usage.extra). Free text is decoded greedy (the device argmax) and
sampled (temperature 0.7, the logits read back).

`--baseline` names a second folder of the same model built without `apply_token_bitmask` (as folders
built before it): its runs mask the read-back logits in JavaScript, the folder's own runs in the model
module (the GPU, or the wasm module's memory), so one run compares the two. The module's mask time is
the bitmask's computation (xgrammar), its upload and the kernel's dispatch; on WebGPU the kernel itself
runs asynchronously and lands in the read-back's wait, so decode tokens/s is the end-to-end measure.

Usage: python bench/structured_bench.py [--models out/models] [--model smollm2-135m-instruct-source]
                                        [--baseline FOLDER] [--backends wasm,webgpu] [--tokens 48]
                                        [--json out/bench/structured.json]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from _common import REPO, write_result

sys.path.insert(0, str(REPO / "tests"))

from browser_support import launch_chromium, webbuild_server  # noqa: E402
from json_schemas import SCHEMAS  # noqa: E402

ASK = [{"role": "user", "content": "Describe a product in our shop."}]
RUN_JS = """async ([url, backend, requests]) => {
  const wb = await import('/dist/webbuild.js');
  const engine = await wb.createEngine(url, {backend});
  try {
    const out = [];
    for (const request of requests) out.push((await engine.chat.completions.create(request)).usage);
    return out;
  } finally { await engine.unload(); }
}"""


def _rows(runs: dict, usages: list[dict]) -> dict:
    """One folder on one backend: each run's tokens, decode speed and grammar figures, and the ratios."""
    rows: dict = {}
    for name, usage in zip(runs, usages):
        extra = usage["extra"]
        rows[name] = {"completion_tokens": usage["completion_tokens"],
                      "decode_tokens_per_s": round(extra["decode_tokens_per_s"], 2),
                      **{k: round(extra[k], 4) for k in ("grammar_compile_s", "grammar_mask_ms_per_token")
                         if k in extra},
                      **({"grammar_mask_where": extra["grammar_mask_where"]} if "grammar_mask_where" in extra else {})}
    for mode in ("greedy", "sampled"):
        free, constrained = rows[f"free_{mode}"], rows[f"schema_{mode}"]
        rows[f"schema_vs_free_{mode}"] = round(constrained["decode_tokens_per_s"] / free["decode_tokens_per_s"], 3)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=str(REPO / "out" / "models"))
    parser.add_argument("--model", default="smollm2-135m-instruct-source")
    parser.add_argument("--baseline", default=None,
                        help="a folder under --models of the same model built without apply_token_bitmask")
    parser.add_argument("--backends", default="wasm,webgpu")
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--json", default=str(REPO / "out" / "bench" / "structured.json"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    schema = {"type": "json_schema", "json_schema": {"name": "product", "schema": SCHEMAS["product"]}}
    runs = {
        "free_greedy": {"temperature": 0},
        "free_sampled": {"temperature": 0.7, "seed": 1},
        "schema_greedy": {"temperature": 0, "response_format": schema},
        "schema_sampled": {"temperature": 0.7, "seed": 1, "response_format": schema},
    }
    # a warm-up request first: the prompt is then in the KV cache for every measured one
    requests = [{"messages": ASK, "max_tokens": 2}] + [
        {"messages": ASK, "max_tokens": args.tokens, **extra} for extra in runs.values()]
    folders = {args.model: args.model, **({"baseline": args.baseline} if args.baseline else {})}
    result = {"model": args.model, "baseline": args.baseline, "tokens": args.tokens,
              "load_average": os.getloadavg(), "backends": {}}
    with webbuild_server(Path(args.models)) as url, sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_context().new_page()
        page.goto(url)
        for backend in args.backends.split(","):
            for label, folder in folders.items():
                usages = page.evaluate(RUN_JS, [f"{url}models/{folder}/", backend, requests])[1:]
                key = backend if label == args.model else f"{backend}_baseline"
                result["backends"][key] = _rows(runs, usages)
        browser.close()
    result["load_average_after"] = os.getloadavg()
    write_result(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
