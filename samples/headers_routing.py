"""Headers routing: match on message headers instead of the routing key.

A binding's `x-match` says how: `all` (every listed header equal), `any` (at
least one). A binding value that is void matches when the header is present.

    python samples/headers_routing.py [AMQP_URL]
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import aio_pika

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
EXCHANGE = "sample.headers.documents"
BINDINGS: dict[str, dict[str, Any]] = {
    "pdf-reports": {"x-match": "all", "format": "pdf", "type": "report"},
    "pdf-or-report": {"x-match": "any", "format": "pdf", "type": "report"},
    "urgent": {"x-match": "all", "urgent": None},  # void value: header present, any value
}
DOCUMENTS: list[tuple[str, dict[str, Any]]] = [
    ("q1.pdf", {"format": "pdf", "type": "report"}),
    ("notes.pdf", {"format": "pdf", "type": "notes"}),
    ("q2.zip", {"format": "zip", "type": "report", "urgent": True}),
    ("song.mp3", {"format": "mp3"}),
]
EXPECTED = {
    "pdf-reports": ["q1.pdf"],
    "pdf-or-report": ["q1.pdf", "notes.pdf", "q2.zip"],
    "urgent": ["q2.zip"],
}


def broker_url() -> str:
    return sys.argv[1] if len(sys.argv) > 1 else os.environ.get("AMQP_URL", DEFAULT_URL)


async def main() -> int:
    connection = await aio_pika.connect(broker_url(), timeout=5)
    async with connection:
        channel = await connection.channel()
        documents = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.HEADERS, auto_delete=True)
        queues = {}
        for name, arguments in BINDINGS.items():
            queue = await channel.declare_queue("", exclusive=True)
            await queue.bind(documents, arguments=arguments)
            queues[name] = queue

        for filename, headers in DOCUMENTS:
            await documents.publish(aio_pika.Message(filename.encode(), headers=headers), routing_key="")

        ok = True
        for name, queue in queues.items():
            got = []
            while (message := await queue.get(fail=False, no_ack=True)) is not None:
                got.append(message.body.decode())
            shown = ", ".join(f"{k}={v}" for k, v in BINDINGS[name].items())
            print(f"{name:>13} [{shown}] got: {', '.join(got) or '-'}")
            ok = ok and got == EXPECTED[name]
        await documents.delete()

    if not ok:
        print("routing differs from what headers semantics say", file=sys.stderr)
        return 1
    print("headers routing as expected")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
