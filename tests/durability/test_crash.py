"""kill -9 at random moments: every confirmed persistent message survives, exactly once.

The real `leveret serve --data-dir` runs as a subprocess. Each cycle, several
publishers (aio-pika, publisher confirms, up to WINDOW publishes in flight
each, so confirms share fsyncs) send persistent messages to durable queues,
one through a fanout exchange into two queues; a consumer acks most of what
it gets but leaves every third message unacked the first time it sees it.
At a random moment the server gets SIGKILL, then is restarted on the same
data directory. After the last cycle every queue is drained and checked:

- every confirmed message is delivered, in every queue it was routed to;
- a message delivered again after its first delivery carries `redelivered`
  (delivered-but-unacked ones come back, acked ones may come back once more
  if the kill beat the ack to the disk: at least once, never silently twice);
- every delivered body is whole (its SHA-256 checks) and was published:
  nothing unconfirmed is half-written; unconfirmed messages that survived
  are counted, not required;
- transient things are gone after a kill: a non-durable queue, and
  non-persistent messages in a durable queue;
- a stream bound to the fanout exchange holds every confirmed message routed
  to it, once, at offsets 0, 1, 2, ... that never change: a stream consumer
  reads it from `first` in every cycle and each offset it is given must hold
  the same message as every earlier time.

Bounded: CYCLES kill/restart cycles (LEVERET_CRASH_CYCLES, default 6) within
LEVERET_CRASH_BUDGET seconds (default 20) of cycling, so the default run takes
about 10 s; set them higher for a soak (LEVERET_CRASH_SEED replays a run's
kill moments and message sizes). It prints the counts (pytest -s shows them).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import random
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import pytest

from tests.durability.process import LeveretProcess

CYCLES = int(os.environ.get("LEVERET_CRASH_CYCLES", "6"))
BUDGET = float(os.environ.get("LEVERET_CRASH_BUDGET", "20"))
PUBLISHERS = 4
WINDOW = 25
DIRECT_QUEUE = "crash-a"
FANOUT = "crash-fanout"
FANOUT_QUEUES = ("crash-b", "crash-c")
# Lazy and not consumed until the end: its backlog is paged to disk (issue 19)
# when the kills come, and recovered into a paged queue after each.
PAGED_QUEUE = "crash-paged"
TRANSIENT_QUEUE = "crash-transient-queue"  # non-durable: gone after every kill
TRANSIENT_MESSAGES = "crash-transient-messages"  # durable, but only delivery_mode 1 goes in
STREAM = "crash-stream"  # x-queue-type stream, bound to the fanout exchange


def make_body(message_id: str, rng: random.Random) -> bytes:
    # Mostly small, sometimes large: a large record is the likeliest torn write.
    size = rng.choice((16, 200, 4000, 60_000)) if rng.random() < 0.2 else rng.randrange(8, 300)
    payload = message_id.encode() + b"|" + rng.randbytes(size)
    return payload + b"|" + hashlib.sha256(payload).hexdigest().encode()


def check_body(body: bytes) -> str | None:
    """The message id of a whole body; None if it is damaged."""
    payload, _, digest = body.rpartition(b"|")
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        return None
    return payload.split(b"|", 1)[0].decode()


@dataclass
class Ledger:
    published: dict[str, tuple[str, ...]] = field(default_factory=dict)  # id -> queues it routes to
    confirmed: set[str] = field(default_factory=set)
    # queue -> id -> [redelivered flag of each delivery, in order]
    deliveries: dict[str, dict[str, list[bool]]] = field(default_factory=lambda: defaultdict(dict))
    damaged: int = 0
    unknown: int = 0
    transient_survivors: list[str] = field(default_factory=list)
    kills: int = 0
    # The stream: offset -> message id as first read, and reads that disagreed with it.
    stream_offsets: dict[int, str] = field(default_factory=dict)
    stream_moved: list[str] = field(default_factory=list)

    def read_from_stream(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        message_id = check_body(message.body)
        if message_id is None:
            self.damaged += 1
            return
        offset = int(message.headers["x-stream-offset"])  # type: ignore[call-overload]
        known = self.stream_offsets.setdefault(offset, message_id)
        if known != message_id:
            self.stream_moved.append(f"{offset}: {known} then {message_id}")

    def delivered(self, queue: str, message: aio_pika.abc.AbstractIncomingMessage) -> str | None:
        message_id = check_body(message.body)
        if message_id is None:
            self.damaged += 1
            return None
        if message_id not in self.published:
            self.unknown += 1
        self.deliveries[queue].setdefault(message_id, []).append(bool(message.redelivered))
        return message_id


async def declare(channel: aio_pika.abc.AbstractChannel) -> None:
    await channel.declare_queue(DIRECT_QUEUE, durable=True)
    exchange = await channel.declare_exchange(FANOUT, aio_pika.ExchangeType.FANOUT, durable=True)
    for name in FANOUT_QUEUES:
        queue = await channel.declare_queue(name, durable=True)
        await queue.bind(exchange)
    paged = await channel.declare_queue(PAGED_QUEUE, durable=True, arguments={"x-queue-mode": "lazy"})
    await paged.bind(exchange)
    await channel.declare_queue(TRANSIENT_MESSAGES, durable=True)
    stream = await channel.declare_queue(STREAM, durable=True, arguments={"x-queue-type": "stream"})
    await stream.bind(exchange)


async def check_transients_gone(channel: aio_pika.abc.AbstractChannel, ledger: Ledger) -> None:
    with contextlib.suppress(aio_pika.exceptions.ChannelClosed):
        await channel.declare_queue(TRANSIENT_QUEUE, passive=True)
        ledger.transient_survivors.append(TRANSIENT_QUEUE)
        return
    # passive declare of a missing queue closed the channel: the caller opens another


async def publisher(url: str, number: int, cycle: int, ledger: Ledger, rng: random.Random) -> None:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        fanout = await channel.get_exchange(FANOUT)
        count = 0
        while True:
            batch = []
            for _ in range(WINDOW):
                count += 1
                message_id = f"c{cycle}p{number}n{count}"
                to_fanout = number == 0
                ledger.published[message_id] = (*FANOUT_QUEUES, PAGED_QUEUE, STREAM) if to_fanout else (DIRECT_QUEUE,)
                message = aio_pika.Message(make_body(message_id, rng), delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
                target = fanout.publish(message, routing_key="") if to_fanout else \
                    channel.default_exchange.publish(message, routing_key=DIRECT_QUEUE)
                batch.append((message_id, asyncio.ensure_future(target)))
            # A transient message in a durable queue: must not survive a kill.
            await channel.default_exchange.publish(
                aio_pika.Message(b"transient", delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT),
                routing_key=TRANSIENT_MESSAGES)
            for message_id, future in batch:
                try:
                    await future
                except Exception:
                    return  # the broker is gone: what was not confirmed stays unconfirmed
                ledger.confirmed.add(message_id)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(connection.close(), 1)


async def consumer(url: str, ledger: Ledger, seen: set[tuple[str, str]]) -> None:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=300)
        stopped = asyncio.Event()
        for name in (DIRECT_QUEUE, *FANOUT_QUEUES):
            queue = await channel.get_queue(name)

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage, name: str = name) -> None:
                message_id = ledger.delivered(name, message)
                first = (name, message_id or "") not in seen
                seen.add((name, message_id or ""))
                if first and message_id is not None and hash(message_id) % 3 == 0:
                    return  # left unacked: comes back redelivered after the kill
                try:
                    await message.ack()
                except Exception:
                    stopped.set()

            await queue.consume(on_message)
        # The stream, from its start every cycle: offsets must hold what they held.
        readers = await connection.channel()
        await readers.set_qos(prefetch_count=200)
        stream = await readers.get_queue(STREAM)

        async def on_stream_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            ledger.read_from_stream(message)
            try:
                await message.ack()
            except Exception:
                stopped.set()

        await stream.consume(on_stream_message, arguments={"x-stream-offset": "first"})
        connection.close_callbacks.add(lambda *args: stopped.set())
        await stopped.wait()
    except Exception:
        return
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(connection.close(), 1)


async def crash_cycle(
    server: LeveretProcess, cycle: int, ledger: Ledger, rng: random.Random, seen: set[tuple[str, str]]
) -> None:
    connection = await aio_pika.connect(server.url)
    channel = await connection.channel()
    await check_transients_gone(channel, ledger)
    channel = await connection.channel()
    transient = await channel.declare_queue(TRANSIENT_MESSAGES, durable=True)
    if transient.declaration_result.message_count:
        ledger.transient_survivors.append(f"{transient.declaration_result.message_count} transient messages")
    await transient.purge()
    await declare(channel)
    await channel.declare_queue(TRANSIENT_QUEUE, durable=False)
    tasks = [asyncio.ensure_future(publisher(server.url, n, cycle, ledger, rng)) for n in range(PUBLISHERS)]
    tasks.append(asyncio.ensure_future(consumer(server.url, ledger, seen)))
    await asyncio.sleep(rng.uniform(0.4, 1.4))
    server.kill()
    ledger.kills += 1
    await asyncio.wait(tasks, timeout=10)
    for task in tasks:
        task.cancel()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(connection.close(), 1)


async def drain(server: LeveretProcess, ledger: Ledger) -> dict[str, int]:
    connection = await aio_pika.connect(server.url)
    left: dict[str, int] = {}
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=500)
        for name in (DIRECT_QUEUE, *FANOUT_QUEUES, PAGED_QUEUE):
            queue = await channel.declare_queue(name, durable=True, passive=True)
            expected = queue.declaration_result.message_count or 0
            if not expected:
                continue
            async with queue.iterator() as messages:
                async for message in messages:
                    ledger.delivered(name, message)
                    expected -= 1
                    if not expected or expected % 200 == 0:
                        await message.ack(multiple=True)
                    if not expected:
                        break
            left[name] = (await channel.declare_queue(name, durable=True, passive=True)).declaration_result.message_count
        # The whole stream, from offset 0 to its last.
        stream = await channel.declare_queue(STREAM, durable=True, passive=True)
        length = stream.declaration_result.message_count or 0
        left[STREAM] = length
        if length:
            async with stream.iterator(arguments={"x-stream-offset": "first"}) as messages:
                async for message in messages:
                    ledger.read_from_stream(message)
                    offset = int(message.headers["x-stream-offset"])  # type: ignore[call-overload]
                    ledger.deliveries[STREAM].setdefault(check_body(message.body) or "", []).append(False)
                    await message.ack()
                    if offset == length - 1:
                        break
    finally:
        await connection.close()
    return left


@pytest.fixture
def quiet_clients() -> Iterator[None]:
    """Killing the server makes aio-pika and asyncio log long chains of connection
    errors; formatting them is slow, says nothing, and on Python 3.11 can trip
    CPython's gh-106905 (a later ast.parse fails: "AST constructor recursion
    depth mismatch"), breaking pytest's assertion rewriting after this test."""
    loggers = [logging.getLogger(name) for name in ("aiormq", "aio_pika", "asyncio")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def test_confirmed_messages_survive_kill_9(tmp_path: Path, quiet_clients: None) -> None:
    seed = int(os.environ.get("LEVERET_CRASH_SEED", str(time.time_ns() % 1_000_000_007)))
    rng = random.Random(seed)
    data_dir, log = tmp_path / "data", tmp_path / "server.log"
    ledger = Ledger()
    started = time.monotonic()

    async def run() -> dict[str, int]:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: None)
        seen: set[tuple[str, str]] = set()  # (queue, id) the consumer has had
        cycle = 0
        while cycle < CYCLES and time.monotonic() - started < BUDGET:
            cycle += 1
            server = LeveretProcess(data_dir, log)
            try:
                await crash_cycle(server, cycle, ledger, rng, seen)
            finally:
                if server.process.poll() is None:
                    server.kill()
        server = LeveretProcess(data_dir, log)
        try:
            return await drain(server, ledger)
        finally:
            server.stop()

    left = asyncio.run(run())

    missing: dict[str, list[str]] = {}
    duplicates: list[str] = []
    stream_length = left.pop(STREAM)
    for message_id in ledger.confirmed:
        for queue in ledger.published[message_id]:
            if message_id not in ledger.deliveries[queue]:
                missing.setdefault(queue, []).append(message_id)
    for queue, seen in ledger.deliveries.items():
        for message_id, flags in seen.items():
            if not all(flags[1:]):
                duplicates.append(f"{queue}:{message_id}:{flags}")
    delivered = {m for seen in ledger.deliveries.values() for m in seen}
    unconfirmed = set(ledger.published) - ledger.confirmed
    redelivered = sum(len(flags) - 1 for seen in ledger.deliveries.values() for flags in seen.values())
    print(
        f"\ncrash test (LEVERET_CRASH_SEED={seed}): {ledger.kills} kill -9 cycles in "
        f"{time.monotonic() - started:.1f} s; "
        f"{len(ledger.published)} persistent messages published, {len(ledger.confirmed)} confirmed, "
        f"{len(unconfirmed)} unconfirmed of which {len(unconfirmed & delivered)} survived; "
        f"{sum(len(s) for s in ledger.deliveries.values())} queue entries delivered, "
        f"{redelivered} of them again with redelivered set; "
        f"missing {sum(map(len, missing.values()))}, duplicates without redelivered {len(duplicates)}, "
        f"damaged {ledger.damaged}, unknown {ledger.unknown}, transient survivors {ledger.transient_survivors}; "
        f"stream: {stream_length} offsets, {len(ledger.stream_moved)} moved"
    )
    assert ledger.kills >= 2, "too few cycles to mean anything"
    assert len(ledger.confirmed) > 100
    assert missing == {}
    assert duplicates == []
    assert ledger.damaged == 0
    assert ledger.unknown == 0
    assert ledger.transient_survivors == []
    assert left == {DIRECT_QUEUE: 0, FANOUT_QUEUES[0]: 0, FANOUT_QUEUES[1]: 0, PAGED_QUEUE: 0}
    assert len(ledger.deliveries[PAGED_QUEUE]) > 256, "the paged queue never paged"
    # The stream: every offset read, each once in the final read, none moved.
    assert ledger.stream_moved == []
    assert sorted(ledger.stream_offsets) == list(range(stream_length))
    assert len(set(ledger.stream_offsets.values())) == stream_length  # no message twice
    assert "Traceback" not in log.read_text()

