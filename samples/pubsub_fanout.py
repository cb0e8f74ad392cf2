"""Publish/subscribe: a fanout exchange copies every message to every subscriber.

Each subscriber declares its own exclusive, server-named queue (it goes away
with the connection) and binds it to the exchange; the routing key is ignored.

    python samples/pubsub_fanout.py [AMQP_URL]
"""

from __future__ import annotations

import asyncio
import os
import sys

import aio_pika

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
EXCHANGE = "sample.pubsub.news"
SUBSCRIBERS = ("mobile", "email", "audit")
NEWS = ["rates up", "markets calm", "rates down"]


def broker_url() -> str:
    return sys.argv[1] if len(sys.argv) > 1 else os.environ.get("AMQP_URL", DEFAULT_URL)


async def main() -> int:
    connection = await aio_pika.connect(broker_url(), timeout=5)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.FANOUT, auto_delete=True)
        inboxes: dict[str, aio_pika.abc.AbstractQueue] = {}
        for name in SUBSCRIBERS:
            queue = await channel.declare_queue("", exclusive=True)  # the server names it
            await queue.bind(exchange)
            inboxes[name] = queue

        for item in NEWS:
            await exchange.publish(aio_pika.Message(item.encode()), routing_key="ignored by fanout")
        print(f"published {len(NEWS)} messages to fanout exchange {EXCHANGE}")

        ok = True
        for name, queue in inboxes.items():
            got = []
            for _ in NEWS:
                message = await queue.get(timeout=5)
                await message.ack()
                got.append(message.body.decode())
            print(f"{name:>6} ({queue.name}) got: {', '.join(got)}")
            ok = ok and got == NEWS
        await exchange.delete()

    if not ok:
        print("a subscriber missed a message", file=sys.stderr)
        return 1
    print(f"every subscriber got all {len(NEWS)} messages")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
