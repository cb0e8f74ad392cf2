"""A stream: RabbitMQ 3.10's append-only, replayable queue type, over AMQP 0-9-1.

Theory of operation. A stream never removes a message because it was
delivered: every message is appended to a log at the next *offset* (0, 1, ...)
and stays until retention drops the oldest whole segment. Each consumer has
its own *position* in the log, chosen by `x-stream-offset` when it subscribes
(`first`, `last`, `next`, a number, a timestamp or an interval such as `10m`),
and reads forward from it while it has credit: its prefetch, freed by acks
(an ack moves credit and removes nothing; nack and reject are refused, as are
basic.get and queue.purge, by the frontend and here).

Invariants:
- The log (`StreamLog`) is the only place messages live; the queue holds no
  ready entries, so `message_count` is the number of messages retained.
- A message is stamped once, when appended, with its `x-stream-offset`
  header (RabbitMQ's rabbit_basic:add_header: a long, the table then sorted)
  and the content-header payload every delivery sends, so deliveries of any
  consumer at any time reuse the same bytes.
- Retention (`x-max-length-bytes`, `x-max-age`) runs when the log starts a new
  segment and drops whole segments, never the one being written, as osiris
  does; a consumer behind the new first offset continues from it.
- A policy's `max-length-bytes`, `max-age` and `stream-max-segment-size-bytes`
  win over the x-arguments (rabbit_stream_queue's policy_precedence); a change
  runs retention at once (osiris_log:update_retention).

Records, segments and retention are in `stream_segments`. The log is given by
the broker (`attach_log`): a `MemoryStreamLog` without a data directory,
leveret.store.stream_log's file log with one. Both keep the same segments and
so apply retention alike.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from leveret.queues.arguments import effective_queue_arguments, parse_age, type_name
from leveret.queues.message import Message
from leveret.queues.queue import Consumer, DeadLetter, Entry, Queue
from leveret.queues.stream_segments import (
    DEFAULT_SEGMENT_BYTES,
    MAX_SEGMENT_CHUNKS,
    OFFSET_HEADER,
    MemoryStreamLog,
    Retention,
    StreamLog,
    StreamReader,
    marker,
    stamp,
)
from pamqp import exceptions


# ------------------------------------------------------------ offset specs
@dataclass(frozen=True, slots=True)
class OffsetSpec:
    kind: str  # first | last | next | offset | timestamp
    value: int = 0


def parse_offset_spec(arguments: Mapping[str, Any] | None, queue: str, vhost: str, now_ms: int) -> OffsetSpec:
    """`x-stream-offset` as rabbit_stream_queue:parse_offset_arg reads it. What it
    accepts but osiris then crashes on (a bool, a float, a table, a string with no
    leading digits) closes the connection with 541, as RabbitMQ's channel dies."""
    if not arguments or OFFSET_HEADER not in arguments:
        return OffsetSpec("next")
    value = arguments[OFFSET_HEADER]
    text = value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else value
    if text in ("first", "last", "next"):
        return OffsetSpec(text)
    kind = type_name(value)
    if kind == "longstr" and isinstance(text, str):
        age = parse_age(text)
        if age is None:
            shown = text.replace("\\", "\\\\").replace('"', '\\"')
            raise exceptions.AMQPPreconditionFailed(
                f"invalid arg '{OFFSET_HEADER}' for queue '{queue}' in vhost '{vhost}': "
                f'{{invalid_stream_offset_arg,{{longstr,<<"{shown}">>}}}}'
            )
        return OffsetSpec("timestamp", now_ms - age)
    if isinstance(value, datetime.datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=datetime.UTC)
        return OffsetSpec("timestamp", int(moment.timestamp()) * 1000)
    if isinstance(value, int) and not isinstance(value, bool):
        return OffsetSpec("offset", value)
    raise exceptions.AMQPInternalError()


def start_position(log: StreamLog, spec: OffsetSpec) -> int:
    """Where a consumer with `spec` starts reading (osiris:init_reader)."""
    if spec.kind == "first":
        return log.first_offset
    if spec.kind == "last":
        # The last chunk; one message is one chunk here.
        return max(log.next_offset - 1, log.first_offset)
    if spec.kind == "next":
        return log.next_offset
    if spec.kind == "timestamp":
        return log.offset_at(spec.value)
    # A number below the first offset starts at the first; one past the end waits
    # there, and what is appended below it is never delivered (as in 3.10).
    return max(spec.value, log.first_offset)


# Consumer arguments other queue types own (rabbit_queue_type:arguments(consumer_arguments)).
FOREIGN_CONSUMER_ARGUMENTS = ("x-priority", "x-cancel-on-ha-failover")


def check_consume(queue: str, vhost: str, arguments: Mapping[str, Any] | None, *, prefetch: int,
                  global_prefetch: int, no_ack: bool, now_ms: int) -> OffsetSpec:
    """basic.consume on a stream, in RabbitMQ's order: the consumer arguments
    (rabbit_amqqueue:check_consume_arguments), then rabbit_stream_queue:consume's
    prefetch, no-ack and global-qos rules. Returns where the consumer starts."""
    spec = parse_offset_spec(arguments, queue, vhost, now_ms)
    for name in arguments or ():
        if name in FOREIGN_CONSUMER_ARGUMENTS:
            raise exceptions.AMQPPreconditionFailed(
                f"invalid arg '{name}' for queue '{queue}' in vhost '{vhost}' of queue type rabbit_stream_queue")
    if not prefetch:
        raise exceptions.AMQPPreconditionFailed(
            f"consumer prefetch count is not set for 'queue '{queue}' in vhost '{vhost}''")
    if no_ack:
        raise not_supported("automatic acknowledgement", queue, vhost)
    if global_prefetch:
        raise exceptions.AMQPNotImplemented(f"queue '{queue}' in vhost '{vhost}' does not support global qos")
    return spec


def not_supported(what: str, queue: str, vhost: str) -> exceptions.AMQPNotImplemented:
    return exceptions.AMQPNotImplemented(f"{what} not supported by stream queues queue '{queue}' in vhost '{vhost}'")


# ---------------------------------------------------------------- the queue
class StreamQueue(Queue):
    """A queue of type stream (see the module docstring)."""

    def __init__(self, name: str, vhost: str = "/", **kwargs: Any) -> None:
        super().__init__(name, vhost, **kwargs)
        self.retention = self._retention()
        self.log: StreamLog = MemoryStreamLog(self.retention)
        self.readers: dict[Consumer, StreamReader] = {}

    def _retention(self) -> Retention:
        args = self.args
        return Retention(args.max_length_bytes, args.max_age, args.max_segment_size_bytes or DEFAULT_SEGMENT_BYTES)

    def apply_policy(
        self, policy: str | None, operator_policy: str | None,
        definition: Mapping[str, Any] | None, now_ms: int,
    ) -> list[DeadLetter]:
        """The policy's limits replace the log's, which applies them at once."""
        self.policy, self.operator_policy = policy, operator_policy
        self.policy_definition = dict(definition) if definition else None
        self.args = effective_queue_arguments(self.arguments, definition, "stream")
        retention = self._retention()
        if retention != self.retention:
            self.retention = retention
            self.log.set_retention(retention, now_ms)
        return []

    def attach_log(self, log: StreamLog) -> None:
        """The broker's log for this stream (a file log with a data directory)."""
        self.log = log

    # ----------------------------------------------------------- counts
    @property
    def message_count(self) -> int:
        log = self.log
        return log.next_offset - log.first_offset

    @property
    def ready_bytes(self) -> int:
        return self.log.size

    def ready_entries(self) -> list[Entry]:
        return []

    # ---------------------------------------------------------- publish
    def enqueue(self, message: Message, now_ms: int) -> tuple[bool, list[DeadLetter]]:
        self.stats["published"] += 1
        log = self.log
        segments = log.segments
        if segments and segments[-1].size >= self.retention.segment_bytes or (
                segments and segments[-1].count >= MAX_SEGMENT_CHUNKS):
            log.append(marker(log.next_offset, now_ms))  # the segment is full: a new one opens
        log.append(stamp(message, log.next_offset, now_ms))
        if self.consumers:
            self.dispatch(now_ms)
        return True, []

    def refuses_publish(self, size: int) -> bool:
        return False

    def wants_flow_control(self) -> bool:
        return False

    # --------------------------------------------------------- delivery
    def has_ready_for(self, consumer: Consumer) -> bool:
        reader = self.readers.get(consumer)
        return reader is not None and reader.position < self.log.next_offset

    def dispatch(self, now_ms: int) -> list[DeadLetter]:
        """Each consumer reads on from its own position while it has credit."""
        delivered = 0
        for consumer in list(self.consumers):
            reader = self.readers.get(consumer)
            if reader is None:
                continue
            has_credit, deliver, read = consumer.has_credit, consumer.deliver, reader.next
            while has_credit():
                record = read()
                if record is None:
                    break
                if not record.header:
                    continue  # a segment's tracking marker
                delivered += 1
                self._unacked += 1
                deliver(self, Entry(record.message(), record.offset, None, 0))
        self.stats["delivered"] += delivered
        return []

    def get(self, now_ms: int, no_ack: bool) -> tuple[Entry | None, list[DeadLetter]]:
        raise not_supported("basic.get", self.name, self.vhost)

    # --------------------------------------------------------- settling
    def ack(self, entries: Iterable[Entry]) -> None:
        """Credit goes back to the consumer (the channel counts it); nothing leaves the log."""
        for _ in entries:
            self._unacked -= 1
            self.stats["acked"] += 1

    def requeue(self, entries: Iterable[Entry], now_ms: int, *, consumer_gone: bool = False) -> list[DeadLetter]:
        # Only a closing channel gets here (nack is refused): its deliveries are let go.
        for _ in entries:
            self._unacked -= 1
        return []

    def reject(self, entries: Iterable[Entry]) -> list[DeadLetter]:
        for _ in entries:
            self._unacked -= 1
        return []

    # -------------------------------------------------------- consumers
    def subscribe(self, consumer: Consumer, spec: OffsetSpec) -> None:
        """Give `consumer` its reader before it is added (add_consumer)."""
        self.readers[consumer] = self.log.reader(start_position(self.log, spec))

    def remove_consumer(self, consumer: Consumer, now_ms: int, holding: bool = False) -> None:
        super().remove_consumer(consumer, now_ms, holding)
        reader = self.readers.pop(consumer, None)
        if reader is not None:
            reader.close()

    # -------------------------------------------------------- lifecycle
    def next_deadline(self) -> int | None:
        return None

    def expiry_deadline(self) -> int | None:
        return None

    def purge(self) -> int:
        raise not_supported("queue.purge", self.name, self.vhost)

    def mark_deleted(self) -> int:
        """Deleted: RabbitMQ's delete-ok of a stream counts no messages."""
        self.deleted = True
        for reader in self.readers.values():
            reader.close()
        self.readers.clear()
        self.log.destroy()
        return 0

    def restore(self, entries: list[Entry]) -> list[DeadLetter]:
        return []
