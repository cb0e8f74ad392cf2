"""An in-process harness for the routing core: a virtual host on a virtual
clock, fake consumers, and messages built the way the AMQP channel builds
them (publisher's property bytes, CC and BCC routing keys, BCC stripped).
No sockets, no asyncio.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
from leveret.amqp_wire.fieldtable import Field, TypedTable, to_plain
from leveret.amqp_wire.properties import RawProperties, decode_properties, encode_properties
from leveret.bindings.model import Destination
from leveret.queues.message import Message
from leveret.queues.queue import Entry, Queue
from pamqp import exceptions
from pamqp.commands import Basic

from leveret.broker.vhost import PublishOutcome, VirtualHost
from leveret.clock import VirtualClock

OWNER = object()  # a connection, for exclusive queues
OTHER = object()  # another connection


def error_of(call: Callable[[], Any]) -> tuple[int, str]:
    """(reply code, explanation) of the AMQP error `call` raises."""
    with pytest.raises(exceptions.AMQPError) as info:
        call()
    return int(info.value.value), str(info.value)  # type: ignore[attr-defined]


class FakeConsumer:
    """A basic.consume subscription: takes deliveries while it has credit."""

    def __init__(self, tag: str, *, priority: int = 0, prefetch: int = 0, no_ack: bool = False) -> None:
        self.consumer_tag = tag
        self.priority = priority
        self.prefetch = prefetch
        self.no_ack = no_ack
        self.received: list[Entry] = []
        self.redelivered: list[bool] = []  # as each delivery said (entries change later)
        self.unacked: list[Entry] = []
        self.queue: Queue | None = None

    def has_credit(self) -> bool:
        return self.no_ack or not self.prefetch or len(self.unacked) < self.prefetch

    def deliver(self, queue: Queue, entry: Entry) -> None:
        self.queue = queue
        self.received.append(entry)
        self.redelivered.append(entry.redelivered)
        if not self.no_ack:
            self.unacked.append(entry)

    def bodies(self) -> list[bytes]:
        return [entry.message.body for entry in self.received]

    def log(self) -> list[tuple[bytes, bool]]:
        return list(zip(self.bodies(), self.redelivered, strict=True))

    def take(self, count: int | None = None) -> list[Entry]:
        """Settle the oldest `count` unacked entries (all by default)."""
        count = len(self.unacked) if count is None else count
        taken, self.unacked = self.unacked[:count], self.unacked[count:]
        return taken


def make_message(
    exchange: str,
    routing_key: str,
    body: bytes = b"",
    *,
    headers: Mapping[str, Any] | None = None,
    expiration: str | None = None,
    priority: int | None = None,
    raw_properties: bytes | None = None,
) -> Message:
    """A message as leveret.server.channel hands it to the vhost: routing keys are the
    routing key, then CC, then BCC; the BCC header is gone from the properties."""
    if raw_properties is None:
        properties = Basic.Properties(
            headers=dict(headers) if headers is not None else None,
            expiration=expiration,
            priority=priority,
        )
        raw_properties = encode_properties(properties)
    parts = RawProperties.parse(raw_properties)
    table = parts.headers()
    routing_keys: tuple[str, ...] = (routing_key,)
    if table is not None:
        routing_keys += _keys(table.get("CC")) + _keys(table.get("BCC"))
        if table.get("BCC") is not None:
            raw_properties = parts.with_headers(table.keydelete("BCC")).to_bytes()
    return Message(
        exchange,
        routing_key,
        decode_properties(raw_properties),
        body,
        raw_properties,
        routing_keys,
    )


def _keys(field: Field | None) -> tuple[str, ...]:
    if field is None or field.tag != "A":
        return ()
    return tuple(item.value.decode() for item in field.value if item.tag == "S")


def typed_headers(message: Message) -> TypedTable:
    raw = message.raw_properties
    if raw is None:
        raw = encode_properties(message.properties)
    return RawProperties.parse(raw).headers() or TypedTable()


def headers(message: Message) -> dict[str, Any]:
    plain = to_plain(typed_headers(message))
    assert isinstance(plain, dict)
    return plain


def x_death(message: Message, *, keep_time: bool = False) -> list[dict[str, Any]]:
    """The x-death entries as pamqp decodes them, `time` dropped unless asked for."""
    deaths = headers(message).get("x-death", [])
    if not keep_time:
        deaths = [{k: v for k, v in death.items() if k != "time"} for death in deaths]
    return list(deaths)


class World:
    """A vhost and its clock, with the calls a channel would make."""

    def __init__(self) -> None:
        self.clock = VirtualClock()
        self.vhost = VirtualHost("/")
        self.vhost.dead_letter_log = []

    @property
    def now(self) -> int:
        return self.clock.now_ms()

    # ------------------------------------------------------------- topology
    def exchange(self, name: str, kind: str = "direct", **options: Any) -> None:
        self.vhost.declare_exchange(name, kind, **options)

    def queue(self, name: str = "", **options: Any) -> Queue:
        options.setdefault("now_ms", self.now)
        if options.get("exclusive"):
            options.setdefault("owner", OWNER)
        return self.vhost.declare_queue(name, **options)

    def bind(self, exchange: str, queue: str, key: str = "", arguments: Mapping[str, Any] | None = None) -> None:
        self.vhost.bind(exchange, Destination.queue(queue), key, arguments)

    def bind_exchange(self, source: str, destination: str, key: str = "", arguments: Mapping[str, Any] | None = None) -> None:
        self.vhost.bind(source, Destination.exchange(destination), key, arguments)

    # ----------------------------------------------------------- messaging
    def publish(self, exchange: str, routing_key: str, body: bytes = b"", **options: Any) -> PublishOutcome:
        return self.vhost.publish(exchange, make_message(exchange, routing_key, body, **options), self.now)

    def consume(self, queue: str, consumer: FakeConsumer, *, exclusive: bool = False, owner: object | None = None) -> FakeConsumer:
        self.vhost.consume(queue, consumer, exclusive=exclusive, owner=owner, observer=None, now_ms=self.now)
        return consumer

    def cancel(self, queue: str, consumer: FakeConsumer) -> None:
        self.vhost.cancel(self.vhost.queues[queue], consumer, self.now)

    def ack(self, consumer: FakeConsumer, count: int | None = None) -> None:
        assert consumer.queue is not None
        self.vhost.ack(consumer.queue, consumer.take(count))
        self.vhost.dispatch(consumer.queue, self.now)

    def requeue(self, consumer: FakeConsumer, entries: Sequence[Entry] | None = None) -> None:
        assert consumer.queue is not None
        chosen = list(entries) if entries is not None else consumer.take()
        consumer.unacked = [e for e in consumer.unacked if e not in chosen]
        self.vhost.requeue(consumer.queue, chosen, self.now)

    def reject(self, consumer: FakeConsumer, count: int | None = None) -> None:
        """basic.reject / basic.nack with requeue=false."""
        assert consumer.queue is not None
        self.vhost.reject(consumer.queue, consumer.take(count), self.now)
        self.vhost.dispatch(consumer.queue, self.now)

    def get(self, queue: str, *, no_ack: bool = True) -> Entry | None:
        return self.vhost.get(queue, no_ack=no_ack, owner=None, now_ms=self.now).entry

    def drain(self, queue: str) -> list[bytes]:
        """Bodies of every ready message, taken with basic.get (no ack)."""
        bodies = []
        while (entry := self.get(queue)) is not None:
            bodies.append(entry.message.body)
        return bodies

    def count(self, queue: str) -> int:
        return self.vhost.queues[queue].message_count

    # ----------------------------------------------------------------- time
    def advance(self, milliseconds: int) -> None:
        """Move the clock, firing each timer at its own deadline on the way."""
        target = self.now + milliseconds
        while (deadline := self.vhost.next_deadline()) is not None and deadline <= target:
            self.clock.advance(max(0, deadline - self.now))
            self.vhost.run_timers(self.now)
            after = self.vhost.next_deadline()
            assert after is None or after > self.now, "run_timers left a due timer behind"
        self.clock.advance(target - self.now)
        self.vhost.run_timers(self.now)
