"""A login RabbitMQ cannot read (an unknown mechanism, a response that does not
parse): no frame comes back, and 3 s later the socket ends with an RST, not a
FIN (RabbitMQ's listeners close with a zero linger time). Compared byte by byte
with the reference RabbitMQ 3.10.8; the reference part skips when none is reachable.
"""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
from pamqp import commands, frame

from leveret.server.shell import ServerThread
from tests import reference

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
LOGINS = [("FOO", "\x00guest\x00guest"), ("plain", "\x00guest\x00guest"), ("PLAIN", "guest")]


def after_start_ok(host: str, port: int, mechanism: str, response: str) -> tuple[bytes, str, float]:
    """What the server sends after this start-ok, how the stream ends, and when."""
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(PROTOCOL_HEADER)
        buffer = b""
        while True:  # connection.start
            buffer += sock.recv(65536)
            try:
                size = frame.unmarshal(buffer)[0]
                break
            except Exception:
                continue
        assert buffer[size:] == b""
        started = time.monotonic()
        sock.sendall(frame.marshal(commands.Connection.StartOk(
            client_properties={"capabilities": {"authentication_failure_close": True}},
            mechanism=mechanism, response=response, locale="en_US"), 0))
        received = b""
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                end = "reset"
                break
            except TimeoutError:
                end = "timeout"
                break
            if not data:
                end = "eof"
                break
            received += data
        return received, end, time.monotonic() - started


def observe(host: str, port: int) -> list[tuple[bytes, str, float]]:
    with ThreadPoolExecutor(len(LOGINS)) as pool:  # the 3 s waits overlap
        return list(pool.map(lambda login: after_start_ok(host, port, *login), LOGINS))


def test_an_unreadable_login_gets_no_frame_and_a_reset_3_s_later(leveret_broker: ServerThread) -> None:
    url = urlsplit(leveret_broker.url)
    assert url.hostname is not None and url.port is not None
    for received, end, after in observe(url.hostname, url.port):
        assert (received, end) == (b"", "reset")
        assert 2.9 <= after < 5.0


@pytest.mark.rabbitmq
@reference.needs_reference
def test_an_unreadable_login_ends_as_on_rabbitmq(leveret_broker: ServerThread) -> None:
    url = urlsplit(leveret_broker.url)
    assert url.hostname is not None and url.port is not None
    with ThreadPoolExecutor(2) as pool:
        ours = pool.submit(observe, url.hostname, url.port)
        theirs = pool.submit(observe, reference.HOST, reference.PORT)
        leveret, rabbitmq = ours.result(), theirs.result()
    assert [(received, end) for received, end, _ in leveret] == [(received, end) for received, end, _ in rabbitmq]
    for (_, _, ours_after), (_, _, theirs_after) in zip(leveret, rabbitmq, strict=True):
        assert abs(ours_after - theirs_after) < 1.0
