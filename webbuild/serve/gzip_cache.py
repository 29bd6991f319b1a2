"""Gzip copies of compressible files, made once per file version and served by aiohttp's FileResponse.

Compressing on the fly would give both representations one ETag and Content-Length (and aiohttp's
compressing writer appends an empty gzip stream to bodiless 304/HEAD answers, which clients read as a
broken next response). A compressed copy is a file of its own: FileResponse gives it its own ETag
(mtime and size; the copy keeps the source's mtime and is byte-for-byte reproducible, so the ETag
survives a server restart), and serves conditional requests and HEAD from it with sendfile.

Copies live in a private temporary folder removed when the application stops; a file that changes
gets a new copy and its older copy is deleted. A file that gzip does not shrink is served as is.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

GZIP_LEVEL = 6
READ_BYTES = 1 << 20


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=10).hexdigest()


def _version(st: os.stat_result) -> str:
    return _digest(f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}")


def _same_version(a: os.stat_result, b: os.stat_result) -> bool:
    return _version(a) == _version(b)


def _compress(source: Path, st: os.stat_result, target: Path) -> bool:
    """Write `source` gzipped to `target` (mtime of `st`); False when the file changed or gzip is no smaller."""
    partial = target.with_name(target.name + ".part")
    with open(source, "rb") as src:
        if not _same_version(os.fstat(src.fileno()), st):
            return False
        with open(partial, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=GZIP_LEVEL,
                                                       mtime=0) as packed:
            shutil.copyfileobj(src, packed, READ_BYTES)
        changed = not _same_version(os.fstat(src.fileno()), st)
    if changed or partial.stat().st_size >= st.st_size:
        partial.unlink()
        return False
    os.utime(partial, ns=(st.st_mtime_ns, st.st_mtime_ns))
    os.replace(partial, target)
    return True


class GzipCache:
    """The gzip copies of one running application (one folder, made on first use)."""

    def __init__(self) -> None:
        self._folder: Path | None = None
        self._known: dict[str, Path | None] = {}
        self._pending: dict[str, asyncio.Future[Path | None]] = {}

    @staticmethod
    def _make(folder: Path, source: Path, st: os.stat_result, stem: str, name: str) -> Path | None:
        target = folder / name
        made = _compress(source, st, target)
        for old in folder.glob(f"{stem}-*.gz"):
            if old != target:
                old.unlink(missing_ok=True)
        return target if made else None

    async def copy_of(self, source: Path, st: os.stat_result) -> Path | None:
        """The gzip copy of `source` in the version `st` describes, or None when it should be sent as is."""
        stem = _digest(str(source))
        name = f"{stem}-{_version(st)}.gz"
        if name in self._known:
            return self._known[name]
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="webbuild-serve-gzip-"))
        pending = self._pending.get(name)
        if pending is None:
            loop = asyncio.get_running_loop()
            pending = asyncio.ensure_future(loop.run_in_executor(None, self._make, self._folder, source, st, stem,
                                                                 name))
            self._pending[name] = pending
        try:
            copy = await asyncio.shield(pending)
        except OSError:
            copy = None
        finally:
            self._pending.pop(name, None)
        self._known = {key: value for key, value in self._known.items() if not key.startswith(stem)}
        self._known[name] = copy
        return copy

    def remove(self) -> None:
        """Delete every copy (the application is stopping)."""
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
        self._known.clear()
