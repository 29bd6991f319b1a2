"""Serves one regular file with aiohttp's FileResponse, adding what it lacks.

FileResponse does ETags (mtime and size), If-None-Match/If-Match/If-Modified-Since, single byte
ranges (206/416) and sendfile. webbuild adds: its own Content-Type table, `Cache-Control: no-cache`
(shard names repeat across rebuilds, so browsers must revalidate instead of trusting a max-age),
`X-Content-Type-Options: nosniff`, the gzip representation (a cached compressed copy, see
gzip_cache.py), If-Range with entity tags (FileResponse only understands dates), and the RFC 9110
Range rules FileResponse gets wrong: other units are ignored, `bytes=-0` is unsatisfiable. Bodies
go out in chunks, each within the send timeout (limits.Timeouts.send), instead of through the
kernel's sendfile, which waits without end for a client that stopped reading.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import IO, Any

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from multidict import CIMultiDict

from .gzip_cache import GzipCache
from .negotiate import accepts_gzip, compressible, content_type, if_range_allows, is_bytes_range, is_zero_suffix

CACHE_CONTROL = "no-cache"
# Request headers FileResponse acts on but webbuild decides itself: the encoding (FileResponse would
# send a `.gz`/`.br` sibling of any file) and, when it must be ignored, the Range.
_DECIDED_HERE = (hdrs.ACCEPT_ENCODING, hdrs.IF_RANGE)


class StaticFile(web.FileResponse):
    """A FileResponse that sees only the request headers webbuild lets it act on."""

    def __init__(self, path: Path, headers: dict[str, str], *, honour_range: bool) -> None:
        super().__init__(path, headers=headers)
        self._honour_range = honour_range
        self._send_timeout: float | None = None  # the connection's (limits.GuardedRequestHandler), set in prepare

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        headers = CIMultiDict(request.headers)
        for name in _DECIDED_HERE if self._honour_range else (*_DECIDED_HERE, hdrs.RANGE):
            headers.popall(name, None)
        self._send_timeout = getattr(request.protocol, "send_timeout", None)
        return await super().prepare(request.clone(headers=headers))

    async def _sendfile(self, request: web.BaseRequest, fobj: IO[Any], offset: int,
                        count: int) -> AbstractStreamWriter:
        """The body in chunks, each of which must be sent within the send timeout (the kernel's
        sendfile path cannot be timed: a client that stopped reading held the handler forever)."""
        timeout = self._send_timeout
        if timeout is None:
            return await super()._sendfile(request, fobj, offset, count)
        writer = await web.StreamResponse.prepare(self, request)
        assert writer is not None  # a fresh response: prepare returns its writer
        loop = asyncio.get_running_loop()
        chunk = await loop.run_in_executor(None, self._seek_and_read, fobj, offset, min(self._chunk_size, count))
        try:
            while chunk:
                await asyncio.wait_for(writer.write(chunk), timeout)
                count -= len(chunk)
                if count <= 0:
                    break
                chunk = await loop.run_in_executor(None, fobj.read, min(self._chunk_size, count))
            await asyncio.wait_for(writer.drain(), timeout)
        except TimeoutError:
            if request.transport is not None:
                request.transport.abort()
            raise ConnectionResetError(f"the client read nothing for {timeout} s") from None
        return writer


def _aiohttp_etag(st: os.stat_result) -> str:
    # The ETag FileResponse sends for a file (web_fileresponse.py); If-Range is compared with it here.
    return f'"{st.st_mtime_ns:x}-{st.st_size:x}"'


def _base_headers(name: str, size: int) -> dict[str, str]:
    headers = {hdrs.CONTENT_TYPE: content_type(name), hdrs.CACHE_CONTROL: CACHE_CONTROL,
               "X-Content-Type-Options": "nosniff"}
    if compressible(name, size):
        headers[hdrs.VARY] = hdrs.ACCEPT_ENCODING
    return headers


def _honour_range(request: web.BaseRequest, st: os.stat_result) -> bool:
    header = request.headers.get(hdrs.RANGE)
    if header is None or not is_bytes_range(header):
        return False
    return if_range_allows(request.headers.get(hdrs.IF_RANGE), _aiohttp_etag(st))


async def send_file(request: web.BaseRequest, path: Path, name: str, cache: GzipCache) -> web.StreamResponse:
    """The response for the regular file at the resolved `path`; `name` (as requested) picks the Content-Type."""
    try:
        st = await asyncio.get_running_loop().run_in_executor(None, os.stat, path)
    except OSError:
        raise web.HTTPNotFound() from None
    headers = _base_headers(name, st.st_size)
    ranged = _honour_range(request, st)
    if ranged and is_zero_suffix(request.headers[hdrs.RANGE]):
        raise web.HTTPRequestRangeNotSatisfiable(headers={hdrs.CACHE_CONTROL: CACHE_CONTROL,
                                                          hdrs.CONTENT_RANGE: f"bytes */{st.st_size}"})
    if not ranged and compressible(name, st.st_size) and accepts_gzip(request.headers.get(hdrs.ACCEPT_ENCODING)):
        copy = await cache.copy_of(path, st)
        if copy is not None:
            return StaticFile(copy, {**headers, hdrs.CONTENT_ENCODING: "gzip"}, honour_range=False)
    return StaticFile(path, headers, honour_range=ranged)
