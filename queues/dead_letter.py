"""Dead-lettering: RabbitMQ 3.10's rewrite of a message leaving a queue
(rabbit_dead_letter:make_msg/5) and its cycle rule (detect_cycles/3).

The rewrite works on the typed headers (`leveret.amqp_wire.fieldtable`) of the message's
property bytes, so every header entry the broker does not touch, and every
property but `headers` and `expiration`, keeps the publisher's bytes. (RabbitMQ
re-encodes the whole list from its parsed form, which differs only in that an
`L` integer comes back as `l` and a boolean octet 2..255 as 1.)

What RabbitMQ does, step by step, and this module copies:
  * `info` = reason, queue, time (timestamp, seconds), exchange (the one the
    message was last published to), routing-keys (the first routing key, then
    the CC keys, longstr entries only), then original-expiration if the message
    had an `expiration`.
  * no `x-death` yet: x-first-death-reason/-queue/-exchange are set and
    x-death = [{count: 1 (l), *info}] (this first entry is NOT sorted);
  * `x-death` is an array: existing entries are grouped by (queue, reason) --
    which, with two or more entries, REVERSES their order (the fold prepends) --
    then the entry for this (queue, reason) gets count+1 and keeps its other
    fields (time, exchange, routing-keys stay those of its first death), or a new
    {count: 1, *info} is made; either is sorted by field name and put first;
  * `x-death` of another type: replaced by one unsorted entry;
  * every change goes through rabbit_misc:set_table_value, so the headers table
    ends sorted by name (stable);
  * with a dead-letter routing key the first CC header is deleted afterwards
    (its keys are still in routing-keys) and the message routes with [that key];
    without, with all the keys it was published with (routing key, CC, BCC);
  * `expiration` is removed.
RabbitMQ's stored message never carries BCC (stripped at publish), so a BCC
header still present here is dropped too and never appears in x-death.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from leveret.amqp_wire.fieldtable import Field, TypedTable, table_from_plain
from leveret.amqp_wire.properties import RawProperties, decode_properties, encode_properties
from leveret.queues.message import Message

REASONS: Final = frozenset({"rejected", "expired", "maxlen", "delivery_limit"})


def _longstr(text: str) -> Field:
    return Field("S", text.encode("utf-8", "surrogateescape"))


def _set_table_value(table: TypedTable, name: str, value: Field) -> TypedTable:
    """rabbit_misc:set_table_value: replace the first or append, then sort by name."""
    return table.keystore(name, value).sorted()


def _key(entry: TypedTable, name: str) -> Any:
    """x_death_event_key: the value (any type) of the first `name`, or None."""
    field = entry.get(name)
    return None if field is None else field.value


def _ensure_count(entry: TypedTable, count: int) -> TypedTable:
    if entry.get("count") is None:
        return TypedTable((("count", Field("l", count)),) + entry.entries)
    return entry


def _increment_count(entry: TypedTable) -> TypedTable:
    count = _key(entry, "count")
    if count is None:
        return TypedTable((("count", Field("l", 1)),) + entry.entries)
    # RabbitMQ crashes the queue on a non-integer count (N + 1); start over instead.
    new = count + 1 if isinstance(count, int) and not isinstance(count, bool) else 1
    return entry.keystore("count", Field("l", new))


def _group_by_queue_and_reason(items: Sequence[Field]) -> list[Field]:
    """group_by_queue_and_reason/1: one entry per (queue, reason), the first of
    each with `count` set to how many there were if it had none. With two or
    more entries the fold prepends, so the result comes out reversed."""
    if len(items) < 2:
        return list(items)
    tables = [item for item in items if item.tag == "F"]
    seen: set[tuple[Any, Any]] = set()
    grouped: list[Field] = []
    # RabbitMQ crashes on an x-death item that is not a table; keep such items, last.
    for item in tables:
        key = (_key(item.value, "queue"), _key(item.value, "reason"))
        matches = [t for t in tables if (_key(t.value, "queue"), _key(t.value, "reason")) == key]
        first = Field("F", _ensure_count(matches[0].value, len(matches)))
        if not grouped or key not in seen:
            grouped.insert(0, first)
        seen.add(key)
    return grouped + [item for item in items if item.tag != "F"]


def update_x_death(headers: TypedTable, info: TypedTable) -> TypedTable:
    """update_x_death_header/2: `info` is the new event's fields (without count)."""
    exchange, queue, reason = (info.get(name) for name in ("exchange", "queue", "reason"))
    assert exchange is not None and queue is not None and reason is not None
    fresh = TypedTable((("count", Field("l", 1)),) + info.entries)
    existing = headers.get("x-death")
    if existing is None:
        # The first death also gets top-level headers (rabbitmq-server#1332).
        headers = _set_table_value(headers, "x-first-death-reason", reason)
        headers = _set_table_value(headers, "x-first-death-queue", queue)
        headers = _set_table_value(headers, "x-first-death-exchange", exchange)
        return _set_table_value(headers, "x-death", Field("A", (Field("F", fresh),)))
    if existing.tag != "A":
        # Clients that re-publish sometimes turn x-death into a string (rabbitmq-server#767).
        return _set_table_value(headers, "x-death", Field("A", (Field("F", fresh),)))
    this = (queue.value, reason.value)
    matched: TypedTable | None = None
    others: list[Field] = []
    for item in _group_by_queue_and_reason(existing.value):
        if (
            matched is None
            and item.tag == "F"
            and (_key(item.value, "queue"), _key(item.value, "reason")) == this
        ):
            matched = item.value
        else:
            others.append(item)
    entry = fresh if matched is None else _increment_count(matched)
    deaths = (Field("F", entry.sorted()), *others)
    return _set_table_value(headers, "x-death", Field("A", deaths))


def _header_routes(headers: TypedTable) -> list[Field]:
    """The CC keys, as rabbit_basic:header_routes reads them (longstr items only)."""
    cc = headers.get("CC")
    if cc is None or cc.tag != "A":
        return []
    return [item for item in cc.value if item.tag == "S"]


def make_dead_letter(
    message: Message,
    *,
    reason: str,
    queue: str,
    dead_letter_exchange: str,
    dead_letter_routing_key: str | None,
    now_ms: int,
) -> Message:
    """The message as it leaves `queue` for `dead_letter_exchange`."""
    if reason not in REASONS:
        raise ValueError(f"unknown dead-letter reason {reason!r}")
    raw = message.raw_properties
    parts = RawProperties.parse(raw if raw is not None else encode_properties(message.properties))
    headers = (parts.headers() or TypedTable()).keydelete("BCC")

    routing_keys = Field("A", (_longstr(message.routing_keys[0]), *_header_routes(headers)))
    info: list[tuple[str, Field]] = [
        ("reason", _longstr(reason)),
        ("queue", _longstr(queue)),
        ("time", Field("T", now_ms // 1000)),
        ("exchange", _longstr(message.exchange)),
        ("routing-keys", routing_keys),
    ]
    expiration = parts.get("expiration")
    if expiration is not None:
        info.append(("original-expiration", Field("S", expiration[1:])))

    headers = update_x_death(headers, TypedTable(tuple(info)))
    if dead_letter_routing_key is not None:
        headers = headers.keydelete("CC")
        new_routing_keys: tuple[str, ...] = (dead_letter_routing_key,)
    else:
        new_routing_keys = message.routing_keys

    new_raw = parts.with_headers(headers).without("expiration").to_bytes()
    return Message(
        exchange=dead_letter_exchange,
        routing_key=new_routing_keys[0],
        properties=decode_properties(new_raw),
        body=message.body,
        raw_properties=new_raw,
        routing_keys=new_routing_keys,
    )


def _typed_x_death(message: Message) -> Field | None:
    if message.raw_properties is not None:
        headers = RawProperties.parse(message.raw_properties).headers()
    else:
        plain = message.properties.headers
        headers = None if plain is None else table_from_plain(plain)
    return None if headers is None else headers.get("x-death")


def _is_cycle(queue: bytes, deaths: Sequence[Field]) -> bool:
    """is_cycle/2: `queue` appears in x-death and no death up to and including
    its newest one was a reject (or something a client put there)."""
    for index, death in enumerate(deaths):
        if death.tag != "F":
            continue
        if death.value.get("queue") == Field("S", queue):
            return all(
                item.tag == "F" and item.value.get("reason") != Field("S", b"rejected")
                for item in deaths[: index + 1]
            )
    return False


def cycle_free_queues(
    message: Message, reason: str, queue_names: Sequence[str]
) -> tuple[list[str], list[str]]:
    """Split the queues a dead-lettered message routed to into (deliver, dropped as
    cycles). `message` is make_dead_letter's result; a reject never cycles."""
    if reason == "rejected":
        return list(queue_names), []
    x_death = _typed_x_death(message)
    if x_death is None or x_death.tag != "A":
        return list(queue_names), []
    deliver: list[str] = []
    dropped: list[str] = []
    for name in queue_names:
        cycle = _is_cycle(name.encode("utf-8", "surrogateescape"), x_death.value)
        (dropped if cycle else deliver).append(name)
    return deliver, dropped
