"""Observability and management: RabbitMQ's HTTP API, Prometheus metrics, structured logs.

    server = Server(broker)                      # leveret.server.shell
    await server.start("127.0.0.1", 5672)
    management = ManagementServer(server)
    await management.start("127.0.0.1", 15672)  # /api/..., /metrics

`ManagementServer` runs on the AMQP server's event loop (start it from a
coroutine on that loop). `attach(server_thread)` does the same for a
`ServerThread` from another thread (the pytest plugin's `leveret_management`).

Modules: `http` (the HTTP server, on aiohttp), `api` (dispatch of /api to
the route rows of `resources/*`, see `routes`), `metrics` (prometheus-client,
imported on the first scrape), `static` (files of the static/ folder, under
/), `core` (totals, rates, dead-letter storm watch), `auth` (who asks),
`logs` (one line per event), `ctl` (`leveret ctl`), `service` (the server tying them together).

The package itself imports nothing heavy: `leveret serve` can log and listen
for AMQP before aiohttp loads. `ManagementServer`, `attach` and `detach` live
in `service` and are imported from here on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Management", "ManagementServer", "attach", "detach"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from leveret.management import service

        return getattr(service, name)
    raise AttributeError(f"module 'leveret.management' has no attribute {name!r}")
