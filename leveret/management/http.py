"""A small HTTP/1.1 server on asyncio streams, for the management API and /metrics.

Theory of operation. It runs on the broker's own event loop, so a handler
reads and changes the broker directly, with no locks, between two AMQP
events. Handlers are synchronous: `handler(Request) -> Response`. One task per
client socket reads requests one after the other (keep-alive, as HTTP/1.1
defaults to; no pipelining beyond reading in order), with limits on the
header size and the body size, and answers `Expect: 100-continue` (curl sends
it for bodies over 1 KiB). Request bodies may be sized or chunked.

It is deliberately small: no TLS, no compression, no streaming responses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qsl

from leveret.server.shell import client_host

log = logging.getLogger("leveret.http")

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 128 * 1024 * 1024  # a definitions import can be large
IDLE_TIMEOUT = 60.0


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


Handler = Callable[[Request], Response]


class _BadRequest(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


class HttpServer:
    def __init__(self, handler: Handler, *, idle_timeout: float = IDLE_TIMEOUT,
                 max_body: int = MAX_BODY_BYTES) -> None:
        self.handler = handler
        self.idle_timeout = idle_timeout
        self.max_body = max_body
        self.host = ""
        self.port = 0
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Listen; return the (host, port) bound (port 0 picks a free one). Raises OSError."""
        self._server = await asyncio.start_server(self._client, host or None, port, limit=MAX_HEADER_BYTES)
        bound = self._server.sockets[0].getsockname() if self._server.sockets else (host, port)
        self.host, self.port = bound[0], bound[1]
        return self.host, self.port

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._clients):
            task.cancel()
        if self._clients:
            await asyncio.wait(list(self._clients), timeout=2.0)
        await server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://{client_host(self.host)}:{self.port}"

    # ------------------------------------------------------------- client
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._clients.add(task)
        peer = writer.get_extra_info("peername")
        peer_host = peer[0] if isinstance(peer, tuple) and peer else ""
        try:
            while True:
                try:
                    keep_alive = await self._one_request(reader, writer, peer_host)
                except _BadRequest as error:
                    body = f"{error}\n".encode()
                    writer.write(_head(error.status, len(body), "text/plain; charset=utf-8", (), False) + body)
                    keep_alive = False
                if not keep_alive:
                    break
                await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away, stalled, or sent a line too long: drop it
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("internal error on an HTTP connection from %s", peer_host)
        finally:
            with contextlib.suppress(Exception):
                writer.close()
            if task is not None:
                self._clients.discard(task)

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           peer_host: str) -> bool:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.idle_timeout)
        except asyncio.IncompleteReadError as error:
            if error.partial.strip():
                raise _BadRequest(400, "incomplete request") from None
            return False  # the client closed between requests
        except asyncio.LimitOverrunError:
            raise _BadRequest(431, "request header too large") from None
        lines = head[:-4].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(400, "bad request line")
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise _BadRequest(400, "bad header line")
            key = name.lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
        connection = headers.get("connection", "").lower()
        keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
        body = await self._body(reader, writer, headers)
        path, _, query_text = target.partition("?")
        request = Request(method.upper(), path, dict(parse_qsl(query_text, keep_blank_values=True)),
                          headers, body, peer_host)
        try:
            response = self.handler(request)
        except Exception:
            log.exception("internal error answering %s %s", method, path)
            response = Response(500, b'{"error":"internal_error","reason":"see the broker log"}',
                                "application/json")
        log.debug("http request", extra={"event": "http_request", "method": method, "path": path,
                                         "status": response.status, "peer": peer_host})
        payload = b"" if method.upper() == "HEAD" else response.body
        writer.write(_head(response.status, len(response.body), response.content_type, response.headers,
                           keep_alive) + payload)
        return keep_alive

    async def _body(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    headers: dict[str, str]) -> bytes:
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length_text = headers.get("content-length")
        if not chunked and not length_text:
            return b""
        length = 0
        if not chunked:
            try:
                length = int(length_text or "0")
            except ValueError:
                raise _BadRequest(400, "bad content-length") from None
            if length < 0:
                raise _BadRequest(400, "bad content-length")
            if length > self.max_body:
                raise _BadRequest(413, "request body too large")
        if headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        if chunked:
            return await self._chunked(reader)
        return await asyncio.wait_for(reader.readexactly(length), self.idle_timeout)

    async def _chunked(self, reader: asyncio.StreamReader) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = await asyncio.wait_for(reader.readuntil(b"\r\n"), self.idle_timeout)
            try:
                size = int(size_line.split(b";")[0].strip(), 16)
            except ValueError:
                raise _BadRequest(400, "bad chunk size") from None
            if size == 0:
                # Trailers, if any, end with an empty line.
                while (await asyncio.wait_for(reader.readuntil(b"\r\n"), self.idle_timeout)) != b"\r\n":
                    pass
                return b"".join(chunks)
            total += size
            if total > self.max_body:
                raise _BadRequest(413, "request body too large")
            chunks.append(await asyncio.wait_for(reader.readexactly(size), self.idle_timeout))
            await reader.readexactly(2)


def _head(status: int, length: int, content_type: str | None, headers: tuple[tuple[str, str], ...],
          keep_alive: bool) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    lines = [f"HTTP/1.1 {status} {phrase}", "server: leveret"]
    if status not in (204, 304):  # these never have a body, nor its length (RFC 9110)
        lines.append(f"content-length: {length}")
    if content_type:
        lines.append(f"content-type: {content_type}")
    lines.extend(f"{name}: {value}" for name, value in headers)
    if not keep_alive:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
