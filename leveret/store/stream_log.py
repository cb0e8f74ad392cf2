"""A stream's log on disk: append-only segment files, read back by each consumer.

Files, in the stream's own directory (streams/<queue id>/ under the data directory):
    NNNNNNNNNNNNNNNNNNNN.seg   records from offset N on; a new file once one reaches
                               the stream's x-stream-max-segment-size-bytes
    NNNNNNNNNNNNNNNNNNNN.idx   written when its segment is full: the segment's last
                               offset and timestamps, so opening reads no full segment
Each segment starts with a magic; each record is `u32 length, u32 crc32(payload),
payload`, the payload `u64 offset, i64 timestamp ms, u32 size in its segment, u16 route length, route,
u32 header length, content header, body` (queues.stream_segments.StreamRecord).

Writing. `append` (loop thread) frames the record into a pending buffer and
tells the store, whose writer thread writes and fdatasyncs it before the
publisher's confirm goes out (group commit, as for classic queues). Before the
broker next writes to a socket, `write_through` puts pending records in the
page cache, so a message is never delivered before it is in a file a kill -9
cannot lose: after a restart every offset a consumer saw holds the same message.

Reading. A consumer's `FileReader` reads its segment in blocks of READ_BLOCK
bytes and decodes records one at a time, so reading a stream from `first`
holds one block per consumer, whatever the stream's size. The newest records
are also kept in memory (a tail of at most TAIL_BYTES), so consumers keeping up
with publishers never touch the files.

Recovery. Segments with an .idx are taken as they say; the last one is scanned,
and a torn or corrupt tail (a crash mid-write) is cut at the last whole record.
Retention (queues.stream_segments.Retention) unlinks whole segments; an open reader keeps
reading its unlinked file, as with osiris, and then moves to the first offset left.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from leveret.queues.stream_segments import (
    SEGMENT_HEADER,
    Retention,
    Segment,
    SegmentedLog,
    StreamRecord,
)

log = logging.getLogger("leveret.store.stream")

MAGIC = b"LVSTRM01"
READ_BLOCK = 1 << 20
TAIL_BYTES = 8 << 20
_FRAME = struct.Struct(">II")
_FIXED = struct.Struct(">QqIH")
_LEN = struct.Struct(">I")
_IDX = struct.Struct(">QQqqQ")  # next offset, size, first ts, last ts, crc-less sanity (= first offset)
_fdatasync = getattr(os, "fdatasync", os.fsync)


def encode_record(record: StreamRecord) -> tuple[bytes, ...]:
    """The record's frame, in parts (appended to the pending buffer one by one: no join)."""
    fixed = _FIXED.pack(record.offset, record.timestamp, record.size, len(record.route))
    header = record.header
    header_length = _LEN.pack(len(header))
    crc = zlib.crc32(record.body, zlib.crc32(header, zlib.crc32(header_length, zlib.crc32(
        record.route, zlib.crc32(fixed)))))
    length = len(fixed) + len(record.route) + 4 + len(header) + len(record.body)
    return _FRAME.pack(length, crc), fixed, record.route, header_length, header, record.body


def decode_payload(buffer: bytes, start: int, end: int) -> StreamRecord:
    """The record whose payload is buffer[start:end]."""
    offset, timestamp, size, route_length = _FIXED.unpack_from(buffer, start)
    at = start + _FIXED.size
    route = buffer[at:at + route_length]
    at += route_length
    (header_length,) = _LEN.unpack_from(buffer, at)
    at += 4
    header = buffer[at:at + header_length]
    body = buffer[at + header_length:end]
    if not route:  # a segment's tracking marker
        return StreamRecord(offset, timestamp, size, "", "", route, header, body)
    exchange_end = 1 + route[0]
    exchange = route[1:exchange_end].decode("utf-8", "surrogateescape")
    routing_key = route[exchange_end + 1:].decode("utf-8", "surrogateescape")
    return StreamRecord(offset, timestamp, size, exchange, routing_key, route, header, body)


def _segment_name(first_offset: int) -> str:
    return f"{first_offset:020d}"


class FileStreamLog(SegmentedLog):
    """One stream's segments (see the module docstring). Loop thread, except
    `flush_and_sync`, which the store's writer thread calls."""

    def __init__(self, directory: Path, retention: Retention,
                 on_append: Callable[[FileStreamLog], None] | None = None) -> None:
        self.directory = directory
        self.retention = retention
        self.on_append = on_append  # the store: a confirm now waits for this log
        self.segments: list[Segment] = []
        self._next = 0
        self._fd: int | None = None  # the segment being written
        self._pending = bytearray()
        self._unsealed: list[Segment] = []  # full segments whose .idx is still to write
        self._unlink: list[int] = []
        self._lock = threading.Lock()
        self._io_lock = threading.Lock()
        self._tail: deque[StreamRecord] = deque()
        self._tail_bytes = 0
        self.destroyed = False
        directory.mkdir(parents=True, exist_ok=True)
        self._recover()

    # ------------------------------------------------------------ recovery
    def _recover(self) -> None:
        firsts = sorted(int(path.stem) for path in self.directory.glob("*.seg") if path.stem.isdigit())
        for position, first in enumerate(firsts):
            last = position == len(firsts) - 1
            segment = None if last else self._read_index(first)
            if segment is None:
                segment = self._scan(first, truncate=last)
            if segment.count or last:
                self.segments.append(segment)
            else:
                (self.directory / f"{_segment_name(first)}.seg").unlink(missing_ok=True)
        if self.segments:
            self._next = self.segments[-1].next_offset
            if not self.segments[-1].count and len(self.segments) == 1:
                self._next = self.segments[-1].first_offset
            path = self.directory / f"{_segment_name(self.segments[-1].first_offset)}.seg"
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)

    def _read_index(self, first: int) -> Segment | None:
        try:
            data = (self.directory / f"{_segment_name(first)}.idx").read_bytes()
            next_offset, size, first_ts, last_ts, check = _IDX.unpack(data)
        except (OSError, struct.error):
            return None
        if check != first:
            return None
        return Segment(first, next_offset, size, first_ts, last_ts)

    def _scan(self, first: int, truncate: bool) -> Segment:
        path = self.directory / f"{_segment_name(first)}.seg"
        segment = Segment(first, first, SEGMENT_HEADER, 0, 0)
        good = len(MAGIC)
        with open(path, "rb") as file:
            if file.read(len(MAGIC)) != MAGIC:
                good = 0
            else:
                for end, record in _records(file, good):
                    if record.offset != segment.next_offset:
                        break
                    if not segment.count:
                        segment.first_timestamp = record.timestamp
                    segment.next_offset = record.offset + 1
                    segment.last_timestamp = record.timestamp
                    segment.size += record.size
                    good = end
        if truncate and path.stat().st_size != good:
            log.warning("stream %s: segment %s cut to its last whole record (%d bytes)",
                        self.directory.name, path.name, good)
            with open(path, "r+b") as file:
                if good == 0:
                    file.write(MAGIC)
                    good = len(MAGIC)
                file.truncate(good)
                os.fsync(file.fileno())
        return segment

    # ------------------------------------------------------------- reading
    def reader(self, offset: int) -> FileReader:
        return FileReader(self, offset)

    def tail_record(self, offset: int) -> StreamRecord | None:
        tail = self._tail
        if tail and tail[0].offset <= offset < self._next:
            return tail[offset - tail[0].offset]
        return None

    def segment_index(self, offset: int) -> int:
        segments = self.segments
        index = len(segments) - 1
        while index > 0 and segments[index].first_offset > offset:
            index -= 1
        return index

    def path_of(self, segment: Segment) -> Path:
        return self.directory / f"{_segment_name(segment.first_offset)}.seg"

    def offset_at(self, timestamp: int) -> int:
        for segment in self.segments:
            if segment.count and segment.last_timestamp >= timestamp:
                reader = FileReader(self, segment.first_offset)
                try:
                    while True:
                        record = reader.next()
                        if record is None:
                            return self._next
                        if record.timestamp >= timestamp:
                            return record.offset
                finally:
                    reader.close()
        return self._next

    # ------------------------------------------------------------- writing
    # Locks: `_lock` guards the pending buffer and the lists both threads take
    # (held for microseconds: the loop's appends only ever wait on it); `_io_lock`
    # makes writes to the segment file one at a time, in order (a buffer is
    # taken and written while holding it), and guards the file being replaced.
    def append(self, record: StreamRecord) -> None:
        segments = self.segments
        current = segments[-1] if segments else None
        if current is None or (current.count and self.retention.needs_new_segment(current)):
            with self._io_lock:
                self._roll(record)
            current = segments[-1]
        offset = record.offset
        parts = encode_record(record)
        with self._lock:
            pending = self._pending
            if not pending:
                self._pending_first = offset
            pending += b"".join(parts)
        if current.next_offset == current.first_offset:
            current.first_timestamp = record.timestamp
        current.next_offset = offset + 1
        current.size += record.size
        current.last_timestamp = record.timestamp
        self._next = offset + 1
        tail = self._tail
        tail.append(record)
        self._tail_bytes += record.size
        while self._tail_bytes > TAIL_BYTES and len(tail) > 1:
            if self._pending and tail[0].offset >= self._pending_first:
                self.write_pending()  # what leaves the tail must be in a file
            self._tail_bytes -= tail.popleft().size
        if current.next_offset - current.first_offset == 2 and len(segments) > 1:
            self._apply_retention(record.timestamp)  # Retention.due
        if self.on_append is not None:
            self.on_append(self)

    def _roll(self, record: StreamRecord) -> None:
        """Holding `_io_lock`: start a new segment at `record`, the old one's pending bytes first."""
        if self._fd is not None:
            self._write_taken()
            with self._lock:
                self._unsealed.append(self.segments[-1])
            os.close(self._fd)  # after its last write; flush_and_sync fsyncs it by path
        path = self.directory / f"{_segment_name(record.offset)}.seg"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if os.fstat(self._fd).st_size == 0:
            os.write(self._fd, MAGIC)
        self.segments.append(Segment(record.offset, record.offset, SEGMENT_HEADER, record.timestamp, record.timestamp))

    def set_retention(self, retention: Retention, now_ms: int) -> None:
        super().set_retention(retention, now_ms)
        if self._unlink and self.on_append is not None:
            self.on_append(self)  # the writer thread deletes the dropped files

    def _apply_retention(self, now_ms: int) -> None:
        doomed = self.retention.doomed(self.segments, now_ms)
        if doomed:
            with self._lock:
                for segment in self.segments[:doomed]:
                    self._unlink.append(segment.first_offset)
                    if segment in self._unsealed:
                        self._unsealed.remove(segment)
            del self.segments[:doomed]

    def write_pending(self) -> None:
        """Loop thread: pending records into the page cache (what a kill -9 cannot lose)."""
        if self._pending:
            with self._io_lock:
                self._write_taken()

    def _write_taken(self) -> None:
        """Holding `_io_lock`: take the pending bytes and write them."""
        with self._lock:
            data, self._pending = self._pending, bytearray()
        if data and self._fd is not None:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            view.release()
            self._dirty = True

    _dirty = False
    _pending_first = 0

    def flush_and_sync(self) -> None:
        """Writer thread: write what is pending, fdatasync it, seal full segments, drop doomed ones."""
        with self._io_lock:
            if self.destroyed:
                return
            self._write_taken()
            fd = os.dup(self._fd) if self._fd is not None and self._dirty else None
            self._dirty = False
            with self._lock:
                unsealed, self._unsealed = self._unsealed, []
                unlink, self._unlink = self._unlink, []
        for segment in unsealed:
            with open(self.path_of(segment), "rb+") as file:
                _fdatasync(file.fileno())
            index = self.directory / f"{_segment_name(segment.first_offset)}.idx"
            data = _IDX.pack(segment.next_offset, segment.size, segment.first_timestamp,
                             segment.last_timestamp, segment.first_offset)
            with open(index, "wb") as file:
                file.write(data)
                _fdatasync(file.fileno())
        if fd is not None:
            try:
                _fdatasync(fd)
            finally:
                os.close(fd)
        for first in unlink:
            (self.directory / f"{_segment_name(first)}.seg").unlink(missing_ok=True)
            (self.directory / f"{_segment_name(first)}.idx").unlink(missing_ok=True)
        if unsealed or unlink:
            _fsync_directory(self.directory)

    def close(self) -> None:
        with self._io_lock:
            self._write_taken()
            if self._fd is not None:
                _fdatasync(self._fd)
                os.close(self._fd)
                self._fd = None

    def destroy(self) -> None:
        """The stream was deleted: its files go."""
        with self._io_lock, self._lock:
            self.destroyed = True
            self._pending.clear()
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        self.segments.clear()
        self._tail.clear()
        shutil.rmtree(self.directory, ignore_errors=True)


def _records(file: BinaryIO, start: int) -> Iterator[tuple[int, StreamRecord]]:
    """(end position, record) for each whole, valid record from `start` on."""
    file.seek(start)
    position = start
    while True:
        head = file.read(_FRAME.size)
        if len(head) < _FRAME.size:
            return
        length, crc = _FRAME.unpack(head)
        payload = file.read(length)
        if len(payload) < length or zlib.crc32(payload) != crc or length < _FIXED.size + 4:
            return
        position += _FRAME.size + length
        yield position, decode_payload(payload, 0, length)


def _fsync_directory(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class FileReader:
    """A consumer's position in a file log: one open segment, one block in memory."""

    __slots__ = ("log", "position", "_fd", "_segment_first", "_buffer", "_at", "_file_pos")

    def __init__(self, log: FileStreamLog, offset: int) -> None:
        self.log = log
        self.position = offset
        self._fd: int | None = None
        self._segment_first = -1
        self._buffer = b""
        self._at = 0
        self._file_pos = 0

    def next(self) -> StreamRecord | None:
        log = self.log
        if self.position < log.first_offset:
            self.position = log.first_offset
            self._drop_file()
        if self.position >= log.next_offset:
            return None
        record = log.tail_record(self.position)
        if record is None:
            record = self._from_file()
        if record is not None:
            self.position = record.offset + 1
        return record

    def _from_file(self) -> StreamRecord | None:
        log = self.log
        while True:
            if self._fd is None:
                index = log.segment_index(self.position)
                segment = log.segments[index]
                try:
                    self._fd = os.open(log.path_of(segment), os.O_RDONLY)
                except FileNotFoundError:
                    return None  # retention took it; next() starts again at the first
                self._segment_first = segment.first_offset
                self._buffer, self._at, self._file_pos = b"", 0, len(MAGIC)
            record = self._next_in_file()
            if record is None:
                # The end of this segment's file: on to the next segment, if any.
                index = log.segment_index(self.position)
                if log.segments[index].first_offset == self._segment_first:
                    log.write_pending()  # the record is in the tail, or pending
                    record = self._next_in_file()
                    if record is None:
                        return None
                else:
                    self._drop_file()
                    continue
            if record.offset < self.position:
                continue  # a numeric offset inside the segment: skip up to it
            return record

    def _next_in_file(self) -> StreamRecord | None:
        buffer, at = self._buffer, self._at
        if len(buffer) - at >= _FRAME.size:
            length, crc = _FRAME.unpack_from(buffer, at)
            end = at + _FRAME.size + length
            if end <= len(buffer):
                self._at = end
                return decode_payload(buffer, at + _FRAME.size, end)
        # Refill: keep the partial record, read the next block after it.
        rest = buffer[at:]
        assert self._fd is not None
        data = os.pread(self._fd, max(READ_BLOCK, _FRAME.size + self._needed(rest)), self._file_pos)
        if not data:
            return None
        self._file_pos += len(data)
        self._buffer, self._at = rest + data, 0
        buffer = self._buffer
        if len(buffer) < _FRAME.size:
            return None
        length, _ = _FRAME.unpack_from(buffer, 0)
        if _FRAME.size + length > len(buffer):
            return None  # the record's end is not written yet
        self._at = _FRAME.size + length
        return decode_payload(buffer, _FRAME.size, self._at)

    @staticmethod
    def _needed(rest: bytes) -> int:
        if len(rest) >= _FRAME.size:
            length: int = _FRAME.unpack_from(rest, 0)[0]
            return length
        return 0

    def _drop_file(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = None
        self._segment_first = -1
        self._buffer, self._at = b"", 0

    def close(self) -> None:
        self._drop_file()


class StreamFiles:
    """The store's streams: one FileStreamLog per durable stream, by queue id."""

    def __init__(self, directory: Path, on_append: Callable[[FileStreamLog], None]) -> None:
        self.directory = directory / "streams"
        self.on_append = on_append
        self.logs: dict[int, FileStreamLog] = {}

    def open(self, qid: int, retention: Retention) -> FileStreamLog:
        existing = self.logs.get(qid)
        if existing is not None:
            return existing
        stream = self.logs[qid] = FileStreamLog(self.directory / str(qid), retention, self.on_append)
        return stream

    def delete(self, qid: int) -> None:
        stream = self.logs.pop(qid, None)
        if stream is not None:
            stream.destroy()
        else:
            shutil.rmtree(self.directory / str(qid), ignore_errors=True)

    def prune(self, known: set[int]) -> None:
        """After recovery: the directories of streams no longer declared go."""
        if not self.directory.is_dir():
            return
        for path in self.directory.iterdir():
            if path.name.isdigit() and int(path.name) not in known:
                log.info("stream files of queue id %s removed: the stream is gone", path.name)
                shutil.rmtree(path, ignore_errors=True)

    def write_through(self) -> None:
        for stream in self.logs.values():
            stream.write_pending()

    def sync(self, logs: set[FileStreamLog]) -> None:
        for stream in logs:
            stream.flush_and_sync()

    def close(self) -> None:
        for stream in self.logs.values():
            stream.close()
