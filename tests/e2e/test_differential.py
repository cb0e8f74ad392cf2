"""Differential tests: one aio-pika script, run against the reference RabbitMQ
and against leveret; what the client observed must be equal.

Skipped where no RabbitMQ listens on 127.0.0.1:5672. Names carry a unique
prefix and everything declared is deleted: the reference is shared.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import aiormq
import pytest
from aio_pika import ExchangeType, Message

from tests import reference

REFERENCE_URL = reference.URL

pytestmark = [pytest.mark.rabbitmq, reference.needs_reference]

Scenario = Callable[[aio_pika.abc.AbstractConnection, str, list[Any]], Awaitable[None]]


async def observe(url: str, scenario: Scenario, prefix: str) -> list[Any]:
    observations: list[Any] = []
    connection = await aio_pika.connect(url, timeout=5)
    try:
        await scenario(connection, prefix, observations)
    finally:
        # Scenarios declare exclusive queues and auto-delete exchanges bound to
        # them, so closing the connection removes them from the shared reference.
        await connection.close()
    return observations


async def compare(leveret_url: str, scenario: Scenario) -> list[Any]:
    prefix = f"diff-{uuid.uuid4().hex[:10]}"
    expected = await observe(REFERENCE_URL, scenario, prefix)
    actual = await observe(leveret_url, scenario, prefix)
    assert actual == expected
    return expected


async def error_of(channel_factory: Callable[[], Awaitable[aio_pika.abc.AbstractChannel]],
                   action: Callable[[aio_pika.abc.AbstractChannel], Awaitable[Any]]) -> tuple[str, str] | str:
    """Run `action` on a fresh channel: 'ok' or the (exception class, reply text) it closed with."""
    channel = await channel_factory()
    try:
        await action(channel)
    except aiormq.exceptions.AMQPError as error:
        return type(error).__name__, str(error.args[0]) if error.args else ""
    finally:
        if not channel.is_closed:
            await channel.close()
    return "ok"


async def get_eventually(queue: aio_pika.abc.AbstractQueue) -> aio_pika.abc.AbstractIncomingMessage:
    """RabbitMQ dead-letters asynchronously: poll briefly for the message."""
    for _ in range(100):
        message = await queue.get(no_ack=True, fail=False)
        if message is not None:
            return message
        await asyncio.sleep(0.02)
    raise AssertionError(f"nothing arrived in {queue.name}")


async def routing_scenario(connection: aio_pika.abc.AbstractConnection, prefix: str, seen: list[Any]) -> None:
    channel = await connection.channel()
    topic = await channel.declare_exchange(f"{prefix}.topic", ExchangeType.TOPIC, auto_delete=True)
    headers = await channel.declare_exchange(f"{prefix}.headers", ExchangeType.HEADERS, auto_delete=True)
    patterns = ["a.*", "a.#", "#", "*", "a.*.c", "#.b.#", "*.*", "a.#.#.b", "#.*.#"]
    keys = ["", "a", "a.", "a.b", "a..c", "a.b.c", ".", "x.b.y", "a.x.y.b", "b"]
    queues = []
    for index, pattern in enumerate(patterns):
        queue = await channel.declare_queue(f"{prefix}.t{index}", exclusive=True)
        await queue.bind(topic, pattern)
        queues.append(queue)
    rules: list[dict[str, Any]] = [
        {"x-match": "all", "a": 1},
        {"x-match": "any", "a": 1, "b": "2"},
        {"x-match": "all"},
        {"x-match": "any"},
        {"x-match": "all", "a": None},
        {"x-match": "all-with-x", "x-k": "v"},
        {"x-match": "any", "x-k": "v"},
        {"x-match": "all", "flag": True},
    ]
    header_queues = []
    for index, rule in enumerate(rules):
        queue = await channel.declare_queue(f"{prefix}.h{index}", exclusive=True)
        await queue.bind(headers, arguments=rule)
        header_queues.append(queue)
    for key in keys:
        await topic.publish(Message(key.encode()), routing_key=key)
    messages: list[dict[str, Any]] = [
        {"a": 1}, {"a": "1"}, {"b": "2"}, {"a": 2}, {}, {"x-k": "v"}, {"flag": True}, {"flag": 1}, {"a": 1.0},
    ]
    for index, table in enumerate(messages):
        await headers.publish(Message(str(index).encode(), headers=table), routing_key="")
    await asyncio.sleep(0.2)
    for queue in queues + header_queues:
        bodies = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            bodies.append(message.body.decode())
        seen.append((queue.name, sorted(bodies)))


async def error_scenario(connection: aio_pika.abc.AbstractConnection, prefix: str, seen: list[Any]) -> None:
    setup = await connection.channel()
    await setup.declare_queue(f"{prefix}.ttl", exclusive=True, arguments={"x-message-ttl": 1000})
    await setup.declare_exchange(f"{prefix}.x", ExchangeType.DIRECT, auto_delete=True)
    cases: list[Callable[[aio_pika.abc.AbstractChannel], Awaitable[Any]]] = [
        lambda ch: ch.declare_queue(f"{prefix}.missing", passive=True),
        lambda ch: ch.declare_exchange(f"{prefix}.missing", passive=True),
        lambda ch: ch.declare_queue(f"{prefix}.ttl", exclusive=True, arguments={"x-message-ttl": 2000}),
        lambda ch: ch.declare_queue(f"{prefix}.ttl", exclusive=True),
        lambda ch: ch.declare_queue(f"{prefix}.ttl", exclusive=True, durable=True, arguments={"x-message-ttl": 1000}),
        lambda ch: ch.declare_exchange(f"{prefix}.x", ExchangeType.FANOUT, auto_delete=True),
        lambda ch: ch.declare_exchange("amq.reserved-name", ExchangeType.DIRECT),
        lambda ch: ch.declare_queue("amq.reserved-name"),
        lambda ch: ch.declare_queue(f"{prefix}.bad", exclusive=True, arguments={"x-max-length": -1}),
        lambda ch: ch.declare_queue(f"{prefix}.bad", exclusive=True, arguments={"x-overflow": "nope"}),
        lambda ch: ch.declare_queue(f"{prefix}.bad", exclusive=True, arguments={"x-dead-letter-routing-key": "k"}),
        lambda ch: ch.queue_delete("amq.direct"),
    ]
    for case in cases:
        seen.append(await error_of(connection.channel, case))
    await setup.exchange_delete(f"{prefix}.x")


async def limits_scenario(connection: aio_pika.abc.AbstractConnection, prefix: str, seen: list[Any]) -> None:
    channel = await connection.channel(publisher_confirms=True)
    dlx = await channel.declare_exchange(f"{prefix}.dlx", ExchangeType.FANOUT, auto_delete=True)
    dead = await channel.declare_queue(f"{prefix}.dead", exclusive=True)
    await dead.bind(dlx)
    for overflow in ("drop-head", "reject-publish", "reject-publish-dlx"):
        queue = await channel.declare_queue(f"{prefix}.{overflow}", exclusive=True, arguments={
            "x-max-length": 2, "x-overflow": overflow, "x-dead-letter-exchange": f"{prefix}.dlx"})
        outcomes = []
        for i in range(4):
            try:
                await channel.default_exchange.publish(Message(f"{overflow}-{i}".encode()), routing_key=queue.name)
                outcomes.append("ack")
            except aio_pika.exceptions.DeliveryError:
                outcomes.append("nack")
        kept = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            kept.append(message.body.decode())
        seen.append((overflow, outcomes, kept))
    await asyncio.sleep(0.1)
    died = []
    while (message := await dead.get(no_ack=True, fail=False)) is not None:
        died.append((message.body.decode(), message.headers["x-death"][0]["reason"]))
    seen.append(sorted(died))


async def alternate_and_e2e_scenario(connection: aio_pika.abc.AbstractConnection, prefix: str, seen: list[Any]) -> None:
    channel = await connection.channel()
    ae = await channel.declare_exchange(f"{prefix}.ae", ExchangeType.FANOUT, auto_delete=True)
    front = await channel.declare_exchange(
        f"{prefix}.front", ExchangeType.TOPIC, auto_delete=True, arguments={"alternate-exchange": f"{prefix}.ae"})
    middle = await channel.declare_exchange(f"{prefix}.middle", ExchangeType.DIRECT, auto_delete=True)
    await middle.bind(front, "a.#")
    await front.bind(middle, "loop")  # a cycle: each queue still gets one copy
    unrouted = await channel.declare_queue(f"{prefix}.unrouted", exclusive=True)
    both = await channel.declare_queue(f"{prefix}.both", exclusive=True)
    await unrouted.bind(ae)
    await both.bind(middle, "a.b")
    await both.bind(front, "a.*")
    for key in ("a.b", "a.c", "zzz", "loop"):
        await front.publish(Message(key.encode()), routing_key=key)
    await asyncio.sleep(0.1)
    for queue in (unrouted, both):
        bodies = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            bodies.append(message.body.decode())
        seen.append((queue.name, sorted(bodies)))
    await front.unbind(middle, "loop")
    await middle.unbind(front, "a.#")


async def dead_letter_scenario(connection: aio_pika.abc.AbstractConnection, prefix: str, seen: list[Any]) -> None:
    channel = await connection.channel()
    dlx = await channel.declare_exchange(f"{prefix}.dlx", ExchangeType.TOPIC, auto_delete=True)
    parked = await channel.declare_queue(f"{prefix}.parked", exclusive=True)
    await parked.bind(dlx, "#")
    work = await channel.declare_queue(
        f"{prefix}.work", exclusive=True, arguments={"x-dead-letter-exchange": f"{prefix}.dlx"})
    await channel.default_exchange.publish(
        Message(b"m", headers={"CC": [f"{prefix}.nowhere"], "n": 7}, expiration=30), routing_key=work.name)
    message = await work.get(timeout=2)
    await message.nack(requeue=True)
    message = await work.get(timeout=2)
    seen.append(("redelivered", message.redelivered))
    await message.reject(requeue=False)
    died = await get_eventually(parked)
    headers = dict(died.headers)
    for death in headers["x-death"]:
        death.pop("time")
    seen.append(("routing_key", died.routing_key, "exchange", died.exchange, "expiration", died.expiration))
    seen.append(sorted(headers.items()))


async def requeue_order_scenario(connection: aio_pika.abc.AbstractConnection, prefix: str, seen: list[Any]) -> None:
    channel = await connection.channel()
    queue = await channel.declare_queue(f"{prefix}.order", exclusive=True)
    for i in range(1, 6):
        await channel.default_exchange.publish(Message(f"m{i}".encode()), routing_key=queue.name)
    got = [await queue.get(timeout=2) for _ in range(3)]
    await got[1].nack(requeue=True)
    await got[0].nack(requeue=True)
    after = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        after.append((message.body.decode(), message.redelivered, message.message_count))
    seen.append(after)


async def publish_confirmed(channel: aio_pika.abc.AbstractChannel, queue: str, body: str,
                            **properties: Any) -> str:
    try:
        await channel.default_exchange.publish(Message(body.encode(), **properties), routing_key=queue)
    except aio_pika.exceptions.DeliveryError:
        return "nack"
    return "ack"


async def bodies_of(queue: aio_pika.abc.AbstractQueue) -> list[str]:
    bodies = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        bodies.append(message.body.decode())
    return bodies


async def requeue_over_limit_scenario(connection: aio_pika.abc.AbstractConnection, prefix: str, seen: list[Any]) -> None:
    channel = await connection.channel(publisher_confirms=True)
    dead = await channel.declare_queue(f"{prefix}.dead", exclusive=True)
    for overflow in ("reject-publish", "reject-publish-dlx", "drop-head"):
        queue = await channel.declare_queue(f"{prefix}.{overflow}", exclusive=True, arguments={
            "x-max-length": 2, "x-overflow": overflow,
            "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead.name})
        outcomes = [await publish_confirmed(channel, queue.name, body) for body in ("u1", "u2")]
        taker = await connection.channel()
        await (await taker.get_queue(queue.name)).get()
        outcomes += [await publish_confirmed(channel, queue.name, body) for body in ("u3", "u4")]
        await taker.close()  # u1 comes back
        await asyncio.sleep(0.1)
        seen.append((overflow, outcomes, await bodies_of(queue), await bodies_of(dead)))


async def priority_expiry_scenario(connection: aio_pika.abc.AbstractConnection, prefix: str, seen: list[Any]) -> None:
    channel = await connection.channel(publisher_confirms=True)
    dead = await channel.declare_queue(f"{prefix}.dead", exclusive=True)
    queue = await channel.declare_queue(f"{prefix}.prio", exclusive=True, arguments={
        "x-max-priority": 5, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead.name})
    for body, priority, expiration in (("lo-short", 1, 100), ("hi-long", 5, 100000), ("hi-short", 5, 100)):
        await publish_confirmed(channel, queue.name, body, priority=priority, expiration=expiration / 1000)
    await asyncio.sleep(0.3)
    declared = await channel.declare_queue(queue.name, passive=True)
    seen.append(("count", declared.declaration_result.message_count, await bodies_of(dead)))
    first = await queue.get(no_ack=True)
    await asyncio.sleep(0.1)
    seen.append((first.body.decode(), first.message_count, await bodies_of(dead), await bodies_of(queue)))


async def consume_one(channel: aio_pika.abc.AbstractChannel, name: str) -> aio_pika.abc.AbstractIncomingMessage:
    queue = await channel.get_queue(name)
    async with queue.iterator() as messages:
        async for message in messages:
            return message
    raise AssertionError(f"nothing arrived in {name}")


async def quorum_delivery_count_scenario(connection: aio_pika.abc.AbstractConnection, prefix: str, seen: list[Any]) -> None:
    channel = await connection.channel(publisher_confirms=True)
    queue = await channel.declare_queue(f"{prefix}.quorum", durable=True, arguments={"x-queue-type": "quorum"})
    try:
        await publish_confirmed(channel, queue.name, "q")
        for how in ("consume", "consume", "get", "get", "consume"):
            taker = await connection.channel()
            message = await consume_one(taker, queue.name) if how == "consume" else await queue.get(timeout=2)
            seen.append((how, message.redelivered, message.headers.get("x-delivery-count", "absent")))
            if how == "get":
                await message.nack(requeue=True)
            await taker.close()  # returns what the consumer holds
    finally:
        await channel.queue_delete(queue.name)


async def quorum_overflow_scenario(connection: aio_pika.abc.AbstractConnection, prefix: str, seen: list[Any]) -> None:
    channel = await connection.channel(publisher_confirms=True)
    dead = await channel.declare_queue(f"{prefix}.dead", exclusive=True)
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({"x-max-length": 1, "x-overflow": "reject-publish"}, ["p0", "p1", "p2", "p3"]),
        ({"x-max-length-bytes": 10, "x-overflow": "reject-publish"}, ["aaaa", "bbbb", "cccc", "dddd", "e"]),
        ({"x-max-length": 1, "x-overflow": "reject-publish-dlx"}, ["x0", "x1", "x2"]),
    ]
    for index, (limits, bodies) in enumerate(cases):
        queue = await channel.declare_queue(f"{prefix}.quorum{index}", durable=True, arguments={
            "x-queue-type": "quorum", "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead.name,
            **limits})
        try:
            outcomes = [await publish_confirmed(channel, queue.name, body) for body in bodies]
            await asyncio.sleep(0.2)
            seen.append((limits, outcomes, await bodies_of(queue), await bodies_of(dead)))
        finally:
            await channel.queue_delete(queue.name)


@pytest.mark.asyncio
@pytest.mark.parametrize("scenario", [routing_scenario, error_scenario, dead_letter_scenario, requeue_order_scenario,
                                      limits_scenario, alternate_and_e2e_scenario,
                                      requeue_over_limit_scenario, priority_expiry_scenario,
                                      quorum_delivery_count_scenario, quorum_overflow_scenario],
                         ids=lambda s: s.__name__)
async def test_leveret_matches_rabbitmq(leveret_url: str, scenario: Scenario) -> None:
    observed = await compare(leveret_url, scenario)
    assert observed  # the scenario observed something on the reference, so the comparison means something
