"""Playwright + Debian chromium for browser tests, and a `python -m webbuild serve` subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

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
