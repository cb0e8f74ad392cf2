"""Differential: users, permissions and vhosts changed while clients are connected.

The same script (pika clients, HTTP administration) runs against leveret and
against the reference RabbitMQ (skipped when its management API is
unreachable); what the clients see must be the same: after permissions are
cleared a channel keeps what it already used and is refused anything new; a
deleted user's and a deleted vhost's connections are closed with 320.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
import pytest

from leveret.management import ManagementServer
from tests.management.conftest import Http

pytestmark = pytest.mark.rabbitmq

FULL = {"configure": ".*", "write": ".*", "read": ".*"}


def _outcome(action: Callable[[], Any]) -> str:
    try:
        action()
        return "ok"
    except pika.exceptions.ChannelClosedByBroker as error:
        return f"channel closed {error.reply_code} {error.reply_text}"
    except pika.exceptions.ConnectionClosedByBroker as error:
        return f"connection closed {error.reply_code} {error.reply_text}"
    except pika.exceptions.ChannelWrongStateError as error:
        return f"channel already closed: {error}"


def _closed_by_broker(connection: pika.BlockingConnection) -> str:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            connection.process_data_events(0.05)
        except pika.exceptions.ConnectionClosedByBroker as error:
            return f"connection closed {error.reply_code} {error.reply_text}"
    return "still open"


def _connect(port: int, vhost: str, user: str) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", port, vhost, pika.PlainCredentials(user, "pw")))


def script(http: Http, port: int, suffix: str) -> list[str]:
    user, vhost, queue = f"live-user-{suffix}", f"live-vhost-{suffix}", f"live-q-{suffix}"
    seen = []
    try:
        assert http.request("PUT", f"/api/users/{user}", {"password": "pw", "tags": ""}).status == 201
        assert http.request("PUT", f"/api/vhosts/{vhost}").status == 201
        assert http.request("PUT", f"/api/permissions/{vhost}/{user}", FULL).status == 201
        connection = _connect(port, vhost, user)
        channel = connection.channel()
        channel.queue_declare(queue)
        channel.basic_publish("", queue, b"x")
        assert http.request("DELETE", f"/api/permissions/{vhost}/{user}").status == 204
        seen.append(_outcome(lambda: (channel.basic_publish("", queue, b"y"), connection.process_data_events(0.2))))
        seen.append(_outcome(lambda: channel.queue_declare(queue)))
        seen.append(_outcome(lambda: channel.queue_declare(queue + "-new")))
        seen.append(_outcome(lambda: connection.channel().queue_declare(queue + "-other")))
        seen.append(f"open {connection.is_open}")
        assert http.request("PUT", f"/api/permissions/{vhost}/{user}", FULL).status == 201
        seen.append(_outcome(lambda: connection.channel().queue_declare(queue + "-again")))
        # a deleted user's connections close
        assert http.request("DELETE", f"/api/users/{user}").status == 204
        seen.append(_closed_by_broker(connection))
        # a deleted vhost's connections close
        assert http.request("PUT", f"/api/users/{user}", {"password": "pw", "tags": ""}).status == 201
        assert http.request("PUT", f"/api/permissions/{vhost}/{user}", FULL).status == 201
        other = _connect(port, vhost, user)
        assert http.request("DELETE", f"/api/vhosts/{vhost}").status == 204
        seen.append(_closed_by_broker(other))
        seen.append(str(http.request("GET", f"/api/queues/{vhost}/{queue}").status))
        try:
            _connect(port, vhost, user)
            seen.append("connected to a deleted vhost")
        except pika.exceptions.ProbableAccessDeniedError as error:
            seen.append(f"refused {type(error).__name__}")
    finally:
        http.request("DELETE", f"/api/users/{user}")
        http.request("DELETE", f"/api/vhosts/{vhost}")
    return seen


def test_changes_reach_connected_clients_as_on_rabbitmq(rabbitmq: Http,  # noqa: F811
                                                        leveret_management: ManagementServer) -> None:
    thread = leveret_management.broker_thread
    assert thread is not None
    suffix = uuid.uuid4().hex[:10]
    # RabbitMQ closes a deleted vhost's connections from one of two racing paths,
    # "vhost 'V' is deleted" or, when its supervisor stops first, "... is down".
    theirs = [seen.replace("' is down", "' is deleted") for seen in script(rabbitmq, 5672, suffix)]
    ours = script(Http(leveret_management.url), thread.port, suffix)

    assert ours == theirs
    assert theirs[2].startswith("channel closed 403")  # the script tells what it should
