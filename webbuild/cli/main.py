"""Top-level argparse shell: dispatches sub-commands and turns WebbuildError into a clean exit."""

from __future__ import annotations

import argparse
import sys

from ..errors import WebbuildError
from . import build_cmd, serve_cmd

COMMANDS = (build_cmd, serve_cmd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m webbuild",
                                     description="Compile language models for the browser and serve them.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except WebbuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing was written", file=sys.stderr)
        return 130
