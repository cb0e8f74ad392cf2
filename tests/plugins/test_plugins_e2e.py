"""The plugin interfaces through aio-pika over real TCP, as their users' code calls them."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import aio_pika
import aiormq
import pytest
from aio_pika import Message
from aio_pika.exceptions import ChannelPreconditionFailed, DeliveryError, PublishError

pytestmark = pytest.mark.asyncio


async def connect(url: str) -> aio_pika.abc.AbstractConnection:
    return await aio_pika.connect(url, timeout=5)


# ------------------------------------------------------------------ delayed
async def test_delayed_messages_arrive_after_their_own_delays(leveret_url: str) -> None:
    async with await connect(leveret_url) as connection:
        channel = await connection.channel(publisher_confirms=True)
        later = await channel.declare_exchange(
            "later", "x-delayed-message", arguments={"x-delayed-type": "direct"})
        queue = await channel.declare_queue("jobs", exclusive=True)
        await queue.bind(later, "job")
        arrived: list[tuple[str, float, object]] = []
        done = asyncio.Event()
        started = time.monotonic()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                arrived.append((message.body.decode(), time.monotonic() - started, message.headers.get("x-delay")))
                if len(arrived) == 3:
                    done.set()

        await queue.consume(on_message)
        for body, delay in [("slow", 600), ("quick", 150), ("now", None)]:
            headers = {} if delay is None else {"x-delay": delay}
            # aio-pika publishes mandatory by default, and a delayed message is
            # unroutable at publish (as with the plugin): say mandatory=False.
            confirmation = await later.publish(
                Message(body.encode(), headers=headers), routing_key="job", mandatory=False)
            assert isinstance(confirmation, aiormq.spec.Basic.Ack)  # confirmed at once, as the plugin
        await asyncio.wait_for(done.wait(), 5)
        assert [body for body, _, _ in arrived] == ["now", "quick", "slow"]
        timings = {body: at for body, at, _ in arrived}
        assert timings["quick"] >= 0.15 and timings["slow"] >= 0.6
        assert {body: header for body, _, header in arrived} == {"now": None, "quick": -150, "slow": -600}


async def test_a_mandatory_delayed_publish_is_returned_yet_delivered(leveret_url: str) -> None:
    async with await connect(leveret_url) as connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        later = await channel.declare_exchange(
            "later", "x-delayed-message", arguments={"x-delayed-type": "fanout"})
        queue = await channel.declare_queue("", exclusive=True)
        await queue.bind(later)
        with pytest.raises(PublishError) as returned:
            await later.publish(Message(b"m", headers={"x-delay": 100}), routing_key="", mandatory=True)
        assert returned.value.frame.reply_code == 312
        await asyncio.sleep(0.3)
        message = await queue.get(fail=False)
        assert message is not None and message.body == b"m"


async def test_x_delayed_type_is_required(leveret_url: str) -> None:
    async with await connect(leveret_url) as connection:
        channel = await connection.channel()
        with pytest.raises(ChannelPreconditionFailed) as refused:
            await channel.declare_exchange("later", "x-delayed-message")
        assert "'x-delayed-type' must be an existing exchange type" in str(refused.value)


# ---------------------------------------------------------- consistent hash
async def test_consistent_hash_partitions_a_stream(leveret_url: str) -> None:
    async with await connect(leveret_url) as connection:
        channel = await connection.channel(publisher_confirms=True)
        ring = await channel.declare_exchange("orders", "x-consistent-hash")
        parts = []
        for number, weight in enumerate(["1", "1", "2"]):
            queue = await channel.declare_queue(f"part.{number}", exclusive=True)
            await queue.bind(ring, weight)
            parts.append(queue)
        for event in range(400):
            await ring.publish(Message(f"{event % 40}:{event}".encode()), routing_key=f"customer-{event % 40}")
        placed: dict[str, set[str]] = {}
        counts = Counter[str]()
        for queue in parts:
            while (message := await queue.get(fail=False, no_ack=True)) is not None:
                customer = message.body.decode().split(":")[0]
                placed.setdefault(customer, set()).add(queue.name)
                counts[queue.name] += 1
        assert sum(counts.values()) == 400  # each message reached exactly one queue
        assert all(len(queues) == 1 for queues in placed.values())  # a customer stays on one queue
        assert len(counts) > 1

        with pytest.raises(ChannelPreconditionFailed) as refused:
            await parts[0].bind(ring, "heavy")
        assert 'The binding key must be an integer: <<"heavy">>' in str(refused.value)


async def test_consistent_hash_on_a_header(leveret_url: str) -> None:
    async with await connect(leveret_url) as connection:
        channel = await connection.channel()
        ring = await channel.declare_exchange("by-user", "x-consistent-hash", arguments={"hash-header": "user"})
        queues = []
        for name in ("a", "b", "c"):
            queue = await channel.declare_queue(name, exclusive=True)
            await queue.bind(ring, "1")
            queues.append(queue)
        for number in range(30):
            await ring.publish(Message(b"x", headers={"user": "ann"}), routing_key=f"rk-{number}")
        await asyncio.sleep(0.1)
        counts = sorted([(await queue.declare()).message_count for queue in queues])
        assert counts == [0, 0, 30]


# ------------------------------------------------------------ deduplication
async def test_queue_deduplication_nacks_a_duplicate(leveret_url: str) -> None:
    async with await connect(leveret_url) as connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(
            "payments", exclusive=True, arguments={"x-message-deduplication": True})
        exchange = channel.default_exchange
        first = Message(b"charge", headers={"x-deduplication-header": "pay-1"})
        assert isinstance(await exchange.publish(first, "payments"), aiormq.spec.Basic.Ack)
        with pytest.raises(DeliveryError) as refused:
            await exchange.publish(Message(b"charge again", headers={"x-deduplication-header": "pay-1"}), "payments")
        assert isinstance(refused.value.frame, aiormq.spec.Basic.Nack)
        message = await queue.get()
        await message.ack()
        # Acked: it left the queue, and so did its key.
        again = Message(b"charge, later", headers={"x-deduplication-header": "pay-1"})
        assert isinstance(await exchange.publish(again, "payments"), aiormq.spec.Basic.Ack)


async def test_exchange_deduplication_drops_repeats_in_the_window(leveret_url: str) -> None:
    async with await connect(leveret_url) as connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        events = await channel.declare_exchange(
            "events", "x-message-deduplication", arguments={"x-cache-size": 100, "x-cache-ttl": 300})
        queue = await channel.declare_queue("audit", exclusive=True)
        await queue.bind(events)

        def signup() -> Message:
            return Message(b"signed up", headers={"x-deduplication-header": "user-7"})

        assert isinstance(await events.publish(signup(), ""), aiormq.spec.Basic.Ack)
        # A duplicate is unroutable: confirmed, and returned when mandatory
        # (aio-pika's default).
        assert isinstance(await events.publish(signup(), "", mandatory=False), aiormq.spec.Basic.Ack)
        with pytest.raises(PublishError) as returned:
            await events.publish(signup(), "")
        assert returned.value.frame.reply_code == 312
        await asyncio.sleep(0.35)
        assert isinstance(await events.publish(signup(), ""), aiormq.spec.Basic.Ack)
        await asyncio.sleep(0.1)
        assert (await queue.declare()).message_count == 2

        with pytest.raises(ChannelPreconditionFailed) as refused:
            await channel.declare_exchange("broken", "x-message-deduplication")
        assert "'x-cache-size' must be an integer greater than 0" in str(refused.value)
