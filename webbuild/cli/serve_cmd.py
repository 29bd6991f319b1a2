"""`python -m webbuild serve`: serve the web app, the JS runtime and built model folders over HTTP."""

from __future__ import annotations

import argparse
from pathlib import Path

import webbuild

from .build_cmd import DEFAULT_OUT

REPO_ROOT = Path(webbuild.__file__).resolve().parent.parent


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve the web app and model folders (COOP/COEP, ranges, gzip)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", default=DEFAULT_OUT, help="folder of model folders (where `make model` writes)")
    p.add_argument("--site", default=str(REPO_ROOT / "site"), help="web app folder served at /")
    p.add_argument("--dist", default=str(REPO_ROOT / "dist"), help="JS runtime bundle served at /dist/")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free port)")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..serve import ServeConfig, serve

    config = ServeConfig(models=Path(args.models), site=Path(args.site), dist=Path(args.dist))
    serve(config, host=args.host, port=args.port)
    return 0
