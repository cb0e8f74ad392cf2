"""A small pika client for stream scenarios, run alike against leveret and the reference.

`Probe` opens one connection; every call that the broker may refuse runs on a
fresh channel (reconnecting after a connection-level error) and returns
`("ok", result)` or `(reply code, reply text)` with the queue's name replaced by
`Q`, so the two brokers' answers compare as values.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions

STREAM = {"x-queue-type": "stream"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Probe:
    def __init__(self, url: str) -> None:
        self.url = url
        self.connection = self._connect()
        self.names: list[str] = []

    def _connect(self) -> pika.BlockingConnection:
        return pika.BlockingConnection(pika.URLParameters(self.url))

    def channel(self) -> Any:
        if self.connection.is_closed:
            self.connection = self._connect()
        return self.connection.channel()

    def attempt(self, action: Callable[[Any], Any], name: str = "") -> tuple[Any, Any]:
        channel = self.channel()
        try:
            result = action(channel)
        except pika.exceptions.ChannelClosedByBroker as error:
            return error.reply_code, error.reply_text.replace(name, "Q") if name else error.reply_text
        except pika.exceptions.ConnectionClosedByBroker as error:
            return error.reply_code, error.reply_text.replace(name, "Q") if name else error.reply_text
        if channel.is_open:
            channel.close()
        return "ok", result

    def declare_stream(self, name: str, **arguments: Any) -> None:
        self.names.append(name)
        channel = self.channel()
        channel.queue_declare(name, durable=True, arguments={**STREAM, **arguments})
        channel.close()

    def publish(self, name: str, bodies: list[bytes], properties: pika.BasicProperties | None = None,
                exchange: str = "", routing_key: str | None = None) -> None:
        """Publish with confirms, one at a time (one message is one chunk in RabbitMQ too)."""
        channel = self.channel()
        channel.confirm_delivery()
        for body in bodies:
            channel.basic_publish(exchange, routing_key if routing_key is not None else name, body, properties)
        channel.close()

    def read(self, name: str, offset: Any, until: Callable[[list[dict[str, Any]]], bool],
             prefetch: int = 1000, timeout: float = 10.0, after_subscribe: Callable[[], None] | None = None,
             ack: bool = True) -> list[dict[str, Any]]:
        """Consume with `x-stream-offset` = offset (None: no argument) until `until(seen)`."""
        channel = self.channel()
        channel.basic_qos(prefetch_count=prefetch)
        seen: list[dict[str, Any]] = []

        def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
            headers = dict(properties.headers or {})
            seen.append({
                "offset": headers.pop("x-stream-offset", None), "body": body, "headers": headers,
                "redelivered": method.redelivered, "exchange": method.exchange,
                "routing_key": method.routing_key.replace(name, "Q"),
                "content_type": properties.content_type, "delivery_mode": properties.delivery_mode,
                "message_id": properties.message_id, "timestamp": properties.timestamp,
                "priority": properties.priority, "correlation_id": properties.correlation_id,
            })
            if ack:
                ch.basic_ack(method.delivery_tag)

        arguments = {} if offset is None else {"x-stream-offset": offset}
        channel.basic_consume(name, on_message, arguments=arguments)
        if after_subscribe is not None:
            after_subscribe()
        deadline = time.monotonic() + timeout
        while not until(seen):
            assert time.monotonic() < deadline, f"timed out; got {[m['offset'] for m in seen]}"
            self.connection.process_data_events(0.05)
        channel.close()
        return seen

    def close(self) -> None:
        channel = self.channel()
        for name in self.names:
            channel.queue_delete(name)
        self.connection.close()


def offsets(messages: list[dict[str, Any]]) -> list[int]:
    return [int(message["offset"]) for message in messages]


def has_body(body: bytes) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda seen: any(message["body"] == body for message in seen)


def count(n: int) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda seen: len(seen) >= n
