"""Playwright + Debian chromium for browser tests, and a `python -m webbuild serve` subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

from webbuild.runner import CpuModel

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic", "--enable-unsafe-webgpu"]


def _drain(stream, keep: deque) -> None:
    """Read `stream` to its end, keeping the last lines (a pipe nobody reads would fill and stall the server)."""
    for line in stream:
        keep.append(line)


@contextmanager
def webbuild_server(models: Path, site: Path | None = None):
    """Run `python -m webbuild serve --port 0`; yields its base URL (ending in '/').

    After the URL line, threads keep reading the server's stdout and stderr until it exits.
    """
    cmd = [sys.executable, "-m", "webbuild", "serve", "--port", "0", "--models", str(models)]
    if site is not None:
        cmd += ["--site", str(site)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    errors: deque[str] = deque(maxlen=50)
    drains = [threading.Thread(target=_drain, args=(proc.stderr, errors), daemon=True)]
    drains[0].start()
    try:
        line = proc.stdout.readline().strip()
        drains.append(threading.Thread(target=_drain, args=(proc.stdout, deque(maxlen=50)), daemon=True))
        drains[1].start()
        if not line.startswith("http://"):
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            drains[0].join(timeout=10)
            raise RuntimeError(f"server did not start: {line!r} {''.join(errors)}")
        yield line if line.endswith("/") else line + "/"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        for drain in drains:
            drain.join(timeout=10)


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)


@contextmanager
def page_at(browser, url: str, *, on: Mapping[str, Callable] | None = None, **context_options):
    """A page in a new browser context (`context_options` go to `browser.new_context`), navigated to
    `url`; `on`: page event handlers (event name: callback), attached before the navigation.
    The context is closed on the way out."""
    context = browser.new_context(**context_options)
    try:
        page = context.new_page()
        for event, handler in (on or {}).items():
            page.on(event, handler)
        page.goto(url)
        yield page
    finally:
        context.close()


ENGINE_JS = """async ([url, options, request]) => {
  const wb = await import('/dist/webbuild.js');
  const engine = await wb.createEngine(url, options);
  try {
    const response = await engine.chat.completions.create(request);
    const where = {backend: engine.backend, threads: engine.threads};
    if (!request.stream) return {text: response.choices[0].message.content, usage: response.usage,
                                 finish: response.choices[0].finish_reason, ...where};
    let text = '', finish = null, usage = null;
    for await (const chunk of response) {
      text += chunk.choices[0]?.delta?.content ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
      usage = chunk.usage ?? usage;
    }
    return {text, usage, finish, ...where};
  } finally { await engine.unload(); }
}"""


def run_engine(page, server, model: str, request: dict, **options):
    return page.evaluate(ENGINE_JS, [f"{server}models/{model}/", options, request])


def render_chat(template: str, messages) -> str:
    """`messages` rendered by a chat template with the generation prompt, as the runtime renders them."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=messages, add_generation_prompt=True)


def chat_prompt_ids(folder: Path, messages) -> list[int]:
    """The prompt ids of `messages` under the folder's chat template, as the runtime tokenizes them."""
    config = json.loads((Path(folder) / "chat-config.json").read_text())
    tok = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
    return tok.encode(render_chat(config["chat_template"], messages), add_special_tokens=False).ids


def decode_text(folder: Path, ids: list[int]) -> str:
    """Token ids as text, skipping special tokens (as the runtime streams them)."""
    return Tokenizer.from_file(str(Path(folder) / "tokenizer.json")).decode(ids, skip_special_tokens=True)


def cpu_greedy_ids(folder: Path, messages, max_tokens: int, logit_bias: dict[int, float] | None = None) -> list[int]:
    """The CPU build's greedy ids for the chat prompt, with `logit_bias` added to the logits (as the
    runtime's logit_bias does); stops after a stop id (a bias of -100 on them makes that unlikely)."""
    model = CpuModel(folder)
    stops = set(model.config["stop_token_ids"])
    out: list[int] = []
    logits = model.prefill(chat_prompt_ids(folder, messages))
    while len(out) < max_tokens:
        for token, bias in (logit_bias or {}).items():
            logits[token] += bias
        out.append(int(np.argmax(logits)))
        if out[-1] in stops or len(out) == max_tokens:
            break
        logits = model.decode(out[-1])
    return out


def cpu_greedy_text(folder: Path, messages, max_tokens: int) -> str:
    """The CPU build's greedy completion for the same chat prompt, decoded like the runtime does."""
    stops = json.loads((Path(folder) / "chat-config.json").read_text())["stop_token_ids"]
    out = [t for t in cpu_greedy_ids(folder, messages, max_tokens) if t not in stops]
    return decode_text(folder, out)
