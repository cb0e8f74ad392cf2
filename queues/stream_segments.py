"""A stream's records and segments: what is appended, how segments fill, and
which ones retention drops; the in-memory log, and the `StreamLog` protocol the
store's file log (leveret.store.stream_log) meets.

Theory of operation. A message is stamped once, when appended (`stamp`), into
a `StreamRecord`: its offset, its timestamp, the bytes every delivery of it
sends (route, content header with the `x-stream-offset` header, body) and the
size it counts in its segment. Segments fill by those sizes as osiris' files
do (the sizes are a model calibrated on 3.10.8), every segment after the first
opens with a writer-tracking record no consumer is given, and `Retention`
decides, when a new segment holds its first message, how many of the oldest
segments go: whole segments, never the newest.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from leveret.amqp_wire.fieldtable import Field, TypedTable
from leveret.amqp_wire.framing import content_header_payload
from leveret.amqp_wire.properties import (
    RawProperties,
    decode_properties,
    encode_properties,
    replace_headers,
)
from leveret.queues.message import Message

OFFSET_HEADER = "x-stream-offset"
# osiris' defaults: a segment grows to 500 MB or 256,000 chunks (one message is a chunk here).
DEFAULT_SEGMENT_BYTES = 500_000_000
MAX_SEGMENT_CHUNKS = 256_000
# What a segment counts for its records, as osiris' files (a model calibrated on
# 3.10.8, so that segments fill and retention drops at about the same offsets): a
# file header, a chunk per message of about 136 bytes besides its route, body and
# twice its properties (AMQP 1.0 encodes them larger), and a writer-tracking chunk
# that takes the first offset of every segment after the first and is never delivered.
SEGMENT_HEADER = 8
RECORD_OVERHEAD = 136
MARKER_SIZE = 60
_SHORT = struct.Struct(">B")
_HEADER_PREFIX = 12  # class id, weight, body size before the property flags


# ------------------------------------------------------------------ records
class StreamRecord(NamedTuple):
    """One message as the log keeps it: its offset, when it was appended, and the
    bytes every delivery of it sends (route = exchange and routing key as shortstrs).
    A named tuple, not a frozen dataclass: one is made per message appended or read."""

    offset: int
    timestamp: int  # ms
    size: int  # what it counts in its segment (the model above)
    exchange: str
    routing_key: str
    route: bytes
    header: bytes  # the content-header frame payload
    body: bytes

    @property
    def is_marker(self) -> bool:
        return not self.header


    def message(self) -> Message:
        # Made slot by slot: this runs for every delivery of a stream.
        message = _new_message(StreamMessage)
        message.exchange = self.exchange
        message.routing_key = self.routing_key
        _PROPERTIES.__set__(message, None)
        message.body = self.body
        message.raw_properties = self.header[_HEADER_PREFIX:]
        message.routing_keys = (self.routing_key,)
        message.message_id = 0
        message.wire_route = self.route
        message.wire_header = self.header
        return message


_PROPERTIES = Message.__dict__["properties"]  # the slot's descriptor
_new_message = object.__new__


class StreamMessage(Message):
    """A message read back from a stream: its properties are decoded only if
    something asks (a delivery sends the stored bytes and never does)."""

    __slots__ = ()

    @property  # type: ignore[override]
    def properties(self) -> Any:
        value = _PROPERTIES.__get__(self)
        if value is None:
            value = decode_properties(self.raw_properties or b"")
            _PROPERTIES.__set__(self, value)
        return value

    @properties.setter
    def properties(self, value: Any) -> None:
        _PROPERTIES.__set__(self, value)


def _shortstr(value: str) -> bytes:
    data = value.encode("utf-8", "surrogateescape")
    return _SHORT.pack(len(data)) + data


# Property flags (AMQP 0-9-1 basic class): what comes before the headers, the
# headers, and what RabbitMQ's AMQP 1.0 record does not keep (cluster-id).
_HEADERS_FLAG = 0x2000
_CLUSTER_ID_FLAG = 0x0004
_HEADER_AND_FLAGS = struct.Struct(">HHQH")  # class, weight, body size, property flags
_OFFSET_ENTRY = b"\x0f" + OFFSET_HEADER.encode() + b"l"
_OFFSET_TABLE = struct.pack(">I", len(_OFFSET_ENTRY) + 8) + _OFFSET_ENTRY
_LONG = struct.Struct(">q")


def _header_with_offset(raw: bytes, offset: int, body_size: int) -> bytes:
    """The content-header payload of `raw` with the stream's headers. Without
    headers of its own (the common case) the one-entry table is spliced in after
    content-type and -encoding, in one join."""
    flags = raw[0] << 8 | raw[1]
    if flags & (_HEADERS_FLAG | _CLUSTER_ID_FLAG | 1):
        parts = RawProperties.parse(raw).without("cluster_id").to_bytes()
        return content_header_payload(replace_headers(parts, lambda table: _stream_headers(table, offset)), body_size)
    at = 2
    if flags & 0x8000:
        at += 1 + raw[at]
    if flags & 0x4000:
        at += 1 + raw[at]
    return b"".join((
        _HEADER_AND_FLAGS.pack(60, 0, body_size, flags | _HEADERS_FLAG), raw[2:at],
        _OFFSET_TABLE, _LONG.pack(offset), raw[at:],
    ))


def _stream_headers(table: TypedTable | None, offset: int) -> TypedTable:
    """The headers a stream delivers: RabbitMQ 3.10 keeps messages as AMQP 1.0, whose
    application properties hold no tables or arrays (rabbit_msg_record drops them),
    then adds the offset as a long and sorts the table (rabbit_basic:add_header)."""
    entries = tuple(entry for entry in (table or ()) if entry[1].tag not in ("F", "A"))
    return TypedTable(entries).keystore(OFFSET_HEADER, Field("l", offset)).sorted()


def marker(offset: int, timestamp: int) -> StreamRecord:
    """The writer-tracking record that opens a segment (osiris' tracking snapshot)."""
    return StreamRecord(offset, timestamp, MARKER_SIZE, "", "", b"", b"", b"")


def stamp(message: Message, offset: int, timestamp: int) -> StreamRecord:
    """The record for `message` at `offset`: its headers with x-stream-offset."""
    raw = message.raw_properties
    if raw is None:
        raw = encode_properties(message.properties)
    route = message.wire_route
    if route is None:  # shared with the frontend, which makes it on first delivery too
        route = message.wire_route = _shortstr(message.exchange) + _shortstr(message.routing_key)
    body = message.body
    size = RECORD_OVERHEAD + len(route) + len(body) + 2 * (len(raw) - 2)
    return StreamRecord(
        offset, timestamp, size, message.exchange, message.routing_key, route,
        _header_with_offset(raw, offset, len(body)), body,
    )


# ------------------------------------------------------------------ the log
@dataclass(slots=True)
class Segment:
    """What a log knows of one segment without reading it."""

    first_offset: int
    next_offset: int
    size: int
    first_timestamp: int
    last_timestamp: int

    @property
    def count(self) -> int:
        return self.next_offset - self.first_offset


class StreamReader(Protocol):
    def next(self) -> StreamRecord | None:
        """The record at the reader's position (moving past it), or None at the end."""

    @property
    def position(self) -> int: ...

    def close(self) -> None: ...


class StreamLog(Protocol):
    """An append-only log of records in segments (see the module docstring)."""

    segments: list[Segment]

    @property
    def first_offset(self) -> int: ...

    @property
    def next_offset(self) -> int: ...

    @property
    def size(self) -> int: ...

    def append(self, record: StreamRecord) -> None: ...

    def set_retention(self, retention: Retention, now_ms: int) -> None:
        """A policy changed the limits: they apply from now on, and at once."""

    def reader(self, offset: int) -> StreamReader: ...

    def offset_at(self, timestamp: int) -> int:
        """The first offset appended at or after `timestamp` (ms), else next_offset."""

    def destroy(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Retention:
    max_bytes: int | None = None
    max_age: int | None = None  # ms
    segment_bytes: int = DEFAULT_SEGMENT_BYTES

    def needs_new_segment(self, current: Segment | None) -> bool:
        """osiris' max_segment_size_reached, checked before each write."""
        return current is None or current.size >= self.segment_bytes or current.count >= MAX_SEGMENT_CHUNKS

    def due(self, segments: list[Segment]) -> bool:
        """Retention runs once a new segment holds its first message (osiris evaluates
        it when a segment is opened, asynchronously: by then the message is in)."""
        return len(segments) > 1 and segments[-1].count == 2

    def doomed(self, segments: list[Segment], now_ms: int) -> int:
        """How many of the oldest segments retention drops (osiris_log:evaluate_retention:
        max bytes keeps the newest and then older ones while they fit; max age drops the
        oldest while its last message is too old, never the last segment)."""
        keep_from = 0
        if self.max_bytes is not None and segments:
            budget = self.max_bytes - segments[-1].size
            keep_from = len(segments) - 1
            while keep_from > 0 and segments[keep_from - 1].size <= budget:
                budget -= segments[keep_from - 1].size
                keep_from -= 1
        if self.max_age is not None:
            while keep_from < len(segments) - 1 and segments[keep_from].last_timestamp < now_ms - self.max_age:
                keep_from += 1
        return keep_from


def first_at(segments: list[Segment], timestamp: int) -> int | None:
    """Index of the segment holding the first message at or after `timestamp`."""
    for index, segment in enumerate(segments):
        if segment.count and segment.last_timestamp >= timestamp:
            return index
    return None


class SegmentedLog:
    """What both logs derive from their segments: the offsets they span and their size."""

    segments: list[Segment]
    retention: Retention
    _next: int  # the offset the next record gets

    def set_retention(self, retention: Retention, now_ms: int) -> None:
        """osiris_log:update_retention: the new limits are evaluated at once (a
        new segment size counts from the next segment opened)."""
        self.retention = retention
        self._apply_retention(now_ms)

    def _apply_retention(self, now_ms: int) -> None:
        raise NotImplementedError

    @property
    def first_offset(self) -> int:
        return self.segments[0].first_offset if self.segments else self._next

    @property
    def next_offset(self) -> int:
        return self._next

    @property
    def size(self) -> int:
        return sum(segment.size for segment in self.segments)


class MemoryStreamLog(SegmentedLog):
    """The log without a data directory: records in memory, segmented as on disk."""

    def __init__(self, retention: Retention) -> None:
        self.retention = retention
        self.segments: list[Segment] = []
        self._records: list[list[StreamRecord]] = []
        self._next = 0

    def append(self, record: StreamRecord) -> None:
        current = self.segments[-1] if self.segments else None
        rolled = self.retention.needs_new_segment(current)
        if rolled:
            current = Segment(record.offset, record.offset, SEGMENT_HEADER, record.timestamp, record.timestamp)
            self.segments.append(current)
            self._records.append([])
        assert current is not None
        self._records[-1].append(record)
        current.next_offset = record.offset + 1
        current.size += record.size
        current.last_timestamp = record.timestamp
        self._next = record.offset + 1
        if self.retention.due(self.segments):
            self._apply_retention(record.timestamp)

    def _apply_retention(self, now_ms: int) -> None:
        doomed = self.retention.doomed(self.segments, now_ms)
        del self.segments[:doomed]
        del self._records[:doomed]

    def reader(self, offset: int) -> MemoryReader:
        return MemoryReader(self, offset)

    def record(self, offset: int) -> StreamRecord | None:
        if offset >= self._next or not self.segments:
            return None
        segments = self.segments
        index = len(segments) - 1
        while segments[index].first_offset > offset:  # readers are mostly in the newest
            index -= 1
        return self._records[index][offset - segments[index].first_offset]

    def offset_at(self, timestamp: int) -> int:
        index = first_at(self.segments, timestamp)
        if index is None:
            return self._next
        stamps = [record.timestamp for record in self._records[index]]
        return self.segments[index].first_offset + bisect.bisect_left(stamps, timestamp)

    def destroy(self) -> None:
        self.segments.clear()
        self._records.clear()


class MemoryReader:
    __slots__ = ("log", "position")

    def __init__(self, log: MemoryStreamLog, offset: int) -> None:
        self.log = log
        self.position = offset

    def next(self) -> StreamRecord | None:
        log = self.log
        if self.position < log.first_offset:
            self.position = log.first_offset  # retention went past it
        record = log.record(self.position)
        if record is not None:
            self.position += 1
        return record

    def close(self) -> None:
        pass
