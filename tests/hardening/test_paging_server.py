"""Paged queues and the disk alarm through a real server and a real client (pika)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pika
import pytest

from leveret.broker.broker import Broker, BrokerSettings
from leveret.server.shell import ServerThread


def until(condition: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return bool(condition())


@pytest.fixture
def server() -> Iterator[ServerThread]:
    running = ServerThread(Broker(settings=BrokerSettings(tick_interval=0.05))).start()
    yield running
    running.stop()


def test_a_lazy_queue_pages_and_hands_everything_back_in_order_with_pika(server: ServerThread) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(server.url))
    channel = connection.channel()
    channel.confirm_delivery()
    channel.queue_declare("backlog", arguments={"x-queue-mode": "lazy"})
    total = 3000
    for index in range(total):
        channel.basic_publish("", "backlog", b"%06d" % index + b"." * 1000,
                              pika.BasicProperties(message_id=str(index)))
    queue = server.broker.vhosts["/"].queues["backlog"]
    assert queue.message_count == total and queue.paged_count > total - 300
    channel.basic_qos(prefetch_count=100)
    got: list[int] = []
    redelivered: list[bool] = []
    for method, _properties, body in channel.consume("backlog", inactivity_timeout=5):
        assert method is not None, f"stalled after {len(got)}"
        got.append(int(body[:6]))
        redelivered.append(method.redelivered)
        if len(got) == 100:  # the first 100, unacked, come back ahead of the paged rest
            channel.basic_nack(method.delivery_tag, multiple=True, requeue=True)
        elif len(got) > 100:
            channel.basic_ack(method.delivery_tag)
        if len(got) == total + 100:
            break
    channel.cancel()
    connection.close()
    assert got == list(range(100)) + list(range(total))
    assert redelivered == [False] * 100 + [True] * 100 + [False] * (total - 100)
    assert queue.message_count == queue.paged_count == 0


def test_the_disk_alarm_blocks_publishers_until_space_comes_back(server: ServerThread) -> None:
    events: list[str] = []
    publisher = pika.BlockingConnection(pika.URLParameters(server.url))
    publisher.add_on_connection_blocked_callback(lambda _c, frame: events.append(frame.method.reason))
    publisher.add_on_connection_unblocked_callback(lambda *a: events.append("unblocked"))
    channel = publisher.channel()
    channel.queue_declare("work")
    server.broker.settings.disk_free_limit = 1 << 62  # more than any disk has
    assert until(lambda: server.broker.resources.disk_alarm)
    channel.basic_publish("", "work", b"during")
    assert until(lambda: (publisher.process_data_events(0.05), bool(events))[1])
    assert events == ["low on disk"]
    queue = server.broker.vhosts["/"].queues["work"]
    assert queue.message_count == 0  # not read while blocked
    server.broker.settings.disk_free_limit = 0
    assert until(lambda: (publisher.process_data_events(0.05), "unblocked" in events)[1])
    assert until(lambda: queue.message_count == 1)
    publisher.close()
    assert server.broker.resources.disk_free > 0


def test_memory_pressure_pages_queues_that_were_in_memory(server: ServerThread) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(server.url))
    channel = connection.channel()
    channel.confirm_delivery()
    channel.queue_declare("q")
    for index in range(2000):
        channel.basic_publish("", "q", b"%06d" % index)
    queue = server.broker.vhosts["/"].queues["q"]
    assert queue.paged_count == 0
    resources = server.broker.resources
    # Past half the watermark (RabbitMQ's paging ratio), far from the alarm itself.
    server.broker.settings.memory_high_watermark = int(resources.memory_used * 1.5) or 1
    assert until(lambda: queue.paged_count > 1500)
    assert not resources.memory_alarm or resources.memory_used > resources.memory_limit
    got = []
    for method, _, body in channel.consume("q", auto_ack=True, inactivity_timeout=5):
        assert method is not None
        got.append(int(body))
        if len(got) == 2000:
            break
    channel.cancel()
    connection.close()
    assert got == list(range(2000))
