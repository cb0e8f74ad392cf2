"""pytest plugin: a running leveret broker for your tests.

Installed with leveret (entry point `pytest11: leveret`), it provides:

- `leveret_broker`: a `ServerThread` listening on 127.0.0.1 (a free port),
  fresh for each test. `.url`, `.host`, `.port`; `.call(fn)` runs `fn(broker)`
  on the server's thread and returns its result, the safe way to look inside.
- `leveret_url`: just its URL, "amqp://guest:guest@127.0.0.1:PORT/".
- `assert_topic_routes(bindings, key, queues)`: a plain function (import it)
  asserting which queues a topic exchange's bindings route a key to, the
  playground's explanation as the failure message (leveret.matching has the rest).
- `leveret_management`: the broker with its management HTTP API and /metrics
  on a free port (off in the fixtures above): `.url` is "http://127.0.0.1:PORT",
  `.broker_thread` the `ServerThread`, `.management` the rates and totals
  (`.management.sample()` takes a sample now).

The server always runs on its own event loop in a background thread, so the
same fixtures serve synchronous tests (pika, kombu) and async ones
(pytest-asyncio, aio-pika) without sharing a loop with the test.

An `async def` test that asks for one of these fixtures runs under
pytest-asyncio (install it) without `asyncio_mode = "auto"`: the plugin marks
it `@pytest.mark.asyncio` itself, as strict mode wants. Other async tests are
left to your configuration.

    def test_roundtrip(leveret_url):
        connection = pika.BlockingConnection(pika.URLParameters(leveret_url))

    async def test_roundtrip_async(leveret_url):
        connection = await aio_pika.connect(leveret_url)
"""

from __future__ import annotations

import inspect
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from leveret.management import ManagementServer
    from leveret.server.shell import ServerThread


_FIXTURES = frozenset({"leveret_broker", "leveret_url", "leveret_management"})


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_pycollect_makeitem(collector: Any, name: str, obj: object) -> Generator[None, Any, None]:
    # Before the item is made (and pytest-asyncio looks at it): an async test using
    # our fixtures gets the asyncio mark, so strict mode (the default) runs it.
    if (inspect.iscoroutinefunction(obj) and collector.config.pluginmanager.hasplugin("asyncio")
            and not any(mark.name == "asyncio" for mark in getattr(obj, "pytestmark", ()))
            and _FIXTURES & set(inspect.signature(obj).parameters)):
        pytest.mark.asyncio(obj)
    yield


@pytest.fixture
def leveret_broker() -> Iterator[ServerThread]:
    # Imported here: pytest loads this plugin in every session of every project
    # that has leveret installed, and most of them never ask for a broker.
    from leveret.server.shell import ServerThread

    with ServerThread() as running:
        yield running


@pytest.fixture
def leveret_url(leveret_broker: ServerThread) -> str:
    return leveret_broker.url


@pytest.fixture
def leveret_management(leveret_broker: ServerThread) -> Iterator[ManagementServer]:
    from leveret.management import attach, detach

    running = attach(leveret_broker)
    try:
        yield running
    finally:
        detach(leveret_broker, running)


def assert_topic_routes(bindings: Mapping[str, str | Sequence[str]], routing_key: str,
                        expected: Iterable[str]) -> None:
    """Assert that a topic exchange with `bindings` (queue -> its binding key or
    keys) routes `routing_key` to exactly the `expected` queues. On failure the
    message says, for each queue that is wrong, why its keys did or did not
    match, in the playground's words:

        assert_topic_routes({"errors": "*.error", "db": "db.#"}, "db.error", ["errors", "db"])
    """
    from leveret.matching import explain_topic

    reached, reasons = set(), {}
    for queue, keys in bindings.items():
        verdicts = [explain_topic(key, routing_key) for key in ([keys] if isinstance(keys, str) else keys)]
        if any(verdict.matched for verdict in verdicts):
            reached.add(queue)
        reasons[queue] = "; ".join(verdict.reason for verdict in verdicts) or "no bindings"
    wanted = set(expected)
    if reached == wanted:
        return
    lines = [f"routing key {routing_key!r} reached {sorted(reached)}, expected {sorted(wanted)}:"]
    lines += [f"  {queue} got it: {reasons[queue]}" for queue in sorted(reached - wanted)]
    lines += [f"  {queue} missed it: {reasons.get(queue, 'not bound')}" for queue in sorted(wanted - reached)]
    raise AssertionError("\n".join(lines))
