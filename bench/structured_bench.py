"""Structured-output cost: decode tokens/s of one model folder in headless chromium with and without a
response_format (a JSON Schema), one run per backend, plus the grammar's compile time and per-token mask
cost (usage.extra). Free text is decoded greedy (the device argmax) and sampled (temperature 0.7, the
logits read back as a grammar needs them), so the mask's own cost is the schema run against the
sampled one.

Usage: python bench/structured_bench.py [--models out/models] [--model smollm2-135m-instruct-source]
                                        [--backends wasm,webgpu] [--tokens 48]
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=str(REPO / "out" / "models"))
    parser.add_argument("--model", default="smollm2-135m-instruct-source")
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
    result = {"model": args.model, "tokens": args.tokens, "load_average": os.getloadavg(), "backends": {}}
    with webbuild_server(Path(args.models)) as url, sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_context().new_page()
        page.goto(url)
        for backend in args.backends.split(","):
            usages = page.evaluate(RUN_JS, [f"{url}models/{args.model}/", backend, requests])[1:]
            rows = {}
            for name, usage in zip(runs, usages):
                extra = usage["extra"]
                rows[name] = {"completion_tokens": usage["completion_tokens"],
                              "decode_tokens_per_s": round(extra["decode_tokens_per_s"], 2),
                              **{k: round(extra[k], 4) for k in ("grammar_compile_s", "grammar_mask_ms_per_token")
                                 if k in extra}}
            for mode in ("greedy", "sampled"):
                free, constrained = rows[f"free_{mode}"], rows[f"schema_{mode}"]
                rows[f"schema_vs_free_{mode}"] = round(constrained["decode_tokens_per_s"]
                                                       / free["decode_tokens_per_s"], 3)
            result["backends"][backend] = rows
        browser.close()
    write_result(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
