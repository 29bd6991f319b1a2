"""What aiohttp's FileResponse leaves to webbuild: content types, the gzip decision and Range screening.

Pure functions of header values and file names. ETags, If-None-Match, If-Match, If-Modified-Since,
byte ranges and 416 answers are aiohttp's (`web.FileResponse`); these rules only pick the
representation and decide which Range headers FileResponse must not see.
"""

from __future__ import annotations

import os
import re

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".webmanifest": "application/manifest+json",
    ".wasm": "application/wasm",
    ".bin": "application/octet-stream",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
}
DEFAULT_CONTENT_TYPE = "application/octet-stream"
COMPRESSIBLE = frozenset({".html", ".htm", ".css", ".js", ".mjs", ".json", ".map", ".webmanifest", ".wasm",
                          ".txt", ".md", ".svg"})
MIN_GZIP_BYTES = 256

_ZERO_SUFFIX = re.compile(r"bytes=-0+", re.IGNORECASE)


def _suffix(name: str) -> str:
    return os.path.splitext(name)[1].lower()


def content_type(name: str) -> str:
    """The Content-Type for a file name (by extension; unknown ones are opaque bytes)."""
    return CONTENT_TYPES.get(_suffix(name), DEFAULT_CONTENT_TYPE)


def compressible(name: str, size: int) -> bool:
    """Whether gzip is worth applying: text-like or wasm files of at least MIN_GZIP_BYTES (never .bin shards)."""
    return _suffix(name) in COMPRESSIBLE and size >= MIN_GZIP_BYTES


def _q_value(params: list[str]) -> float:
    for param in params:
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


def accepts_gzip(header: str | None) -> bool:
    """Whether Accept-Encoding allows gzip (explicitly, or through `*`, with a non-zero q)."""
    if not header:
        return False
    weights = {}
    for item in header.split(","):
        coding, *params = item.split(";")
        weights[coding.strip().lower()] = _q_value(params)
    if "gzip" in weights:
        return weights["gzip"] > 0
    return weights.get("*", 0) > 0


def is_bytes_range(header: str) -> bool:
    """Whether a Range header is in the `bytes` unit; RFC 9110 §14.2: a server ignores other units."""
    unit, sep, _ = header.strip().partition("=")
    return bool(sep) and unit.strip().lower() == "bytes"


def is_zero_suffix(header: str) -> bool:
    """`bytes=-0`: a suffix of no bytes, unsatisfiable (RFC 9110 §14.1.1), which FileResponse would send whole."""
    return _ZERO_SUFFIX.fullmatch(header.strip()) is not None


def if_range_allows(header: str | None, etag: str) -> bool:
    """If-Range with an entity tag: honour the Range only when it is the current strong ETag.

    Dates (no quote) are left to FileResponse, which compares them with the file's mtime.
    """
    if header is None:
        return True
    value = header.strip()
    if not value.startswith(('"', "W/")):
        return True
    return value == etag
