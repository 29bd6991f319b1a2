"""Connection limits: header, body, idle and send timeouts, and the aiohttp runner that enforces them.

aiohttp 3.14 closes a connection that is idle between requests after `keepalive_timeout` (counted
from the connection's start or the end of its last response; a request head still arriving counts
as idle), and stops reading an unread request body `lingering_time` after the response. It has no
timeout for a request head that starts but never finishes, so a small RequestHandler subclass
adds one: the clock starts with the first byte of a request head and the connection is closed
when the head is not complete `header` seconds later. A client that stops reading a response is
dropped when no chunk of it could be sent for `send` seconds (files.StaticFile; the handler reads
the limit from its connection's `send_timeout`).

Defaults suit a development server on localhost; each can be set through the environment
(WEBBUILD_SERVE_HEADER_TIMEOUT, ..._BODY_TIMEOUT, ..._IDLE_TIMEOUT, ..._SEND_TIMEOUT,
..._SHUTDOWN_GRACE; seconds).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from ..errors import ServerStartError

ENV_PREFIX = "WEBBUILD_SERVE_"


def env_name(field: str) -> str:
    """The environment variable setting one Timeouts field."""
    suffix = "" if field == "shutdown_grace" else "_TIMEOUT"
    return f"{ENV_PREFIX}{field.upper()}{suffix}"


@dataclass(frozen=True)
class Timeouts:
    """Seconds: to receive a request head, to drain an unread request body, to keep an idle connection,
    to send one chunk of a response to a client that stopped reading, and to let responses in flight
    finish when the server stops."""

    header: float = 10.0
    body: float = 10.0
    idle: float = 15.0
    send: float = 30.0
    shutdown_grace: float = 1.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Timeouts:
        """The defaults, overridden by WEBBUILD_SERVE_<NAME>_TIMEOUT (or _SHUTDOWN_GRACE) variables."""
        env = os.environ if env is None else env
        values: dict[str, float] = {}
        for field in fields(cls):
            name = env_name(field.name)
            if name not in env:
                continue
            try:
                value = float(env[name])
            except ValueError:
                value = -1.0
            if not value > 0:
                raise ServerStartError(f"{name}={env[name]!r} is not a positive number of seconds", where=name,
                                       fix=f"set {name} to seconds above 0, or unset it for the default")
            values[field.name] = value
        return cls(**values)


class GuardedRequestHandler(RequestHandler):
    """aiohttp's protocol with a deadline on each request head (the header timeout)."""

    def __init__(self, manager: web.Server, *, header_timeout: float, send_timeout: float | None = None,
                 **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self.send_timeout = send_timeout  # read by files.StaticFile
        self._header_deadline: asyncio.TimerHandle | None = None

    def _cancel_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _header_expired(self) -> None:
        self._header_deadline = None
        self.logger.debug("closing a connection whose request head did not arrive within %ss", self._header_timeout)
        self.force_close()

    def data_received(self, data: bytes) -> None:
        heads_before = self._request_count
        super().data_received(data)
        if self._request_count != heads_before:
            self._cancel_header_deadline()
        elif self._header_deadline is None and not self._request_in_progress and not self._messages:
            self._header_deadline = self._loop.call_later(self._header_timeout, self._header_expired)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_header_deadline()
        super().connection_lost(exc)

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """A malformed request (aiohttp answers it 400) is the client's error: one debug line with
        aiohttp's reason, not an ERROR with a traceback. Anything else is logged as aiohttp does."""
        error = kw.get("exc_info")
        if isinstance(error, HttpProcessingError) and args:
            reason = str(error.message).strip().splitlines()[0] if error.message else type(error).__name__
            self.logger.debug(f"{args[0]}: {error.code} {reason}", *args[1:])
            return
        super().log_exception(*args, **kw)

    def log_debug(self, *args: Any, **kw: Any) -> None:
        """aiohttp's debug notes (client disconnects among them): one debug line, never a traceback."""
        error = kw.pop("exc_info", None)
        if error is not None and args:
            args = (f"{args[0]} ({type(error).__name__})", *args[1:])
        self.logger.debug(*args, **kw)


class GuardedServer(web.Server):
    """An aiohttp Server whose connections are GuardedRequestHandlers."""

    def __init__(self, *args: Any, header_timeout: float, send_timeout: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout = header_timeout
        self._send_timeout = send_timeout

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, header_timeout=self._header_timeout,
                                     send_timeout=self._send_timeout, **self._kwargs)


class GuardedAppRunner(web.AppRunner):
    """An AppRunner applying `timeouts` (idle: keepalive_timeout; body: lingering_time; header: the guard)."""

    def __init__(self, app: web.Application, timeouts: Timeouts, **kwargs: Any) -> None:
        super().__init__(app, keepalive_timeout=timeouts.idle, lingering_time=timeouts.body,
                         shutdown_timeout=timeouts.shutdown_grace, **kwargs)
        self._header_timeout = timeouts.header
        self._send_timeout = timeouts.send

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        return GuardedServer(plain.request_handler, request_factory=plain.request_factory,
                             handler_cancellation=plain.handler_cancellation, loop=asyncio.get_running_loop(),
                             header_timeout=self._header_timeout, send_timeout=self._send_timeout,
                             **plain._kwargs)
