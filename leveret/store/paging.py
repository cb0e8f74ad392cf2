"""Page files: where queues keep the ready entries they do not hold in memory (issue 19).

A paged entry is one record in its queue level's page file: the store's
PUBLISH record (records.py: the message as the publisher sent it, its seq,
TTL deadline and priority) behind the entry's delivery count and redelivered
flag, framed and CRC'd as every store file (frames.py). A level's entries are
read back in the order they were written, so a page file needs no index: a
write position, a read position and a count. In memory a paged entry costs
its message id (8 bytes in an array, for the store's purge) and nothing else.

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
from array import array
from itertools import count
from pathlib import Path

from leveret.queues.queue import Entry
from leveret.store.frames import FRAME, new_salt
from leveret.store.records import PUB, DecodeCaches, decode_message, new_caches, publish_record

log = logging.getLogger("leveret.store")

SEGMENT_BYTES = 16 * 1024 * 1024
WRITE_CHUNK = 256 * 1024
READ_CHUNK = 256 * 1024
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
        self._mids = array("Q")
        self._mid_start = 0  # mids before this index were read back
        pager.open_files += 1

    def __len__(self) -> int:
        return len(self._mids) - self._mid_start

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
                self._mid_start += 1
                pos = end
            self._read += pos
            if pos == 0 or self._read >= self._segment_end(segment):
                if pos == 0 and len(self._segments) == 1:
                    log.error("paging: %s ends %d entries early", self.directory, len(self))
                    self._mid_start = len(self._mids)
                    break
                self._next_segment()
        self._compact_mids()
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

    def _compact_mids(self) -> None:
        if self._mid_start > 65536 and self._mid_start * 2 > len(self._mids):
            del self._mids[: self._mid_start]
            self._mid_start = 0

    def message_ids(self) -> list[int]:
        """The store's ids of the persistent messages still paged (for a purge)."""
        return [mid for mid in self._mids[self._mid_start :] if mid]

    def clear(self) -> None:
        for segment in self._segments:
            os.close(segment.fd)
        self._segments.clear()
        self._buffer.clear()
        self._mids = array("Q")
        self._mid_start = 0
        shutil.rmtree(self.directory, ignore_errors=True)
        self.pager.open_files -= 1
