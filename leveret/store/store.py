"""The store of one data directory: durable topology and persistent messages on disk.

What is kept. Durable exchanges, durable queues and bindings between durable
ends (as RabbitMQ keeps them), and every persistent message (delivery_mode 2)
in a durable queue, with its per-queue state: sequence number (queue order),
absolute TTL deadline, priority, whether it was handed to a consumer, and
its delivery count (x-delivery-limit). Persistent messages waiting on a
durable x-delayed-message exchange are entries of a per-vhost pseudo-queue,
their release time as deadline. Transient things are never written.

Design: append-only segment files with per-segment ack logs, as LavinMQ does,
not SQLite. A persistent message is written once, as one record; nothing is
read back while the broker runs (messages also live in memory), so there is
no B-tree, no index and no row update per delivery: the per-message cost on
the loop is a struct.pack and a CRC (~2 us). Space comes back in whole
segment files (segments.py). A torn or corrupt record is a CRC mismatch at a
known offset: recovery drops exactly that record and says so (recovery.py).

Files under the data directory:
    lock                   flock'ed while a broker uses the directory
    topology.log           durable exchanges, queues (with their queue ids) and bindings (topology.py)
    msgs/NNNNNNNNNN.msg    PUBLISH records: the message, its first queue's entry (records.py)
    msgs/NNNNNNNNNN.ack    state records for the messages of that segment only
    streams/<queue id>/    a stream's segment files (stream_log.py: a format of its own)
All but the streams share one framed format (frames.py).

Durability (writer.py): a confirm for a persistent message in a durable queue
is sent after fsync (group commit on the writer thread); DELIVERED and
topology records are written through to the page cache before the broker next
writes to a socket, so after a kill -9 a message a consumer got and did not
ack comes back `redelivered`, and a declare-ok is never followed by a queue
the broker forgot. An ack lost in a crash means one more delivery, with
`redelivered` set: at least once, never lost.

`Store` ties the parts together and is what the broker sees: the vhosts'
`TopologyJournal`, the source of `QueueLog`s, and the confirms' position.
It knows nothing of asyncio: the shell passes `notify` to `start`.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from leveret.bindings.model import Binding
from leveret.exchanges.base import Exchange
from leveret.exchanges.delayed import DelayedMessage
from leveret.queues.queue import DeadLetter, Entry, Queue
from leveret.queues.stream import StreamQueue
from leveret.store.admin_file import AdminFile
from leveret.store.frames import MAGIC_TOPOLOGY, new_salt
from leveret.store.records import REQ, REQUEUED
from leveret.store.recovery import RecoveryReport, read_file, recover_messages
from leveret.store.segments import SEGMENT_SIZE, QueueLog, Segments
from leveret.store.stream_log import StreamFiles
from leveret.store.topology import Topology
from leveret.store.writer import TOPOLOGY_KEY, Writer

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("leveret.store")


class StoreLocked(RuntimeError):
    """Another broker holds the data directory."""


class Store:
    """The embedded store of one data directory. Open with `Store.open(path)`.

    Everything but the writer thread runs on the event-loop thread, as the
    rest of the broker."""

    def __init__(self, directory: str | os.PathLike[str], *, segment_size: int = SEGMENT_SIZE) -> None:
        self.directory = Path(directory)
        self.admin = AdminFile(self.directory)  # users, vhosts, permissions, parameters
        self.report = RecoveryReport()
        self.writer = Writer(self.directory)
        self.segments = Segments(self.writer, segment_size)
        self.topology = Topology()
        self._delay_logs: dict[str, QueueLog] = {}
        # Recovered entries per qid until their queue is attached.
        self._recovered: dict[int, list[Entry]] = {}
        self._redelivered: dict[int, list[Entry]] = {}
        self._lock_fd: int | None = None
        # Streams: a log per durable stream, under streams/<queue id>.
        self.streams = StreamFiles(self.directory, self.writer.log_appended)

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
            # Recovery makes millions of objects that all stay: the cyclic
            # collector would walk them again and again for nothing.
            collecting = gc.isenabled()
            gc.disable()
            try:
                store._recover()
            finally:
                if collecting:
                    gc.enable()
        except BaseException:
            store._release_lock()
            raise
        return store

    @classmethod
    def read_definitions(cls, directory: str | os.PathLike[str]) -> dict[str, Any]:
        """The durable topology kept in `directory`, read without locking or
        changing anything (the broker may be running)."""
        store = cls(directory)
        store._recover_topology(readonly=True)
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

    def _recover(self) -> None:
        started = time.monotonic()
        report, topology = self.report, self.topology
        self._recover_topology(readonly=False)
        report.exchanges, report.queues, report.bindings = (
            len(topology.exchanges), len(topology.queues), len(topology.bindings))
        found = recover_messages(self.directory / "msgs", topology.queue_ids(), report)
        self.writer.salts.update(found.salts)
        self.segments.restore(found.segments, found.last_number)
        self._recovered, self._redelivered = found.entries, found.redelivered
        report.seconds = time.monotonic() - started

    def _recover_topology(self, readonly: bool) -> None:
        data, starts, salt = read_file(self.directory / "topology.log", MAGIC_TOPOLOGY, self.report, readonly)
        if salt is not None and not readonly:
            self.writer.salts[TOPOLOGY_KEY] = salt
        self.topology.replay(data, starts, self.report.drop)

    def definitions(self) -> dict[str, Any]:
        """The recovered topology in RabbitMQ's definitions format (typed arguments)."""
        return self.topology.definitions()

    def attach_queue(self, vhost: str, queue: Queue, now_ms: int) -> list[DeadLetter]:
        """Journal a durable queue from now on and give it back its recovered
        messages. Returns what went over x-delivery-limit on the way (to dead-letter)."""
        known = self.topology.queues.get((vhost, queue.name))
        if known is None:
            self.queue_declared(vhost, queue)
            return []
        qid = known[0]
        queue.journal = QueueLog(self.segments, qid)
        if isinstance(queue, StreamQueue):
            queue.attach_log(self.streams.open(qid, queue.retention))
            return []
        entries = self._recovered.pop(qid, [])
        for entry in self._redelivered.pop(qid, []):
            # Their new delivery count, so another crash does not count them twice.
            mid = entry.message.message_id
            record = REQ.pack(REQUEUED, mid, qid, entry.delivery_count)
            self.writer.append(self.segments.segment_of(mid) * 2 + 1, record, False, False)
        entries.sort(key=_entry_seq)
        return queue.restore(entries)

    def recovery_done(self) -> None:
        """Queues are attached: free what no queue claimed, compact the topology log,
        delete segments nothing lives in."""
        for qid, entries in self._recovered.items():
            names = [name for (_, name), (q, _) in self.topology.queues.items() if q == qid]
            log.warning("recovery: %d messages of queue %s stay on disk: the queue could not be declared",
                        len(entries), names[0] if names else qid)
        self._recovered.clear()
        self._redelivered.clear()
        self.streams.prune({qid for qid, _ in self.topology.queues.values()})
        self._compact_topology()
        self.segments.drop_empty()
        self.writer.flush(full=True)

    # ------------------------------------------------------ topology journal
    def exchange_declared(self, vhost: str, exchange: Exchange) -> None:
        self._topology(self.topology.exchange_declared(vhost, exchange))

    def exchange_deleted(self, vhost: str, exchange: Exchange) -> None:
        self._topology(self.topology.exchange_deleted(vhost, exchange))

    def queue_declared(self, vhost: str, queue: Queue) -> None:
        qid, record = self.topology.queue_declared(vhost, queue)
        queue.journal = QueueLog(self.segments, qid)
        if isinstance(queue, StreamQueue):
            self.streams.delete(qid)  # nothing of an earlier life under this id
            queue.attach_log(self.streams.open(qid, queue.retention))
        self._topology(record)

    def queue_deleted(self, vhost: str, queue: Queue) -> None:
        journal = queue.journal
        if isinstance(journal, QueueLog):
            journal.alive = False
            if isinstance(queue, StreamQueue):
                stream = self.streams.logs.get(journal.qid)
                if stream is not None:
                    self.writer.forget_log(stream)
                self.streams.delete(journal.qid)
        self._topology(self.topology.queue_deleted(vhost, queue))

    def bound(self, vhost: str, binding: Binding) -> None:
        self._topology(self.topology.bound(vhost, binding))

    def unbound(self, vhost: str, binding: Binding) -> None:
        self._topology(self.topology.unbound(vhost, binding))

    def policy_set(self, vhost: str, name: str, operator: bool, value: Mapping[str, Any]) -> None:
        self._topology(self.topology.policy_set(vhost, name, operator, value))

    def policy_cleared(self, vhost: str, name: str, operator: bool) -> None:
        self._topology(self.topology.policy_cleared(vhost, name, operator))

    def _topology(self, record: bytes | None) -> None:
        if record is not None:
            self.writer.append(TOPOLOGY_KEY, record, True, True)
            if self.topology.logged():
                self._compact_topology()  # declare/delete churn: the log is mostly history

    def _compact_topology(self) -> None:
        """Replace topology.log by a snapshot of what is durable now: made here
        (the topology lives on this thread), put in place by the writer."""
        salt = new_salt()
        self.writer.replace_topology(self.topology.snapshot(salt), salt)

    # ------------------------------------------------------- delayed messages
    def delayed(self, vhost: str, entry: DelayedMessage) -> None:
        """A persistent message waits on a durable x-delayed-message exchange: kept as an
        entry of the vhost's delay pseudo-queue, its release time as its deadline."""
        journal = self._delay_logs.get(vhost)
        if journal is None:
            qid, record = self.topology.delay_queue(vhost)
            self._topology(record)
            journal = self._delay_logs[vhost] = QueueLog(self.segments, qid)
        journal.enqueued(Entry(entry.message, entry.seq, entry.deliver_at, 0))

    def released(self, vhost: str, entry: DelayedMessage) -> None:
        journal = self._delay_logs.get(vhost)
        mid = entry.message.message_id
        if journal is not None and mid:
            self.segments.removed(journal.qid, mid, journal.alive)

    def recovered_delayed(self, vhost: str) -> list[Entry]:
        """The delayed messages kept for `vhost`, in publish order: `expires_at` is
        when each is due (it may be past), `seq` its place among them."""
        known = self.topology.delay_queues.get(vhost)
        if known is None:
            return []
        self._delay_logs[vhost] = QueueLog(self.segments, known[0])
        self._redelivered.pop(known[0], None)
        return sorted(self._recovered.pop(known[0], []), key=_entry_seq)

    # ------------------------------------------------ confirms and the writer
    @property
    def segment_size(self) -> int:
        return self.segments.segment_size

    @segment_size.setter
    def segment_size(self, size: int) -> None:
        self.segments.segment_size = size

    @property
    def position(self) -> int:
        """Records a confirm waits for, so far: the ticket of the latest."""
        return self.writer.position

    @property
    def synced(self) -> int:
        return self.writer.synced

    @property
    def durable(self) -> int:
        return self.writer.durable

    @property
    def failure(self) -> BaseException | None:
        return self.writer.failure

    @property
    def write_pending(self) -> bool:
        return self.writer.write_pending

    @property
    def fsync_count(self) -> int:
        return self.writer.fsync_count

    @property
    def fsync_seconds_total(self) -> float:
        return self.writer.fsync_seconds_total

    def when_durable(self, ticket: int, callback: Callable[[], None]) -> None:
        self.writer.when_durable(ticket, callback)

    def completed(self) -> None:
        self.writer.completed()

    def write_through(self) -> None:
        self.writer.write_through()
        self.streams.write_through()

    def start(self, notify: Callable[[], object] | None = None) -> None:
        self.writer.start(notify)

    def stop(self) -> None:
        self.writer.stop()

    def sync(self) -> None:
        self.writer.sync()

    def close(self) -> None:
        self.writer.close()
        self.streams.close()
        self._release_lock()

    def stats(self) -> dict[str, int]:
        """For management: segments on disk, queue entries stored, bytes on disk."""
        size = 0
        for path in (self.directory / "msgs").iterdir():
            try:
                size += path.stat().st_size
            except FileNotFoundError:
                pass
        live = self.segments.live
        return {
            "segments": len(live),
            "entries": sum(live.values()),
            "bytes": size,
            "unsynced_records": self.writer.position - self.writer.synced,
        }


def _entry_seq(entry: Entry) -> int:
    return entry.seq
