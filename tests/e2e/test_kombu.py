"""kombu (py-amqp transport) against leveret: what Celery is built on."""

from __future__ import annotations

import time
from collections.abc import Iterator
from queue import Empty
from typing import Any

import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.message import Message

from tests.e2e.conftest import Names, wait_until


def kombu_url(amqp_url: str) -> str:
    """amqp://u:p@h:port/ -> pyamqp://u:p@h:port// (kombu reads the vhost from the path after '/')."""
    return "pyamqp" + amqp_url[len("amqp"):].rstrip("/") + "//"


@pytest.fixture
def kombu_connection(broker_url: str) -> Iterator[Connection]:
    with Connection(kombu_url(broker_url), connect_timeout=5) as connection:
        connection.connect()
        yield connection


def drain(connection: Connection, until: Any, timeout: float = 3.0) -> None:
    """drain_events until `until()` holds or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not until():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        try:
            connection.drain_events(timeout=min(left, 0.1))
        except TimeoutError:
            pass


def settle(connection: Connection, seconds: float = 0.3) -> None:
    drain(connection, lambda: False, timeout=seconds)


def test_producer_consumer_round_trip(kombu_connection: Connection, names: Names) -> None:
    exchange = Exchange(names.exchange("media"), "direct", durable=False)
    queue = Queue(names.queue("video"), exchange, routing_key="video", durable=False)
    producer = Producer(kombu_connection.default_channel)
    producer.publish(
        {"name": "clip.mp4", "size": 1024}, exchange=exchange, routing_key="video",
        serializer="json", headers={"x-trace": "t1"}, declare=[queue], priority=3,
    )
    producer.publish("second", exchange=exchange, routing_key="video", serializer="json")
    received: list[tuple[Any, Message]] = []

    def on_message(body: Any, message: Message) -> None:
        received.append((body, message))
        message.ack()

    with Consumer(kombu_connection.default_channel, [queue], callbacks=[on_message], accept=["json"]):
        drain(kombu_connection, lambda: len(received) == 2)
    left = queue(kombu_connection.default_channel).queue_declare(passive=True).message_count

    assert [body for body, _ in received] == [{"name": "clip.mp4", "size": 1024}, "second"]
    first = received[0][1]
    assert first.content_type == "application/json"
    assert first.headers == {"x-trace": "t1"}
    assert first.properties["priority"] == 3
    assert first.delivery_info["routing_key"] == "video"
    assert first.delivery_info["exchange"] == exchange.name
    assert left == 0


def test_reject_with_requeue_redelivers(kombu_connection: Connection, names: Names) -> None:
    queue = Queue(names.queue("retry"), durable=False)
    Producer(kombu_connection.default_channel).publish("job", routing_key=queue.name, declare=[queue])
    seen: list[bool] = []

    def on_message(body: Any, message: Message) -> None:
        seen.append(message.delivery_info["redelivered"])
        if len(seen) == 1:
            message.requeue()
        else:
            message.ack()

    with Consumer(kombu_connection.default_channel, [queue], callbacks=[on_message]):
        drain(kombu_connection, lambda: len(seen) == 2)

    assert seen == [False, True]


def test_simple_queue(kombu_connection: Connection, names: Names) -> None:
    name = names.queue("simple")
    names.exchanges.append(name)  # SimpleQueue routes through a direct exchange of the same name
    simple = kombu_connection.SimpleQueue(name, queue_opts={"durable": False})
    for i in range(3):
        simple.put({"n": i})
    # RabbitMQ routes asynchronously: a passive declare may overtake the publishes.
    counted = wait_until(lambda: simple.qsize() == 3, timeout=2)
    bodies = []
    for _ in range(3):
        message = simple.get(block=True, timeout=2)
        bodies.append(message.payload)
        message.ack()
    with pytest.raises(Empty):
        simple.get_nowait()
    simple.close()

    assert counted
    assert bodies == [{"n": 0}, {"n": 1}, {"n": 2}]


def test_consumer_prefetch_count_is_honoured(
    kombu_connection: Connection, names: Names, monkeypatch: pytest.MonkeyPatch
) -> None:
    channel = kombu_connection.default_channel
    queue = Queue(names.queue("prefetch"), durable=False)
    producer = Producer(channel)
    for i in range(8):
        producer.publish(i, routing_key=queue.name, declare=[queue])
    sent_qos: list[tuple[Any, ...]] = []
    basic_qos = channel.basic_qos

    def spy(*args: Any, **kwargs: Any) -> Any:
        sent_qos.append(args + tuple(kwargs.values()))
        return basic_qos(*args, **kwargs)

    monkeypatch.setattr(channel, "basic_qos", spy)
    received: list[Message] = []
    with Consumer(channel, [queue], callbacks=[lambda body, message: received.append(message)], prefetch_count=3):
        drain(kombu_connection, lambda: len(received) >= 3)
        settle(kombu_connection)
        first_wave = len(received)
        received[0].ack()
        drain(kombu_connection, lambda: len(received) >= 4)
        settle(kombu_connection)
        second_wave = len(received)

    # Consumer.qos sends global=false (per consumer), before basic.consume.
    assert sent_qos == [(0, 3, False)]
    assert (first_wave, second_wave) == (3, 4)


def test_celery_style_qos_follows_server_properties(kombu_connection: Connection, names: Names) -> None:
    # Celery sends basic.qos with global = not qos_semantics_matches_spec, which
    # kombu decides from server_properties: RabbitMQ 3.3-3.x gets global=true
    # (RabbitMQ's per-channel limit, raised live for ETA tasks), any other
    # product global=false (per consumer, never raised for a running consumer:
    # ETA tasks would starve the worker). So leveret announces RabbitMQ 3.10.
    transport = kombu_connection.transport
    raw = kombu_connection.connection
    apply_global = not transport.qos_semantics_matches_spec(raw)
    channel = kombu_connection.channel()
    queue = Queue(names.queue("celery-like"), durable=False)
    producer = Producer(channel)
    for i in range(6):
        producer.publish(i, routing_key=queue.name, declare=[queue])
    channel.basic_qos(0, 2, apply_global)
    received: list[Message] = []
    with Consumer(channel, [queue], callbacks=[lambda body, message: received.append(message)]):
        drain(kombu_connection, lambda: len(received) >= 2)
        settle(kombu_connection)
    channel.close()

    assert (raw.server_properties.get("product"), apply_global) == ("RabbitMQ", True)
    assert len(received) == 2
