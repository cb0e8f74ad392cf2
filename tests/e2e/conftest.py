"""Shared helpers for the real-client end-to-end tests (pika, kombu, Celery, samples).

Each test gets a fresh leveret from the `leveret_url` fixture (leveret.testing).
`broker_url` is that URL, unless LEVERET_E2E_URL points elsewhere: set it to the
reference RabbitMQ to check that a test states RabbitMQ's behaviour, e.g.

    LEVERET_E2E_URL=amqp://guest:guest@127.0.0.1:5672/ pytest tests/e2e/test_pika.py

Against a shared broker names must not collide and what a test declares must go
away, so tests name things through `names`, which makes them unique and deletes
them afterwards when the broker is not a throwaway leveret.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator

import pika
import pytest

EXTERNAL_URL_ENV = "LEVERET_E2E_URL"


@pytest.fixture
def broker_url(request: pytest.FixtureRequest) -> str:
    external = os.environ.get(EXTERNAL_URL_ENV)
    if external:
        return external
    url: str = request.getfixturevalue("leveret_url")
    return url


class Names:
    """Unique queue/exchange names for one test; remembers them for clean-up."""

    def __init__(self) -> None:
        self.suffix = uuid.uuid4().hex[:8]
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def queue(self, base: str) -> str:
        name = f"{base}-{self.suffix}"
        self.queues.append(name)
        return name

    def exchange(self, base: str) -> str:
        name = f"{base}-{self.suffix}"
        self.exchanges.append(name)
        return name

    def delete_all(self, url: str) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(url))
        try:
            channel = connection.channel()
            for queue in self.queues:
                channel.queue_delete(queue)
            for exchange in self.exchanges:
                channel.exchange_delete(exchange)
        finally:
            connection.close()


@pytest.fixture
def names(broker_url: str) -> Iterator[Names]:
    made = Names()
    yield made
    if os.environ.get(EXTERNAL_URL_ENV):
        made.delete_all(broker_url)


@pytest.fixture
def pika_connection(broker_url: str) -> Iterator[pika.BlockingConnection]:
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    yield connection
    if connection.is_open:
        connection.close()


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, step: float = 0.02) -> bool:
    """Poll `predicate` until it holds or `timeout` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)
