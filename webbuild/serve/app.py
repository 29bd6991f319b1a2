"""The aiohttp application: routes, method policy and the cross-origin isolation headers.

URL space:
  /api/models            JSON list of model folders (see catalog.py)
  /models/<folder>/<file> files of the model folders under --models
  /dist/<file>           the JS runtime bundle under --dist
  /<file>, /             the web app under --site (`/` and any `.../` serve index.html)
Only GET and HEAD are allowed (others, CONNECT included, answer 405 with `Allow`), and OPTIONS (a CORS
preflight) on the paths other origins may read: /models/ and /api/models (cors.py). Paths are
checked on their raw, percent-encoded form (paths.py).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from . import cors
from .catalog import list_models
from .files import send_file
from .gzip_cache import GzipCache
from .paths import BadPath, resolve_file, split_path

INDEX = "index.html"
ALLOWED_METHODS = (hdrs.METH_GET, hdrs.METH_HEAD)
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}


@dataclass(frozen=True)
class ServeConfig:
    """The three served folders."""

    models: Path
    site: Path
    dist: Path


CONFIG_KEY = web.AppKey("webbuild_serve_config", ServeConfig)
GZIP_KEY = web.AppKey("webbuild_serve_gzip", GzipCache)


async def _add_isolation_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in ISOLATION_HEADERS.items():
        response.headers.setdefault(name, value)
    if cors.is_shared(request.rel_url.raw_path):
        cors.add_shared_headers(response)


@web.middleware
async def _only_get_and_head(request: web.Request, handler: Handler) -> web.StreamResponse:
    # The router already answers 405 to methods on known paths; CONNECT's target (`host:port`) is no
    # path at all, so it would get a 404. Bytes after a CONNECT head are tunnel data: close after answering.
    shared = cors.is_shared(request.rel_url.raw_path)
    if request.method == hdrs.METH_OPTIONS and shared:
        return cors.preflight()
    if request.method not in ALLOWED_METHODS:
        allowed = (*ALLOWED_METHODS, hdrs.METH_OPTIONS) if shared else ALLOWED_METHODS
        refusal = web.HTTPMethodNotAllowed(request.method, allowed)
        if request.method == hdrs.METH_CONNECT:
            refusal.force_close()
        raise refusal
    return await handler(request)


async def _api_models(request: web.Request, config: ServeConfig) -> web.Response:
    loop = asyncio.get_running_loop()
    models = await loop.run_in_executor(None, list_models, config.models)
    return web.json_response({"models": models}, headers={hdrs.CACHE_CONTROL: "no-cache"})


def _pick_root(config: ServeConfig, segments: tuple[str, ...]) -> tuple[Path, tuple[str, ...]]:
    head = segments[0] if segments else ""
    if head == "models":
        if len(segments) < 3:
            raise web.HTTPNotFound()
        return config.models, segments[1:]
    if head == "dist":
        return config.dist, segments[1:]
    return config.site, segments


async def _dispatch(request: web.Request) -> web.StreamResponse:
    config: ServeConfig = request.app[CONFIG_KEY]
    try:
        segments, trailing = split_path(request.rel_url.raw_path)
    except BadPath:
        raise web.HTTPBadRequest(text="400: Bad Request (unsafe path)") from None
    if segments and segments[0] == "api":
        if segments == ("api", "models") and not trailing:
            return await _api_models(request, config)
        raise web.HTTPNotFound()
    if trailing:
        segments = (*segments, INDEX)
    root, rest = _pick_root(config, segments)
    path = resolve_file(root, rest) if rest else None
    if path is None:
        raise web.HTTPNotFound()
    return await send_file(request, path, rest[-1], request.app[GZIP_KEY])


async def _remove_gzip_copies(app: web.Application) -> None:
    app[GZIP_KEY].remove()


def make_app(config: ServeConfig) -> web.Application:
    """The application serving `config`'s folders (GET/HEAD only; others answer 405 with `Allow`)."""
    app = web.Application(middlewares=[_only_get_and_head])
    app[CONFIG_KEY] = config
    app[GZIP_KEY] = GzipCache()
    app.router.add_get(r"/{path:[\s\S]*}", _dispatch)
    app.on_response_prepare.append(_add_isolation_headers)
    app.on_cleanup.append(_remove_gzip_copies)
    return app
