"""The listener: uvicorn (uvloop, httptools), with bounds on what one client may hold.

uvicorn with httptools has no limit on a request's header size (llhttp keeps whatever it
is sent), no timeout for a client that sends its headers or body slowly (a slowloris
holds a connection forever), and it believes ``X-Forwarded-For`` from loopback by
default. Here:

* `LimitedHttpToolsProtocol` closes a connection whose request head is not complete
  within ``MPCHAT_HEADER_TIMEOUT`` seconds (counted from the connection, or from the
  first byte of the next request on a kept-alive one) or whose body is not complete
  within ``MPCHAT_BODY_TIMEOUT``; answers 431 to a head over ``MPCHAT_MAX_HEADER_BYTES``
  or with more than ``MPCHAT_MAX_HEADERS`` fields; and answers 503 ``busy`` (the API's
  envelope, not uvicorn's plain text) past ``MPCHAT_MAX_CONNECTIONS`` connections.
* `uvicorn_config` passes ``MPCHAT_FORWARDED_ALLOW_IPS`` to uvicorn's proxy-headers
  handling, which is off when it is unset: then no ``X-Forwarded-For`` is believed.
* With ``MPCHAT_WORKERS`` > 1 every worker process builds its app through `worker_app`,
  which installs logging (and its redaction filter) in that process first.
"""

from __future__ import annotations

import asyncio
import gc
import os
from dataclasses import dataclass
from typing import Any

import httptools
import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mpchat.errors import Busy
from mpchat.settings import Settings

__all__ = ["LimitedHttpToolsProtocol", "ListenerLimits", "serve", "uvicorn_config",
           "worker_app"]

_LIMITS_ATTR = "mpchat_limits"  # on uvicorn's Config, which workers receive pickled
_END_OF_HEAD = b"\r\n\r\n"


@dataclass(frozen=True, slots=True)
class ListenerLimits:
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    max_connections: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ListenerLimits:
        return cls(header_timeout=settings.header_timeout, body_timeout=settings.body_timeout,
                   max_header_bytes=settings.max_header_bytes,
                   max_headers=settings.max_headers, max_connections=settings.max_connections)


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request already answered."""


def _plain(status: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n" + extra
            + b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n"
            + body)


_TOO_LARGE = _plain(b"431 Request Header Fields Too Large", orjson.dumps({"error": {
    "code": "invalid_request", "message": "请求头过大"}}))


async def _busy_app(scope: Any, receive: Any, send: Any) -> None:
    error = Busy(retry_after=1)
    await send({"type": "http.response.start", "status": error.status,
                "headers": [(b"content-type", b"application/json"), (b"retry-after", b"1"),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": orjson.dumps({"error": error.to_dict()})})


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds of `ListenerLimits` (module docstring)."""

    def __init__(self, config: uvicorn.Config, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._limits: ListenerLimits = getattr(config, _LIMITS_ATTR, None) or ListenerLimits()
        self.limit_concurrency = None  # checked here instead, answered in the API's shape
        self._in_head = True
        self._head_bytes = 0
        self._header_count = 0
        self._timer: asyncio.TimerHandle | None = None

    # -- timers ----------------------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self._limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    # -- the request head ------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > self._limits.max_header_bytes and _END_OF_HEAD not in data:
                self._refuse()
                return
        try:
            self.parser.feed_data(data)  # calls the on_* callbacks below
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _Refused):
                return
            self.logger.debug("invalid HTTP request received")
            self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserUpgrade:
            self._unsupported_upgrade_warning()  # no WebSockets here
            return
        if self._in_head and self._head_bytes > self._limits.max_header_bytes:
            self._refuse()

    def _refuse(self) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(_TOO_LARGE)
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = 0
        if self._timer is None:  # the next request on a kept-alive connection
            self._arm(self._limits.header_timeout)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self._limits.max_headers:
            self._refuse()
            raise _Refused()
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        # A head that came whole in one read was not counted in data_received.
        size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        if size > self._limits.max_header_bytes:
            self._refuse()
            raise _Refused()
        self._arm(self._limits.body_timeout)
        limit = self._limits.max_connections
        if limit is not None and len(self.connections) > limit:
            app, self.app = self.app, _busy_app
            try:
                super().on_headers_complete()
            finally:
                self.app = app
            return
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self._in_head, self._head_bytes = True, 0  # what comes next is the next head
        super().on_message_complete()


def uvicorn_config(settings: Settings, app: Any, *, host: str | None = None,
                   port: int | None = None, workers: int = 1) -> uvicorn.Config:
    """The server's whole configuration, from settings (also what the tests run)."""
    allow = (settings.forwarded_allow_ips or "").strip()
    config = uvicorn.Config(
        app,
        factory=isinstance(app, str),
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        loop="uvloop",
        http=LimitedHttpToolsProtocol,
        ws="none",
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=bool(allow),
        forwarded_allow_ips=allow or "",
        timeout_keep_alive=settings.keepalive_timeout,
        h11_max_incomplete_event_size=settings.max_header_bytes,
        # Streams follow answers under way; the answers themselves get the same bound
        # again in the lifespan's shutdown (docs/chat.md, "Shutdown").
        timeout_graceful_shutdown=max(1, round(settings.shutdown_timeout)),
    )
    setattr(config, _LIMITS_ATTR, ListenerLimits.from_settings(settings))
    return config


def serve(settings: Settings, *, host: str | None, port: int | None, workers: int) -> int:
    """Run until SIGTERM/SIGINT: one process, or a supervisor and ``workers`` processes."""
    from uvicorn.supervisors import Multiprocess

    if workers == 1:
        from mpchat.app import create_app

        server = uvicorn.Server(uvicorn_config(settings, create_app(settings), host=host,
                                               port=port))
        tune_gc()
        server.run()
        return 0 if server.started else 3
    config = uvicorn_config(settings, "mpchat.server:worker_app", host=host, port=port,
                            workers=workers)
    Multiprocess(config, sockets=[config.bind_socket()]).run()
    return 0


def worker_app() -> Any:
    """The app of one worker process: its settings, its logging, then the app."""
    from mpchat.app import create_app
    from mpchat.logs import configure_logging, secret_values

    settings = Settings()
    configure_logging(settings.log_level, secret_values(settings), fmt=settings.log_format,
                      process=f"worker-{os.getpid()}")
    app = create_app(settings)
    tune_gc()
    return app


def tune_gc() -> None:
    """The cyclic garbage collector set for a server's life (docs/benchmarks.md, "GC").

    Under the /v1 benchmark's load the collections took a third of the server's CPU:
    every answer leaves a few thousand short-lived objects (futures, frames, exceptions),
    so with Python's default thresholds (700, 10, 10) the young generation was collected
    several times per answer and the whole heap every few hundred answers. Now:

    * what exists before the first request (the modules, the app, its routes and models:
      about 130,000 objects, alive as long as the process) is frozen, so no collection
      walks it again;
    * the young generation is collected every 10,000 allocations rather than 700: the
      same garbage is freed, in fewer, larger rounds; the older ones as before.

    Only the server's own entry points call this: a test process that starts many apps
    would otherwise keep each one's cyclic garbage for good.
    """
    gc.collect()  # what is garbage already is freed, not frozen
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
