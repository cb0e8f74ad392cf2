"""Retry with dead-letter back-off, then a parking queue.

    work queue --reject--> DLX --> wait queue (x-message-ttl) --expired--> DLX --> work queue

A consumer that fails a message rejects it without requeue; the work queue
dead-letters it into a wait queue, whose TTL is the back-off; on expiry the wait
queue dead-letters it back to the work exchange with its routing key. The
broker keeps count in the `x-death` header, so the consumer knows the attempt
number without any state of its own. After the third failed attempt the
message is parked (republished, with its headers, to a parking queue) for a human.

    python samples/retry_dlx.py [AMQP_URL]
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

import aio_pika

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
WORK = "sample.retry.work"  # exchange and queue
WAIT = "sample.retry.wait"  # exchange and queue
PARKING = "sample.retry.parking"
ROUTING_KEY = "orders"
BACK_OFF_MS = 200
MAX_ATTEMPTS = 3
# How many attempts each order needs to succeed; None: it never does.
ORDERS: dict[str, int | None] = {"order-ok": 1, "order-flaky": 2, "order-bad": None}


def broker_url() -> str:
    return sys.argv[1] if len(sys.argv) > 1 else os.environ.get("AMQP_URL", DEFAULT_URL)


def x_death(headers: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The broker's dead-letter history of a message: one entry per (queue, reason), newest first."""
    deaths = headers.get("x-death")
    return [death for death in deaths if isinstance(death, dict)] if isinstance(deaths, list) else []


def attempt_number(headers: Mapping[str, Any]) -> int:
    """1 + the times our work queue rejected this message, as the broker counted."""
    for death in x_death(headers):
        if death.get("queue") == WORK and death.get("reason") == "rejected":
            return 1 + int(death["count"])
    return 1


async def declare(channel: aio_pika.abc.AbstractChannel) -> dict[str, aio_pika.abc.AbstractQueue]:
    work_exchange = await channel.declare_exchange(WORK, aio_pika.ExchangeType.DIRECT)
    wait_exchange = await channel.declare_exchange(WAIT, aio_pika.ExchangeType.FANOUT)
    work = await channel.declare_queue(WORK, arguments={"x-dead-letter-exchange": WAIT})
    wait = await channel.declare_queue(
        WAIT, arguments={"x-message-ttl": BACK_OFF_MS, "x-dead-letter-exchange": WORK}
    )
    parking = await channel.declare_queue(PARKING)
    await work.bind(work_exchange, ROUTING_KEY)
    await wait.bind(wait_exchange)
    for queue in (work, wait, parking):
        await queue.purge()
    return {"work": work, "wait": wait, "parking": parking}


async def main() -> int:
    connection = await aio_pika.connect(broker_url(), timeout=5)
    async with connection:
        channel = await connection.channel()
        queues = await declare(channel)
        started = time.monotonic()
        outcome: dict[str, str] = {}
        finished = asyncio.Event()

        async def handle(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            order = message.body.decode()
            attempt = attempt_number(message.headers)
            needed = ORDERS[order]
            at = f"{time.monotonic() - started:5.2f}s {order:<11} attempt {attempt}:"
            if needed is not None and attempt >= needed:
                print(f"{at} ok")
                outcome[order] = f"ok after {attempt}"
                await message.ack()
            elif attempt < MAX_ATTEMPTS:
                print(f"{at} failed, retry in {BACK_OFF_MS} ms")
                await message.reject(requeue=False)  # -> DLX -> wait queue
            else:
                print(f"{at} failed, parked in {PARKING}")
                await channel.default_exchange.publish(
                    aio_pika.Message(message.body, headers=dict(message.headers)), routing_key=PARKING
                )
                await message.ack()  # only once the parked copy is confirmed
                outcome[order] = "parked"
            if len(outcome) == len(ORDERS):
                finished.set()

        consumer_tag = await queues["work"].consume(handle)
        work_exchange = await channel.get_exchange(WORK)
        for order in ORDERS:
            await work_exchange.publish(aio_pika.Message(order.encode()), routing_key=ROUTING_KEY)
        await asyncio.wait_for(finished.wait(), timeout=10)

        await queues["work"].cancel(consumer_tag)

        parked = await queues["parking"].get(timeout=5)
        await parked.ack()
        print(f"parked {parked.body.decode()}, x-death:")
        counts = {}
        for death in x_death(parked.headers):
            keys = ",".join(str(key) for key in death.get("routing-keys") or [])
            print(f"  queue={death['queue']} reason={death['reason']} count={death['count']} "
                  f"exchange={death['exchange']} routing-keys={keys}")
            counts[(death["queue"], death["reason"])] = death["count"]

        for queue in queues.values():
            await queue.delete(if_unused=False, if_empty=False)
        for exchange in (WORK, WAIT):
            await channel.exchange_delete(exchange)

    expected_outcome = {"order-ok": "ok after 1", "order-flaky": "ok after 2", "order-bad": "parked"}
    expected_counts = {(WORK, "rejected"): MAX_ATTEMPTS - 1, (WAIT, "expired"): MAX_ATTEMPTS - 1}
    if outcome != expected_outcome or counts != expected_counts:
        print(f"unexpected: {outcome} {counts}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
