"""Work queue: one producer, two competing workers, fair dispatch with prefetch 1.

Each task is a persistent message on a durable queue. A worker takes one task
at a time (prefetch_count=1), works (a short sleep per '.' in the body) and
acks only when done, so a slow task never holds back the other worker.

    python samples/work_queue.py [AMQP_URL]
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter

import aio_pika

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
QUEUE = "sample.work_queue.tasks"
TASKS = ["light", "heavy.....", "light.", "heavy....", "light", "light..", "heavy.....", "light", "light.", "light"]


def broker_url() -> str:
    return sys.argv[1] if len(sys.argv) > 1 else os.environ.get("AMQP_URL", DEFAULT_URL)


async def worker(
    name: str, connection: aio_pika.abc.AbstractConnection, done: asyncio.Queue[tuple[str, str]]
) -> aio_pika.abc.AbstractChannel:
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=1)
    queue = await channel.declare_queue(QUEUE, durable=True)

    async def handle(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():  # ack after the work, reject if it raises
            body = message.body.decode()
            await asyncio.sleep(0.02 * body.count("."))
            await done.put((name, body))

    await queue.consume(handle)
    return channel


async def main() -> int:
    connection = await aio_pika.connect(broker_url(), timeout=5)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(QUEUE, durable=True)
        await queue.purge()
        done: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        workers = [await worker(name, connection, done) for name in ("worker-1", "worker-2")]

        for task in TASKS:
            await channel.default_exchange.publish(
                aio_pika.Message(task.encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=QUEUE
            )
        print(f"sent {len(TASKS)} tasks to {QUEUE}")

        by_worker: Counter[str] = Counter()
        for _ in TASKS:
            name, body = await asyncio.wait_for(done.get(), timeout=10)
            by_worker[name] += 1
            print(f"{name} done: {body}")
        for worker_channel in workers:
            await worker_channel.close()
        await queue.delete()

    print(f"{len(TASKS)} tasks done, " + ", ".join(f"{name}: {n}" for name, n in sorted(by_worker.items())))
    if len(by_worker) != 2:
        print("expected both workers to get work", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
