"""Streams: an event log that consumers read at their own pace, and replay.

A stream (`x-queue-type: stream`) keeps every message after it is read. Each
consumer says where to start with the consumer argument `x-stream-offset`:
`first`, `last`, `next` (the default), an offset, a point in time (an AMQP
timestamp) or an interval such as `"10m"`. Every delivery carries its offset in
the `x-stream-offset` header. Here an order service appends events in two
rounds; an *audit* consumer reads the whole log from `first`, and a *replay*
consumer starts from the moment the second round began. Consumers must set a
prefetch (basic.qos) and ack: an ack only gives credit back, it removes nothing.

    python samples/stream_replay.py [AMQP_URL]
"""

from __future__ import annotations

import asyncio
import datetime
import os
import sys
import time

import aio_pika

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
STREAM = "sample.stream.orders"
ROUND_1 = ["created order-1", "created order-2", "paid order-1", "created order-3"]
ROUND_2 = ["paid order-3", "shipped order-1", "cancelled order-2", "shipped order-3"]


def broker_url() -> str:
    return sys.argv[1] if len(sys.argv) > 1 else os.environ.get("AMQP_URL", DEFAULT_URL)


async def read(channel: aio_pika.abc.AbstractChannel, offset: object, count: int) -> list[tuple[int, str]]:
    """Consume from `offset` until `count` events arrived: (offset, event) pairs."""
    queue = await channel.get_queue(STREAM, ensure=False)
    seen: list[tuple[int, str]] = []
    done = asyncio.Event()

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        seen.append((int(message.headers["x-stream-offset"]), message.body.decode()))  # type: ignore[call-overload]
        await message.ack()  # credit back; the event stays in the stream
        if len(seen) >= count:
            done.set()

    tag = await queue.consume(on_message, arguments={"x-stream-offset": offset})
    await asyncio.wait_for(done.wait(), 10)
    await queue.cancel(tag)
    return seen


async def main() -> int:
    connection = await aio_pika.connect(broker_url(), timeout=5)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.queue_delete(STREAM)  # a fresh log for this run
        await channel.declare_queue(STREAM, durable=True, arguments={"x-queue-type": "stream", "x-max-age": "1D"})
        exchange = channel.default_exchange
        for event in ROUND_1:
            await exchange.publish(aio_pika.Message(event.encode()), routing_key=STREAM)
        # AMQP timestamps count whole seconds: start round two on a fresh second.
        await asyncio.sleep(1.05 - time.time() % 1)
        since = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        for event in ROUND_2:
            await exchange.publish(aio_pika.Message(event.encode()), routing_key=STREAM)
        print(f"appended {len(ROUND_1) + len(ROUND_2)} events to {STREAM}")

        readers = await connection.channel()
        await readers.set_qos(prefetch_count=3)  # streams require a prefetch
        audit = await read(readers, "first", len(ROUND_1) + len(ROUND_2))
        print("audit (from first):   " + ", ".join(f"{offset}:{event}" for offset, event in audit))
        replay = await read(readers, since, len(ROUND_2))
        print(f"replay (from {since:%H:%M:%S}): " + ", ".join(f"{offset}:{event}" for offset, event in replay))
        again = await read(readers, 6, 2)
        print("from offset 6:        " + ", ".join(f"{offset}:{event}" for offset, event in again))

        ok = (
            [event for _, event in audit] == ROUND_1 + ROUND_2
            and [offset for offset, _ in audit] == list(range(8))
            and [event for _, event in replay] == ROUND_2
            and again == audit[6:]
        )
        await channel.queue_delete(STREAM)
    print("replayed as expected" if ok else "UNEXPECTED replay")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
