"""AMQP over TLS (amqps): pika and aio-pika against a throwaway CA made for the test."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import aio_pika
import pika
import pika.exceptions
import pytest

from leveret.broker.broker import Broker
from leveret.server.shell import ServerThread, tls_context
from tests.hardening.conftest import NEEDS_OPENSSL, Pki, client_context

pytestmark = NEEDS_OPENSSL


@pytest.fixture
def tls_server(pki: Pki) -> Iterator[tuple[ServerThread, int]]:
    server = ServerThread(Broker()).start()
    _, port = server.listen_tls(tls_context(str(pki.server_cert), str(pki.server_key)))
    yield server, port
    server.stop()


def test_pika_publishes_and_consumes_over_amqps(pki: Pki, tls_server: tuple[ServerThread, int]) -> None:
    _, port = tls_server
    parameters = pika.ConnectionParameters(
        "127.0.0.1", port, credentials=pika.PlainCredentials("guest", "guest"),
        ssl_options=pika.SSLOptions(client_context(pki), "localhost"),
    )
    connection = pika.BlockingConnection(parameters)
    channel = connection.channel()
    channel.queue_declare("secure")
    for i in range(100):
        channel.basic_publish("", "secure", b"over tls %d" % i)
    bodies = []
    for _ in range(100):
        _, _, body = channel.basic_get("secure", auto_ack=True)
        bodies.append(body)
    version = connection._impl._transport._sock.version()  # type: ignore[attr-defined]
    connection.close()
    print(f"pika over amqps ({version}): 100 published, {len(bodies)} received, lost {100 - len(bodies)}")
    assert bodies == [b"over tls %d" % i for i in range(100)]
    assert version in ("TLSv1.2", "TLSv1.3")


async def test_aio_pika_needs_a_client_certificate_when_the_server_requires_one(pki: Pki) -> None:
    server = ServerThread(Broker()).start()
    try:
        _, port = server.listen_tls(tls_context(
            str(pki.server_cert), str(pki.server_key), str(pki.ca), fail_if_no_peer_cert=True))
        url = f"amqps://guest:guest@localhost:{port}/"
        with pytest.raises((ConnectionError, ssl.SSLError, OSError)):
            await aio_pika.connect(url, ssl_context=client_context(pki), timeout=5)
        connection = await aio_pika.connect(url, ssl_context=client_context(pki, with_certificate=True), timeout=5)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue("", exclusive=True)
            await channel.default_exchange.publish(aio_pika.Message(b"mutual"), routing_key=queue.name)
            message = await queue.get(timeout=5)
            body = message.body
            await message.ack()
    finally:
        server.stop()
    assert body == b"mutual"


def test_a_plain_amqp_client_on_the_tls_port_gets_nowhere(pki: Pki, tls_server: tuple[ServerThread, int]) -> None:
    server, port = tls_server
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, socket_timeout=2,
                                                          blocked_connection_timeout=2))
    assert server.call(lambda broker: broker.resources.open_connections) == 0
