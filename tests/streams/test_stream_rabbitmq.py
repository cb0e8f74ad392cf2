"""Streams over AMQP 0-9-1, leveret against the reference RabbitMQ 3.10.8.

Each scenario runs the same pika client against both brokers and compares what
the client saw: declare errors, consume errors, every x-stream-offset spec, the
messages and headers delivered, credit, and retention's first offset. Names are
unique and every stream is deleted afterwards (the reference is shared).
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable
from typing import Any

import pika
import pytest

from tests import reference
from tests.streams.stream_client import STREAM, Probe, count, has_body, offsets, unique

pytestmark = [pytest.mark.rabbitmq, reference.needs_reference]

Scenario = Callable[[Probe, str], list[Any]]


def run(url: str, scenario: Scenario, name: str) -> list[Any]:
    probe = Probe(url)
    try:
        return scenario(probe, name)
    finally:
        probe.close()


def compare(leveret_url: str, scenario: Scenario) -> list[Any]:
    name = unique("stream-diff")
    expected = run(reference.URL, scenario, name)
    actual = run(leveret_url, scenario, name)
    assert actual == expected
    return expected


def declare_errors(probe: Probe, name: str) -> list[Any]:
    seen = []
    cases: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({"durable": False}, {}),
        ({"durable": True, "exclusive": True}, {}),
        ({"durable": True, "auto_delete": True}, {}),
        ({"durable": False, "exclusive": True, "auto_delete": True}, {}),
    ]
    refused = ("x-max-length", 10), ("x-message-ttl", 1000), ("x-dead-letter-exchange", "dlx"), \
        ("x-overflow", "drop-head"), ("x-max-priority", 5), ("x-expires", 1000), ("x-queue-mode", "lazy"), \
        ("x-single-active-consumer", True), ("x-delivery-limit", 3), ("x-queue-version", 2), \
        ("x-dead-letter-strategy", "at-least-once"), ("x-max-in-memory-length", 5)
    values = [
        *refused, ("x-max-length-bytes", -1), ("x-max-length-bytes", "abc"), ("x-max-length-bytes", 1000),
        ("x-max-age", "7D"), ("x-max-age", "12h"), ("x-max-age", "30m"), ("x-max-age", "10s"), ("x-max-age", "1Y"),
        ("x-max-age", "2M"), ("x-max-age", "0D"), ("x-max-age", "10"), ("x-max-age", "10x"), ("x-max-age", "10ms"),
        ("x-max-age", 10), ("x-max-age", "D"), ("x-max-age", ""),
        ("x-stream-max-segment-size-bytes", 1000), ("x-stream-max-segment-size-bytes", 3_000_000_001),
        ("x-stream-max-segment-size-bytes", -1), ("x-stream-max-segment-size-bytes", "a"),
        ("x-initial-cluster-size", 0), ("x-initial-cluster-size", 3), ("x-queue-leader-locator", "balanced"),
        ("x-queue-leader-locator", "bogus"), ("x-foo", "bar"),
    ]
    cases += [({"durable": True}, {key: value}) for key, value in values]
    # Argument errors come before the key check, in the client's order of keys.
    cases.append(({"durable": True}, {"x-max-length": 5, "x-max-length-bytes": -1}))
    cases.append(({"durable": True}, {"x-message-ttl": 5, "x-max-length": 5}))
    cases.append(({"durable": True}, {"x-dead-letter-exchange": 5}))
    for flags, arguments in cases:
        def declare(channel: Any, flags: dict[str, Any] = flags, arguments: dict[str, Any] = arguments) -> int:
            channel.queue_declare(name, arguments={**STREAM, **arguments}, **flags)
            channel.queue_delete(name)
            return 0
        seen.append((flags, arguments, probe.attempt(declare, name)))
    # No server-generated names for streams.
    seen.append(probe.attempt(lambda channel: channel.queue_declare("", durable=True, arguments=STREAM)))
    return seen


def test_declare_errors(leveret_url: str) -> None:
    observed = compare(leveret_url, declare_errors)
    assert ({"durable": False}, {}, (406, "PRECONDITION_FAILED - invalid property 'non-durable' for queue 'Q' in vhost '/'")) in observed
    assert ({"durable": True}, {"x-max-age": "D"}, (541, "INTERNAL_ERROR")) in observed


def redeclare(probe: Probe, name: str) -> list[Any]:
    probe.declare_stream(name, **{"x-max-age": "1D"})
    return [
        probe.attempt(lambda c: c.queue_declare(name, durable=True, arguments={**STREAM, "x-max-age": "1D"}).method.queue, name),
        probe.attempt(lambda c: c.queue_declare(name, durable=True, arguments={**STREAM, "x-max-age": "2D"}), name),
        probe.attempt(lambda c: c.queue_declare(name, durable=True, arguments={**STREAM}), name),
        probe.attempt(lambda c: c.queue_declare(name, durable=True, arguments={"x-max-age": "1D"}), name),
        probe.attempt(lambda c: c.queue_declare(name, durable=True, arguments={**STREAM, "x-max-age": "1D", "x-foo": 1}).method.queue, name),
        probe.attempt(lambda c: c.queue_declare(name, durable=False, arguments={**STREAM, "x-max-age": "1D"}), name),
    ]


def test_redeclare(leveret_url: str) -> None:
    compare(leveret_url, redeclare)


def consume_errors(probe: Probe, name: str) -> list[Any]:
    probe.declare_stream(name)
    probe.publish(name, [b"a", b"b"])
    classic = name + "-classic"
    channel = probe.channel()
    channel.queue_declare(classic)
    probe.names.append(classic)
    channel.close()

    def consume(qos: int | None = 10, global_qos: bool = False, no_ack: bool = False,
                arguments: dict[str, Any] | None = None) -> Callable[[Any], Any]:
        def action(channel: Any) -> str:
            if qos is not None:
                channel.basic_qos(prefetch_count=qos, global_qos=global_qos)
            channel.basic_consume(name, lambda *_: None, auto_ack=no_ack, arguments=arguments or {})
            return "consumed"
        return action

    def settle(how: str) -> Callable[[Any], Any]:
        def action(channel: Any) -> None:
            channel.basic_qos(prefetch_count=5)
            tags: list[int] = []
            channel.basic_consume(name, lambda ch, m, p, b: tags.append(m.delivery_tag),
                                  arguments={"x-stream-offset": "first"})
            while not tags:
                probe.connection.process_data_events(0.05)
            if how == "nack":
                channel.basic_nack(tags[0], requeue=True)
            elif how == "recover":
                channel.basic_recover(requeue=True)
            else:
                channel.basic_reject(tags[0], requeue=False)
            channel.queue_declare(name, passive=True)  # a round trip: the refusal arrives first
        return action

    return [
        probe.attempt(consume(qos=None), name),
        probe.attempt(consume(qos=0), name),
        probe.attempt(consume(global_qos=True), name),
        probe.attempt(consume(no_ack=True), name),
        probe.attempt(lambda c: c.basic_get(name, auto_ack=False), name),
        probe.attempt(lambda c: c.basic_get(name, auto_ack=True), name),
        probe.attempt(lambda c: c.queue_purge(name), name),
        probe.attempt(consume(arguments={"x-priority": 5}), name),
        probe.attempt(consume(arguments={"x-stream-offset": "5"}), name),
        probe.attempt(consume(arguments={"x-stream-offset": "bogus"}), name),
        probe.attempt(consume(arguments={"x-stream-offset": True}), name),
        probe.attempt(consume(arguments={"x-credit": 5, "x-foo": 1}), name),
        probe.attempt(settle("nack"), name),
        probe.attempt(settle("reject"), name),
        probe.attempt(settle("recover"), name),
        probe.attempt(lambda c: c.basic_consume(classic, lambda *_: None, arguments={"x-stream-offset": "first"}),
                      classic),
    ]


def test_consume_errors(leveret_url: str) -> None:
    observed = compare(leveret_url, consume_errors)
    assert observed[0] == (406, "PRECONDITION_FAILED - consumer prefetch count is not set for 'queue 'Q' in vhost '/''")
    assert observed[4] == (540, "NOT_IMPLEMENTED - basic.get not supported by stream queues queue 'Q' in vhost '/'")


def offset_specs(probe: Probe, name: str) -> list[Any]:
    probe.declare_stream(name)
    before = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=5)
    probe.publish(name, [f"m{i}".encode() for i in range(10)])
    seen = []
    for spec, expect in [("first", 10), ("last", 1), (5, 5), (-3, 10), (0, 10), (9, 1), ("10m", 10),
                         (before, 10), (datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC), 10)]:
        seen.append((str(spec) if not isinstance(spec, datetime.datetime) else "timestamp",
                     offsets(probe.read(name, spec, count(expect)))))
    # `next`, no offset and a time still to come see only what is published after them.
    future = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    for index, spec in enumerate(("next", None, future)):
        body = f"later{index}".encode()
        got = probe.read(name, spec, has_body(body), after_subscribe=lambda body=body: probe.publish(name, [body]))
        seen.append((str(spec) if not isinstance(spec, datetime.datetime) else "future", offsets(got)))
    return seen


def test_offset_specs(leveret_url: str) -> None:
    observed = compare(leveret_url, offset_specs)
    assert observed[0] == ("first", list(range(10)))
    assert observed[1] == ("last", [9])


def deliveries(probe: Probe, name: str) -> list[Any]:
    probe.declare_stream(name)
    exchange = name + "-x"
    channel = probe.channel()
    channel.exchange_declare(exchange, "topic", auto_delete=True)
    channel.queue_bind(name, exchange, "events.#")
    properties = pika.BasicProperties(
        headers={"s": "text", "i": 7, "b": True, "n": {"inner": "x"}, "x-stream-offset": "mine"},
        content_type="text/plain", delivery_mode=2, message_id="id-1", timestamp=1_700_000_000,
        priority=3, correlation_id="c-1",
    )
    probe.publish(name, [b"direct"], properties)
    probe.publish(name, [b"topic"], pika.BasicProperties(content_type="application/json"),
                  exchange=exchange, routing_key="events.created")
    probe.publish(name, [b"plain"])
    got = probe.read(name, "first", count(3))
    channel.exchange_delete(exchange)
    return got


def test_deliveries(leveret_url: str) -> None:
    observed = compare(leveret_url, deliveries)
    assert [m["redelivered"] for m in observed] == [False, False, False]
    assert observed[1]["routing_key"] == "events.created"


def consumers_and_credit(probe: Probe, name: str) -> list[Any]:
    probe.declare_stream(name)
    probe.publish(name, [f"m{i}".encode() for i in range(6)])
    seen = []
    # Two consumers on one channel, each at its own position.
    channel = probe.channel()
    channel.basic_qos(prefetch_count=2)
    got: dict[str, list[int]] = {"a": [], "b": []}
    tags: dict[str, list[int]] = {"a": [], "b": []}

    def collect(key: str) -> Callable[..., None]:
        def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
            got[key].append(int(properties.headers["x-stream-offset"]))
            tags[key].append(method.delivery_tag)
        return on_message

    channel.basic_consume(name, collect("a"), arguments={"x-stream-offset": "first"})
    channel.basic_consume(name, collect("b"), arguments={"x-stream-offset": 3})
    while len(got["a"]) < 2 or len(got["b"]) < 2:
        probe.connection.process_data_events(0.05)
    seen.append({key: list(value) for key, value in got.items()})
    channel.basic_ack(tags["a"][0])  # one ack: one more message for a, none for b
    while len(got["a"]) < 3:
        probe.connection.process_data_events(0.05)
    seen.append({key: list(value) for key, value in got.items()})
    channel.basic_ack(tags["b"][-1])  # b's own last delivery, not multiple (that would free a's too)
    while len(got["b"]) < 3:
        probe.connection.process_data_events(0.05)
    seen.append({"b": list(got["b"])})
    channel.close()
    # Messages stay after they are read and acked.
    seen.append(offsets(probe.read(name, "first", count(6))))
    return seen


def test_consumers_and_credit(leveret_url: str) -> None:
    observed = compare(leveret_url, consumers_and_credit)
    assert observed[-1] == list(range(6))


def segment_runs(seen: list[int]) -> list[int]:
    """Lengths of the runs of consecutive offsets: each segment after the first opens
    with an offset no consumer sees (osiris' writer tracking), so runs are segments."""
    runs = [1]
    for before, after in zip(seen, seen[1:], strict=False):
        if after == before + 1:
            runs[-1] += 1
        else:
            runs.append(1)
    return runs


def retention(probe: Probe, name: str) -> list[Any]:
    """Which whole segments retention keeps is decided asynchronously in RabbitMQ
    (a run may keep one segment more), so what is compared is the shape: the last
    offset (every segment's tracking offset counted), full segments' sizes, and
    that the first offset left opens a segment."""
    seen = []
    for max_bytes, segment, bodies in ((5000, 1000, [b"x" * 50] * 100), (2000, 500, [b"y" * i for i in range(40)])):
        stream = unique("stream-diff-ret")
        probe.declare_stream(stream, **{"x-max-length-bytes": max_bytes, "x-stream-max-segment-size-bytes": segment})
        probe.publish(stream, bodies)
        got = offsets(probe.read(stream, "first", has_body(bodies[-1])))
        runs = segment_runs(got)
        seen.append({"last": got[-1], "first_is_segment_start": got[0] > 0 and runs[0] == max(runs),
                     "full_segments": sorted(set(runs[:-1])), "at_most_bytes": len(runs) * segment <= max_bytes + 2 * segment})
    return seen


def test_retention(leveret_url: str) -> None:
    observed = compare(leveret_url, retention)
    assert observed[0]["last"] == 118  # 100 messages and 19 segment openings


def segment_boundaries(probe: Probe, name: str) -> list[Any]:
    """Where segments start (the offsets nobody is given) for a few sizes of body,
    routing key and properties: leveret's record sizes model osiris' files."""
    seen = []
    # Away from the edges: osiris' tracking chunk varies by a few bytes (it holds
    # the publishing channel's pid), so a segment that just fits may not.
    # RabbitMQ's record sizes also vary by a byte or two per message, so every case
    # here is 20 bytes or more from a boundary in the model.
    cases = [(300, 20, None), (70, 20, None), (50, 30, None), (150, 10, None), (450, 30, None),
             (50, 10, pika.BasicProperties(headers={"abc": "defgh"}, content_type="text/plain", delivery_mode=2))]
    for body, length, properties in cases:
        stream = (uuid.uuid4().hex * 2)[:length]  # unique; only its length matters
        probe.declare_stream(stream, **{"x-stream-max-segment-size-bytes": 2000})
        probe.publish(stream, [b"z" * body] * 40, properties)
        got = offsets(probe.read(stream, "first", count(40)))
        seen.append([before + 1 for before, after in zip(got, got[1:], strict=False) if after != before + 1])
        probe.channel().queue_delete(stream)
        probe.names.remove(stream)
    return seen


def test_segment_boundaries(leveret_url: str) -> None:
    observed = compare(leveret_url, segment_boundaries)
    assert observed[0][:2] == [5, 11]
