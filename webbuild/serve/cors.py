"""Cross-origin reading of the model folders and the model list, as a CDN hosting them would allow.

A page on another origin (a site that hosts only the app, a model folder on another server) loads a
model with `fetch` in CORS mode: the answers to `/models/...` and `/api/models` (errors included,
so that page sees a 404 rather than a network error) allow every origin, expose the headers the
runtime reads (Content-Range to resume a download, ETag, Content-Length) and carry
`Cross-Origin-Resource-Policy: cross-origin`, so a cross-origin-isolated page (COEP require-corp)
may embed them too. An OPTIONS preflight for those paths answers 204. The site and the runtime
bundle stay same-origin only.

Model folders are public files: no credentials are involved, so `*` is the right origin.
"""

from __future__ import annotations

from aiohttp import hdrs, web

ALLOWED_METHODS = "GET, HEAD"
# request headers a cross-origin page may set: ranges and revalidation
ALLOWED_REQUEST_HEADERS = "Range, If-Range, If-None-Match, If-Modified-Since"
EXPOSED_HEADERS = "Content-Range, Content-Length, Content-Encoding, Accept-Ranges, ETag, Last-Modified"
PREFLIGHT_MAX_AGE_S = 7200  # Chromium's cap
SHARED_HEADERS = {
    hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: "*",
    hdrs.ACCESS_CONTROL_EXPOSE_HEADERS: EXPOSED_HEADERS,
    "Cross-Origin-Resource-Policy": "cross-origin",
}

PREFLIGHT_HEADERS = {
    hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: "*",
    hdrs.ALLOW: f"{ALLOWED_METHODS}, OPTIONS",
    hdrs.ACCESS_CONTROL_ALLOW_METHODS: ALLOWED_METHODS,
    hdrs.ACCESS_CONTROL_ALLOW_HEADERS: ALLOWED_REQUEST_HEADERS,
    hdrs.ACCESS_CONTROL_MAX_AGE: str(PREFLIGHT_MAX_AGE_S),
}


def is_shared(raw_path: str) -> bool:
    """True for the paths other origins may read: the model folders' files and the model list."""
    return raw_path.startswith("/models/") or raw_path == "/api/models"


def add_shared_headers(response: web.StreamResponse) -> None:
    """The CORS and resource-policy headers of a shared path's answer (replacing same-origin CORP)."""
    response.headers.update(SHARED_HEADERS)


def preflight() -> web.Response:
    """The 204 answer to an OPTIONS request (a CORS preflight) for a shared path."""
    return web.Response(status=204, headers=PREFLIGHT_HEADERS)
