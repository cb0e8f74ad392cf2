"""Publisher confirms against a running server with a store: after fsync, grouped,
and a slow disk holds back only the confirms that wait for it.

The disk is made slow by wrapping the store's fdatasync (it runs on the
store's writer thread, so sleeping there is what a slow disk looks like).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aio_pika
import pika
import pytest
from pamqp import commands

import leveret.store.writer
from leveret.broker.broker import Broker
from leveret.server.channel import Channel
from leveret.server.shell import ServerThread
from leveret.store import Store

PERSISTENT = pika.BasicProperties(delivery_mode=2)


class SlowDisk:
    """Every fdatasync takes `delay` seconds longer; counts them."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.calls = 0
        self.real: Callable[[int], None] = leveret.store.writer._fdatasync

    def __call__(self, fd: int) -> None:
        self.calls += 1
        time.sleep(self.delay)
        self.real(fd)


@pytest.fixture
def slow_disk(monkeypatch: pytest.MonkeyPatch) -> SlowDisk:
    disk = SlowDisk(0.0)
    monkeypatch.setattr(leveret.store.writer, "_fdatasync", disk)
    return disk


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    broker = Broker()
    store = Store.open(tmp_path / "data")
    broker.attach_store(store)
    with ServerThread(broker) as running:
        yield running
    store.close()


def channel(server: ServerThread) -> pika.adapters.blocking_connection.BlockingChannel:
    connection = pika.BlockingConnection(pika.URLParameters(server.url))
    opened = connection.channel()
    opened.confirm_delivery()
    return opened


def timed(action: Callable[[], object]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def test_a_persistent_message_is_confirmed_after_fsync_and_nothing_else_waits(
    server: ServerThread, slow_disk: SlowDisk
) -> None:
    durable = channel(server)
    durable.queue_declare("orders", durable=True)
    other = channel(server)
    other.queue_declare("scratch")
    slow_disk.delay = 1.0
    waited: list[float] = []
    publishing = threading.Thread(target=lambda: waited.append(timed(
        lambda: durable.basic_publish("", "orders", b"charge $50", PERSISTENT))))
    publishing.start()
    time.sleep(0.1)  # the writer thread is now in its slow fsync
    # Another connection, transient messages and a declare: no fsync to wait for.
    elsewhere = timed(lambda: (
        other.basic_publish("", "scratch", b"x"),
        other.basic_publish("", "orders", b"transient", pika.BasicProperties(delivery_mode=1)),
        other.queue_declare("scratch", passive=True)))
    publishing.join()
    assert waited[0] >= 0.9
    assert elsewhere < 0.5
    durable.connection.close()
    other.connection.close()


def test_many_publishers_share_fsyncs(server: ServerThread, slow_disk: SlowDisk) -> None:
    async def publish_all() -> int:
        connections = [await aio_pika.connect(server.url) for _ in range(5)]
        channels = [await c.channel(publisher_confirms=True) for c in connections]
        await channels[0].declare_queue("grouped", durable=True)
        slow_disk.delay, slow_disk.calls = 0.2, 0
        message = aio_pika.Message(b"m", delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        await asyncio.gather(*(
            ch.default_exchange.publish(message, routing_key="grouped") for ch in channels for _ in range(20)))
        queue = await channels[0].declare_queue("grouped", durable=True, passive=True)
        for connection in connections:
            await connection.close()
        return queue.declaration_result.message_count or 0

    started = time.monotonic()
    confirmed = asyncio.run(publish_all())
    assert confirmed == 100
    assert slow_disk.calls <= 10  # one per batch, not one per message (100 x 0.2 s)
    assert time.monotonic() - started < 5


def test_tx_commit_ok_comes_after_fsync(server: ServerThread, slow_disk: SlowDisk) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(server.url))
    tx = connection.channel()
    tx.queue_declare("ledger", durable=True)
    tx.tx_select()
    tx.basic_publish("", "ledger", b"entry", PERSISTENT)
    slow_disk.delay = 0.5
    assert timed(tx.tx_commit) >= 0.45
    connection.close()


def test_confirms_go_out_in_publish_order_when_some_wait(
    server: ServerThread, slow_disk: SlowDisk, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[str, int, bool]] = []
    send = Channel.send

    def recording(self: Channel, method: object) -> None:
        if isinstance(method, (commands.Basic.Ack, commands.Basic.Nack)):
            sent.append((method.name, method.delivery_tag, method.multiple))
        send(self, method)

    monkeypatch.setattr(Channel, "send", recording)

    async def run() -> list[bool]:
        connection = await aio_pika.connect(server.url)
        ch = await connection.channel(publisher_confirms=True)
        await ch.declare_queue("mixed", durable=True)
        await ch.declare_queue("limited", arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
        slow_disk.delay = 0.2

        async def publish(routing_key: str, mode: aio_pika.DeliveryMode) -> bool:
            try:
                await ch.default_exchange.publish(aio_pika.Message(b"m", delivery_mode=mode), routing_key=routing_key)
            except aio_pika.exceptions.DeliveryError:
                return False
            return True

        persistent, transient = aio_pika.DeliveryMode.PERSISTENT, aio_pika.DeliveryMode.NOT_PERSISTENT
        # Held for fsync, then an ack and a nack that need no disk but wait behind it, then held again.
        outcomes = await asyncio.gather(publish("mixed", persistent), publish("mixed", transient),
                                        publish("limited", transient), publish("mixed", persistent))
        await connection.close()
        return list(outcomes)

    assert asyncio.run(run()) == [True, True, False, True]
    assert sent == [("Basic.Ack", 2, True), ("Basic.Nack", 3, False), ("Basic.Ack", 4, False)]
