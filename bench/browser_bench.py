"""Browser benchmark: cold and warm model load, time to first token, prefill and decode tokens/s of a
model folder in headless chromium (WebGPU; on machines without a GPU that is SwiftShader).

Usage: python bench/browser_bench.py [--models out/models] [--model smollm2-135m-instruct-q4f32_1]
                                     [--tokens 16] [--json out/bench/browser.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _common import REPO, write_result

sys.path.insert(0, str(REPO / "tests"))

from browser_support import launch_chromium, webbuild_server  # noqa: E402

QUESTION = "What is the capital of France?"
RUN_JS = """async ([url, tokens, question]) => {
  const wb = await import('/dist/webbuild.js');
  const t0 = performance.now();
  const engine = await wb.createEngine(url, {});
  const load = (performance.now() - t0) / 1000;
  const r = await engine.chat.completions.create({messages: [{role: 'user', content: question}],
                                                  temperature: 0, max_tokens: tokens});
  await engine.unload();
  const info = (await navigator.gpu.requestAdapter()).info;
  return {load_s: load, usage: r.usage,
          adapter: {vendor: info.vendor, architecture: info.architecture, description: info.description}};
}"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=str(REPO / "out" / "models"))
    parser.add_argument("--model", default="smollm2-135m-instruct-q4f32_1")
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--json", default=str(REPO / "out" / "bench" / "browser.json"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    runs = {}
    with webbuild_server(Path(args.models)) as url, sync_playwright() as p:
        browser = launch_chromium(p)
        context = browser.new_context()
        page = context.new_page()
        page.goto(url)
        for name in ("cold", "warm"):  # warm: shards from the Cache API, same browser profile
            started = time.monotonic()
            r = page.evaluate(RUN_JS, [f"{url}models/{args.model}/", args.tokens, QUESTION])
            runs[name] = {"load_s": round(r["load_s"], 2), "wall_s": round(time.monotonic() - started, 2),
                          **{k: round(v, 3) for k, v in r["usage"]["extra"].items()},
                          "prompt_tokens": r["usage"]["prompt_tokens"],
                          "completion_tokens": r["usage"]["completion_tokens"]}
            adapter = r["adapter"]
            page.reload()
        browser.close()
    result = {"benchmark": "browser", "model": args.model, "adapter": adapter, **runs}
    write_result(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
