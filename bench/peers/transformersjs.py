"""The transformers.js peer (@huggingface/transformers on ONNX Runtime Web) in headless Chromium.

Usage: python bench/peers/transformersjs.py [--model out/bench/onnx/SmolLM2-135M-Instruct]
                                            [--tokens 16] [--check-torch]

For a harness: `serve(model_dir)` runs a cross-origin-isolated aiohttp server (COOP/COEP, needed
for wasm threads) with bench/pages/, transformers.js' browser bundle, onnxruntime-web's wasm files
and the ONNX model folder (from bench/peers/onnx_export.py); `run(page, device, dtype, threads,
tokens, url=...)` loads the model on that page and generates once, returning one flat dict. The
page (bench/pages/transformersjs.html) is local-only: no remote models, wasm files from the server.
`open_page` + `generate` split `run` for harnesses that generate several times per load.

`main()` runs wasm fp32 1 and 2 threads, wasm q4 2 threads and webgpu fp32 (SwiftShader here: ~0.05-0.2
tok/s, hence its own --webgpu-tokens), one fresh browser context each, and prints each result as
JSON; with --check-torch it also compares each generated id sequence to HF transformers' PyTorch
greedy one (EOS banned the same way).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode, urlsplit

REPO = Path(__file__).resolve().parents[2]
PAGES = REPO / "bench" / "pages"
NODE_MODULES = REPO / "node_modules"
TRANSFORMERS_DIR = NODE_MODULES / "@huggingface" / "transformers"
ORT_WEB_DIR = NODE_MODULES / "onnxruntime-web"
QUESTION = "What is the capital of France?"
DEVICES = ("wasm", "webgpu")
DTYPES = ("fp32", "q4")
DTYPE_FILES = {"fp32": "model.onnx", "q4": "model_q4.onnx"}
# (device, dtype, threads) that main() runs.
MAIN_CONFIGS = (("wasm", "fp32", 1), ("wasm", "fp32", 2), ("wasm", "q4", 2), ("webgpu", "fp32", 1))

for _path in (REPO, REPO / "tests", REPO / "bench", Path(__file__).resolve().parent):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from _peers import isolated_server  # noqa: E402


def versions() -> dict:
    """The npm versions of transformers.js and the onnxruntime-web it runs."""
    def version(folder: Path):
        try:
            return json.loads((folder / "package.json").read_text())["version"]
        except (OSError, ValueError, KeyError):
            return None

    return {"transformers_js": version(TRANSFORMERS_DIR), "onnxruntime_web": version(ORT_WEB_DIR)}


def check_install() -> None:
    """SystemExit with the fix when the npm packages are missing."""
    for path in (TRANSFORMERS_DIR / "dist" / "transformers.js", ORT_WEB_DIR / "dist"):
        if not path.exists():
            raise SystemExit(f"{path} is missing: run `make deps-js`")


# ---------------------------------------------------------------------------------------------
# The server

@contextmanager
def serve(model_dir: str | Path):
    """A cross-origin-isolated server (`_peers.isolated_server`: own thread and event loop, so it also
    starts inside Playwright's sync API) for the page, the npm files and `model_dir`.

    Yields its base URL (ending in '/'); the model is `models/<model_dir.name>/` under it.
    """
    check_install()
    model_dir = Path(model_dir).resolve()
    if not (model_dir / "config.json").is_file():
        raise SystemExit(f"{model_dir} is not a model folder (no config.json): see bench/peers/onnx_export.py")
    static = {"pages": PAGES, "transformers": TRANSFORMERS_DIR / "dist", "ort": ORT_WEB_DIR / "dist",
              f"models/{model_dir.name}": model_dir}
    with isolated_server(static, title="transformers.js bench") as url:
        yield url


# ---------------------------------------------------------------------------------------------
# Driving the page

def page_url(url: str, model: str, device: str, dtype: str, threads: int, browser_cache: bool = True) -> str:
    """The bench page's URL for one configuration (bad values: SystemExit)."""
    if device not in DEVICES:
        raise SystemExit(f"device must be one of {DEVICES}, not {device!r}")
    if dtype not in DTYPES:
        raise SystemExit(f"dtype must be one of {DTYPES}, not {dtype!r}")
    if not isinstance(threads, int) or threads < 1:
        raise SystemExit(f"threads must be a positive integer, not {threads!r}")
    query = urlencode({"device": device, "dtype": dtype, "threads": threads, "model": model, "models": "/models/",
                       "browser_cache": int(browser_cache)})
    return f"{url}pages/transformersjs.html?{query}"


def _local_only(page, url: str) -> list[str]:
    """Abort every request that leaves the server's origin; returns the list of those URLs."""
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
    blocked: list[str] = []

    def handle(route):
        if route.request.url.startswith(origin) or route.request.url.startswith(("blob:", "data:")):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.route("**/*", handle)
    return blocked


def open_page(page, device: str, dtype: str, threads: int, *, url: str,
              model: str = "SmolLM2-135M-Instruct", browser_cache: bool = True) -> dict:
    """Navigate `page` to the bench page and load the model; returns the page's load info.

    With `browser_cache` (transformers.js' default) the model files go into the Cache API on the first
    load, so a second `window.benchLoad()` on the same page is a warm load.
    """
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    blocked = _local_only(page, url)
    page.goto(page_url(url, model, device, dtype, threads, browser_cache))
    try:
        page.wait_for_function("window.benchReady === true", timeout=60_000)
        info = page.evaluate("() => window.benchLoad()")
    except Exception as exc:
        raise RuntimeError(f"transformers.js page failed: {exc}; page errors: {errors}; blocked: {blocked}") from exc
    return {**info, "blocked_requests": blocked, "page_errors": errors}


def generate(page, tokens: int, messages: list[dict] | None = None) -> dict:
    """One greedy generation of exactly `tokens` tokens on a loaded page (timings in ms and tok/s)."""
    if not isinstance(tokens, int) or tokens < 1:
        raise SystemExit(f"tokens must be a positive integer, not {tokens!r}")
    messages = messages or [{"role": "user", "content": QUESTION}]
    load = os.getloadavg()
    result = page.evaluate("(request) => window.benchGenerate(request)",
                           {"prompt_messages": messages, "max_new_tokens": tokens})
    return {**result, "loadavg": [load, os.getloadavg()]}


def run(page, device: str, dtype: str, threads: int, tokens: int, *, url: str,
        model: str = "SmolLM2-135M-Instruct", messages: list[dict] | None = None) -> dict:
    """Load once and generate once; a flat dict of the configuration, load info and generation."""
    info = open_page(page, device, dtype, threads, url=url, model=model)
    result = generate(page, tokens, messages)
    return {"engine": "transformers.js", **versions(), "device": device, "dtype": dtype, "threads": threads,
            **{k: v for k, v in info.items() if k not in ("device", "dtype", "threads", "models", "ort")}, **result}


# ---------------------------------------------------------------------------------------------
# Standalone

def torch_reference(tokens: int) -> tuple[list[int], str]:
    """HF transformers' PyTorch greedy ids and text for the France prompt, EOS banned."""
    from onnx_export import gguf_path, load_reference, prompt_ids, torch_greedy

    hf, tokenizer = load_reference(gguf_path())
    ids = torch_greedy(hf, prompt_ids(tokenizer), tokens, suppress_eos=True)
    text = tokenizer.decode(ids, skip_special_tokens=True)
    print(json.dumps({"torch_token_ids": ids, "torch_text": text}), flush=True)
    return ids, text


def main(argv: list[str] | None = None) -> None:
    from playwright.sync_api import sync_playwright

    from browser_support import launch_chromium
    from onnx_export import DEFAULT_OUT, ensure_onnx_export

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_OUT, help="transformers.js model folder")
    parser.add_argument("--tokens", type=int, default=16, help="tokens to generate per wasm run")
    parser.add_argument("--webgpu-tokens", type=int, default=4, help="tokens for the (SwiftShader) webgpu run")
    parser.add_argument("--check-torch", action="store_true", help="compare texts to PyTorch greedy")
    args = parser.parse_args(argv)
    model_dir = ensure_onnx_export(args.model)
    reference = torch_reference(max(args.tokens, args.webgpu_tokens)) if args.check_torch else None
    with serve(model_dir) as url, sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            for device, dtype, threads in MAIN_CONFIGS:
                tokens = args.webgpu_tokens if device == "webgpu" else args.tokens
                context = browser.new_context()
                try:
                    r = run(context.new_page(), device, dtype, threads, tokens, url=url, model=model_dir.name)
                finally:
                    context.close()
                if reference:
                    r["torch_token_ids"] = reference[0][:tokens]
                    r["matches_torch"] = r["token_ids"] == r["torch_token_ids"]
                print(json.dumps(r), flush=True)
        finally:
            browser.close()


if __name__ == "__main__":
    main()
