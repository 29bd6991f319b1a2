"""Streams one regular file as an HTTP response: ETag/304, single Range (206/416), optional gzip.

Files are read in CHUNK_BYTES pieces with `os.pread` on a worker thread (32 MiB shards never sit
in memory whole). Every file response carries `Cache-Control: no-cache`: shard names repeat across
rebuilds, so browsers must revalidate with the ETag instead of trusting a long max-age.
"""

from __future__ import annotations

import asyncio
import os
import zlib
from pathlib import Path

from aiohttp import hdrs, web

from .negotiate import (RangeNotSatisfiable, accepts_gzip, compressible, content_type, etag_matches,
                        file_etag, gzip_etag, if_range_allows, parse_range)
from .paths import open_regular

CHUNK_BYTES = 256 * 1024
CACHE_CONTROL = "no-cache"
GZIP_LEVEL = 6


def _base_headers(name: str, size: int) -> dict[str, str]:
    headers = {hdrs.CONTENT_TYPE: content_type(name), hdrs.CACHE_CONTROL: CACHE_CONTROL,
               hdrs.ACCEPT_RANGES: "bytes", "X-Content-Type-Options": "nosniff"}
    if compressible(name, size):
        headers[hdrs.VARY] = "Accept-Encoding"
    return headers


def _read_chunk(fd: int, offset: int, length: int, compressor) -> tuple[int, bytes]:
    data = os.pread(fd, length, offset)
    if compressor is None:
        return len(data), data
    return len(data), compressor.compress(data)


async def _stream(resp: web.StreamResponse, fd: int, start: int, length: int, use_gzip: bool) -> None:
    loop = asyncio.get_running_loop()
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31) if use_gzip else None
    offset, end = start, start + length
    while offset < end:
        read, data = await loop.run_in_executor(None, _read_chunk, fd, offset, min(CHUNK_BYTES, end - offset),
                                                compressor)
        if read == 0:
            raise ConnectionAbortedError("file shrank while it was being sent")
        offset += read
        if data:
            await resp.write(data)
    if compressor is not None:
        await resp.write(compressor.flush())


async def _send(request: web.Request, resp: web.StreamResponse, fd: int, span: tuple[int, int],
                use_gzip: bool) -> web.StreamResponse:
    if not use_gzip:
        resp.content_length = span[1]
    await resp.prepare(request)
    if request.method != hdrs.METH_HEAD:
        await _stream(resp, fd, span[0], span[1], use_gzip)
    await resp.write_eof()
    return resp


async def _respond(request: web.Request, name: str, fd: int, st: os.stat_result) -> web.StreamResponse:
    size, etag = st.st_size, file_etag(st)
    headers = _base_headers(name, size)
    range_header = request.headers.get(hdrs.RANGE)
    if not if_range_allows(request.headers.get(hdrs.IF_RANGE), etag):
        range_header = None
    use_gzip = range_header is None and compressible(name, size) and accepts_gzip(
        request.headers.get(hdrs.ACCEPT_ENCODING))
    headers["ETag"] = gzip_etag(etag) if use_gzip else etag
    if etag_matches(request.headers.get(hdrs.IF_NONE_MATCH), headers["ETag"]):
        return web.Response(status=304, headers=headers)
    if range_header is None:
        if use_gzip:
            headers[hdrs.CONTENT_ENCODING] = "gzip"
        return await _send(request, web.StreamResponse(status=200, headers=headers), fd, (0, size), use_gzip)
    try:
        start, end = parse_range(range_header, size)
    except RangeNotSatisfiable:
        headers[hdrs.CONTENT_RANGE] = f"bytes */{size}"
        headers[hdrs.CONTENT_TYPE] = "text/plain; charset=utf-8"
        return web.Response(status=416, text="416: Range Not Satisfiable", headers=headers)
    headers[hdrs.CONTENT_RANGE] = f"bytes {start}-{end}/{size}"
    return await _send(request, web.StreamResponse(status=206, headers=headers), fd, (start, end - start + 1), False)


async def send_file(request: web.Request, path: Path, name: str) -> web.StreamResponse:
    """Serve the regular file at the resolved `path`; `name` (the requested name) picks the Content-Type."""
    opened = open_regular(path)
    if opened is None:
        raise web.HTTPNotFound()
    fd, st = opened
    try:
        return await _respond(request, name, fd, st)
    finally:
        os.close(fd)
