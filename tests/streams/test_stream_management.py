"""Streams in the management API: /api/queues lists them as RabbitMQ 3.10 does."""

from __future__ import annotations

import time
import uuid
from typing import Any
from urllib.parse import quote

import pika
import pytest

from leveret.management import ManagementServer
from tests.management.conftest import Http
from tests.management.test_rabbitmq_shapes import RABBITMQ_AMQP, RABBITMQ_HTTP

SAME = ("type", "durable", "auto_delete", "exclusive", "arguments", "state", "consumers", "messages",
        "messages_ready", "messages_unacknowledged")


def fill(url: str, name: str) -> pika.BlockingConnection:
    """A stream with 5 messages and a consumer holding 2 of them unacked."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.queue_declare(name, durable=True, arguments={"x-queue-type": "stream"})
    channel.confirm_delivery()
    for _ in range(5):
        channel.basic_publish("", name, b"hello")
    consumer = connection.channel()
    consumer.basic_qos(prefetch_count=2)
    consumer.basic_consume(name, lambda *args: None, arguments={"x-stream-offset": "first"})
    connection.process_data_events(0.2)
    return connection


def test_a_stream_in_api_queues(leveret_management: ManagementServer) -> None:
    thread = leveret_management.broker_thread
    assert thread is not None
    http = Http(leveret_management.url)
    connection = fill(thread.url, "events")
    try:
        [queue] = [q for q in http.get("/api/queues") if q["name"] == "events"]
        assert queue["type"] == "stream"
        assert (queue["messages"], queue["messages_ready"], queue["messages_unacknowledged"]) == (5, 5, 0)
        assert queue["message_bytes"] > 5 * len(b"hello")  # the stream's size on its segments
        assert queue["members"] == queue["online"] == [queue["node"]]
        assert queue["readers"] == {queue["node"]: 1}
    finally:
        connection.close()


@pytest.mark.rabbitmq
def test_a_stream_lists_as_on_rabbitmq(leveret_management: ManagementServer) -> None:
    rabbitmq = Http(RABBITMQ_HTTP)
    try:
        rabbitmq.request("GET", "/api/overview")
    except OSError as error:
        pytest.skip(f"the reference RabbitMQ's management API is unreachable: {error}")
    thread = leveret_management.broker_thread
    assert thread is not None
    name = f"stream-mgmt-{uuid.uuid4().hex[:8]}"
    theirs_connection = fill(RABBITMQ_AMQP, name)
    ours_connection = fill(thread.url, name)
    try:
        def theirs() -> dict[str, Any]:
            return rabbitmq.get(f"/api/queues/%2F/{quote(name)}")  # type: ignore[no-any-return]

        deadline = time.monotonic() + 20  # RabbitMQ's statistics arrive every 5 s
        # messages, state and consumers come in separate statistics events: wait for all of them
        def settled(queue: dict[str, Any]) -> bool:
            return queue.get("messages") == 5 and all(queue.get(f) is not None for f in SAME)

        while not settled(theirs()) and time.monotonic() < deadline:
            theirs_connection.process_data_events(0.5)
        rabbit = theirs()
        ours = Http(leveret_management.url).get(f"/api/queues/%2F/{quote(name)}")
        assert {f: rabbit.get(f) for f in SAME} == {f: ours.get(f) for f in SAME}
        assert set(rabbit) - set(ours) <= {"memory", "garbage_collection", "reductions", "reductions_details",
                                           "consumer_details", "deliveries", "incoming"}
    finally:
        for connection in (theirs_connection, ours_connection):
            connection.channel().queue_delete(name)
            connection.close()
