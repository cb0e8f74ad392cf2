"""The codec of message records: a PUBLISH in a segment, state records in its ack log.

A PUBLISH record is one message as the publisher sent it (exchange, routing
keys, raw properties, body) with its first queue's entry (qid, seq, TTL
deadline, priority). It is built in three parts (frame header, head, body) so
that the body, the large part, is never copied into a joined record; its CRC
chains over head and body. `decode_message` turns a record back into a
Message from any buffer holding it, at any offset: recovery reads whole
segments, and a pager (issue 19) could read one record by its offset.

Ack-log records are fixed-size structs keyed by (mid, qid): ENQUEUE (the same
message in one more queue), DELIVERED, REMOVED, REQUEUED (with the delivery
count) and PURGED (every ready message of a queue up to a mid).
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

from leveret.amqp_wire.properties import decode_properties, encode_properties
from leveret.queues.message import Message
from leveret.queues.queue import Entry
from leveret.store.frames import FRAME

PUBLISH = 0x50  # P
# type, mid, qid, seq, expires_at (-1: none), priority, exchange length,
# routing key length, extra routing keys (0: just the routing key), properties length, body length
PUB = struct.Struct("<BQIQqBBHHII")
ENQUEUE, DELIVERED, REMOVED, REQUEUED, PURGED = 0x45, 0x44, 0x52, 0x51, 0x55  # E D R Q U
ENQ = struct.Struct("<BQIQqB")  # type, mid, qid, seq, expires_at, priority
REF = struct.Struct("<BQI")  # type, mid, qid (delivered, removed)
REQ = struct.Struct("<BQII")  # type, mid, qid, delivery count
PURGE = struct.Struct("<BIQ")  # type, qid, every ready message up to this mid
_U16 = struct.Struct("<H")
_CACHE_SIZE = 4096

# Names and property lists repeat from message to message: decoding shares one object.
DecodeCaches = tuple[dict[bytes, str], dict[bytes, tuple[bytes, Any]]]


def new_caches() -> DecodeCaches:
    return {}, {}


def _text(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape")


def publish_record(mid: int, qid: int, entry: Entry, salt: int) -> tuple[bytes, bytes, bytes]:
    """(frame header, fixed part + names + properties, body) for one message."""
    message = entry.message
    exchange = _text(message.exchange)
    routing_key = _text(message.routing_key)
    keys = message.routing_keys
    extra = b""
    count = 0
    if keys != (message.routing_key,):
        count = len(keys)
        extra = b"".join(_U16.pack(len(k)) + k for k in map(_text, keys))
    raw = message.raw_properties
    if raw is None:
        raw = encode_properties(message.properties)
    body = message.body
    expires = -1 if entry.expires_at is None else entry.expires_at
    head = b"".join((
        PUB.pack(PUBLISH, mid, qid, entry.seq, expires, entry.priority, len(exchange),
                 len(routing_key), count, len(raw), len(body)),
        exchange, routing_key, extra, raw,
    ))
    crc = zlib.crc32(body, zlib.crc32(head, salt))
    return FRAME.pack(len(head) + len(body), crc), head, body


def enqueue_record(mid: int, qid: int, entry: Entry) -> bytes:
    expires = -1 if entry.expires_at is None else entry.expires_at
    return ENQ.pack(ENQUEUE, mid, qid, entry.seq, expires, entry.priority)


def decode_message(data: bytes, start: int, fields: tuple[Any, ...], caches: DecodeCaches) -> Message:
    """The PUBLISH record at `start` (its fixed part unpacked in `fields`) as a
    Message again, its properties as the publisher sent them."""
    (_, mid, _, _, _, _, exchange_size, key_size, count, properties_size, body_size) = fields
    names, properties_cache = caches
    pos = start + PUB.size
    exchange = _name(data[pos : pos + exchange_size], names)
    pos += exchange_size
    routing_key = _name(data[pos : pos + key_size], names)
    pos += key_size
    keys: tuple[str, ...] = ()
    for _ in range(count):
        (size,) = _U16.unpack_from(data, pos)
        keys += (_name(data[pos + 2 : pos + 2 + size], names),)
        pos += 2 + size
    raw = data[pos : pos + properties_size]
    pos += properties_size
    body = data[pos : pos + body_size]
    # Properties without headers hold nothing mutable: messages may share them.
    cached = properties_cache.get(raw)
    if cached is None:
        properties = decode_properties(raw)
        if not properties.headers:
            if len(properties_cache) >= _CACHE_SIZE:
                properties_cache.clear()
            properties_cache[raw] = (raw, properties)
    else:
        raw, properties = cached
    message = Message(exchange, routing_key, properties, body, raw, keys or (routing_key,))
    message.message_id = mid
    return message


def _name(value: bytes, names: dict[bytes, str]) -> str:
    name = names.get(value)
    if name is None:
        if len(names) >= _CACHE_SIZE:
            names.clear()
        name = names[value] = value.decode("utf-8", "surrogateescape")
    return name
