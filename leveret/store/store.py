"""Message persistence: durable topology and persistent messages on disk.

What is kept. Durable exchanges, durable queues and bindings between durable
ends (as RabbitMQ keeps them), and every persistent message (delivery_mode 2)
in a durable queue, with its per-queue state: sequence number (queue order),
absolute TTL deadline, priority, whether it was handed to a consumer, and
its delivery count (x-delivery-limit). Persistent messages waiting on a
durable x-delayed-message exchange are entries of a per-vhost pseudo-queue,
their release time as deadline. Transient things are never written.

Design: append-only segment files with per-segment ack logs, as LavinMQ does,
not SQLite. Why:
- A persistent message is written once, as one record, by one `os.write` of
  a batch; nothing is read back while the broker runs (messages also live in
  memory), so there is no B-tree, no index and no row update per delivery.
  The only per-message costs on the event loop are a struct.pack and a CRC
  (~2 us); SQLite would add an INSERT, an UPDATE (delivered) and a DELETE
  (ack) per message, each a round trip through its VM, plus checkpoints.
- Space comes back in whole files: a segment (8 MiB of messages) and its ack
  log are unlinked together once no queue holds any message in it, so a steady
  publish/ack load keeps a couple of segments on disk, with no VACUUM and no
  compaction pass. (The cost: one message that is never consumed keeps its
  whole segment; see `Store.stats`.)
- A torn or corrupt record is a CRC mismatch at a known offset: recovery
  drops exactly that record (the tail after a torn write is truncated; in the
  middle it re-synchronises on the next valid frame) and says so in the log,
  instead of an opaque "database disk image is malformed".

Files under the data directory:
    lock                   flock'ed while a broker uses the directory
    topology.log           durable exchanges, queues (with their queue ids) and bindings;
                           rewritten as a snapshot at boot and when mostly history
    msgs/NNNNNNNNNN.msg    PUBLISH records: the message, its first queue's entry
    msgs/NNNNNNNNNN.ack    state records for the messages of that segment only:
                           ENQUEUE (more queues), DELIVERED, REMOVED, REQUEUED, PURGED
Each file starts with a magic and a random salt; each record is
`u32 length, u32 crc32(payload, seed=salt), payload`, so a record copied from
elsewhere (say, inside a message body) never verifies.

Because every record about a message lives in that message's own segment,
a segment's files can be deleted as soon as its messages are all gone, and
recovery replays each segment on its own: PUBLISH creates (mid, qid) state,
the ack log moves it; what is left is in the queue, ordered by its `seq`.

Durability. Records are appended to in-memory buffers on the event-loop
thread; a writer thread (`start`) writes them and fdatasyncs (group commit:
whatever accumulated while the previous fsync ran goes into the next one).
`position` counts records that a publisher confirm must wait for (PUBLISH,
ENQUEUE and topology); after a batch is on stable storage the thread sets
`synced` and calls `notify` (the asyncio shell turns that into a call of
`completed()` on the loop), which releases `when_durable` callbacks. So a
confirm for a persistent message in a durable queue is sent after fsync, and
a slow disk only delays confirms, never the event loop.

Records no confirm waits for (delivered, removed, requeued) are written
within WRITE_DELAY and fsynced every SYNC_INTERVAL. Two kinds are written
*through* before the broker next writes to a socket (`write_through`, called
by the shell): DELIVERED, so that after a kill -9 a message a consumer got
and did not ack comes back with `redelivered` set, and topology changes, so a
declare-ok is never followed by a queue a kill -9 forgot. Both reach the page
cache, which a killed process cannot lose; only a power cut can, and then
RabbitMQ loses them too. An ack that did not reach the disk before a crash
means the message is delivered once more, with `redelivered` set: at least
once, never lost.

This module does file I/O and runs one thread, but knows nothing of asyncio:
the shell (leveret.server.shell) passes `notify` and bridges it to the loop.
"""

from __future__ import annotations

import bisect
import gc
import logging
import os
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from leveret.amqp_wire.fieldtable import decode_table_plain, encode_table
from leveret.amqp_wire.properties import decode_properties, encode_properties
from leveret.queues.message import Message
from leveret.queues.queue import DeadLetter, Entry, Queue
from leveret.queues.stream import StreamQueue
from leveret.store.stream_log import FileStreamLog, StreamFiles

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("leveret.store")

SEGMENT_SIZE = 8 * 1024 * 1024  # LavinMQ's default segment size
WRITE_DELAY = 0.05  # seconds a record no confirm waits for may sit in memory
SYNC_INTERVAL = 1.0  # seconds between fsyncs of files no confirm waits for
TOPOLOGY_COMPACT_MIN = 10_000  # topology.log is rewritten when twice as long as the topology, and this

_fdatasync = getattr(os, "fdatasync", os.fsync)

_MAGIC_MSG = b"LVRTMSG\x01"
_MAGIC_ACK = b"LVRTACK\x01"
_MAGIC_TOPOLOGY = b"LVRTTOP\x01"
_HEADER = struct.Struct("<8sI")  # magic, salt
_FRAME = struct.Struct("<II")  # payload length, crc32(payload, salt)
_MAX_RECORD = 1 << 31

# Message segment records.
_PUBLISH = 0x50  # P
# type, mid, qid, seq, expires_at (-1: none), priority, exchange length,
# routing key length, extra routing keys (0: just the routing key), properties length, body length
_PUB = struct.Struct("<BQIQqBBHHII")
# Ack log records.
_ENQUEUE, _DELIVERED, _REMOVED, _REQUEUED, _PURGED = 0x45, 0x44, 0x52, 0x51, 0x55  # E D R Q U
_ENQ = struct.Struct("<BQIQqB")  # type, mid, qid, seq, expires_at, priority
_REF = struct.Struct("<BQI")  # type, mid, qid (delivered, removed)
_REQ = struct.Struct("<BQII")  # type, mid, qid, delivery count
_PURGE = struct.Struct("<BIQ")  # type, qid, every ready message up to this mid
# Topology records: a type byte, then u32-length-prefixed fields.
_EXCHANGE, _EXCHANGE_DELETED = 0x58, 0x78  # X x
_QUEUE, _QUEUE_DELETED = 0x51, 0x71  # Q q
_BINDING, _UNBINDING = 0x42, 0x62  # B b
_DELAY_QUEUE = 0x44  # D: the qid that holds a vhost's delayed messages (x-delayed-message)
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")

_TOPOLOGY_KEY = -1  # pending-buffer key of topology.log; segment n: 2n (.msg), 2n+1 (.ack)
_CACHE_SIZE = 4096


class StoreLocked(RuntimeError):
    """Another broker holds the data directory."""


# ---------------------------------------------------------------- interfaces
class ExchangeLike(Protocol):
    name: str
    durable: bool
    auto_delete: bool
    internal: bool
    arguments: dict[str, Any]

    @property
    def type_name(self) -> str: ...


class DestinationLike(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def name(self) -> str: ...


class BindingLike(Protocol):
    @property
    def source(self) -> str: ...
    @property
    def binding_key(self) -> str: ...
    @property
    def destination(self) -> DestinationLike: ...

    @property
    def arguments_dict(self) -> dict[str, Any]: ...


class DelayedLike(Protocol):
    """A message waiting on an x-delayed-message exchange (leveret.exchanges.delayed.DelayedMessage)."""

    @property
    def deliver_at(self) -> int: ...
    @property
    def seq(self) -> int: ...
    @property
    def message(self) -> Message: ...


class TopologyJournal(Protocol):
    """What a VirtualHost tells about durable topology (leveret.broker.vhost calls it)."""

    def exchange_declared(self, vhost: str, exchange: ExchangeLike) -> None: ...
    def exchange_deleted(self, vhost: str, exchange: ExchangeLike) -> None: ...
    def queue_declared(self, vhost: str, queue: Queue) -> None: ...
    def queue_deleted(self, vhost: str, queue: Queue) -> None: ...
    def bound(self, vhost: str, binding: BindingLike) -> None: ...
    def unbound(self, vhost: str, binding: BindingLike) -> None: ...
    def attach_queue(self, vhost: str, queue: Queue, now_ms: int) -> list[DeadLetter]: ...
    def delayed(self, vhost: str, entry: DelayedLike) -> None: ...
    def released(self, vhost: str, entry: DelayedLike) -> None: ...
    def recovered_delayed(self, vhost: str) -> list[Entry]: ...


@dataclass(slots=True)
class RecoveryReport:
    """What `Store.open` found on disk."""

    exchanges: int = 0
    queues: int = 0
    bindings: int = 0
    messages: int = 0  # queue entries (a message in two queues counts twice)
    segments: int = 0
    bytes_read: int = 0
    seconds: float = 0.0
    dropped: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = (
            f"{self.exchanges} exchanges, {self.queues} queues, {self.bindings} bindings, "
            f"{self.messages} messages from {self.segments} segments "
            f"({self.bytes_read / 1e6:.1f} MB) in {self.seconds:.2f} s"
        )
        if self.dropped:
            text += f"; dropped {len(self.dropped)} damaged part(s), see the log"
        return text


# ------------------------------------------------------------------ records
def _frame(payload: bytes, salt: int) -> bytes:
    return _FRAME.pack(len(payload), zlib.crc32(payload, salt)) + payload


def _fields(kind: int, *values: bytes) -> bytes:
    return bytes((kind,)) + b"".join(_U32.pack(len(v)) + v for v in values)


def _unfields(payload: bytes) -> list[bytes]:
    values, pos, end = [], 1, len(payload)
    while pos < end:
        (size,) = _U32.unpack_from(payload, pos)
        pos += 4
        values.append(payload[pos : pos + size])
        pos += size
    return values


def _text(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape")


def _str(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape")


def _flags(*bits: bool) -> bytes:
    return bytes((sum(1 << i for i, bit in enumerate(bits) if bit),))


def _publish_record(mid: int, qid: int, entry: Entry, salt: int) -> tuple[bytes, bytes, bytes]:
    """(frame header + fixed part + names + properties, body) for one message."""
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
        _PUB.pack(_PUBLISH, mid, qid, entry.seq, expires, entry.priority, len(exchange),
                  len(routing_key), count, len(raw), len(body)),
        exchange, routing_key, extra, raw,
    ))
    crc = zlib.crc32(body, zlib.crc32(head, salt))
    return _FRAME.pack(len(head) + len(body), crc), head, body


def _scan(path: Path, data: bytes, magic: bytes, report: RecoveryReport) -> tuple[int, list[int], int]:
    """(salt, offsets of the verified payloads, length of the good prefix to keep).

    A bad frame in the middle is skipped up to the next frame that verifies; a
    bad tail (a torn last write) is dropped. Both are logged with their offsets.
    """
    size = len(data)
    if size < _HEADER.size or data[:8] != magic:
        if size:
            _dropped(report, f"{path.name}: no valid header, all {size} bytes dropped")
        return 0, [], -1
    _, salt = _HEADER.unpack_from(data, 0)
    view = memoryview(data)
    starts: list[int] = []
    append, frame, crc32 = starts.append, _FRAME.unpack_from, zlib.crc32
    pos = _HEADER.size
    keep = size
    while pos < size:
        if pos + 8 <= size:  # the common case inline: one frame after another
            length, crc = frame(data, pos)
            end = pos + 8 + length
            if 0 < length and end <= size and crc32(view[pos + 8 : end], salt) == crc:
                append(pos + 8)
                pos = end
                continue
        resume = _resync(data, view, pos + 1, salt)
        if resume is None:
            _dropped(report, f"{path.name}: torn tail, dropped {size - pos} bytes at offset {pos}")
            keep = pos
            break
        _dropped(report, f"{path.name}: corrupt record, dropped {resume - pos} bytes at offset {pos}")
        pos = resume
    return salt, starts, keep


def _resync(data: bytes, view: memoryview, start: int, salt: int) -> int | None:
    """The next offset where a frame verifies (the salt makes a false match ~2**-32)."""
    size = len(data)
    for pos in range(start, size - 8):
        length, crc = _FRAME.unpack_from(data, pos)
        if 0 < length <= size - pos - 8 and zlib.crc32(view[pos + 8 : pos + 8 + length], salt) == crc:
            return pos
    return None


def _payload(data: bytes, start: int) -> bytes:
    return data[start : start + _U32.unpack_from(data, start - 8)[0]]


def _dropped(report: RecoveryReport, text: str) -> None:
    report.dropped.append(text)
    log.warning("recovery: %s", text)


# -------------------------------------------------------------- queue journal
class _QueueLog:
    """The journal of one durable queue (`Queue.journal`): its entry events as records.

    Only entries of persistent messages are kept; their message has a
    `message_id` (mid) once stored, which is how later events know them."""

    __slots__ = ("store", "qid", "alive")

    def __init__(self, store: Store, qid: int) -> None:
        self.store = store
        self.qid = qid
        self.alive = True  # False once the queue is deleted: only counts change

    def enqueued(self, entry: Entry) -> None:
        if entry.message.properties.delivery_mode == 2:
            self.store._enqueued(self, entry)

    def delivered(self, entry: Entry, no_ack: bool) -> None:
        mid = entry.message.message_id
        if not mid:
            return
        if no_ack:
            self.store._removed(self, mid)
        elif self.alive:
            store = self.store
            store._append(store._seg_of(mid) * 2 + 1, _REF.pack(_DELIVERED, mid, self.qid), False, True)

    def removed(self, entry: Entry) -> None:
        mid = entry.message.message_id
        if mid:
            self.store._removed(self, mid)

    def requeued(self, entry: Entry) -> None:
        mid = entry.message.message_id
        if mid and self.alive:
            store = self.store
            record = _REQ.pack(_REQUEUED, mid, self.qid, entry.delivery_count)
            store._append(store._seg_of(mid) * 2 + 1, record, False, False)

    def purged(self, entries: Iterable[Entry]) -> None:
        store = self.store
        counts: dict[int, int] = {}
        for entry in entries:
            mid = entry.message.message_id
            if mid:
                seg = store._seg_of(mid)
                counts[seg] = counts.get(seg, 0) + 1
        upto = store._next_mid - 1
        for seg, count in counts.items():
            if self.alive:
                store._append(seg * 2 + 1, _PURGE.pack(_PURGED, self.qid, upto), False, False)
            store._release(seg, count)


# ------------------------------------------------------------------- store
class Store:
    """The embedded store of one data directory. Open with `Store.open(path)`.

    Threads: everything but `_run` (the writer thread) and `write_through`'s
    locking is called on the event-loop thread, as the rest of the broker.
    """

    def __init__(self, directory: str | os.PathLike[str], *, segment_size: int = SEGMENT_SIZE) -> None:
        self.directory = Path(directory)
        self.segment_size = segment_size
        self.report = RecoveryReport()
        # Confirms: `position` counts records a confirm waits for; `synced` is
        # the position the writer has on stable storage; `durable` is `synced`
        # as last seen by the loop (completed()).
        self.position = 0
        self.synced = 0
        self.durable = 0
        self.fsync_count = 0
        self.fsync_seconds_total = 0.0
        self.failure: BaseException | None = None
        self.write_pending = False  # DELIVERED or topology records to write before the next socket write
        self.notify: Callable[[], object] | None = None
        self._waiters: list[tuple[int, Callable[[], None]]] = []
        # Pending bytes per file key, and what the next flush must do.
        self._pending: dict[int, bytearray] = {}
        self._critical: set[int] = set()  # keys holding records a confirm waits for
        self._dirty: set[int] = set()  # keys written since their last fsync
        self._unlink: list[int] = []
        self._fds: dict[int, int] = {}
        self._salts: dict[int, int] = {}
        self._new_files = False
        # Locks: `_lock` guards the pending buffers (held for microseconds);
        # `_io_lock` orders writes to files both threads write (ack logs,
        # topology); `_flush_lock` makes whole flushes one at a time.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._io_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._waiting = 0  # writer: 0 busy, 1 idle (wake on anything), 2 delaying (wake on critical)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None
        # Segments (loop thread): the one being written, its size, and for each
        # live segment its first mid and how many queue entries it still holds.
        self._seg = 1
        self._seg_bytes = 0
        self._seg_firsts: list[int] = [1]
        self._seg_numbers: list[int] = [1]
        self._live: dict[int, int] = {1: 0}
        self._next_mid = 1
        self._next_qid = 1
        # Durable topology, as the records that would recreate it.
        self._exchanges: dict[tuple[str, str], bytes] = {}
        self._queues: dict[tuple[str, str], tuple[int, bytes]] = {}
        self._bindings: dict[bytes, bytes] = {}
        self._delay_queues: dict[str, tuple[int, bytes]] = {}  # vhost -> (qid, record)
        self._delay_logs: dict[str, _QueueLog] = {}
        self._topology_records = 0  # records in topology.log, to know when to compact it
        self._topology_snapshot: bytes | None = None  # for the writer to put in place
        # Recovered entries per qid until their queue is attached.
        self._recovered: dict[int, list[Entry]] = {}
        self._redelivered: dict[int, list[Entry]] = {}
        self._readonly = False  # read_definitions: leave damaged files as they are
        # Streams (leveret.store.stream_log): a log per durable stream; those appended
        # to since the writer last synced them, which a confirm waits for.
        self.streams = StreamFiles(self.directory, self._stream_appended)
        self._streams_dirty: set[FileStreamLog] = set()

    # ------------------------------------------------------------- opening
    @classmethod
    def open(cls, directory: str | os.PathLike[str], *, segment_size: int = SEGMENT_SIZE) -> Store:
        """Lock the directory (creating it) and read everything back. Never refuses
        because of damaged files: what cannot be read is logged and dropped."""
        store = cls(directory, segment_size=segment_size)
        store.directory.mkdir(parents=True, exist_ok=True)
        (store.directory / "msgs").mkdir(exist_ok=True)
        store._take_lock()
        try:
            store._recover()
        except BaseException:
            store._release_lock()
            raise
        return store

    @classmethod
    def read_definitions(cls, directory: str | os.PathLike[str]) -> dict[str, Any]:
        """The durable topology kept in `directory`, read without locking or
        changing anything (the broker may be running)."""
        store = cls(directory)
        store._readonly = True
        store._recover_topology()
        return store.definitions()

    def _take_lock(self) -> None:
        fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
                os.close(fd)
                raise StoreLocked(
                    f"data directory {self.directory} is in use by another leveret (pid {holder})"
                ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None

    # ------------------------------------------------------------ recovery
    def _recover(self) -> None:
        # Recovery makes millions of objects that all stay: the cyclic collector
        # would walk them again and again for nothing.
        collecting = gc.isenabled()
        gc.disable()
        try:
            self._recover_all()
        finally:
            if collecting:
                gc.enable()

    def _recover_all(self) -> None:
        started = time.monotonic()
        report = self.report
        self._recover_topology()
        alive = {qid for qid, _ in (*self._queues.values(), *self._delay_queues.values())}
        report.exchanges, report.queues, report.bindings = (
            len(self._exchanges), len(self._queues), len(self._bindings))
        numbers = sorted({int(p.stem) for p in (self.directory / "msgs").glob("*.msg") if p.stem.isdigit()})
        for orphan in (self.directory / "msgs").glob("*.ack"):
            if orphan.stem.isdigit() and int(orphan.stem) not in numbers:
                orphan.unlink()  # its segment was deleted; the unlink of its log was lost
        self._live = {}
        self._seg_firsts, self._seg_numbers = [], []
        # Names and property lists repeat from message to message: share one object.
        caches: tuple[dict[bytes, str], dict[bytes, Any]] = ({}, {})
        max_mid = 0
        for number in numbers:
            first, last, live = self._recover_segment(number, alive, caches)
            if first:  # else it held nothing and is gone
                report.segments += 1
                self._seg_firsts.append(first)
                self._seg_numbers.append(number)
                self._live[number] = live
                max_mid = max(max_mid, last)
        self._next_mid = max_mid + 1
        # New records go to a new segment: the last one may end in a dropped tail.
        self._seg = (numbers[-1] + 1) if numbers else 1
        self._seg_firsts.append(self._next_mid)
        self._seg_numbers.append(self._seg)
        self._live[self._seg] = 0
        report.messages = sum(len(entries) for entries in self._recovered.values())
        report.seconds = time.monotonic() - started

    def _read(self, path: Path, magic: bytes, key: int) -> tuple[bytes, list[int]]:
        """A file's bytes and the offsets of its verified records; remembers its
        salt so that later appends match it."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return b"", []
        self.report.bytes_read += len(data)
        salt, starts, keep = _scan(path, data, magic, self.report)
        if self._readonly:
            return data, starts
        if keep < 0:
            if data:
                path.rename(path.with_name(path.name + ".corrupt"))
                log.warning("recovery: kept the unreadable %s as %s.corrupt", path.name, path.name)
            else:
                path.unlink()
            return b"", []
        if keep < len(data):
            os.truncate(path, keep)
        self._salts[key] = salt
        return data, starts

    def _recover_topology(self) -> None:
        path = self.directory / "topology.log"
        data, starts = self._read(path, _MAGIC_TOPOLOGY, _TOPOLOGY_KEY)
        for start in starts:
            record = _payload(data, start)
            kind = record[0]
            values = _unfields(record)
            try:
                if kind == _EXCHANGE:
                    self._exchanges[(_str(values[0]), _str(values[1]))] = record
                elif kind == _EXCHANGE_DELETED:
                    self._exchanges.pop((_str(values[0]), _str(values[1])), None)
                elif kind == _QUEUE:
                    qid = _U32.unpack(values[2])[0]
                    self._queues[(_str(values[0]), _str(values[1]))] = (qid, record)
                    self._next_qid = max(self._next_qid, qid + 1)
                elif kind == _QUEUE_DELETED:
                    qid = _U32.unpack(values[2])[0]
                    key = (_str(values[0]), _str(values[1]))
                    if key in self._queues and self._queues[key][0] == qid:
                        del self._queues[key]
                elif kind == _BINDING:
                    self._bindings[record[1:]] = record
                elif kind == _UNBINDING:
                    self._bindings.pop(record[1:], None)
                elif kind == _DELAY_QUEUE:
                    qid = _U32.unpack(values[1])[0]
                    self._delay_queues[_str(values[0])] = (qid, record)
                    self._next_qid = max(self._next_qid, qid + 1)
            except (IndexError, struct.error):
                _dropped(self.report, f"topology.log: malformed record of type {kind:#x}")

    def _recover_segment(
        self, number: int, alive: set[int], caches: tuple[dict[bytes, str], dict[bytes, Any]]
    ) -> tuple[int, int, int]:
        """Replay one segment: (first mid, last mid, live entries); entries go to `_recovered`.

        The common case (published, maybe settled, never touched otherwise) keeps
        no state but the PUBLISH record's offset: 1M messages recover in seconds."""
        msgs = self.directory / "msgs"
        data, starts = self._read(msgs / f"{number:010d}.msg", _MAGIC_MSG, number * 2)
        unpack_pub = _PUB.unpack_from
        published: dict[int, tuple[int, tuple[Any, ...]]] = {}  # mid -> (offset, fields) of its PUBLISH
        # (mid << 32 | qid) -> None (as published) or
        # [seq, expires_at, priority, delivered, delivery count, redelivered]
        states: dict[int, list[Any] | None] = {}
        for start in starts:
            if data[start] == _PUBLISH:
                fields = unpack_pub(data, start)
                published[fields[1]] = (start, fields)
                states[fields[1] << 32 | fields[2]] = None
        if not published:
            for suffix in ("ack", "msg"):
                (msgs / f"{number:010d}.{suffix}").unlink(missing_ok=True)
            self._salts.pop(number * 2, None)
            return 0, 0, 0

        def touched(key: int) -> list[Any] | None:
            if key not in states:
                return None
            state = states[key]
            if state is None:
                fields = published[key >> 32][1]
                state = states[key] = [fields[3], fields[4], fields[5], False, 0, False]
            return state

        acks, records = self._read(msgs / f"{number:010d}.ack", _MAGIC_ACK, number * 2 + 1)
        for start in records:
            kind = acks[start]
            try:
                if kind == _REMOVED:
                    states.pop(_key(_REF.unpack_from(acks, start)), None)
                elif kind == _DELIVERED:
                    state = touched(_key(_REF.unpack_from(acks, start)))
                    if state is not None:
                        state[3] = True
                elif kind == _REQUEUED:
                    _, mid, qid, count = _REQ.unpack_from(acks, start)
                    state = touched(mid << 32 | qid)
                    if state is not None:
                        state[3], state[4], state[5] = False, count, True
                elif kind == _ENQUEUE:
                    _, mid, qid, seq, expires, priority = _ENQ.unpack_from(acks, start)
                    if mid in published:
                        states[mid << 32 | qid] = [seq, expires, priority, False, 0, False]
                elif kind == _PURGED:
                    _, qid, upto = _PURGE.unpack_from(acks, start)
                    for key in [k for k in states if k & 0xFFFFFFFF == qid and k >> 32 <= upto]:
                        state = states[key]
                        if state is None or not state[3]:
                            del states[key]
            except struct.error:
                _dropped(self.report, f"{number:010d}.ack: malformed record of type {kind:#x}")
        messages: dict[int, Message] = {}
        recovered, redelivered = self._recovered, self._redelivered
        live = 0
        for key, state in states.items():
            qid = key & 0xFFFFFFFF
            if qid not in alive:
                continue  # its queue was deleted
            mid = key >> 32
            start, fields = published[mid]
            message = messages.get(mid)
            if message is None:
                message = messages[mid] = _message(data, start, fields, caches)
            if state is None:
                _, _, _, seq, expires, priority = fields[:6]
                entry = Entry(message, seq, None if expires < 0 else expires, priority)
            else:
                seq, expires, priority, delivered, count, again = state
                entry = Entry(message, seq, None if expires < 0 else expires, priority)
                entry.delivery_count = count
                entry.redelivered = again
                if delivered:
                    # Handed out and not settled when the broker stopped: back in the
                    # queue as when a consumer's channel closes (rabbit requeue).
                    entry.redelivered = True
                    entry.delivery_count += 1
                    redelivered.setdefault(qid, []).append(entry)
            entries = recovered.get(qid)
            if entries is None:
                entries = recovered[qid] = []
            entries.append(entry)
            live += 1
        return min(published), max(published), live

    def definitions(self) -> dict[str, Any]:
        """The recovered topology in RabbitMQ's definitions format (typed arguments)."""
        exchanges, queues, bindings = [], [], []
        for record in self._exchanges.values():
            vhost, name, kind, flags, args = _unfields(record)
            exchanges.append({
                "name": _str(name), "vhost": _str(vhost), "type": _str(kind), "durable": True,
                "auto_delete": bool(flags[0] & 1), "internal": bool(flags[0] & 2),
                "arguments": decode_table_plain(args),
            })
        for _, record in self._queues.values():
            vhost, name, _, flags, args = _unfields(record)
            queues.append({
                "name": _str(name), "vhost": _str(vhost), "durable": True,
                "auto_delete": bool(flags[0] & 1), "arguments": decode_table_plain(args),
            })
        for record in self._bindings.values():
            vhost, source, kind, destination, key, args = _unfields(record)
            bindings.append({
                "source": _str(source), "vhost": _str(vhost), "destination": _str(destination),
                "destination_type": _str(kind), "routing_key": _str(key),
                "arguments": decode_table_plain(args),
            })
        return {"exchanges": exchanges, "queues": queues, "bindings": bindings}

    def attach_queue(self, vhost: str, queue: Queue, now_ms: int) -> list[DeadLetter]:
        """Journal a durable queue from now on and give it back its recovered
        messages. Returns what went over x-delivery-limit on the way (to dead-letter)."""
        known = self._queues.get((vhost, queue.name))
        if known is None:
            self.queue_declared(vhost, queue)
            return []
        qid = known[0]
        queue.journal = _QueueLog(self, qid)
        if isinstance(queue, StreamQueue):
            queue.attach_log(self.streams.open(qid, queue.retention))
            return []
        entries = self._recovered.pop(qid, [])
        for entry in self._redelivered.pop(qid, []):
            # Their new delivery count, so another crash does not count them twice.
            record = _REQ.pack(_REQUEUED, entry.message.message_id, qid, entry.delivery_count)
            self._append(self._seg_of(entry.message.message_id) * 2 + 1, record, False, False)
        entries.sort(key=_entry_seq)
        return queue.restore(entries)

    def recovery_done(self) -> None:
        """Queues are attached: free what no queue claimed, compact the topology log,
        delete segments nothing lives in."""
        for qid, entries in self._recovered.items():
            names = [name for (vhost, name), (q, _) in self._queues.items() if q == qid]
            log.warning("recovery: %d messages of queue %s stay on disk: the queue could not be declared",
                        len(entries), names[0] if names else qid)
        self._recovered.clear()
        self._redelivered.clear()
        self.streams.prune({qid for qid, _ in self._queues.values()})
        self._compact_topology()
        for number in [n for n, live in self._live.items() if not live and n != self._seg]:
            self._drop_segment(number)
        self._flush(full=True)

    def _compact_topology(self) -> None:
        """Loop thread: replace topology.log by a snapshot of what is durable now.
        The snapshot is made here (the topology lives on this thread); the writer
        swaps the files. Records appended after it are framed for the new file."""
        salt = int.from_bytes(os.urandom(4), "little")
        records = [*self._exchanges.values(), *(r for _, r in self._queues.values()), *self._bindings.values(),
                   *(r for _, r in self._delay_queues.values())]
        snapshot = _HEADER.pack(_MAGIC_TOPOLOGY, salt) + b"".join(_frame(r, salt) for r in records)
        self._topology_records = len(records)
        with self._lock:  # pending records are framed for the old file, and in the snapshot already
            self._pending.pop(_TOPOLOGY_KEY, None)
            self._salts[_TOPOLOGY_KEY] = salt
            self._topology_snapshot = snapshot
            self.position += 1
            self._critical.add(_TOPOLOGY_KEY)
            if self._waiting:
                self._cond.notify()

    def _replace_topology(self, snapshot: bytes, tail: bytes | bytearray) -> None:
        """Writer (holding the io lock): the snapshot, then what came after it, as the new file."""
        path = self.directory / "topology.log"
        temporary = path.with_name("topology.log.new")
        with open(temporary, "wb") as out:
            out.write(snapshot)
            out.write(tail)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
        self._fsync_directory(self.directory)
        old = self._fds.pop(_TOPOLOGY_KEY, None)
        if old is not None:
            os.close(old)
        self._dirty.discard(_TOPOLOGY_KEY)

    # ------------------------------------------------------ topology journal
    def exchange_declared(self, vhost: str, exchange: ExchangeLike) -> None:
        record = _fields(_EXCHANGE, _text(vhost), _text(exchange.name), _text(exchange.type_name),
                         _flags(exchange.auto_delete, exchange.internal), _table(exchange.arguments))
        self._exchanges[(vhost, exchange.name)] = record
        self._topology(record)

    def exchange_deleted(self, vhost: str, exchange: ExchangeLike) -> None:
        if self._exchanges.pop((vhost, exchange.name), None) is not None:
            self._topology(_fields(_EXCHANGE_DELETED, _text(vhost), _text(exchange.name)))

    def queue_declared(self, vhost: str, queue: Queue) -> None:
        qid = self._next_qid
        self._next_qid += 1
        record = _fields(_QUEUE, _text(vhost), _text(queue.name), _U32.pack(qid),
                         _flags(queue.auto_delete), _table(queue.arguments))
        self._queues[(vhost, queue.name)] = (qid, record)
        queue.journal = _QueueLog(self, qid)
        if isinstance(queue, StreamQueue):
            self.streams.delete(qid)  # nothing of an earlier life under this id
            queue.attach_log(self.streams.open(qid, queue.retention))
        self._topology(record)

    def queue_deleted(self, vhost: str, queue: Queue) -> None:
        known = self._queues.pop((vhost, queue.name), None)
        journal = queue.journal
        if isinstance(journal, _QueueLog):
            journal.alive = False
        if known is not None:
            self._topology(_fields(_QUEUE_DELETED, _text(vhost), _text(queue.name), _U32.pack(known[0])))
            if isinstance(queue, StreamQueue):
                with self._lock:
                    self._streams_dirty.discard(self.streams.logs.get(known[0]))  # type: ignore[arg-type]
                self.streams.delete(known[0])

    def bound(self, vhost: str, binding: BindingLike) -> None:
        record = _binding_record(_BINDING, vhost, binding)
        if record[1:] not in self._bindings:
            self._bindings[record[1:]] = record
            self._topology(record)

    def unbound(self, vhost: str, binding: BindingLike) -> None:
        record = _binding_record(_UNBINDING, vhost, binding)
        if self._bindings.pop(record[1:], None) is not None:
            self._topology(record)

    # ------------------------------------------------------- delayed messages
    def delayed(self, vhost: str, entry: DelayedLike) -> None:
        """A persistent message waits on a durable x-delayed-message exchange: kept as an
        entry of the vhost's delay pseudo-queue, its release time as its deadline."""
        journal = self._delay_logs.get(vhost)
        if journal is None:
            known = self._delay_queues.get(vhost)
            if known is None:
                qid = self._next_qid
                self._next_qid += 1
                known = self._delay_queues[vhost] = (qid, _fields(_DELAY_QUEUE, _text(vhost), _U32.pack(qid)))
                self._topology(known[1])
            journal = self._delay_logs[vhost] = _QueueLog(self, known[0])
        journal.enqueued(Entry(entry.message, entry.seq, entry.deliver_at, 0))

    def released(self, vhost: str, entry: DelayedLike) -> None:
        journal = self._delay_logs.get(vhost)
        mid = entry.message.message_id
        if journal is not None and mid:
            self._removed(journal, mid)

    def recovered_delayed(self, vhost: str) -> list[Entry]:
        """The delayed messages kept for `vhost`, in publish order: `expires_at` is
        when each is due (it may be past), `seq` its place among them."""
        known = self._delay_queues.get(vhost)
        if known is None:
            return []
        self._delay_logs[vhost] = _QueueLog(self, known[0])
        self._redelivered.pop(known[0], None)
        return sorted(self._recovered.pop(known[0], []), key=_entry_seq)

    def _topology(self, record: bytes) -> None:
        self._append(_TOPOLOGY_KEY, record, True, True)
        self._topology_records += 1
        live = len(self._exchanges) + len(self._queues) + len(self._bindings) + len(self._delay_queues)
        if self._topology_records > max(TOPOLOGY_COMPACT_MIN, 2 * live):
            self._compact_topology()  # declare/delete churn: the log is mostly history

    # ---------------------------------------------------- message journal
    def _seg_of(self, mid: int) -> int:
        firsts = self._seg_firsts
        if mid >= firsts[-1]:
            return self._seg_numbers[-1]
        return self._seg_numbers[bisect.bisect_right(firsts, mid) - 1]

    def _enqueued(self, journal: _QueueLog, entry: Entry) -> None:
        message = entry.message
        mid = message.message_id
        if mid:
            seg = self._seg_of(mid)
            if self._live.get(seg):
                expires = -1 if entry.expires_at is None else entry.expires_at
                record = _ENQ.pack(_ENQUEUE, mid, journal.qid, entry.seq, expires, entry.priority)
                self._append(seg * 2 + 1, record, True, False)
                self._live[seg] += 1
                return
        # First durable queue for this message: one PUBLISH record in the current segment.
        mid = message.message_id = self._next_mid
        self._next_mid += 1
        seg = self._seg
        salt = self._salt(seg * 2)
        header, head, body = _publish_record(mid, journal.qid, entry, salt)
        with self._lock:
            buffer = self._pending.get(seg * 2)
            if buffer is None:
                buffer = self._pending[seg * 2] = bytearray()
            buffer += header
            buffer += head
            buffer += body
            self.position += 1
            self._critical.add(seg * 2)
            if self._waiting:
                self._cond.notify()
        self._live[seg] += 1
        self._seg_bytes += len(header) + len(head) + len(body)
        if self._seg_bytes >= self.segment_size:
            self._rotate()

    def _rotate(self) -> None:
        old = self._seg
        self._seg = old + 1
        self._seg_bytes = 0
        self._seg_firsts.append(self._next_mid)
        self._seg_numbers.append(self._seg)
        self._live[self._seg] = 0
        if not self._live[old]:
            self._drop_segment(old)

    def _removed(self, journal: _QueueLog, mid: int) -> None:
        seg = self._seg_of(mid)
        if journal.alive:
            self._append(seg * 2 + 1, _REF.pack(_REMOVED, mid, journal.qid), False, False)
        self._release(seg, 1)

    def _release(self, seg: int, count: int) -> None:
        live = self._live.get(seg)
        if live is None:
            return
        live -= count
        self._live[seg] = live
        if live <= 0 and seg != self._seg:
            self._drop_segment(seg)

    def _drop_segment(self, seg: int) -> None:
        index = bisect.bisect_left(self._seg_numbers, seg)
        if index < len(self._seg_numbers) and self._seg_numbers[index] == seg:
            del self._seg_numbers[index]
            del self._seg_firsts[index]
        self._live.pop(seg, None)
        with self._lock:
            for key in (seg * 2, seg * 2 + 1):
                self._pending.pop(key, None)
                self._critical.discard(key)
            self._unlink.append(seg)
            if self._waiting:
                self._cond.notify()

    def _append(self, key: int, record: bytes, critical: bool, through: bool) -> None:
        salt = self._salts.get(key)
        if salt is None:
            salt = self._salt(key)
        frame = _FRAME.pack(len(record), zlib.crc32(record, salt)) + record
        with self._lock:
            buffer = self._pending.get(key)
            if buffer is None:
                buffer = self._pending[key] = bytearray()
            buffer += frame
            if critical:
                self.position += 1
                self._critical.add(key)
                if self._waiting:
                    self._cond.notify()
            elif self._waiting == 1:
                self._cond.notify()
        if through:
            self.write_pending = True

    def _stream_appended(self, stream: FileStreamLog) -> None:
        """A stream took a record: confirms wait for the writer to fsync it, and it is
        written through before the next socket write (what a consumer is sent is on file)."""
        with self._lock:
            self.position += 1
            self._streams_dirty.add(stream)
            if self._waiting:
                self._cond.notify()
        self.write_pending = True

    def _salt(self, key: int) -> int:
        salt = self._salts.get(key)
        if salt is None:
            salt = self._salts[key] = int.from_bytes(os.urandom(4), "little")
        return salt

    # --------------------------------------------------------- confirms
    def when_durable(self, ticket: int, callback: Callable[[], None]) -> None:
        """Call `callback` (on the loop thread, from `completed`) once `ticket` is synced."""
        self._waiters.append((ticket, callback))

    def completed(self) -> None:
        """Loop thread: the writer reported progress; release the waiters it covers."""
        self.durable = self.synced
        if not self._waiters:
            return
        durable = self.durable if self.failure is None else self.position
        ready = [w for w in self._waiters if w[0] <= durable]
        if ready:
            self._waiters = [w for w in self._waiters if w[0] > durable]
            for _, callback in ready:
                callback()

    # ------------------------------------------------------------ writing
    def start(self, notify: Callable[[], object] | None = None) -> None:
        """Run the writer thread; `notify` is called from it after each sync."""
        if self._thread is not None:
            return
        self.notify = notify
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="leveret-store", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the writer thread after a last full sync (the store stays usable, synchronously)."""
        thread = self._thread
        if thread is not None:
            with self._cond:
                self._stopping = True
                self._cond.notify()
            thread.join()
            self._thread = None
        self.sync()

    def close(self) -> None:
        self.stop()
        self.streams.close()
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._release_lock()

    def sync(self) -> None:
        """Write and fsync everything now, on this thread, then release waiters."""
        self._flush(full=True)
        self.completed()

    def write_through(self) -> None:
        """Loop thread, before a socket write: put DELIVERED and topology records in
        the page cache (what a kill -9 cannot lose). Message data stays with the writer."""
        with self._io_lock:
            with self._lock:
                self.write_pending = False
                # Topology records wait while a snapshot is pending: they belong after it.
                skip = _TOPOLOGY_KEY if self._topology_snapshot is not None else 0
                taken = [(key, self._pending.pop(key)) for key in list(self._pending)
                         if (key & 1 or key < 0) and key != skip]
            for key, data in taken:
                self._write(key, data)
        self.streams.write_through()

    def _run(self) -> None:
        last_full = time.monotonic()
        while True:
            with self._cond:
                deadline = None
                while not self._stopping:
                    if self._critical or self._unlink or self._streams_dirty:
                        break
                    now = time.monotonic()
                    if self._pending:
                        deadline = deadline or now + WRITE_DELAY
                        if now >= deadline:
                            break
                        self._waiting = 2
                        self._cond.wait(deadline - now)
                    elif self._dirty and now - last_full >= SYNC_INTERVAL:
                        break
                    else:
                        self._waiting = 1
                        self._cond.wait(SYNC_INTERVAL if self._dirty else None)
                    self._waiting = 0
                self._waiting = 0
                if self._stopping:
                    return
            full = time.monotonic() - last_full >= SYNC_INTERVAL
            if full:
                last_full = time.monotonic()
            self._flush(full=full)
            notify = self.notify
            if notify is not None:
                try:
                    notify()
                except Exception:  # the loop is closing; stop() does the last sync
                    log.debug("store: cannot notify the event loop", exc_info=True)

    def _flush(self, full: bool) -> None:
        with self._flush_lock:
            if self.failure is not None:
                # After a failed write or fsync (fsyncgate: the page cache may have
                # dropped the data) nothing is written again; the held confirms
                # become nacks, and the records are not kept to grow memory.
                with self._lock:
                    self._pending.clear()
                    self._streams_dirty.clear()
                    self._critical.clear()
                    self._unlink.clear()
                    self._topology_snapshot = None
                return
            try:
                with self._io_lock:
                    with self._lock:
                        pending, self._pending = self._pending, {}
                        critical, self._critical = self._critical, set()
                        unlink, self._unlink = self._unlink, []
                        snapshot, self._topology_snapshot = self._topology_snapshot, None
                        streams, self._streams_dirty = self._streams_dirty, set()
                        taken = self.position
                        self.write_pending = False
                    if snapshot is not None:
                        self._replace_topology(snapshot, pending.pop(_TOPOLOGY_KEY, b""))
                    for key, data in pending.items():
                        if key & 1 or key < 0:
                            self._write(key, data)
                for key, data in pending.items():
                    if not (key & 1 or key < 0):
                        self._write(key, data)
                for key in (set(self._dirty) if full else critical):
                    fd = self._fds.get(key)
                    if fd is not None:
                        self._dirty.discard(key)  # first: a write after this marks it again
                        started = time.perf_counter()
                        _fdatasync(fd)
                        # Read by /metrics (leveret_store_fsync_seconds); plain
                        # counters: the loop thread only ever reads them.
                        self.fsync_seconds_total += time.perf_counter() - started
                        self.fsync_count += 1
                if self._new_files:
                    self._new_files = False
                    self._fsync_directory(self.directory / "msgs")
                if unlink:
                    with self._io_lock:
                        for seg in unlink:
                            self._remove_segment(seg)
                self.streams.sync(streams)
                self.synced = taken
            except OSError as error:
                self.failure = error
                log.critical("store: cannot write to %s (%s); nothing more will be confirmed",
                             self.directory, error)

    def _write(self, key: int, data: bytes | bytearray) -> None:
        fd = self._fds.get(key)
        if fd is None:
            fd = self._open_file(key)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        self._dirty.add(key)

    def _open_file(self, key: int) -> int:
        if key == _TOPOLOGY_KEY:
            path, magic = self.directory / "topology.log", _MAGIC_TOPOLOGY
        else:
            seg, is_ack = divmod(key, 2)
            path = self.directory / "msgs" / f"{seg:010d}.{'ack' if is_ack else 'msg'}"
            magic = _MAGIC_ACK if is_ack else _MAGIC_MSG
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if os.fstat(fd).st_size == 0:
            os.write(fd, _HEADER.pack(magic, self._salt(key)))
            self._new_files = True
        # else an existing file (an old segment's ack log, topology.log): its salt
        # was read at recovery and every record for it was framed with it.
        self._fds[key] = fd
        return fd

    def _remove_segment(self, seg: int) -> None:
        for key, suffix in ((seg * 2, "msg"), (seg * 2 + 1, "ack")):
            fd = self._fds.pop(key, None)
            if fd is not None:
                os.close(fd)
            self._dirty.discard(key)
            self._salts.pop(key, None)
            try:
                os.unlink(self.directory / "msgs" / f"{seg:010d}.{suffix}")
            except FileNotFoundError:
                pass

    @staticmethod
    def _fsync_directory(path: Path) -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass  # some filesystems cannot fsync a directory
        finally:
            os.close(fd)

    # --------------------------------------------------------------- stats
    def stats(self) -> dict[str, int]:
        """For management: segments on disk, queue entries stored, bytes on disk."""
        size = 0
        for path in (self.directory / "msgs").iterdir():
            try:
                size += path.stat().st_size
            except FileNotFoundError:
                pass
        return {
            "segments": len(self._live),
            "entries": sum(self._live.values()),
            "bytes": size,
            "unsynced_records": self.position - self.synced,
        }


# ------------------------------------------------------------- held replies
ACK, NACK, COMMIT_OK = 0, 1, 2


class ReplyGate:
    """A channel's replies that must wait for the store: publisher confirms and
    tx.commit-ok, held until what came before them is synced, then released in
    the order they were made (RabbitMQ's order). A run of acks goes out as one
    basic.ack with multiple=true for its last tag: every earlier tag is settled
    by then. If the store failed, held acks it never synced become nacks."""

    __slots__ = ("store", "send", "held", "_waiting")

    def __init__(self, store: Store, send: Callable[[int, int, bool], None]) -> None:
        self.store = store
        self.send = send  # (ACK | NACK | COMMIT_OK, delivery tag, multiple)
        self.held: deque[tuple[int, int, int]] = deque()  # (ticket, kind, tag)
        self._waiting = False

    def hold(self, ticket: int, kind: int, tag: int) -> None:
        self.held.append((ticket, kind, tag))
        if not self._waiting:
            self._waiting = True
            self.store.when_durable(ticket, self._release)

    def _release(self) -> None:
        self._waiting = False
        store, held, send = self.store, self.held, self.send
        failed = store.failure is not None
        durable = store.position if failed else store.durable
        last_ack, run = 0, 0
        while held and held[0][0] <= durable:
            ticket, kind, tag = held.popleft()
            if failed and kind == ACK and ticket > store.synced:
                kind = NACK
            if kind == ACK:
                last_ack, run = tag, run + 1
                continue
            if run:
                send(ACK, last_ack, run > 1)
                run = 0
            send(kind, tag, False)
        if run:
            send(ACK, last_ack, run > 1)
        if held:
            self._waiting = True
            store.when_durable(held[0][0], self._release)


def _key(ref: tuple[int, int, int]) -> int:
    return ref[1] << 32 | ref[2]


def _entry_seq(entry: Entry) -> int:
    return entry.seq


def _table(arguments: Mapping[str, Any]) -> bytes:
    return encode_table(arguments or {})


def _binding_record(kind: int, vhost: str, binding: BindingLike) -> bytes:
    destination = binding.destination
    return _fields(kind, _text(vhost), _text(binding.source), _text(destination.kind),
                   _text(destination.name), _text(binding.binding_key), _table(binding.arguments_dict))


def _message(
    data: bytes, start: int, fields: tuple[Any, ...], caches: tuple[dict[bytes, str], dict[bytes, Any]]
) -> Message:
    """A stored PUBLISH record (at `start`, its fixed part unpacked in `fields`) as a
    Message again, its properties as the publisher sent them."""
    (_, mid, _, _, _, _, exchange_size, key_size, count, properties_size, body_size) = fields
    names, properties_cache = caches
    pos = start + _PUB.size
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
