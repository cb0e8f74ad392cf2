"""Message segments: which segment holds a message, and when a segment can go.

A persistent message is written once, as one PUBLISH record, into the current
segment (msgs/NNNNNNNNNN.msg, rotated at `segment_size` bytes), and gets a
message id (mid, `Message.message_id`) that grows with time, so the segment
of a mid is a bisection over the first mid of each segment. Every later record
about the message (more queues, delivered, removed, requeued, purged) goes
into that segment's own ack log (.ack), so a segment's two files are deleted
together as soon as no queue holds any of its messages (`live` counts its
queue entries): space comes back in whole files, with no compaction pass. The
cost: one message that is never consumed keeps its whole segment.

`QueueLog` is a durable queue's `Queue.journal`: it turns the queue's entry
events into these records. A transient message (issue 19's paging) could be
given a mid and a PUBLISH record the same way, with its offset in the segment
(`HEADER.size + size` before the append) as its index.

Everything here runs on the loop thread; the Writer does the I/O.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from leveret.queues.queue import Entry
from leveret.store.records import (
    DELIVERED,
    PURGE,
    PURGED,
    REF,
    REMOVED,
    REQ,
    REQUEUED,
    enqueue_record,
    publish_record,
)
from leveret.store.writer import Writer

SEGMENT_SIZE = 8 * 1024 * 1024  # LavinMQ's default segment size


class Segments:
    """The live segments of one store and the message records written into them."""

    def __init__(self, writer: Writer, segment_size: int = SEGMENT_SIZE) -> None:
        self.writer = writer
        self.segment_size = segment_size
        self.current = 1  # the segment new messages go to
        self.size = 0  # bytes written into it after its header
        self.next_mid = 1
        self.live: dict[int, int] = {1: 0}  # segment -> queue entries it still holds
        self._firsts: list[int] = [1]  # first mid of each live segment, in order
        self._numbers: list[int] = [1]  # those segments' numbers

    def restore(self, recovered: list[tuple[int, int, int, int]], last_number: int) -> None:
        """At boot: (number, first mid, last mid, live entries) of each segment read
        back; new messages go to a new segment (the last one may end in a dropped tail)."""
        self.live = {number: live for number, _, _, live in recovered}
        self._firsts = [first for _, first, _, _ in recovered]
        self._numbers = [number for number, _, _, _ in recovered]
        self.next_mid = max((last for _, _, last, _ in recovered), default=0) + 1
        self.current = last_number + 1
        self._firsts.append(self.next_mid)
        self._numbers.append(self.current)
        self.live[self.current] = 0

    def drop_empty(self) -> None:
        for number in [n for n, live in self.live.items() if not live and n != self.current]:
            self._drop(number)

    def segment_of(self, mid: int) -> int:
        firsts = self._firsts
        if mid >= firsts[-1]:
            return self._numbers[-1]
        return self._numbers[bisect.bisect_right(firsts, mid) - 1]

    # -------------------------------------------------------------- records
    def enqueued(self, qid: int, entry: Entry) -> None:
        message = entry.message
        mid = message.message_id
        if mid:
            seg = self.segment_of(mid)
            if self.live.get(seg):
                self.writer.append(seg * 2 + 1, enqueue_record(mid, qid, entry), True, False)
                self.live[seg] += 1
                return
        # First durable queue for this message: one PUBLISH record in the current segment.
        mid = message.message_id = self.next_mid
        self.next_mid += 1
        seg = self.current
        parts = publish_record(mid, qid, entry, self.writer.salt(seg * 2))
        self.writer.append_framed(seg * 2, parts, True)
        self.live[seg] += 1
        self.size += len(parts[0]) + len(parts[1]) + len(parts[2])
        if self.size >= self.segment_size:
            self._rotate()

    def delivered(self, qid: int, mid: int) -> None:
        self.writer.append(self.segment_of(mid) * 2 + 1, REF.pack(DELIVERED, mid, qid), False, True)

    def requeued(self, qid: int, mid: int, delivery_count: int) -> None:
        record = REQ.pack(REQUEUED, mid, qid, delivery_count)
        self.writer.append(self.segment_of(mid) * 2 + 1, record, False, False)

    def removed(self, qid: int, mid: int, write: bool) -> None:
        seg = self.segment_of(mid)
        if write:
            self.writer.append(seg * 2 + 1, REF.pack(REMOVED, mid, qid), False, False)
        self._release(seg, 1)

    def purged(self, qid: int, mids: Iterable[int], write: bool) -> None:
        counts: dict[int, int] = {}
        for mid in mids:
            seg = self.segment_of(mid)
            counts[seg] = counts.get(seg, 0) + 1
        upto = self.next_mid - 1
        for seg, count in counts.items():
            if write:
                self.writer.append(seg * 2 + 1, PURGE.pack(PURGED, qid, upto), False, False)
            self._release(seg, count)

    # ------------------------------------------------------------ lifetime
    def _rotate(self) -> None:
        old = self.current
        self.current = old + 1
        self.size = 0
        self._firsts.append(self.next_mid)
        self._numbers.append(self.current)
        self.live[self.current] = 0
        if not self.live[old]:
            self._drop(old)

    def _release(self, seg: int, count: int) -> None:
        live = self.live.get(seg)
        if live is None:
            return
        live -= count
        self.live[seg] = live
        if live <= 0 and seg != self.current:
            self._drop(seg)

    def _drop(self, seg: int) -> None:
        index = bisect.bisect_left(self._numbers, seg)
        if index < len(self._numbers) and self._numbers[index] == seg:
            del self._numbers[index]
            del self._firsts[index]
        self.live.pop(seg, None)
        self.writer.discard((seg * 2, seg * 2 + 1))


class QueueLog:
    """The journal of one durable queue (`Queue.journal`): its entry events as records.

    Only entries of persistent messages are kept; their message has a
    `message_id` (mid) once stored, which is how later events know them."""

    __slots__ = ("segments", "qid", "alive")

    def __init__(self, segments: Segments, qid: int) -> None:
        self.segments = segments
        self.qid = qid
        self.alive = True  # False once the queue is deleted: only counts change

    def enqueued(self, entry: Entry) -> None:
        if entry.message.properties.delivery_mode == 2:
            self.segments.enqueued(self.qid, entry)

    def delivered(self, entry: Entry, no_ack: bool) -> None:
        mid = entry.message.message_id
        if not mid:
            return
        if no_ack:
            self.segments.removed(self.qid, mid, self.alive)
        elif self.alive:
            self.segments.delivered(self.qid, mid)

    def removed(self, entry: Entry) -> None:
        mid = entry.message.message_id
        if mid:
            self.segments.removed(self.qid, mid, self.alive)

    def requeued(self, entry: Entry) -> None:
        mid = entry.message.message_id
        if mid and self.alive:
            self.segments.requeued(self.qid, mid, entry.delivery_count)

    def purged(self, entries: Iterable[Entry]) -> None:
        self.purged_ids(entry.message.message_id for entry in entries)

    def purged_ids(self, message_ids: Iterable[int]) -> None:
        mids = [mid for mid in message_ids if mid]
        self.segments.purged(self.qid, mids, self.alive)
