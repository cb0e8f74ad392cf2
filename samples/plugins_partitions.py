"""Ordered partitions without duplicates: a deduplicating exchange in front of a
consistent-hash exchange.

    publisher --> ingest (x-message-deduplication) --> orders (x-consistent-hash) --> partition.0
                                                                                  --> partition.1
                                                                                  --> partition.2

The code users of two plugins write, unchanged: rabbitmq-message-deduplication
(`x-message-deduplication` exchange, `x-cache-size`, `x-cache-ttl`; each message
names itself in the `x-deduplication-header` header) and
rabbitmq_consistent_hash_exchange (`x-consistent-hash`, binding key = weight).

The publisher sends five events per customer and, as a publisher does when a
confirm is lost, sends some of them again. The deduplicating exchange routes a
repeated event id nowhere (with mandatory, the broker returns it: 312
NO_ROUTE); the consistent-hash exchange sends every event of a customer to the
same partition, so one consumer per partition sees each customer's events once
and in order - Kafka's partitions, in AMQP.

    python samples/plugins_partitions.py [AMQP_URL]
"""

from __future__ import annotations

import asyncio
import os
import sys

import aio_pika
import aiormq

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
INGEST = "sample.plugins.ingest"
ORDERS = "sample.plugins.orders"
PARTITIONS = [f"sample.plugins.partition.{number}" for number in range(3)]
CUSTOMERS = [f"customer-{letter}" for letter in "abcdef"]
EVENTS = ("created", "paid", "packed", "shipped", "delivered")


def broker_url() -> str:
    return sys.argv[1] if len(sys.argv) > 1 else os.environ.get("AMQP_URL", DEFAULT_URL)


async def main() -> int:
    connection = await aio_pika.connect(broker_url(), timeout=5)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        ingest = await channel.declare_exchange(
            INGEST, "x-message-deduplication", arguments={"x-cache-size": 10_000, "x-cache-ttl": 60_000})
        orders = await channel.declare_exchange(ORDERS, "x-consistent-hash")
        await orders.bind(ingest)
        partitions = []
        for name in PARTITIONS:
            queue = await channel.declare_queue(name)
            await queue.purge()
            await queue.bind(orders, "1")  # equal weights
            partitions.append(queue)

        sent = duplicates = 0
        for step, event in enumerate(EVENTS):
            for number, customer in enumerate(CUSTOMERS):
                event_id = f"{customer}/{step}"
                copies = 2 if (step + number) % 3 == 0 else 1  # a lost confirm: sent again
                for _ in range(copies):
                    message = aio_pika.Message(f"{event_id} {event}".encode(),
                                               headers={"x-deduplication-header": event_id})
                    result = await ingest.publish(message, routing_key=customer)
                    sent += 1
                    if not isinstance(result, aiormq.spec.Basic.Ack):
                        duplicates += 1  # came back as basic.return: a duplicate
        print(f"{sent} publishes, {duplicates} of them repeats, returned as duplicates (312 NO_ROUTE)")

        seen: dict[str, list[int]] = {}
        where: dict[str, set[str]] = {}
        for queue in partitions:
            customers: list[str] = []
            while (message := await queue.get(no_ack=True, fail=False)) is not None:
                event_id = message.body.decode().split()[0]
                customer, step = event_id.split("/")
                seen.setdefault(customer, []).append(int(step))
                where.setdefault(customer, set()).add(queue.name)
                if customer not in customers:
                    customers.append(customer)
            print(f"{queue.name}: {', '.join(customers) or '(none)'}")

        once_each = all(steps == list(range(len(EVENTS))) for steps in seen.values())
        one_partition = all(len(names) == 1 for names in where.values())
        ok = sorted(seen) == CUSTOMERS and once_each and one_partition and duplicates == sent - 30
        if ok:
            print("every event delivered once, each customer on one partition, in order")
        else:
            print(f"unexpected: {seen} {where}")

        for queue in partitions:
            await queue.delete(if_unused=False, if_empty=False)
        await channel.exchange_delete(ORDERS)
        await channel.exchange_delete(INGEST)
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
