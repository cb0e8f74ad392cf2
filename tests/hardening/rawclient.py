"""A small blocking AMQP client over a socket that does what it is told and reports closes.

Real clients validate names and hide class/method ids; this one sends pamqp
frames as given and returns the server's channel.close or connection.close as
(scope, code, text, class_id, method_id), so leveret and RabbitMQ can be compared
field by field.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any

from pamqp import body as pamqp_body
from pamqp import commands, frame, header, heartbeat
from pamqp import exceptions as pamqp_exceptions

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
CAPABILITIES = {
    "authentication_failure_close": True, "connection.blocked": True, "consumer_cancel_notify": True,
    "basic.nack": True, "publisher_confirms": True,
}


@dataclass(frozen=True, slots=True)
class Closed:
    scope: str  # "channel" | "connection"
    code: int
    text: str
    class_id: int
    method_id: int


class RawClient:
    def __init__(self, host: str, port: int, *, timeout: float = 5.0, context: ssl.SSLContext | None = None) -> None:
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # frames go out one by one
        self.sock: socket.socket = context.wrap_socket(sock, server_hostname=host) if context else sock
        self.buffer = b""
        self.eof = False
        self.timeout = timeout

    # ------------------------------------------------------------ io
    def send(self, method: Any, channel: int = 0) -> None:
        self.sock.sendall(frame.marshal(method, channel))

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def publish(self, channel: int, exchange: str, routing_key: str, data: bytes = b"x") -> None:
        self.send(commands.Basic.Publish(exchange=exchange, routing_key=routing_key), channel)
        self.send(header.ContentHeader(0, len(data), commands.Basic.Properties()), channel)
        if data:
            self.send(pamqp_body.ContentBody(data), channel)

    def recv(self, timeout: float | None = None) -> tuple[int, Any] | None:
        """The next frame other than a heartbeat, or None on EOF or timeout."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            if len(self.buffer) >= 8:
                try:
                    size, channel, value = frame.unmarshal(self.buffer)
                except pamqp_exceptions.UnmarshalingException:
                    pass
                else:
                    self.buffer = self.buffer[size:]
                    if isinstance(value, heartbeat.Heartbeat):
                        continue
                    return channel, value
            remaining = deadline - time.monotonic()
            if self.eof or remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return None
            except OSError:
                data = b""
            if not data:
                self.eof = True
            self.buffer += data

    def expect(self, kind: type, timeout: float | None = None) -> Any:
        """Frames until one of `kind`; a close first is returned as Closed (and answered)."""
        while True:
            got = self.recv(timeout)
            if got is None:
                return None
            closed = self._closed(*got)
            if closed is not None:
                return closed
            if isinstance(got[1], kind):
                return got[1]

    def _closed(self, channel: int, value: Any) -> Closed | None:
        if isinstance(value, commands.Channel.Close):
            self.send(commands.Channel.CloseOk(), channel)
            return Closed("channel", value.reply_code, value.reply_text, value.class_id, value.method_id)
        if isinstance(value, commands.Connection.Close):
            try:
                self.send(commands.Connection.CloseOk())
            except OSError:
                pass
            return Closed("connection", value.reply_code, value.reply_text, value.class_id, value.method_id)
        return None

    # ----------------------------------------------------- handshake
    def handshake(self, user: str = "guest", password: str = "guest", vhost: str = "/", *,
                  heartbeat_s: int = 0, capabilities: dict[str, Any] | None = None) -> Any:
        """Open the connection; returns OpenOk, or Closed / None when refused."""
        self.send_bytes(PROTOCOL_HEADER)
        if self.expect(commands.Connection.Start) is None:
            return None
        self.send(commands.Connection.StartOk(
            client_properties={"product": "leveret-tests", "capabilities": capabilities or CAPABILITIES},
            mechanism="PLAIN", response=f"\0{user}\0{password}", locale="en_US",
        ))
        tune = self.expect(commands.Connection.Tune)
        if not isinstance(tune, commands.Connection.Tune):
            return tune
        self.send(commands.Connection.TuneOk(channel_max=tune.channel_max, frame_max=tune.frame_max,
                                             heartbeat=heartbeat_s))
        self.send(commands.Connection.Open(virtual_host=vhost))
        return self.expect(commands.Connection.OpenOk)

    def open_channel(self, channel: int = 1) -> Any:
        self.send(commands.Channel.Open(), channel)
        return self.expect(commands.Channel.OpenOk)

    def call(self, method: Any, channel: int = 1, reply: type | None = None, timeout: float | None = None) -> Any:
        """Send `method`; its reply (of type `reply`, else any method), or the Closed it caused."""
        self.send(method, channel)
        return self.expect(reply or object, timeout)

    def close(self) -> None:
        try:
            if not self.eof:
                self.send(commands.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
                self.expect(commands.Connection.CloseOk, 1.0)
        except OSError:
            pass
        finally:
            self.sock.close()
