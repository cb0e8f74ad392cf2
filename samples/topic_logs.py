"""Topic routing: log lines routed by "<facility>.<severity>" patterns.

`*` matches exactly one word, `#` zero or more. A message goes to every queue
with a matching binding, once, however many of its bindings match. Before
publishing, leveret.matching (the broker's own matcher, no broker needed) says
where each key should go, and why 'app.db.critical' reaches no "*.critical".

    python samples/topic_logs.py [AMQP_URL]
"""

from __future__ import annotations

import asyncio
import os
import sys

import aio_pika

from leveret.matching import explain_topic, topic_matches

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
EXCHANGE = "sample.topic.logs"
BINDINGS = {
    "kernel": ["kern.*"],
    "critical": ["*.critical"],
    "kernel+critical": ["kern.*", "*.critical"],
    "everything": ["#"],
}
LOGS = ["kern.info", "kern.critical", "app.critical", "app.info", "app.db.critical"]
EXPECTED = {
    "kernel": ["kern.info", "kern.critical"],
    "critical": ["kern.critical", "app.critical"],
    "kernel+critical": ["kern.info", "kern.critical", "app.critical"],
    "everything": LOGS,
}


def broker_url() -> str:
    return sys.argv[1] if len(sys.argv) > 1 else os.environ.get("AMQP_URL", DEFAULT_URL)


async def drain(queue: aio_pika.abc.AbstractQueue) -> list[str]:
    keys = []
    while (message := await queue.get(fail=False, no_ack=True)) is not None:
        keys.append(message.routing_key or "")
    return keys


def predicted() -> dict[str, list[str]]:
    """What each queue should get, by topic semantics alone."""
    return {name: [key for key in LOGS if any(topic_matches(p, key) for p in patterns)]
            for name, patterns in BINDINGS.items()}


async def main() -> int:
    if predicted() != EXPECTED:
        print("leveret.matching disagrees with EXPECTED", file=sys.stderr)
        return 1
    print(f"leveret.matching predicts every queue; a miss: {explain_topic('*.critical', 'app.db.critical').reason}")
    connection = await aio_pika.connect(broker_url(), timeout=5)
    async with connection:
        channel = await connection.channel()  # publisher confirms: publish returns once routed
        logs = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, auto_delete=True)
        queues = {}
        for name, patterns in BINDINGS.items():
            queue = await channel.declare_queue("", exclusive=True)
            for pattern in patterns:
                await queue.bind(logs, routing_key=pattern)
            queues[name] = queue

        for key in LOGS:
            await logs.publish(aio_pika.Message(f"log line from {key}".encode()), routing_key=key)

        ok = True
        for name, queue in queues.items():
            got = await drain(queue)
            print(f"{name:>15} {' '.join(BINDINGS[name]):<22} got: {', '.join(got)}")
            ok = ok and got == EXPECTED[name]
        await logs.delete()

    if not ok:
        print("routing differs from what topic semantics say", file=sys.stderr)
        return 1
    print("topic routing as expected")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
