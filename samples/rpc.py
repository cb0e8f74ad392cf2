"""RPC over AMQP: a server answers requests on a queue; two ways to get the reply.

1. A reply queue: the client declares an exclusive, server-named queue and
   puts its name in `reply_to`; `correlation_id` pairs replies with calls.
2. Direct reply-to: the client consumes the pseudo-queue
   `amq.rabbitmq.reply-to` (no-ack) and publishes with
   `reply_to="amq.rabbitmq.reply-to"` on the same channel; the broker hands the
   server a routable name and sends the reply straight back. No queue at all.

    python samples/rpc.py [AMQP_URL]
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid

import aio_pika

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
REQUESTS = "sample.rpc.requests"
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"


def broker_url() -> str:
    return sys.argv[1] if len(sys.argv) > 1 else os.environ.get("AMQP_URL", DEFAULT_URL)


def fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def show(numbers: list[int], results: list[int]) -> str:
    return ", ".join(f"fib({n})={r}" for n, r in zip(numbers, results, strict=True))


async def serve(connection: aio_pika.abc.AbstractConnection) -> None:
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=10)
    queue = await channel.declare_queue(REQUESTS, exclusive=True)

    async def on_request(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            if message.reply_to is None:
                return  # nobody to answer
            n = int(message.body)
            await channel.default_exchange.publish(
                aio_pika.Message(str(fib(n)).encode(), correlation_id=message.correlation_id),
                routing_key=message.reply_to,
            )

    await queue.consume(on_request)


class Client:
    """Calls fib(n) remotely; replies arrive on `reply_queue`, matched by correlation_id."""

    def __init__(self, channel: aio_pika.abc.AbstractChannel, reply_queue: aio_pika.abc.AbstractQueue,
                 reply_to: str) -> None:
        self.channel = channel
        self.reply_queue = reply_queue
        self.reply_to = reply_to
        self.pending: dict[str, asyncio.Future[int]] = {}

    async def start(self) -> Client:
        await self.reply_queue.consume(self.on_reply, no_ack=True)
        return self

    async def on_reply(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        future = self.pending.pop(message.correlation_id or "", None)
        if future is not None:
            future.set_result(int(message.body))

    async def call(self, n: int) -> int:
        correlation_id = str(uuid.uuid4())
        future = asyncio.get_running_loop().create_future()
        self.pending[correlation_id] = future
        await self.channel.default_exchange.publish(
            aio_pika.Message(str(n).encode(), correlation_id=correlation_id, reply_to=self.reply_to),
            routing_key=REQUESTS,
        )
        return await asyncio.wait_for(future, timeout=5)


async def main() -> int:
    connection = await aio_pika.connect(broker_url(), timeout=5)
    async with connection:
        await serve(connection)
        numbers = [10, 20, 30, 40]
        ok = True

        channel = await connection.channel()
        callback_queue = await channel.declare_queue("", exclusive=True)
        client = await Client(channel, callback_queue, callback_queue.name).start()
        results = await asyncio.gather(*(client.call(n) for n in numbers))
        print(f"reply queue {callback_queue.name}: {show(numbers, results)}")
        ok = ok and results == [fib(n) for n in numbers]

        channel = await connection.channel()
        pseudo_queue = await channel.get_queue(DIRECT_REPLY_TO, ensure=False)  # never declared
        client = await Client(channel, pseudo_queue, DIRECT_REPLY_TO).start()
        results = await asyncio.gather(*(client.call(n) for n in numbers))
        print(f"direct reply-to: {show(numbers, results)}")
        ok = ok and results == [fib(n) for n in numbers]

    if not ok:
        print("wrong answers", file=sys.stderr)
        return 1
    print(f"{2 * len(numbers)} calls answered")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
