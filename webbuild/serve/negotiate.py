"""HTTP negotiation for static files: content types, ETags, conditional requests, Range and gzip choice.

Pure functions of header values and file metadata, kept apart from the streaming code so each rule
can be read (and tested) on its own.
"""

from __future__ import annotations

import hashlib
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

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_ETAG = re.compile(r'(?:W/)?"[^"]*"|\*')


class RangeNotSatisfiable(ValueError):
    """The Range header is malformed, asks for several ranges, or lies outside the file."""


def _suffix(name: str) -> str:
    return os.path.splitext(name)[1].lower()


def content_type(name: str) -> str:
    """The Content-Type for a file name (by extension; unknown ones are opaque bytes)."""
    return CONTENT_TYPES.get(_suffix(name), DEFAULT_CONTENT_TYPE)


def compressible(name: str, size: int) -> bool:
    """Whether gzip is worth applying: text-like or wasm files of at least MIN_GZIP_BYTES (never .bin shards)."""
    return _suffix(name) in COMPRESSIBLE and size >= MIN_GZIP_BYTES


def file_etag(st: os.stat_result) -> str:
    """A strong ETag from device, inode, size and mtime: any rewrite or replacement of the file changes it."""
    key = f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}".encode()
    return f'"{hashlib.blake2b(key, digest_size=12).hexdigest()}"'


def gzip_etag(etag: str) -> str:
    """The ETag of the gzip-encoded representation (distinct, as a strong validator must be)."""
    return f'{etag[:-1]}-gzip"'


def etag_matches(header: str | None, etag: str) -> bool:
    """If-None-Match semantics: `*` or any listed tag equal to `etag` under weak comparison."""
    if not header:
        return False
    tags = _ETAG.findall(header)
    return "*" in tags or any(tag.removeprefix("W/") == etag for tag in tags)


def if_range_allows(header: str | None, etag: str) -> bool:
    """If-Range: honour the Range only when the validator is our current strong ETag (or absent)."""
    return header is None or header.strip() == etag


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


def parse_range(header: str, size: int) -> tuple[int, int]:
    """One `bytes=a-b`, `bytes=a-` or `bytes=-n` range as (start, end inclusive), clamped to the file.

    Raises RangeNotSatisfiable for anything else: other units, several ranges, end before start,
    a start at or past the end of the file, or an empty suffix.
    """
    match = _RANGE.fullmatch(header.strip().replace(" ", ""))
    if not match or match.group(1) == match.group(2) == "":
        raise RangeNotSatisfiable(header)
    first, last = match.groups()
    if first == "":
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(header)
        return max(0, size - suffix), size - 1
    start = int(first)
    end = size - 1 if last == "" else int(last)
    if start >= size or end < start:
        raise RangeNotSatisfiable(header)
    return start, min(end, size - 1)
