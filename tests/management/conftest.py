"""Helpers for the management tests: an HTTP client on urllib, and AMQP clients on pika.

Every test gets a fresh leveret with its HTTP listener on a free port
(`leveret_management`, from leveret.testing).
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pika
import pytest

from leveret.management import ManagementServer


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class Http:
    """A real HTTP client (urllib) against one base URL, guest/guest unless told."""

    def __init__(self, url: str, user: str | None = "guest", password: str = "guest") -> None:
        self.url = url
        self.user = user
        self.password = password

    def request(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                headers: dict[str, str] | None = None, user: str | None = "", password: str | None = None) -> Reply:
        who = self.user if user == "" else user
        all_headers = dict(headers or {})
        if who is not None:
            token = base64.b64encode(f"{who}:{password if password is not None else self.password}".encode()).decode()
            all_headers["Authorization"] = f"Basic {token}"
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        if data is not None:
            all_headers.setdefault("Content-Type", "application/json")
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
        except urllib.error.HTTPError as error:
            return Reply(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read())

    def get(self, path: str) -> Any:
        reply = self.request("GET", path)
        assert reply.status == 200, (path, reply.status, reply.body)
        return reply.json


@pytest.fixture
def http(leveret_management: ManagementServer) -> Http:
    return Http(leveret_management.url)


@pytest.fixture
def amqp_url(leveret_management: ManagementServer) -> str:
    thread = leveret_management.broker_thread
    assert thread is not None
    return thread.url


@pytest.fixture
def connection(amqp_url: str) -> Iterator[pika.BlockingConnection]:
    params = pika.URLParameters(amqp_url)
    params.client_properties = {"connection_name": "management-test"}
    opened = pika.BlockingConnection(params)
    try:
        yield opened
    finally:
        if opened.is_open:
            opened.close()


RABBITMQ_HTTP = "http://127.0.0.1:15672"


@pytest.fixture(scope="module")
def rabbitmq() -> Http:
    """The reference RabbitMQ's management API; the module skips, saying why, without it."""
    client = Http(RABBITMQ_HTTP)
    try:
        reply = client.request("GET", "/api/overview")
    except OSError as error:
        pytest.skip(f"the reference RabbitMQ's management API is unreachable: {error}")
    if reply.status != 200:
        pytest.skip(f"the reference RabbitMQ's management API answers {reply.status}")
    return client
