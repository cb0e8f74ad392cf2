"""leveret: a RabbitMQ-compatible AMQP 0-9-1 broker in Python.

    from leveret import Broker, serve

    async with serve() as server:          # 127.0.0.1, a free port
        connection = await aio_pika.connect(server.url)

Names are imported on first use, so `import leveret` (the CLI, the pytest
plugin) stays cheap and does not pull in the broker until it is needed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from leveret.broker.broker import Broker, BrokerSettings
    from leveret.matching import explain_headers, explain_topic, headers_match, topic_matches
    from leveret.server.shell import Server, ServerThread

from leveret.version import __version__

__all__ = ["Broker", "BrokerSettings", "Server", "ServerThread", "__version__", "explain_headers",
           "explain_topic", "headers_match", "serve", "topic_matches"]

_LAZY = {
    "Broker": "leveret.broker.broker",
    "BrokerSettings": "leveret.broker.broker",
    "Server": "leveret.server.shell",
    "ServerThread": "leveret.server.shell",
    "topic_matches": "leveret.matching",
    "explain_topic": "leveret.matching",
    "headers_match": "leveret.matching",
    "explain_headers": "leveret.matching",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'leveret' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


@asynccontextmanager
async def serve(
    host: str = "127.0.0.1", port: int = 0, *, broker: Broker | None = None
) -> AsyncIterator[Server]:
    """Run a broker on the current event loop for the duration of the block.

    Yields the running `Server`: `.url` ("amqp://guest:guest@127.0.0.1:PORT/"),
    `.host`, `.port`, `.broker`. On exit clients get connection.close 320
    (CONNECTION_FORCED), as from a RabbitMQ node shutting down.
    """
    from leveret.server.shell import Server

    server = Server(broker)
    await server.start(host, port)
    try:
        yield server
    finally:
        await server.stop()
