"""Starts the server: checks the folders, binds, announces the URL and runs until interrupted.

While it runs, log records go through a queue to a writer thread (logs.py), so a stderr nobody
reads never blocks the event loop, and connections obey the timeouts of limits.py. SIGTERM and
Ctrl-C stop it within about twice the shutdown grace.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from aiohttp import web

from ..errors import ServerStartError, SourceNotFoundError
from .app import ServeConfig, make_app
from .limits import GuardedAppRunner, Timeouts
from .logs import LogPump, level_from_env


def check_folders(config: ServeConfig) -> list[str]:
    """Raise when the site folder is missing; return warnings for a missing models or dist folder."""
    if not config.site.is_dir():
        raise SourceNotFoundError("the web app folder does not exist", where=str(config.site),
                                  fix="pass --site DIR pointing at the folder with index.html")
    warnings = []
    if not config.models.is_dir():
        warnings.append(f"no models folder at {config.models}; /api/models lists nothing. Build a model with "
                        f"`make model` (or `python -m webbuild build SOURCE --out {config.models}`), "
                        "or pass --models DIR")
    if not config.dist.is_dir():
        warnings.append(f"no runtime bundle at {config.dist}; /dist/ answers 404. Pass --dist DIR")
    return warnings


def url_for(host: str, port: int) -> str:
    """The URL to open for a listening address (IPv6 hosts in brackets)."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):
            pass


async def _start(runner: web.AppRunner, host: str, port: int) -> int:
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as err:
        raise ServerStartError(f"cannot listen on {host}:{port} ({err.strerror or err})", where="--host/--port",
                               fix="pick a free port with --port N, or --port 0 for any free port") from None
    return runner.addresses[0][1]


async def _serve(config: ServeConfig, host: str, port: int, timeouts: Timeouts) -> None:
    runner = GuardedAppRunner(make_app(config), timeouts, access_log=None)
    await runner.setup()
    try:
        bound = await _start(runner, host, port)
        stop = asyncio.Event()
        _stop_on_signals(stop)
        print(url_for(host, bound), flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def serve(config: ServeConfig, host: str = "127.0.0.1", port: int = 8000, timeouts: Timeouts | None = None) -> None:
    """Serve `config` on host:port until Ctrl-C or SIGTERM; prints warnings to stderr, the URL to stdout.

    `timeouts` defaults to Timeouts.from_env(); the log level comes from WEBBUILD_SERVE_LOG_LEVEL.
    """
    timeouts = Timeouts.from_env() if timeouts is None else timeouts
    level = level_from_env()
    for warning in check_folders(config):
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    pump = LogPump(level=level)
    pump.start()
    try:
        asyncio.run(_serve(config, host, port, timeouts))
    except KeyboardInterrupt:
        pass
    finally:
        pump.stop()
