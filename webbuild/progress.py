"""Structured progress events ({stage, file, loaded, total}) and a terminal renderer for them."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

ProgressFn = Callable[[dict], None]


def event(stage: str, file: str | None = None, loaded: int | None = None, total: int | None = None) -> dict:
    """One progress event; `loaded`/`total` are counts (tensors, files, bytes) for the stage."""
    return {"stage": stage, "file": file, "loaded": loaded, "total": total}


def silent(_event: dict) -> None:
    """A progress callback that ignores everything."""


class TerminalProgress:
    """Renders events as one updating line per stage on a terminal, plain lines otherwise."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.stage = None
        self.started = time.monotonic()

    def __call__(self, ev: dict) -> None:
        stage, loaded, total = ev["stage"], ev.get("loaded"), ev.get("total")
        count = f" {loaded}/{total}" if loaded is not None and total else (f" {loaded}" if loaded else "")
        name = f" {ev['file']}" if ev.get("file") else ""
        line = f"[{time.monotonic() - self.started:6.1f}s] {stage}{count}{name}"
        if self.tty:
            end = "\n" if stage != self.stage and self.stage is not None else ""
            self.stream.write(end + "\r\033[K" + line)
        elif stage != self.stage or (total and loaded == total):
            self.stream.write(line + "\n")
        self.stage = stage
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.stage is not None:
            self.stream.write("\n")
            self.stream.flush()
