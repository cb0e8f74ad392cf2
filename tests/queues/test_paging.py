"""Queues that page ready entries to disk (issue 19): same order, flags, limits and
dead letters as in memory, while only a bounded head stays in memory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from leveret.amqp_wire.properties import decode_properties, encode_properties
from leveret.queues.message import Message
from leveret.queues.queue import HEAD_LIMIT, LAZY_HEAD_LIMIT, PAGE_BATCH, Entry, Queue
from pamqp.commands import Basic

from leveret.broker.broker import Broker
from leveret.clock import VirtualClock
from leveret.store import Store
from leveret.store.paging import PageFiles

T0 = 1_700_000_000_000


def message(index: int, *, persistent: bool = False, priority: int | None = None,
            expiration: str | None = None, size: int = 100) -> Message:
    raw = encode_properties(Basic.Properties(
        delivery_mode=2 if persistent else 1, message_id=str(index), priority=priority,
        expiration=expiration, headers={"n": index}))
    return Message("", "q", decode_properties(raw), bytes([index % 251]) * size, raw)


def paged_queue(tmp_path: Path, arguments: dict[str, object] | None = None) -> tuple[Queue, PageFiles]:
    pager = PageFiles(tmp_path)
    queue = Queue("q", arguments=arguments)
    queue.pager = pager
    return queue, pager


def ids(entries: list[Entry]) -> list[int]:
    return [int(entry.message.properties.message_id or -1) for entry in entries]


def drain(queue: Queue, now_ms: int = T0) -> list[Entry]:
    out = []
    while True:
        entry, _ = queue.get(now_ms, no_ack=True)
        if entry is None:
            return out
        out.append(entry)


def test_only_the_head_stays_in_memory_and_everything_comes_back_in_order(tmp_path: Path) -> None:
    queue, pager = paged_queue(tmp_path)
    total = HEAD_LIMIT * 3
    for index in range(total):
        queue.enqueue(message(index), T0)
    assert queue.message_count == total
    assert queue.ready_bytes == total * 100
    assert len(queue.ready_entries()) == HEAD_LIMIT
    assert queue.paged_count == total - HEAD_LIMIT
    assert pager.bytes_on_disk() > (total - HEAD_LIMIT) * 100
    entries = drain(queue)
    assert ids(entries) == list(range(total))
    assert entries[5000].message.properties.headers == {"n": 5000}
    assert entries[5000].message.body == bytes([5000 % 251]) * 100
    assert queue.message_count == queue.paged_count == queue.ready_bytes == 0
    assert pager.open_files == 0 and not list((tmp_path / "paging").rglob("*.page"))


def test_lazy_queues_page_from_the_start(tmp_path: Path) -> None:
    queue, _ = paged_queue(tmp_path, {"x-queue-mode": "lazy"})
    for index in range(1000):
        queue.enqueue(message(index), T0)
    assert len(queue.ready_entries()) == LAZY_HEAD_LIMIT
    assert queue.paged_count == 1000 - LAZY_HEAD_LIMIT
    assert ids(drain(queue)) == list(range(1000))


def test_requeued_entries_keep_their_place_and_flag_with_a_paged_tail(tmp_path: Path) -> None:
    queue, _ = paged_queue(tmp_path, {"x-queue-mode": "lazy"})
    for index in range(2000):
        queue.enqueue(message(index), T0)
    taken = [queue.get(T0, no_ack=False)[0] for _ in range(300)]
    assert all(entry is not None for entry in taken)
    queue.requeue([entry for entry in taken if entry is not None][::2], T0)
    entries = drain(queue)
    expected = list(range(0, 300, 2)) + list(range(300, 2000))
    assert ids(entries) == expected
    assert [entry.redelivered for entry in entries[:150]] == [True] * 150
    assert not any(entry.redelivered for entry in entries[150:])


def test_priorities_page_per_level(tmp_path: Path) -> None:
    queue, _ = paged_queue(tmp_path, {"x-max-priority": 2, "x-queue-mode": "lazy"})
    for index in range(3000):
        queue.enqueue(message(index, priority=index % 3), T0)
    assert queue.paged_count == 3000 - 3 * LAZY_HEAD_LIMIT
    expected = [i for p in (2, 1, 0) for i in range(3000) if i % 3 == p]
    assert ids(drain(queue)) == expected


def test_ttl_expires_paged_messages_when_they_reach_the_head(tmp_path: Path) -> None:
    queue, _ = paged_queue(tmp_path, {"x-queue-mode": "lazy", "x-message-ttl": 1000,
                                      "x-dead-letter-exchange": "dlx"})
    for index in range(1000):
        queue.enqueue(message(index), T0 + index)
    assert queue.next_deadline() == T0 + 1000
    dead = queue.expire_messages(T0 + 1000 + 599)  # 0..599 are due
    assert [int(d.message.properties.message_id or -1) for d in dead] == list(range(600))
    assert {d.reason for d in dead} == {"expired"}
    assert queue.message_count == 400
    assert queue.next_deadline() == T0 + 1600
    assert ids(drain(queue, T0 + 1600)) == list(range(601, 1000))


def test_max_length_drops_the_head_of_a_paged_queue(tmp_path: Path) -> None:
    queue, _ = paged_queue(tmp_path, {"x-queue-mode": "lazy", "x-max-length": 500,
                                      "x-dead-letter-exchange": "dlx"})
    dead = []
    for index in range(2000):
        dead.extend(queue.enqueue(message(index), T0)[1])
    assert queue.message_count == 500
    assert [int(d.message.properties.message_id or -1) for d in dead] == list(range(1500))
    assert ids(drain(queue)) == list(range(1500, 2000))


def test_reject_publish_counts_paged_bytes(tmp_path: Path) -> None:
    queue, _ = paged_queue(tmp_path, {"x-queue-mode": "lazy", "x-max-length-bytes": 100 * 1000,
                                      "x-overflow": "reject-publish"})
    accepted = [queue.enqueue(message(index), T0)[0] for index in range(1200)]
    assert accepted == [True] * 1000 + [False] * 200


def test_purge_drops_paged_entries_and_their_files(tmp_path: Path) -> None:
    queue, pager = paged_queue(tmp_path, {"x-queue-mode": "lazy"})
    for index in range(3000):
        queue.enqueue(message(index), T0)
    assert queue.purge() == 3000
    assert queue.message_count == queue.paged_count == 0
    assert pager.open_files == 0 and pager.bytes_on_disk() == 0
    queue.enqueue(message(7), T0)
    assert ids(drain(queue)) == [7]


def test_a_corrupt_page_record_costs_that_message_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    queue, _ = paged_queue(tmp_path, {"x-queue-mode": "lazy"})
    for index in range(LAZY_HEAD_LIMIT + 10):
        queue.enqueue(message(index), T0)
    page = next((tmp_path / "paging").rglob("*.page"))
    queue._paged[0]._flush()  # type: ignore[union-attr]
    data = bytearray(page.read_bytes())
    data[40] ^= 0xFF  # inside the first paged record
    page.write_bytes(bytes(data))
    got = ids(drain(queue))
    assert got == list(range(LAZY_HEAD_LIMIT)) + list(range(LAZY_HEAD_LIMIT + 1, LAZY_HEAD_LIMIT + 10))
    assert "corrupt record" in caplog.text
    assert queue.message_count == 0


def test_a_failed_page_write_keeps_the_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    queue, _ = paged_queue(tmp_path, {"x-queue-mode": "lazy"})

    def full(*_: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    for index in range(LAZY_HEAD_LIMIT + 3000):  # more than one write chunk
        queue.enqueue(message(index, size=200), T0)
    monkeypatch.undo()
    assert ids(drain(queue)) == list(range(LAZY_HEAD_LIMIT + 3000))


def test_durable_paged_messages_survive_a_restart_and_a_purge_frees_their_segments(tmp_path: Path) -> None:
    clock = VirtualClock(T0)

    def start() -> tuple[Broker, Store]:
        broker = Broker(clock=clock)
        store = Store.open(tmp_path, segment_size=64 * 1024)
        broker.attach_store(store)
        return broker, store

    broker, store = start()
    vhost = broker.vhosts["/"]
    vhost.declare_queue("q", durable=True, arguments={"x-queue-mode": "lazy"}, now_ms=T0)
    for index in range(2000):
        vhost.publish("", message(index, persistent=True), T0)
    assert vhost.queues["q"].paged_count == 2000 - LAZY_HEAD_LIMIT
    for _ in range(10):
        outcome = vhost.get("q", no_ack=False, owner=None, now_ms=T0)
        assert outcome.entry is not None
    store.close()  # ten unacked come back redelivered

    broker, store = start()
    queue = broker.vhosts["/"].queues["q"]
    assert queue.message_count == 2000 and queue.paged_count == 2000 - LAZY_HEAD_LIMIT
    entries = drain(queue)
    assert ids(entries) == list(range(2000))
    assert [entry.redelivered for entry in entries[:11]] == [True] * 10 + [False]
    store.close()

    broker, store = start()
    vhost = broker.vhosts["/"]
    assert vhost.queues["q"].message_count == 0
    for index in range(2000):
        vhost.publish("", message(index, persistent=True), T0)
    assert store.stats()["entries"] == 2000
    assert vhost.purge_queue("q") == 2000
    assert store.stats()["entries"] == 0
    store.close()


def test_page_batches_stay_small() -> None:
    assert PAGE_BATCH <= LAZY_HEAD_LIMIT // 2


def test_message_ids_are_packed_and_come_back_exactly() -> None:
    import random

    from leveret.store.paging import MessageIds

    rng = random.Random(19)
    ids, values, last, consumed = MessageIds(), [], 0, 0
    for index in range(200_000):
        value = 0 if rng.random() < 0.2 else (last := last + rng.choice([1, 1, 2, 300, -5, 100_000]) + 10)
        values.append(value)
        ids.append(value)
        if index % 1000 == 999:
            ids.consume(600)
            consumed += 600
    assert len(ids) == 200_000 - consumed
    assert ids.ids() == [value for value in values[consumed:] if value]
