"""The management HTTP server: aiohttp's HTTP/1.1, answering with a plain `handler`.

Theory of operation. It runs on the broker's own event loop, so a handler
reads and changes the broker directly, with no locks, between two AMQP
events. Handlers are synchronous, `handler(Request) -> Response`, and know
nothing of aiohttp: this module reads the whole body first (within
`max_body`, answering `Expect: 100-continue` only when it fits), calls the
handler, and writes the answer. aiohttp parses requests, keeps connections
alive and reads sized or chunked bodies; its low-level server is used (no
aiohttp router: `api.Router` routes /api), with RabbitMQ's answers to bad
requests: an empty 400, or 431 for a header too long, and a close.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from multidict import CIMultiDict

from leveret.server.shell import client_host

log = logging.getLogger("leveret.http")

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 128 * 1024 * 1024  # a definitions import can be large
IDLE_TIMEOUT = 60.0
SHUTDOWN_TIMEOUT = 2.0
SERVER = "leveret"


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # still percent-encoded: segments are split first, then decoded
    query: dict[str, str]
    headers: dict[str, str]  # names in lower case
    body: bytes
    peer_host: str

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def with_headers(self, *extra: tuple[str, str]) -> Response:
        return Response(self.status, self.body, self.content_type, self.headers + extra)


Handler = Callable[[Request], Response]

_INTERNAL_ERROR = Response(500, b'{"error":"internal_error","reason":"see the broker log"}', "application/json")


class _BodyTooLarge(Exception):
    pass


class _Protocol(web.RequestHandler):
    """aiohttp's connection handler, answering unparseable requests as RabbitMQ does."""

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status == 500:
            log.error("internal error on an HTTP connection", exc_info=exc)
        elif isinstance(exc, LineTooLong):
            status = 431
        response = web.Response(status=status, headers=CIMultiDict(
            (("server", SERVER), ("connection", "close"))))
        response.force_close()
        return response


class _LowLevelServer(web.Server):
    def __init__(self, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.protocol_kwargs = kwargs

    def __call__(self) -> web.RequestHandler:
        return _Protocol(self, loop=asyncio.get_running_loop(), **self.protocol_kwargs)


class HttpServer:
    def __init__(self, handler: Handler, *, idle_timeout: float = IDLE_TIMEOUT,
                 max_body: int = MAX_BODY_BYTES) -> None:
        self.handler = handler
        self.idle_timeout = idle_timeout
        self.max_body = max_body
        self.host = ""
        self.port = 0
        self._runner: web.ServerRunner | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Listen; return the (host, port) bound (port 0 picks a free one). Raises OSError."""
        server = _LowLevelServer(self._answer, access_log=None, keepalive_timeout=self.idle_timeout,
                                 max_line_size=MAX_HEADER_BYTES, max_field_size=MAX_HEADER_BYTES,
                                 lingering_time=0)  # a body left unread (413) closes at once
        runner = web.ServerRunner(server, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await runner.setup()
        site = web.TCPSite(runner, host or None, port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound = runner.addresses[0] if runner.addresses else (host, port)
        self.host, self.port = bound[0], bound[1]
        return self.host, self.port

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://{client_host(self.host)}:{self.port}"

    # ------------------------------------------------------------ request
    async def _answer(self, incoming: web.BaseRequest) -> web.StreamResponse:
        try:
            body = await self._body(incoming)
        except _BodyTooLarge:
            return _closing(413)
        peer = incoming.transport.get_extra_info("peername") if incoming.transport is not None else None
        peer_host = peer[0] if isinstance(peer, tuple) and peer else ""
        request = Request(incoming.method.upper(), incoming.raw_path.partition("?")[0],
                          dict(incoming.query), _joined(incoming.headers),
                          body, peer_host)
        try:
            response = self.handler(request)
        except Exception:
            log.exception("internal error answering %s %s", request.method, request.path)
            response = _INTERNAL_ERROR
        log.debug("http request", extra={"event": "http_request", "method": request.method,
                                         "path": request.path, "status": response.status, "peer": peer_host})
        headers = CIMultiDict([("server", SERVER)])
        if response.content_type:
            headers["content-type"] = response.content_type
        headers.extend(response.headers)
        return web.Response(status=response.status, body=response.body, headers=headers)

    async def _body(self, incoming: web.BaseRequest) -> bytes:
        if not incoming.body_exists:
            return b""
        length = incoming.content_length
        if length is not None and length > self.max_body:
            raise _BodyTooLarge
        if incoming.headers.get("expect", "").lower() == "100-continue":
            await incoming.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            incoming.writer.output_size = 0  # the answer proper has not started
        chunks: list[bytes] = []
        total = 0
        async for chunk in incoming.content.iter_any():
            total += len(chunk)
            if total > self.max_body:
                raise _BodyTooLarge
            chunks.append(chunk)
        return b"".join(chunks)


def _closing(status: int) -> web.Response:
    response = web.Response(status=status, headers=CIMultiDict([("server", SERVER)]))
    response.force_close()
    return response


def _joined(headers: Any) -> dict[str, str]:
    """Repeated headers as one, comma-separated (RFC 9110 5.3)."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out
