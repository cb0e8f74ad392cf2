"""Quorum queues, leveret against the reference RabbitMQ 3.10.8: where returned
messages go, their delivery counts, what a declaration refuses, and
at-least-once dead-lettering (the rules of queues/quorum.py).

Skipped where no RabbitMQ listens on 127.0.0.1:5672. Names are unique and every
queue declared is deleted: the reference is shared.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
import pytest

from tests import reference
from tests.e2e.test_differential import compare, error_of, get_eventually, publish_confirmed

pytestmark = [pytest.mark.rabbitmq, reference.needs_reference]

QUORUM = {"x-queue-type": "quorum"}


async def ready_eventually(channel: aio_pika.abc.AbstractChannel, name: str, count: int) -> None:
    """The reference returns a closed channel's messages when the queue hears it
    is gone, not before the close-ok: poll until `count` are ready."""
    for _ in range(200):
        declared = await channel.declare_queue(name, passive=True)
        if declared.declaration_result.message_count == count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{name} never had {count} ready messages")


async def drain(queue: aio_pika.abc.AbstractQueue) -> list[tuple[str, bool, Any]]:
    seen = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        seen.append((message.body.decode(), message.redelivered, message.headers.get("x-delivery-count", "absent")))
    return seen


async def quorum_returns_scenario(connection: aio_pika.abc.AbstractConnection, prefix: str, seen: list[Any]) -> None:
    channel = await connection.channel(publisher_confirms=True)
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "reject"), ({}, "nack-multiple"), ({}, "recover"), ({}, "close"), ({}, "reject-then-close"),
        ({"x-delivery-limit": 5}, "reject"), ({"x-delivery-limit": 5}, "nack-multiple"),
        ({"x-delivery-limit": 5}, "reject-then-close"), ({"x-delivery-limit": 1}, "reject-thrice"),
    ]
    for index, (limits, how) in enumerate(cases):
        queue = await channel.declare_queue(f"{prefix}.returns{index}", durable=True, arguments={**QUORUM, **limits})
        try:
            for body in ("m1", "m2", "m3", "m4"):
                await publish_confirmed(channel, queue.name, body)
            taker = await connection.channel()
            taken = await taker.get_queue(queue.name)
            held = [await taken.get(timeout=2) for _ in range(2)]
            got = [(message.body.decode(), message.redelivered, message.headers.get("x-delivery-count")) for message in held]
            if how == "reject":
                await held[0].reject(requeue=True)
            elif how == "nack-multiple":
                await held[1].nack(multiple=True, requeue=True)
            elif how == "recover":
                await (await taker.get_underlay_channel()).basic_recover(requeue=True)
            elif how == "reject-then-close":
                await held[1].reject(requeue=True)
                again = await taken.get(timeout=2)
                got.append((again.body.decode(), again.redelivered, again.headers.get("x-delivery-count")))
            elif how == "reject-thrice":
                message = held[0]
                for _ in range(3):
                    await message.reject(requeue=True)
                    message = await taken.get(timeout=2)
                    got.append((message.body.decode(), message.redelivered, message.headers.get("x-delivery-count")))
                await message.ack()
            await taker.close()  # what it still holds comes back too
            await ready_eventually(channel, queue.name, 2 if how == "reject-thrice" else 4)
            seen.append((limits, how, got, await drain(queue)))
        finally:
            await channel.queue_delete(queue.name)


async def quorum_declare_scenario(connection: aio_pika.abc.AbstractConnection, prefix: str, seen: list[Any]) -> None:
    control = await connection.channel()
    cases: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("", {}, {"durable": True}),
        ("", {"x-max-priority": 5}, {"exclusive": True}),
        ("group-text", {"x-quorum-initial-group-size": "abc"}, {"durable": True}),
        ("group-negative", {"x-quorum-initial-group-size": -1}, {"durable": True}),
        ("group-zero", {"x-quorum-initial-group-size": 0}, {"durable": True}),
        ("group-one", {"x-quorum-initial-group-size": 1}, {"durable": True}),
        ("locator-unknown", {"x-queue-leader-locator": "nearest"}, {"durable": True}),
        ("locator-number", {"x-queue-leader-locator": 5}, {"durable": True}),
        ("locator-balanced", {"x-queue-leader-locator": "balanced"}, {"durable": True}),
        ("priority", {"x-max-priority": 5}, {"durable": True}),
        ("mode", {"x-queue-mode": "lazy"}, {"durable": True}),
        ("strategy", {"x-dead-letter-strategy": "sometimes"}, {"durable": True}),
        ("transient", {}, {"durable": False}),
        ("exclusive", {}, {"durable": True, "exclusive": True}),
        ("auto-delete", {}, {"durable": True, "auto_delete": True}),
    ]
    for name, arguments, flags in cases:
        full = f"{prefix}.{name}" if name else ""

        async def declare(channel: aio_pika.abc.AbstractChannel, full: str = full,
                          arguments: dict[str, Any] = arguments, flags: dict[str, Any] = flags) -> None:
            await channel.declare_queue(full, arguments={**QUORUM, **arguments}, **flags)

        outcome = await error_of(connection.channel, declare)
        if outcome == "ok":
            await control.queue_delete(full)
        seen.append((name, outcome if isinstance(outcome, str) else (outcome[0], outcome[1].replace(prefix, "P"))))


async def quorum_at_least_once_scenario(connection: aio_pika.abc.AbstractConnection, prefix: str, seen: list[Any]) -> None:
    # A dead letter no queue takes stays in an at-least-once queue and counts
    # towards its limit; in effect only with reject-publish.
    channel = await connection.channel(publisher_confirms=True)
    dead = await channel.declare_queue(f"{prefix}.dead", exclusive=True)
    cases = [("at-least-once", "reject-publish", False), ("at-least-once", "reject-publish", True),
             ("at-most-once", "reject-publish", False), ("at-least-once", "drop-head", False)]
    for index, (strategy, overflow, routable) in enumerate(cases):
        queue = await channel.declare_queue(f"{prefix}.alo{index}", durable=True, arguments={
            **QUORUM, "x-max-length": 2, "x-overflow": overflow, "x-dead-letter-strategy": strategy,
            "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead.name if routable else f"{prefix}.nowhere"})
        try:
            outcomes = [await publish_confirmed(channel, queue.name, body) for body in ("m1", "m2")]
            first = await queue.get(timeout=2)
            await first.reject(requeue=False)
            arrived = None
            if routable:
                # Delivered; when the reference stops counting it towards the limit
                # (its target queue's confirm) is its dead-letter worker's timing.
                message = await get_eventually(dead)
                deaths = message.headers["x-death"]
                assert isinstance(deaths, list)
                arrived = (message.body.decode(), [(death["reason"], death["count"]) for death in deaths])  # type: ignore[index]
            else:
                outcomes += [await publish_confirmed(channel, queue.name, body) for body in ("m3", "m4", "m5")]
            declared = await channel.declare_queue(queue.name, passive=True)
            seen.append((strategy, overflow, routable, outcomes, declared.declaration_result.message_count, arrived))
        finally:
            await channel.queue_delete(queue.name)


@pytest.mark.asyncio
@pytest.mark.parametrize("scenario", [quorum_returns_scenario, quorum_declare_scenario, quorum_at_least_once_scenario],
                         ids=lambda s: s.__name__)
async def test_quorum_queue_matches_rabbitmq(leveret_url: str, scenario: Any) -> None:
    observed = await compare(leveret_url, scenario)
    assert observed
