"""Publisher confirms: know that the broker took responsibility for each message.

On a confirm channel every publish is answered: basic.ack once the message is
routed (and enqueued), basic.nack when a queue refused it (here: a bounded
queue with x-overflow=reject-publish), and with `mandatory` an unroutable
message comes back as basic.return (312 NO_ROUTE) before its ack.

    python samples/publisher_confirms.py [AMQP_URL]
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import aio_pika
from aio_pika.exceptions import DeliveryError, PublishError
from pamqp.commands import Basic

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
QUEUE = "sample.confirms.orders"
BOUNDED = "sample.confirms.bounded"
BOUND = 3


def broker_url() -> str:
    return sys.argv[1] if len(sys.argv) > 1 else os.environ.get("AMQP_URL", DEFAULT_URL)


async def main() -> int:
    connection = await aio_pika.connect(broker_url(), timeout=5)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = channel.default_exchange
        queue = await channel.declare_queue(QUEUE, durable=True)
        await queue.purge()

        # 1. One at a time: simple, one round trip per message.
        started = time.perf_counter()
        for i in range(50):
            await exchange.publish(aio_pika.Message(f"order {i}".encode()), routing_key=QUEUE)
        print(f"50 messages confirmed one by one in {time.perf_counter() - started:.2f}s")

        # 2. In flight together: confirms arrive as the broker gets through them.
        started = time.perf_counter()
        confirmations = await asyncio.gather(
            *(exchange.publish(aio_pika.Message(f"bulk {i}".encode()), routing_key=QUEUE) for i in range(500))
        )
        print(f"{len(confirmations)} messages confirmed in flight in {time.perf_counter() - started:.2f}s")
        stored = (await channel.declare_queue(QUEUE, passive=True)).declaration_result.message_count

        # 3. A full queue that rejects publishes: the broker nacks.
        bounded = await channel.declare_queue(
            BOUNDED, exclusive=True, arguments={"x-max-length": BOUND, "x-overflow": "reject-publish"}
        )
        acked = nacked = 0
        for i in range(BOUND + 2):
            try:
                await exchange.publish(aio_pika.Message(f"limited {i}".encode()), routing_key=BOUNDED)
                acked += 1
            except DeliveryError:
                nacked += 1
        print(f"bounded queue (x-max-length={BOUND}, reject-publish): {acked} acked, {nacked} nacked")

        # 4. Mandatory and unroutable: returned, then acked.
        returned: Basic.Return | None = None
        try:
            await exchange.publish(aio_pika.Message(b"lost?"), routing_key="sample.no-such-queue", mandatory=True)
        except PublishError as error:
            if isinstance(error.frame, Basic.Return):
                returned = error.frame
        if returned is not None:
            print(f"mandatory unroutable message returned: {returned.reply_code} {returned.reply_text}")

        await queue.delete(if_unused=False, if_empty=False)
        await bounded.delete(if_unused=False, if_empty=False)

    ok = stored == 550 and (acked, nacked) == (BOUND, 2) and returned is not None and returned.reply_code == 312
    if not ok:
        print(f"unexpected: stored={stored} acked={acked} nacked={nacked} returned={returned}", file=sys.stderr)
        return 1
    print("all confirms as expected")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
