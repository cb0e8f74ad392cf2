"""The writer: buffered appends on the loop thread, group commit on a thread of its own.

Files are named by an int key (`FileKey`): -1 is topology.log, 2n segment
n's messages, 2n+1 its ack log; `path_of` maps a key to its path and magic.
Streams keep files of their own (leveret.store.stream_log): their appends
count in `position` too (`log_appended`), and the thread syncs them with the rest.

Records are appended to in-memory buffers on the event-loop thread (`append`,
microseconds under a lock). The writer thread (`start`) writes them and
fdatasyncs: whatever accumulated while the previous fsync ran goes into the
next one (group commit). `position` counts records that a publisher confirm
must wait for ("critical": PUBLISH, ENQUEUE and topology); once a batch is on
stable storage the thread sets `synced` and calls `notify` (the asyncio shell
turns that into a call of `completed()` on the loop), which releases the
`when_durable` callbacks. A slow disk only delays confirms, never the loop.

Records no confirm waits for are written within WRITE_DELAY and fsynced every
SYNC_INTERVAL. Ack-log and topology records can also be written *through* to
the page cache by the loop itself (`write_through`, before a socket write), so
a kill -9 cannot lose them; `write_pending` says whether there are any.

After a failed write or fsync nothing is written again (fsyncgate: the page
cache may have dropped the data): `failure` is set, held confirms become nacks.

This module does file I/O and runs one thread, but knows nothing of asyncio.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from leveret.store.frames import FRAME, MAGIC_ACK, MAGIC_MSG, MAGIC_TOPOLOGY, header, new_salt

log = logging.getLogger("leveret.store")

WRITE_DELAY = 0.05  # seconds a record no confirm waits for may sit in memory
SYNC_INTERVAL = 1.0  # seconds between fsyncs of files no confirm waits for
TOPOLOGY_KEY = -1

_fdatasync = getattr(os, "fdatasync", os.fsync)

FileKey = int


class SyncedLog(Protocol):
    """A log with files of its own (a stream's, leveret.store.stream_log) whose
    appends confirms wait for: the writer thread makes them durable with the rest."""

    def flush_and_sync(self) -> None: ...


def path_of(directory: Path, key: FileKey) -> tuple[Path, bytes]:
    if key == TOPOLOGY_KEY:
        return directory / "topology.log", MAGIC_TOPOLOGY
    seg, is_ack = divmod(key, 2)
    return directory / "msgs" / f"{seg:010d}.{'ack' if is_ack else 'msg'}", MAGIC_ACK if is_ack else MAGIC_MSG


def _loop_writes(key: FileKey) -> bool:
    """Files both threads write (ack logs, topology): writes to them hold the io lock."""
    return bool(key & 1) or key < 0


class Writer:
    """Pending records per file, written and fsynced by one thread. See the module doc."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # Confirms: `position` counts critical records; `synced` is the position
        # the writer has on stable storage; `durable` is `synced` as last seen by
        # the loop (completed()).
        self.position = 0
        self.synced = 0
        self.durable = 0
        self.fsync_count = 0
        self.fsync_seconds_total = 0.0
        self.failure: BaseException | None = None
        self.write_pending = False  # records to write through before the next socket write
        self.notify: Callable[[], object] | None = None
        self.salts: dict[FileKey, int] = {}
        self._waiters: list[tuple[int, Callable[[], None]]] = []
        self._pending: dict[FileKey, bytearray] = {}
        self._critical: set[FileKey] = set()  # keys holding records a confirm waits for
        self._dirty: set[FileKey] = set()  # keys written since their last fsync
        self._unlink: list[tuple[FileKey, ...]] = []
        self._fds: dict[FileKey, int] = {}
        self._new_files = False
        self._topology_snapshot: bytes | None = None  # for the writer to put in place
        self._logs: set[SyncedLog] = set()  # appended to since the writer last synced them
        # `_lock` guards the pending buffers (held for microseconds); `_io_lock`
        # orders writes to files both threads write; `_flush_lock` makes whole
        # flushes one at a time.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._io_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._waiting = 0  # writer: 0 busy, 1 idle (wake on anything), 2 delaying (wake on critical)
        self._stopping = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ loop side
    def salt(self, key: FileKey) -> int:
        salt = self.salts.get(key)
        if salt is None:
            salt = self.salts[key] = new_salt()
        return salt

    def append(self, key: FileKey, record: bytes, critical: bool, through: bool) -> None:
        salt = self.salts.get(key)
        if salt is None:
            salt = self.salt(key)
        self.append_framed(key, (FRAME.pack(len(record), zlib.crc32(record, salt)), record), critical)
        if through:
            self.write_pending = True

    def append_framed(self, key: FileKey, parts: tuple[bytes, ...], critical: bool) -> None:
        """Append a record already framed for `key`'s salt, in parts (not joined: a body is not copied)."""
        with self._lock:
            buffer = self._pending.get(key)
            if buffer is None:
                buffer = self._pending[key] = bytearray()
            for part in parts:
                buffer += part
            if critical:
                self.position += 1
                self._critical.add(key)
                if self._waiting:
                    self._cond.notify()
            elif self._waiting == 1:
                self._cond.notify()

    def log_appended(self, synced_log: SyncedLog) -> None:
        """A critical record went to a log of its own: the next flush syncs that log,
        and it is written through before the next socket write."""
        with self._lock:
            self.position += 1
            self._logs.add(synced_log)
            if self._waiting:
                self._cond.notify()
        self.write_pending = True

    def forget_log(self, synced_log: SyncedLog) -> None:
        with self._lock:
            self._logs.discard(synced_log)

    def discard(self, keys: tuple[FileKey, ...]) -> None:
        """Forget what is pending for `keys` and delete their files (a dropped segment)."""
        with self._lock:
            for key in keys:
                self._pending.pop(key, None)
                self._critical.discard(key)
            self._unlink.append(keys)
            if self._waiting:
                self._cond.notify()

    def replace_topology(self, snapshot: bytes, salt: int) -> None:
        """Have topology.log replaced by `snapshot`; records appended from now on are
        framed with its `salt` (what is pending is in the snapshot already)."""
        with self._lock:
            self._pending.pop(TOPOLOGY_KEY, None)
            self.salts[TOPOLOGY_KEY] = salt
            self._topology_snapshot = snapshot
            self.position += 1
            self._critical.add(TOPOLOGY_KEY)
            if self._waiting:
                self._cond.notify()

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

    def write_through(self) -> None:
        """Loop thread, before a socket write: put ack-log and topology records in
        the page cache (what a kill -9 cannot lose). Message data stays with the writer."""
        with self._io_lock:
            with self._lock:
                self.write_pending = False
                # Topology records wait while a snapshot is pending: they belong after it.
                skip = TOPOLOGY_KEY if self._topology_snapshot is not None else 0
                taken = [(key, self._pending.pop(key)) for key in list(self._pending)
                         if _loop_writes(key) and key != skip]
            for key, data in taken:
                self._write(key, data)

    # -------------------------------------------------------------- thread
    def start(self, notify: Callable[[], object] | None = None) -> None:
        """Run the writer thread; `notify` is called from it after each sync."""
        if self._thread is not None:
            return
        self.notify = notify
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="leveret-store", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the writer thread after a last full sync (writes go on, synchronously)."""
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
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def sync(self) -> None:
        """Write and fsync everything now, on this thread, then release waiters."""
        self.flush(full=True)
        self.completed()

    def _run(self) -> None:
        last_full = time.monotonic()
        while True:
            with self._cond:
                deadline = None
                while not self._stopping:
                    if self._critical or self._unlink or self._logs:
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
            self.flush(full=full)
            notify = self.notify
            if notify is not None:
                try:
                    notify()
                except Exception:  # the loop is closing; stop() does the last sync
                    log.debug("store: cannot notify the event loop", exc_info=True)

    def flush(self, full: bool) -> None:
        """Write what is pending; fsync the files confirms wait for (`full`: all written ones)."""
        with self._flush_lock:
            if self.failure is not None:
                # Nothing is written again; the records are not kept to grow memory.
                with self._lock:
                    self._pending.clear()
                    self._critical.clear()
                    self._logs.clear()
                    self._unlink.clear()
                    self._topology_snapshot = None
                return
            try:
                self._flush(full)
            except OSError as error:
                self.failure = error
                log.critical("store: cannot write to %s (%s); nothing more will be confirmed",
                             self.directory, error)

    def _flush(self, full: bool) -> None:
        with self._io_lock:
            with self._lock:
                pending, self._pending = self._pending, {}
                critical, self._critical = self._critical, set()
                unlink, self._unlink = self._unlink, []
                snapshot, self._topology_snapshot = self._topology_snapshot, None
                logs, self._logs = self._logs, set()
                taken = self.position
                self.write_pending = False
            if snapshot is not None:
                self._replace_topology(snapshot, pending.pop(TOPOLOGY_KEY, b""))
            for key, data in pending.items():
                if _loop_writes(key):
                    self._write(key, data)
        for key, data in pending.items():
            if not _loop_writes(key):
                self._write(key, data)
        for key in (set(self._dirty) if full else critical):
            fd = self._fds.get(key)
            if fd is not None:
                self._dirty.discard(key)  # first: a write after this marks it again
                started = time.perf_counter()
                _fdatasync(fd)
                # Read by /metrics (leveret_store_fsync_seconds); plain counters:
                # the loop thread only ever reads them.
                self.fsync_seconds_total += time.perf_counter() - started
                self.fsync_count += 1
        if self._new_files:
            self._new_files = False
            fsync_directory(self.directory / "msgs")
        if unlink:
            with self._io_lock:
                for keys in unlink:
                    self._remove(keys)
        for synced_log in logs:
            synced_log.flush_and_sync()
        self.synced = taken

    def _write(self, key: FileKey, data: bytes | bytearray) -> None:
        fd = self._fds.get(key)
        if fd is None:
            fd = self._open(key)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        self._dirty.add(key)

    def _open(self, key: FileKey) -> int:
        path, magic = path_of(self.directory, key)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if os.fstat(fd).st_size == 0:
            os.write(fd, header(magic, self.salt(key)))
            self._new_files = True
        # else an existing file (an old segment's ack log, topology.log): its salt
        # was read at recovery and every record for it was framed with it.
        self._fds[key] = fd
        return fd

    def _remove(self, keys: tuple[FileKey, ...]) -> None:
        for key in keys:
            fd = self._fds.pop(key, None)
            if fd is not None:
                os.close(fd)
            self._dirty.discard(key)
            self.salts.pop(key, None)
            path_of(self.directory, key)[0].unlink(missing_ok=True)

    def _replace_topology(self, snapshot: bytes, tail: bytes | bytearray) -> None:
        """Holding the io lock: the snapshot, then what came after it, as the new file."""
        path = path_of(self.directory, TOPOLOGY_KEY)[0]
        temporary = path.with_name(path.name + ".new")
        with open(temporary, "wb") as out:
            out.write(snapshot)
            out.write(tail)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
        fsync_directory(self.directory)
        old = self._fds.pop(TOPOLOGY_KEY, None)
        if old is not None:
            os.close(old)
        self._dirty.discard(TOPOLOGY_KEY)


def fsync_directory(path: Path) -> None:
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
