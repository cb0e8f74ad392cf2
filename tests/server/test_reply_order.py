"""The order of a reply and the server-initiated frames it causes on the same channel.

A client waiting for a reply sees whatever comes first on that channel: py-amqp
(and so kombu and Celery) raises ConsumerCancelled from inside queue_delete when
the basic.cancel for the channel's own consumer comes before delete-ok. RabbitMQ
sends the reply first wherever the frames are made by another process (queue
deletion, redelivery after basic.recover); the scenarios below are those whose
order on one channel is the same on every run of the reference. Frames on other
channels are left out: RabbitMQ's order across channels varies from run to run.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import amqp
import pytest
from pamqp import body, commands, header

from leveret.server.shell import ServerThread
from tests import reference
from tests.hardening.rawclient import RawClient

Scenario = Callable[[RawClient, str], None]


@pytest.fixture
def leveret_port() -> Iterator[int]:
    with ServerThread() as running:
        yield running.port


def publish(client: RawClient, channel: int, routing_key: str, *, mandatory: bool = False) -> None:
    client.send(commands.Basic.Publish(exchange="", routing_key=routing_key, mandatory=mandatory), channel)
    client.send(header.ContentHeader(0, 1, commands.Basic.Properties()), channel)
    client.send(body.ContentBody(b"x"), channel)


def frames_on(client: RawClient, channel: int, count: int, timeout: float = 3.0) -> list[str]:
    """The names of the next `count` frames on `channel` (others skipped), fewer at the deadline."""
    names: list[str] = []
    deadline = time.monotonic() + timeout
    while len(names) < count:
        got = client.recv(max(0.01, deadline - time.monotonic()))
        if got is None:
            break
        if got[0] == channel:
            names.append(got[1].name)
    return names


def delete_consumed_queue(client: RawClient, queue: str) -> None:
    client.call(commands.Queue.Declare(queue=queue), 1)
    client.call(commands.Basic.Consume(queue=queue, consumer_tag="here"), 1)
    client.call(commands.Basic.Consume(queue=queue, consumer_tag="there"), 2)
    client.send(commands.Queue.Delete(queue=queue), 1)


def delete_queue_holding_unacked(client: RawClient, queue: str) -> None:
    client.call(commands.Queue.Declare(queue=queue), 1)
    publish(client, 1, queue)
    client.call(commands.Basic.Consume(queue=queue, consumer_tag="here"), 1)
    assert frames_on(client, 1, 3) == ["Basic.Deliver", "ContentHeader", "ContentBody"]
    client.send(commands.Queue.Delete(queue=queue), 1)


def recover_redelivers(client: RawClient, queue: str) -> None:
    client.call(commands.Queue.Declare(queue=queue, exclusive=True), 1)
    publish(client, 1, queue)
    client.call(commands.Basic.Consume(queue=queue, consumer_tag="here"), 1)
    assert frames_on(client, 1, 3) == ["Basic.Deliver", "ContentHeader", "ContentBody"]
    client.send(commands.Basic.Recover(requeue=True), 1)


def unroutable_mandatory_confirmed(client: RawClient, queue: str) -> None:
    client.call(commands.Confirm.Select(), 1)
    publish(client, 1, queue, mandatory=True)  # no such queue: returned, then acked


SCENARIOS: dict[str, tuple[Scenario, list[str]]] = {
    "delete-ok before the cancel of the channel's consumer": (
        delete_consumed_queue, ["Queue.DeleteOk", "Basic.Cancel"]),
    "delete-ok before the cancel, unacked held": (
        delete_queue_holding_unacked, ["Queue.DeleteOk", "Basic.Cancel"]),
    "recover-ok before the redelivery": (
        recover_redelivers, ["Basic.RecoverOk", "Basic.Deliver", "ContentHeader", "ContentBody"]),
    "basic.return before basic.ack": (
        unroutable_mandatory_confirmed, ["Basic.Return", "ContentHeader", "ContentBody", "Basic.Ack"]),
}


def observe(port: int, scenario: Scenario, count: int) -> list[str]:
    client = RawClient("127.0.0.1", port)
    try:
        client.handshake()
        client.open_channel(1)
        client.open_channel(2)
        scenario(client, f"order-{uuid.uuid4().hex[:10]}")
        return frames_on(client, 1, count)
    finally:
        client.close()  # the queues left are exclusive or already deleted


@pytest.mark.parametrize("name", SCENARIOS)
def test_leveret_replies_before_what_the_reply_caused(leveret_port: int, name: str) -> None:
    scenario, expected = SCENARIOS[name]
    assert observe(leveret_port, scenario, len(expected)) == expected


@pytest.mark.rabbitmq
@reference.needs_reference
@pytest.mark.parametrize("name", SCENARIOS)
def test_the_order_is_the_references(leveret_port: int, name: str) -> None:
    scenario, expected = SCENARIOS[name]
    assert observe(reference.PORT, scenario, len(expected)) == expected
    assert observe(leveret_port, scenario, len(expected)) == expected


def test_py_amqp_deletes_the_queue_it_consumes_from(leveret_port: int) -> None:
    """kombu's test_ack_from_another_thread in small: queue_delete returns, the cancel is handled after."""
    cancelled: list[str] = []
    connection = amqp.Connection(f"127.0.0.1:{leveret_port}")
    connection.connect()
    try:
        channel = connection.channel()
        queue = f"order-{uuid.uuid4().hex[:10]}"
        channel.queue_declare(queue)
        channel.basic_consume(queue, callback=lambda message: None, on_cancel=cancelled.append)
        assert channel.queue_delete(queue) == 0
        assert cancelled == []  # not yet read: it follows delete-ok
        connection.drain_events(timeout=2)
        assert len(cancelled) == 1
    finally:
        connection.close()
