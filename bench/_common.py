"""Helpers shared by the bench scripts: the repository root and writing a result as JSON."""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def write_result(path: str | Path, result: dict, echo: bool = True) -> None:
    """Write `result` as indented JSON to `path` (creating its folder); print it too when `echo`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2)
    path.write_text(text)
    if echo:
        print(text)
