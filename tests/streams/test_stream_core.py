"""The stream queue type without sockets: arguments, offset specs, credit,
retention, and the file log's recovery (leveret.store.stream_log)."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import pytest
from leveret.amqp_wire.properties import decode_properties, encode_properties
from leveret.queues.arguments import parse_age, parse_queue_arguments
from leveret.queues.message import Message
from leveret.queues.queue import Entry, Queue
from leveret.queues.stream import OffsetSpec, StreamQueue, parse_offset_spec
from leveret.queues.stream_segments import MemoryStreamLog, Retention, stamp
from pamqp import exceptions
from pamqp.commands import Basic

from leveret.store.stream_log import MAGIC, READ_BLOCK, FileStreamLog
from tests.core.core_support import error_of


class Reader:
    """A consumer with a prefetch, as a channel's subscription."""

    def __init__(self, tag: str, prefetch: int) -> None:
        self.consumer_tag = tag
        self.priority = 0
        self.no_ack = False
        self.prefetch = prefetch
        self.unacked: list[Entry] = []
        self.offsets: list[int] = []

    def has_credit(self) -> bool:
        return len(self.unacked) < self.prefetch

    def deliver(self, queue: Queue, entry: Entry) -> None:
        self.unacked.append(entry)
        headers = decode_properties(entry.message.raw_properties or b"").headers or {}
        assert headers["x-stream-offset"] == entry.seq
        self.offsets.append(entry.seq)

    def ack_all(self, queue: StreamQueue) -> None:
        taken, self.unacked = self.unacked, []
        queue.ack(taken)
        queue.dispatch(0)


def message(body: bytes, headers: dict[str, object] | None = None) -> Message:
    properties = Basic.Properties(headers=headers, content_type="text/plain")
    return Message("", "q", properties, body, raw_properties=encode_properties(properties))


def stream(**arguments: object) -> StreamQueue:
    return StreamQueue("q", "/", durable=True, arguments={"x-queue-type": "stream", **arguments})


def subscribe(queue: StreamQueue, reader: Reader, spec: OffsetSpec) -> None:
    queue.subscribe(reader, spec)
    queue.add_consumer(reader, False, 0)
    queue.dispatch(0)


def test_max_age_units_and_errors() -> None:
    assert parse_age("7D") == 7 * 86_400_000
    assert parse_age("12h") == 12 * 3_600_000
    assert parse_age("30m") == 1_800_000
    assert parse_age("10s") == 10_000
    assert parse_age("1Y") == 365 * 86_400_000
    assert parse_age("2M") == 60 * 86_400_000
    assert parse_age("0D") is None
    assert parse_age("10ms") is None
    assert error_of(lambda: parse_age("D"))[0] == 541
    args = parse_queue_arguments({"x-queue-type": "stream", "x-max-age": "1h"}, "q", "/")
    assert args.max_age == 3_600_000


def test_offset_specs_parse_as_rabbitmq() -> None:
    assert parse_offset_spec(None, "q", "/", 0) == OffsetSpec("next")
    assert parse_offset_spec({"x-stream-offset": "first"}, "q", "/", 0) == OffsetSpec("first")
    assert parse_offset_spec({"x-stream-offset": b"last"}, "q", "/", 0) == OffsetSpec("last")
    assert parse_offset_spec({"x-stream-offset": 12}, "q", "/", 0) == OffsetSpec("offset", 12)
    assert parse_offset_spec({"x-stream-offset": "10m"}, "q", "/", 3_600_000) == OffsetSpec("timestamp", 3_000_000)
    moment = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    assert parse_offset_spec({"x-stream-offset": moment}, "q", "/", 0) == OffsetSpec(
        "timestamp", int(moment.timestamp()) * 1000)
    code, text = error_of(lambda: parse_offset_spec({"x-stream-offset": "5"}, "q", "/", 0))
    assert (code, text) == (406, "invalid arg 'x-stream-offset' for queue 'q' in vhost '/': "
                                 '{invalid_stream_offset_arg,{longstr,<<"5">>}}')
    assert error_of(lambda: parse_offset_spec({"x-stream-offset": True}, "q", "/", 0))[0] == 541


def test_each_consumer_reads_from_its_own_position_and_acks_move_credit() -> None:
    queue = stream()
    for index in range(10):
        queue.enqueue(message(f"m{index}".encode()), 1000 + index)
    first, middle, last, later = Reader("a", 3), Reader("b", 100), Reader("c", 100), Reader("d", 100)
    subscribe(queue, first, OffsetSpec("first"))
    subscribe(queue, middle, OffsetSpec("offset", 7))
    subscribe(queue, last, OffsetSpec("last"))
    subscribe(queue, later, OffsetSpec("next"))
    assert first.offsets == [0, 1, 2]  # its prefetch
    assert middle.offsets == [7, 8, 9]
    assert last.offsets == [9]
    assert later.offsets == []
    first.ack_all(queue)
    assert first.offsets == [0, 1, 2, 3, 4, 5]
    queue.enqueue(message(b"new"), 2000)
    assert later.offsets == [10]
    assert middle.offsets[-1] == 10
    assert queue.message_count == 11  # nothing left the stream


def test_timestamp_and_out_of_range_offsets() -> None:
    queue = stream()
    for index in range(10):
        queue.enqueue(message(b"m"), 1000 * index)
    at, below, beyond = Reader("a", 100), Reader("b", 100), Reader("c", 100)
    subscribe(queue, at, OffsetSpec("timestamp", 4500))
    subscribe(queue, below, OffsetSpec("offset", -3))
    subscribe(queue, beyond, OffsetSpec("offset", 12))
    assert at.offsets == [5, 6, 7, 8, 9]
    assert below.offsets[0] == 0
    for _ in range(3):
        queue.enqueue(message(b"more"), 20_000)
    assert beyond.offsets == [12]  # 10 and 11 were below where it asked to start


def test_basic_get_purge_and_stream_headers() -> None:
    queue = stream()
    assert error_of(lambda: queue.get(0, False)) == (540, "basic.get not supported by stream queues queue 'q' in vhost '/'")
    assert error_of(queue.purge)[0] == 540
    queue.enqueue(message(b"x", {"z": 1, "nested": {"a": 1}, "list": [1], "a": "text", "x-stream-offset": "mine"}), 0)
    reader = Reader("a", 1)
    subscribe(queue, reader, OffsetSpec("first"))
    raw = reader.unacked[0].message.raw_properties or b""
    headers = decode_properties(raw).headers or {}
    # Tables and arrays do not survive RabbitMQ's AMQP 1.0 record; the offset is set, then sorted.
    assert list(headers) == ["a", "x-stream-offset", "z"]
    assert headers["x-stream-offset"] == 0


def test_retention_drops_whole_segments_keeping_the_newest() -> None:
    queue = stream(**{"x-max-length-bytes": 5000, "x-stream-max-segment-size-bytes": 1000})
    for _ in range(100):
        queue.enqueue(message(b"x" * 50), 0)
    log = queue.log
    assert log.first_offset > 0
    assert log.segments[0].first_offset == log.first_offset
    assert sum(segment.size for segment in log.segments[:-1]) <= 5000
    reader = Reader("a", 1000)
    subscribe(queue, reader, OffsetSpec("first"))
    assert reader.offsets[-1] == log.next_offset - 1
    # Each segment after the first opens with an offset nobody is given.
    assert len(reader.offsets) < log.next_offset - log.first_offset


def test_age_retention_keeps_the_last_segment() -> None:
    queue = stream(**{"x-max-age": "10s", "x-stream-max-segment-size-bytes": 500})
    for index in range(20):
        queue.enqueue(message(b"x" * 100), index)
    assert queue.log.first_offset == 0  # all young
    queue.enqueue(message(b"x" * 100), 60_000)
    queue.enqueue(message(b"x" * 100), 60_000)
    queue.enqueue(message(b"x" * 100), 60_000)
    queue.enqueue(message(b"x" * 100), 60_000)
    assert queue.log.first_offset > 0
    assert all(segment.last_timestamp >= 50_000 for segment in queue.log.segments[:-1])


def records(log: MemoryStreamLog | FileStreamLog, count: int, size: int = 40, start_ts: int = 0) -> None:
    for index in range(count):
        log.append(stamp(message(bytes([index % 256]) * size), log.next_offset, start_ts + index))


def read_all(log: FileStreamLog, offset: int = 0) -> list[int]:
    reader = log.reader(offset)
    seen = []
    while (record := reader.next()) is not None:
        seen.append(record.offset)
    reader.close()
    return seen


def test_file_log_survives_reopening_with_offsets_unchanged(tmp_path: Path) -> None:
    retention = Retention(segment_bytes=2000)
    log = FileStreamLog(tmp_path / "s", retention)
    records(log, 100)
    log.flush_and_sync()
    log.close()
    again = FileStreamLog(tmp_path / "s", retention)
    assert (again.first_offset, again.next_offset) == (0, 100)
    assert read_all(again) == list(range(100))
    records(again, 5, start_ts=500)
    assert again.next_offset == 105
    assert again.offset_at(500) == 100
    first = again.reader(37).next()
    assert first is not None and first.offset == 37
    assert first.message().body == bytes([37]) * 40


def test_file_log_cuts_a_torn_tail(tmp_path: Path) -> None:
    log = FileStreamLog(tmp_path / "s", Retention())
    records(log, 10)
    log.close()
    segment = next((tmp_path / "s").glob("*.seg"))
    with open(segment, "ab") as file:
        file.write(b"\x00\x00\x01\x00garbage")  # a record cut short by a crash
    again = FileStreamLog(tmp_path / "s", Retention())
    assert again.next_offset == 10
    records(again, 2)
    again.close()
    assert read_all(FileStreamLog(tmp_path / "s", Retention())) == list(range(12))


def test_file_log_reads_with_bounded_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import leveret.store.stream_log as stream_log

    monkeypatch.setattr(stream_log, "TAIL_BYTES", 4096)
    log = FileStreamLog(tmp_path / "s", Retention(segment_bytes=1 << 20))
    records(log, 3000, size=1000)
    log.flush_and_sync()
    reader = log.reader(0)
    seen = 0
    largest = 0
    while (record := reader.next()) is not None:
        assert record.offset == seen
        seen += 1
        largest = max(largest, len(reader._buffer))
    assert seen == 3000
    assert largest <= READ_BLOCK + 2000  # one block, never the stream
    assert sum(os.path.getsize(path) for path in (tmp_path / "s").glob("*.seg")) > 2 * READ_BLOCK
    assert all(path.read_bytes()[:8] == MAGIC for path in (tmp_path / "s").glob("*.seg"))


def test_retention_on_disk_unlinks_segments_while_a_reader_finishes_its_own(tmp_path: Path) -> None:
    import leveret.store.stream_log as stream_log

    stream_log_tail = stream_log.TAIL_BYTES
    stream_log.TAIL_BYTES = 1
    try:
        log = FileStreamLog(tmp_path / "s", Retention(max_bytes=3000, segment_bytes=1000))
        records(log, 5)
        reader = log.reader(0)
        assert reader.next() is not None
        records(log, 100)
        log.flush_and_sync()
        assert log.first_offset > 0
        assert len(list((tmp_path / "s").glob("*.seg"))) == len(log.segments)
        seen = [1]
        while (record := reader.next()) is not None:
            seen.append(record.offset)
        assert seen[-1] == log.next_offset - 1
        log.destroy()
        assert not (tmp_path / "s").exists()
    finally:
        stream_log.TAIL_BYTES = stream_log_tail


def test_refused_arguments_on_declare() -> None:
    code, text = error_of(lambda: stream(**{"x-max-length": 1}))
    assert (code, text) == (406, "invalid arg 'x-max-length' for queue 'q' in vhost '/' of queue type rabbit_stream_queue")
    with pytest.raises(exceptions.AMQPPreconditionFailed):
        stream(**{"x-max-age": "1x"})


def test_the_playground_declares_streams_and_routes_into_them() -> None:
    from leveret.playground.runner import ErrorEvent, ExpectEvent, Runner

    events = Runner().run_text(
        'queue events durable queue-type=stream max-age="7D" segment-size=1000000\n'
        "exchange orders topic\n"
        'bind orders -> events "order.#"\n'
        'publish orders order.created "created 1"\n'
        'publish orders order.paid "paid 1"\n'
        "expect events has 2 messages\n"
        "get events\n"
        "expect error 540\n"
        "queue capped queue-type=stream max-length=10\n"
        "expect error 406\n"
    )
    assert [e.passed for e in events if isinstance(e, ExpectEvent)] == [True, True, True]
    assert [e.reply_text for e in events if isinstance(e, ErrorEvent)] == [
        "NOT_IMPLEMENTED - basic.get not supported by stream queues queue 'events' in vhost '/'",
        "PRECONDITION_FAILED - invalid arg 'x-max-length' for queue 'capped' in vhost '/' "
        "of queue type rabbit_stream_queue",
    ]
