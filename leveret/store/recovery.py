"""Reading a data directory back at boot.

Each file is scanned (`frames.scan`): a torn tail is truncated, a corrupt
record in the middle is skipped, a file with no valid header is kept aside as
NAME.corrupt; each drop is logged and listed in the `RecoveryReport`. The
broker never refuses to start because of a damaged file.

Then each segment is replayed on its own, since every record about a message
lives in that message's segment: PUBLISH creates (mid, qid) state, the ack
log moves it (ENQUEUE adds a queue, DELIVERED marks, REQUEUED counts, REMOVED
and PURGED settle); what is left belongs to its queue, in `seq` order. An
entry that was delivered and not settled when the broker stopped comes back
redelivered, its delivery count one higher (as when a consumer's channel
closes). A segment holding no message any more is deleted.
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leveret.queues.message import Message
from leveret.queues.queue import Entry
from leveret.store.frames import MAGIC_ACK, MAGIC_MSG, scan
from leveret.store.records import (
    DELIVERED,
    ENQ,
    ENQUEUE,
    PUB,
    PUBLISH,
    PURGE,
    PURGED,
    REF,
    REMOVED,
    REQ,
    REQUEUED,
    DecodeCaches,
    decode_message,
    new_caches,
)

log = logging.getLogger("leveret.store")


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

    def drop(self, text: str) -> None:
        self.dropped.append(text)
        log.warning("recovery: %s", text)

    def __str__(self) -> str:
        text = (
            f"{self.exchanges} exchanges, {self.queues} queues, {self.bindings} bindings, "
            f"{self.messages} messages from {self.segments} segments "
            f"({self.bytes_read / 1e6:.1f} MB) in {self.seconds:.2f} s"
        )
        if self.dropped:
            text += f"; dropped {len(self.dropped)} damaged part(s), see the log"
        return text


def read_file(path: Path, magic: bytes, report: RecoveryReport, readonly: bool) -> tuple[bytes, list[int], int | None]:
    """A file's bytes, the offsets of its verified records, and its salt (None if
    the file is gone or unreadable: appends then start a new file). Unless
    `readonly`, a damaged file is repaired in place."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return b"", [], None
    report.bytes_read += len(data)
    salt, starts, keep = scan(path.name, data, magic, report.drop)
    if readonly:
        return data, starts, salt
    if keep < 0:
        if data:
            path.rename(path.with_name(path.name + ".corrupt"))
            log.warning("recovery: kept the unreadable %s as %s.corrupt", path.name, path.name)
        else:
            path.unlink()
        return b"", [], None
    if keep < len(data):
        os.truncate(path, keep)
    return data, starts, salt


@dataclass(slots=True)
class RecoveredMessages:
    """Queue entries read back, per qid, until their queue is attached."""

    entries: dict[int, list[Entry]] = field(default_factory=dict)
    redelivered: dict[int, list[Entry]] = field(default_factory=dict)  # of those, the ones handed out
    segments: list[tuple[int, int, int, int]] = field(default_factory=list)  # number, first, last mid, live
    salts: dict[int, int] = field(default_factory=dict)  # file key -> salt, for appends to match
    last_number: int = 0


def recover_messages(msgs: Path, alive: set[int], report: RecoveryReport) -> RecoveredMessages:
    """Replay every segment under `msgs` for the queues in `alive`."""
    numbers = sorted({int(p.stem) for p in msgs.glob("*.msg") if p.stem.isdigit()})
    for orphan in msgs.glob("*.ack"):
        if orphan.stem.isdigit() and int(orphan.stem) not in numbers:
            orphan.unlink()  # its segment was deleted; the unlink of its log was lost
    result = RecoveredMessages(last_number=numbers[-1] if numbers else 0)
    caches = new_caches()
    for number in numbers:
        _SegmentReplay(msgs, number, report, result).run(alive, caches)
    report.messages = sum(len(entries) for entries in result.entries.values())
    return result


class _SegmentReplay:
    """One segment's PUBLISH records, then its ack log, into `result`.

    The common case (published, maybe settled, never touched otherwise) keeps
    no state but the PUBLISH record's offset: 1M messages recover in seconds."""

    def __init__(self, msgs: Path, number: int, report: RecoveryReport, result: RecoveredMessages) -> None:
        self.msgs, self.number, self.report, self.result = msgs, number, report, result
        self.published: dict[int, tuple[int, tuple[Any, ...]]] = {}  # mid -> (offset, fields) of its PUBLISH
        # (mid << 32 | qid) -> None (as published) or
        # [seq, expires_at, priority, delivered, delivery count, redelivered]
        self.states: dict[int, list[Any] | None] = {}

    def _read(self, suffix: str, magic: bytes, key: int) -> tuple[bytes, list[int]]:
        data, starts, salt = read_file(self.msgs / f"{self.number:010d}.{suffix}", magic, self.report, False)
        if salt is not None:
            self.result.salts[key] = salt
        return data, starts

    def run(self, alive: set[int], caches: DecodeCaches) -> None:
        number = self.number
        data, starts = self._read("msg", MAGIC_MSG, number * 2)
        unpack_pub = PUB.unpack_from
        published, states = self.published, self.states
        for start in starts:
            if data[start] == PUBLISH:
                fields = unpack_pub(data, start)
                published[fields[1]] = (start, fields)
                states[fields[1] << 32 | fields[2]] = None
        if not published:
            for suffix in ("ack", "msg"):
                (self.msgs / f"{number:010d}.{suffix}").unlink(missing_ok=True)
            self.result.salts.pop(number * 2, None)
            return
        self._replay_acks()
        live = self._entries(data, alive, caches)
        self.report.segments += 1
        self.result.segments.append((number, min(published), max(published), live))

    def _touched(self, key: int) -> list[Any] | None:
        states = self.states
        if key not in states:
            return None
        state = states[key]
        if state is None:
            fields = self.published[key >> 32][1]
            state = states[key] = [fields[3], fields[4], fields[5], False, 0, False]
        return state

    def _replay_acks(self) -> None:
        acks, records = self._read("ack", MAGIC_ACK, self.number * 2 + 1)
        states, touched = self.states, self._touched
        for start in records:
            kind = acks[start]
            try:
                if kind == REMOVED:
                    _, mid, qid = REF.unpack_from(acks, start)
                    states.pop(mid << 32 | qid, None)
                elif kind == DELIVERED:
                    _, mid, qid = REF.unpack_from(acks, start)
                    state = touched(mid << 32 | qid)
                    if state is not None:
                        state[3] = True
                elif kind == REQUEUED:
                    _, mid, qid, count = REQ.unpack_from(acks, start)
                    state = touched(mid << 32 | qid)
                    if state is not None:
                        state[3], state[4], state[5] = False, count, True
                elif kind == ENQUEUE:
                    _, mid, qid, seq, expires, priority = ENQ.unpack_from(acks, start)
                    if mid in self.published:
                        states[mid << 32 | qid] = [seq, expires, priority, False, 0, False]
                elif kind == PURGED:
                    _, qid, upto = PURGE.unpack_from(acks, start)
                    for key in [k for k in states if k & 0xFFFFFFFF == qid and k >> 32 <= upto]:
                        state = states[key]
                        if state is None or not state[3]:
                            del states[key]
            except struct.error:
                self.report.drop(f"{self.number:010d}.ack: malformed record of type {kind:#x}")

    def _entries(self, data: bytes, alive: set[int], caches: DecodeCaches) -> int:
        """Hand what is left to its queues; returns how many entries that is."""
        messages: dict[int, Message] = {}
        recovered, redelivered = self.result.entries, self.result.redelivered
        published = self.published
        live = 0
        for key, state in self.states.items():
            qid = key & 0xFFFFFFFF
            if qid not in alive:
                continue  # its queue was deleted
            mid = key >> 32
            start, fields = published[mid]
            message = messages.get(mid)
            if message is None:
                message = messages[mid] = decode_message(data, start, fields, caches)
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
        return live
