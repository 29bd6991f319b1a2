"""Playwright + Debian chromium for browser tests, and a `python -m webbuild serve` subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

from webbuild.runner import CpuModel

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic", "--enable-unsafe-webgpu"]


@contextmanager
def webbuild_server(models: Path, site: Path | None = None):
    """Run `python -m webbuild serve --port 0`; yields its base URL (ending in '/')."""
    cmd = [sys.executable, "-m", "webbuild", "serve", "--port", "0", "--models", str(models)]
    if site is not None:
        cmd += ["--site", str(site)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        line = proc.stdout.readline().strip()
        if not line.startswith("http://"):
            raise RuntimeError(f"server did not start: {line!r} {proc.stderr.read() if proc.poll() is not None else ''}")
        yield line if line.endswith("/") else line + "/"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)


ENGINE_JS = """async ([url, options, request]) => {
  const wb = await import('/dist/webbuild.js');
  const engine = await wb.createEngine(url, options);
  try {
    const response = await engine.chat.completions.create(request);
    if (!request.stream) return {text: response.choices[0].message.content, usage: response.usage,
                                 finish: response.choices[0].finish_reason};
    let text = '', finish = null, usage = null;
    for await (const chunk of response) {
      text += chunk.choices[0]?.delta?.content ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
      usage = chunk.usage ?? usage;
    }
    return {text, usage, finish};
  } finally { await engine.unload(); }
}"""


def run_engine(page, server, model: str, request: dict, **options):
    return page.evaluate(ENGINE_JS, [f"{server}models/{model}/", options, request])


def cpu_greedy_text(folder: Path, messages, max_tokens: int) -> str:
    """The CPU build's greedy completion for the same chat prompt, decoded like the runtime does."""
    model = CpuModel(folder)
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    prompt = env.from_string(model.config["chat_template"]).render(messages=messages, add_generation_prompt=True)
    ids = tok.encode(prompt, add_special_tokens=False).ids
    out = model.greedy(ids, max_tokens, stop=set(model.config["stop_token_ids"]))
    out = [t for t in out if t not in model.config["stop_token_ids"]]
    return tok.decode(out, skip_special_tokens=True)
