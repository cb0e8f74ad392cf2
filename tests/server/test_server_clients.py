"""The shell with the real protocol: clients handshake, talk and get shut down.

What is tested here is the shell's part: the public `serve()`, the pytest
fixtures (sync and async), timers armed by client traffic alone, and the 320
on shutdown. Protocol semantics are tested at byte level elsewhere.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aio_pika
import aiormq
import pika
import pytest

import leveret
from leveret.server.shell import ServerThread

REPO = Path(__file__).resolve().parents[2]
SHUTDOWN_TEXT = "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"


async def test_serve_yields_a_running_server_a_client_can_use() -> None:
    async with leveret.serve() as server:
        assert server.url == f"amqp://guest:guest@127.0.0.1:{server.port}/"
        connection = await aio_pika.connect(server.url)
        channel = await connection.channel()
        queue = await channel.declare_queue("", exclusive=True)
        await channel.default_exchange.publish(aio_pika.Message(b"round trip"), routing_key=queue.name)
        message = await queue.get(timeout=2)
        declared = queue.name in server.broker.vhost("/").queues
        await connection.close()
    assert message.body == b"round trip"
    assert declared


async def test_serve_accepts_a_broker_of_your_own() -> None:
    broker = leveret.Broker()
    async with leveret.serve(broker=broker) as server:
        connection = await aio_pika.connect(server.url)
        channel = await connection.channel()
        name = f"mine-{uuid.uuid4()}"
        await channel.declare_queue(name, auto_delete=True)
        await connection.close()
    assert server.broker is broker
    assert name in broker.vhost("/").queues


async def test_leaving_serve_closes_clients_with_320() -> None:
    async with leveret.serve() as server:
        connection = await aio_pika.connect(server.url)
        closed: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

        def on_close(_: object, error: BaseException | None) -> None:
            if not closed.done():
                closed.set_result(error)

        connection.close_callbacks.add(on_close)
        started = time.monotonic()
    stop_took = time.monotonic() - started
    error = await asyncio.wait_for(closed, 2.0)
    assert isinstance(error, aiormq.exceptions.ConnectionClosed)
    assert error.args == (320, SHUTDOWN_TEXT)
    assert stop_took < 1.0  # the client's close-ok ended the wait, not the grace period


async def test_message_ttl_fires_without_further_client_traffic() -> None:
    """The publish alone must arm the loop timer at the message's deadline."""
    async with leveret.serve() as server:
        connection = await aio_pika.connect(server.url)
        channel = await connection.channel()
        dead = await channel.declare_queue("", exclusive=True)
        ttl = await channel.declare_queue(
            "",
            exclusive=True,
            arguments={
                "x-message-ttl": 100,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": dead.name,
            },
        )
        arrived: asyncio.Future[float] = asyncio.get_running_loop().create_future()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            arrived.set_result(time.monotonic())

        await dead.consume(on_message, no_ack=True)
        sent = time.monotonic()
        await channel.default_exchange.publish(aio_pika.Message(b"expires"), routing_key=ttl.name)
        arrived_at = await asyncio.wait_for(arrived, 2.0)
        await connection.close()
    assert 0.09 <= arrived_at - sent < 1.0


def test_leveret_url_fixture_serves_a_sync_client(leveret_url: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(leveret_url))
    channel = connection.channel()
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.basic_publish("", queue, b"sync")
    _, _, body = channel.basic_get(queue, auto_ack=True)
    connection.close()
    assert leveret_url.startswith("amqp://guest:guest@127.0.0.1:")
    assert body == b"sync"


async def test_leveret_url_fixture_serves_an_async_client(leveret_url: str) -> None:
    connection = await aio_pika.connect(leveret_url)
    channel = await connection.channel()
    queue = await channel.declare_queue("", exclusive=True)
    await channel.default_exchange.publish(aio_pika.Message(b"async"), routing_key=queue.name)
    message = await queue.get(timeout=2)
    await connection.close()
    assert message.body == b"async"


def test_leveret_broker_fixture_looks_inside_on_the_server_thread(leveret_broker: ServerThread) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(leveret_broker.url))
    channel = connection.channel()
    name = f"inspected-{uuid.uuid4()}"
    channel.queue_declare(name, auto_delete=True)
    channel.basic_publish("", name, b"one")
    channel.basic_publish("", name, b"two")
    channel.basic_get(name, auto_ack=True)  # a round trip: both publishes are in
    count = leveret_broker.call(lambda broker: broker.vhost("/").queue(name).message_count)
    connection.close()
    assert count == 1


def test_sigterm_closes_clients_with_320_and_exits_0() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "leveret.cli", "serve", "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline().split("amqp://127.0.0.1:")[1].split()[0])
        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        process.send_signal(signal.SIGTERM)
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as raised:
            connection.process_data_events(time_limit=5)
            connection.sleep(5)
    finally:
        try:
            _, err = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert (raised.value.reply_code, raised.value.reply_text) == (320, SHUTDOWN_TEXT)
    assert process.returncode == 0
    assert err == ""

