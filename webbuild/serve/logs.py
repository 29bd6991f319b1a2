"""Logging that never blocks the event loop: records go through a bounded queue to a writer thread.

A server whose stderr is a pipe nobody reads must keep serving: if the event loop wrote log lines
itself, a full pipe would block it in write(2) (new connections time out, SIGTERM goes unhandled).
Here the loop only enqueues; a daemon thread formats and writes with os.write on the raw file
descriptor (no Python-level lock the main thread could need at exit). When the queue is full,
records are dropped and counted, and the count is reported with the next record that fits.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
from collections.abc import Mapping
from logging.handlers import QueueHandler

from ..errors import ServerStartError

LEVEL_ENV = "WEBBUILD_SERVE_LOG_LEVEL"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
QUEUE_RECORDS = 1000
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_STOP = None


class _DroppingQueueHandler(QueueHandler):
    """A QueueHandler that drops (and counts) records instead of waiting when the queue is full."""

    def __init__(self, records: queue.Queue) -> None:
        super().__init__(records)
        self.dropped = 0

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1


def level_from_env(env: Mapping[str, str] | None = None) -> int:
    """The log level WEBBUILD_SERVE_LOG_LEVEL names (DEBUG shows client disconnects); WARNING when unset."""
    env = os.environ if env is None else env
    name = env.get(LEVEL_ENV, "WARNING").strip().upper()
    if name not in LEVELS:
        raise ServerStartError(f"{LEVEL_ENV}={env[LEVEL_ENV]!r} is not a log level", where=LEVEL_ENV,
                               fix=f"set it to one of {', '.join(LEVELS)}, or unset it")
    return logging.getLevelName(name)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]


class LogPump:
    """Routes the root logger through a bounded queue to a thread writing to `fd` (stderr by default)."""

    def __init__(self, fd: int | None = None, level: int = logging.WARNING) -> None:
        self._fd = sys.stderr.fileno() if fd is None else fd
        self._records: queue.Queue[logging.LogRecord | None] = queue.Queue(QUEUE_RECORDS)
        self._handler = _DroppingQueueHandler(self._records)
        self._formatter = logging.Formatter(FORMAT)
        self._level = level
        self._saved: tuple[list[logging.Handler], int] | None = None
        self._thread = threading.Thread(target=self._run, name="webbuild-serve-log", daemon=True)
        self._reported_drops = 0

    @property
    def dropped(self) -> int:
        """How many records were dropped because the queue was full."""
        return self._handler.dropped

    def _line(self, record: logging.LogRecord) -> bytes:
        text = self._formatter.format(record)
        dropped = self._handler.dropped - self._reported_drops
        if dropped:
            self._reported_drops += dropped
            text = f"({dropped} log records dropped: stderr was not being read)\n{text}"
        return (text + "\n").encode("utf-8", "backslashreplace")

    def _run(self) -> None:
        while (record := self._records.get()) is not _STOP:
            try:
                _write_all(self._fd, self._line(record))
            except (OSError, ValueError):
                pass

    def start(self) -> None:
        """Install the queue handler on the root logger (replacing its handlers) and start the writer."""
        root = logging.getLogger()
        self._saved = (list(root.handlers), root.level)
        root.handlers = [self._handler]
        root.setLevel(self._level)
        self._thread.start()

    def stop(self, wait: float = 0.5) -> None:
        """Restore the root logger; give the writer `wait` seconds to finish (it may be stuck on a full pipe)."""
        if self._saved is not None:
            root = logging.getLogger()
            root.handlers, level = self._saved
            root.setLevel(level)
            self._saved = None
        try:
            self._records.put(_STOP, timeout=wait)
        except queue.Full:
            return
        self._thread.join(wait)
