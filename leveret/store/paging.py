"""Page files: where queues keep the ready entries they do not hold in memory (issue 19).

A paged entry is one record in its queue level's page file: the store's
PUBLISH record (records.py: the message as the publisher sent it, its seq,
TTL deadline and priority) behind the entry's delivery count and redelivered
flag, framed and CRC'd as every store file (frames.py). A level's entries are
read back in the order they were written, so a page file needs no index: a
write position, a read position and a count. In memory a paged entry costs
its store message id, for a purge to release the store's segments without
reading the file back (`MessageIds`: a varint of the step from the previous
id, one or two bytes when a queue's ids are close, as they are), and
nothing else: RabbitMQ 3.10's classic queue index (v2) spends 32 bytes per
message on disk, and no memory for messages paged out (delta).

Files live under DIR/paging/ (the data directory's, else a temporary one made
on first use) in segments of SEGMENT_BYTES, deleted as soon as they are read
through; the directory is emptied at start, since what matters after a
restart (persistent messages) is in the store's own segments.

Writes are buffered (WRITE_CHUNK) and reads are slices of the queue's refill,
so the loop does one small write or read at a time. A write that fails (a full
disk) keeps its bytes in the buffer and is retried by the next one; they are
read back from the buffer if need be, so nothing is lost, only memory used.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import struct
import tempfile
import zlib
from itertools import count
from pathlib import Path

from leveret.queues.queue import Entry
from leveret.store.frames import FRAME, new_salt
from leveret.store.records import PUB, DecodeCaches, decode_message, new_caches, publish_record

log = logging.getLogger("leveret.store")

SEGMENT_BYTES = 16 * 1024 * 1024
WRITE_CHUNK = 256 * 1024
READ_CHUNK = 64 * 1024
STATE = struct.Struct("<IB")  # delivery count, redelivered


class PageFiles:
    """The pager the broker hands to queues (`Queue.pager`): one PageFile per paging level."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self._root = Path(directory) / "paging" if directory is not None else None
        self._temporary: str | None = None
        self._ids = count(1)
        self.caches: DecodeCaches = new_caches()
        self.open_files = 0
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)  # the last run's pages are stale

    @property
    def root(self) -> Path:
        if self._root is None:
            self._temporary = tempfile.mkdtemp(prefix="leveret-paging-")
            atexit.register(self.close)
            self._root = Path(self._temporary)
        return self._root

    def open(self, queue: str) -> PageFile:
        directory = self.root / f"{next(self._ids):08d}"
        directory.mkdir(parents=True, exist_ok=True)
        return PageFile(directory, self)

    def close(self) -> None:
        if self._temporary is not None:
            shutil.rmtree(self._temporary, ignore_errors=True)

    def bytes_on_disk(self) -> int:
        total = 0
        if self._root is not None and self._root.exists():
            for path in self._root.rglob("*.page"):
                try:
                    total += path.stat().st_size
                except FileNotFoundError:
                    pass
        return total


class MessageIds:
    """A sequence of message ids (0: transient), appended at the end and consumed
    from the front, packed as varints of zigzagged steps (0 stands for a transient one)."""

    __slots__ = ("_data", "_start", "_before", "_last", "count")

    def __init__(self) -> None:
        self._data = bytearray()
        self._start = 0  # bytes before this were consumed
        self._before = 0  # the last persistent id consumed
        self._last = 0  # the last persistent id appended
        self.count = 0

    def append(self, mid: int) -> None:
        self.count += 1
        if not mid:
            self._data.append(0)
            return
        step = mid - self._last
        self._last = mid
        value = ((step << 1) if step >= 0 else ((-step << 1) - 1)) + 1
        data = self._data
        while value >= 0x80:
            data.append((value & 0x7F) | 0x80)
            value >>= 7
        data.append(value)

    def consume(self, count: int) -> None:
        """Forget the first `count` ids."""
        pos, self._before = self._walk(self._start, count, self._before, None)
        self.count -= count
        data = self._data
        if pos > 65536 and pos * 2 > len(data):
            del data[:pos]
            pos = 0
        self._start = pos

    def ids(self) -> list[int]:
        """The persistent ids left, in order."""
        out: list[int] = []
        self._walk(self._start, self.count, self._before, out)
        return out

    def _walk(self, pos: int, count: int, last: int, out: list[int] | None) -> tuple[int, int]:
        """Decode `count` ids from byte `pos` (`last`: the persistent id before them):
        (the byte after them, the last persistent id), appending them to `out`."""
        data = self._data
        for _ in range(count):
            value = shift = 0
            while True:
                byte = data[pos]
                pos += 1
                value |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            if value:
                value -= 1
                last += -((value + 1) >> 1) if value & 1 else value >> 1
                if out is not None:
                    out.append(last)
        return pos, last

    def __len__(self) -> int:
        return self.count


class _Segment:
    __slots__ = ("number", "fd", "size", "salt")

    def __init__(self, directory: Path, number: int) -> None:
        self.number = number
        self.fd = os.open(directory / f"{number:06d}.page", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self.size = 0  # bytes on disk
        self.salt = new_salt()


class PageFile:
    """One queue level's paged entries, oldest first (a `PageLog`)."""

    def __init__(self, directory: Path, pager: PageFiles) -> None:
        self.directory = directory
        self.pager = pager
        self._segments: list[_Segment] = [_Segment(directory, 0)]
        self._buffer = bytearray()  # written after the last segment's `size`
        self._written = 0  # bytes appended to the last segment (on disk and buffered)
        self._read = 0  # read position in the first segment
        self._mids = MessageIds()
        pager.open_files += 1

    def __len__(self) -> int:
        return self._mids.count

    def append(self, entry: Entry) -> None:
        tail = self._segments[-1]
        if self._written >= SEGMENT_BYTES:
            self._flush()
            if not self._buffer:
                tail = _Segment(self.directory, tail.number + 1)
                self._segments.append(tail)
                self._written = 0
        message = entry.message
        header, head, body = publish_record(message.message_id, 0, entry, tail.salt)
        state = STATE.pack(entry.delivery_count, entry.redelivered)
        length = len(state) + len(head) + len(body)
        crc = zlib.crc32(body, zlib.crc32(head, zlib.crc32(state, tail.salt)))
        buffer = self._buffer
        buffer += FRAME.pack(length, crc)
        buffer += state
        buffer += head
        buffer += body
        self._written += FRAME.size + length
        self._mids.append(message.message_id)
        if len(buffer) >= WRITE_CHUNK:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        tail = self._segments[-1]
        try:
            written = os.pwrite(tail.fd, self._buffer, tail.size)
        except OSError as error:
            log.warning("paging: cannot write %s (%s); the entries stay in memory", self.directory, error)
            return
        tail.size += written
        del self._buffer[:written]

    def take(self, limit: int) -> list[Entry]:
        """Up to `limit` of the oldest entries, read back and removed from the file."""
        out: list[Entry] = []
        while len(out) < limit and len(self):
            segment = self._segments[0]
            data = self._chunk(segment, self._read, READ_CHUNK)
            pos = 0
            while len(out) < limit and pos + FRAME.size <= len(data):
                length, crc = FRAME.unpack_from(data, pos)
                end = pos + FRAME.size + length
                if end > len(data):
                    if pos == 0:  # one message larger than a chunk
                        data = self._chunk(segment, self._read, end)
                        continue
                    break
                entry = self._decode(data, pos + FRAME.size, end, crc, segment.salt)
                if entry is not None:
                    out.append(entry)
                self._mids.consume(1)
                pos = end
            self._read += pos
            if pos == 0 or self._read >= self._segment_end(segment):
                if pos == 0 and len(self._segments) == 1:
                    log.error("paging: %s ends %d entries early", self.directory, len(self))
                    self._mids.consume(len(self))
                    break
                self._next_segment()
        return out

    def _decode(self, data: bytes, start: int, end: int, crc: int, salt: int) -> Entry | None:
        if zlib.crc32(memoryview(data)[start:end], salt) != crc:
            log.error("paging: corrupt record in %s at offset %d: one message lost",
                      self.directory, self._read + start)
            return None
        delivery_count, redelivered = STATE.unpack_from(data, start)
        start += STATE.size
        fields = PUB.unpack_from(data, start)
        message = decode_message(data, start, fields, self.pager.caches)
        expires = fields[4]
        entry = Entry(message, fields[3], None if expires < 0 else expires, fields[5])
        entry.delivery_count = delivery_count
        entry.redelivered = bool(redelivered)
        return entry

    def _segment_end(self, segment: _Segment) -> int:
        return self._written if segment is self._segments[-1] else segment.size

    def _chunk(self, segment: _Segment, offset: int, size: int) -> bytes:
        """`size` bytes from `offset` of `segment`, from disk or from the unwritten buffer."""
        data = b""
        if offset < segment.size:
            data = os.pread(segment.fd, min(size, segment.size - offset), offset)
        if segment is self._segments[-1] and len(data) < size:
            start = offset + len(data) - segment.size
            data += bytes(self._buffer[start : start + size - len(data)])
        return data

    def _next_segment(self) -> None:
        """The first segment is read through: delete it (or reuse it, when it is the only one)."""
        segment = self._segments[0]
        if len(self._segments) == 1:
            if len(self) == 0:
                self._buffer.clear()
                os.ftruncate(segment.fd, 0)
                segment.size = self._written = self._read = 0
            return
        os.close(segment.fd)
        (self.directory / f"{segment.number:06d}.page").unlink(missing_ok=True)
        del self._segments[0]
        self._read = 0

    def message_ids(self) -> list[int]:
        """The store's ids of the persistent messages still paged (for a purge)."""
        return self._mids.ids()

    def clear(self) -> None:
        for segment in self._segments:
            os.close(segment.fd)
        self._segments.clear()
        self._buffer.clear()
        self._mids = MessageIds()
        shutil.rmtree(self.directory, ignore_errors=True)
        self.pager.open_files -= 1
