"""The store in process: what survives a restart, what does not, damaged files, space.

A "restart" here closes nothing on purpose unless the test says so: `crash()`
drops the broker and the store's in-memory state without a clean shutdown
(what kill -9 leaves behind is what was written), `restart()` is the clean one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from leveret.amqp_wire.properties import decode_properties, encode_properties
from leveret.bindings.model import Destination, freeze_table
from leveret.exchanges.router import publish_routing_keys
from leveret.queues.message import Message
from leveret.queues.queue import Entry, Queue
from pamqp.commands import Basic

from leveret.broker.broker import Broker
from leveret.broker.vhost import VirtualHost
from leveret.clock import VirtualClock
from leveret.store import ACK, COMMIT_OK, NACK, ReplyGate, Store, StoreLocked

T0 = 1_700_000_000_000


class Node:
    """A broker on a data directory that can be stopped cleanly or "killed"."""

    def __init__(self, path: Path, clock: VirtualClock, segment_size: int = 1 << 20) -> None:
        self.path, self.clock, self.segment_size = path, clock, segment_size
        self.broker = Broker(clock=clock)
        self.store = Store.open(path, segment_size=segment_size)
        self.broker.attach_store(self.store)

    @property
    def vhost(self) -> VirtualHost:
        return self.broker.vhosts["/"]

    def queue(self, name: str) -> Queue:
        return self.vhost.queues[name]

    def crash(self, confirmed: bool = True) -> Node:
        """A kill -9, then a start on the same directory. The writer thread does not run
        in these tests: `confirmed` means it had written and synced everything (all
        confirms sent); otherwise only what `write_through` puts in the page cache
        before a socket write is there."""
        if confirmed:
            self.store.sync()
        else:
            self.store.write_through()
        os.close(self.store._lock_fd or -1)  # the kernel drops the flock of a dead process
        self.store._lock_fd = None
        return Node(self.path, self.clock, self.segment_size)

    def restart(self) -> Node:
        self.store.close()
        return Node(self.path, self.clock, self.segment_size)

    def publish(self, routing_key: str, body: bytes, *, exchange: str = "", persistent: bool = True,
                **properties: Any) -> None:
        raw = encode_properties(Basic.Properties(delivery_mode=2 if persistent else 1, **properties))
        properties = decode_properties(raw)
        keys = publish_routing_keys(routing_key, properties.headers)  # with CC, as the channel does
        message = Message(exchange, routing_key, properties, body, raw, keys)
        self.vhost.publish(exchange, message, self.clock.now_ms())

    def get(self, queue: str) -> Entry:
        entry = self.vhost.get(queue, no_ack=False, owner=None, now_ms=self.clock.now_ms()).entry
        assert entry is not None
        return entry

    def bodies(self, queue: str) -> list[bytes]:
        return [entry.message.body for entry in self.queue(queue).ready_entries()]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    node = Node(tmp_path / "data", VirtualClock(T0))
    yield node
    for current in (node,):
        if current.store._lock_fd is not None:
            current.store.close()


def close(node: Node) -> None:
    node.store.close()


# ------------------------------------------------------------------ topology
def test_durable_topology_survives_a_crash_and_transient_topology_does_not(node: Node) -> None:
    v = node.vhost
    v.declare_exchange("orders", "topic", durable=True, arguments={"alternate-exchange": "unrouted"})
    v.declare_exchange("unrouted", "fanout", durable=True)
    v.declare_exchange("scratch", "direct", durable=False)
    v.declare_queue("billing", durable=True, arguments={"x-max-length": 10, "x-dead-letter-exchange": "dlx"})
    v.declare_queue("temp", durable=False)
    v.bind("orders", Destination.queue("billing"), "order.*", {"x-match": "all", "n": 1})
    v.bind("orders", Destination.queue("temp"), "order.*")  # to a transient queue: not kept
    v.bind("orders", Destination.exchange("unrouted"), "#")  # exchange to exchange, both durable
    v.bind("scratch", Destination.queue("billing"), "x")  # from a transient exchange: not kept

    node = node.crash()
    v = node.vhost
    assert {"orders", "unrouted"} <= set(v.exchanges) and "scratch" not in v.exchanges
    assert set(v.queues) == {"billing"}
    assert v.exchanges["orders"].arguments == {"alternate-exchange": "unrouted"}
    assert v.queues["billing"].arguments == {"x-max-length": 10, "x-dead-letter-exchange": "dlx"}
    bindings = {(b.source, b.destination, b.binding_key, b.arguments) for b in v.bindings()}
    assert bindings == {
        ("orders", Destination.queue("billing"), "order.*", freeze_table({"x-match": "all", "n": 1})),
        ("orders", Destination.exchange("unrouted"), "#", ()),
    }
    # Declaring them again as the clients do is equivalent, not a 406.
    v.declare_queue("billing", durable=True, arguments={"x-max-length": 10, "x-dead-letter-exchange": "dlx"})
    # and binding again is a no-op, not a second binding
    v.bind("orders", Destination.queue("billing"), "order.*", {"x-match": "all", "n": 1})
    assert len([b for b in v.bindings() if b.destination == Destination.queue("billing")]) == 1
    node.store.close()


def test_a_vhost_made_at_run_time_comes_back_with_its_durable_queues(node: Node) -> None:
    orders = node.broker.add_vhost("orders")
    orders.declare_queue("invoices", durable=True)
    raw = encode_properties(Basic.Properties(delivery_mode=2))
    orders.publish("", Message("", "invoices", decode_properties(raw), b"paid", raw), node.clock.now_ms())
    node = node.crash()
    assert [e.message.body for e in node.broker.vhosts["orders"].queues["invoices"].ready_entries()] == [b"paid"]
    node.store.close()


def test_deleted_things_stay_deleted_and_a_new_queue_of_the_same_name_starts_empty(node: Node) -> None:
    v = node.vhost
    v.declare_exchange("events", "fanout", durable=True)
    v.declare_queue("jobs", durable=True)
    v.bind("events", Destination.queue("jobs"), "")
    node.publish("jobs", b"old")
    v.delete_queue("jobs")
    v.declare_queue("jobs", durable=True)
    node.publish("jobs", b"new")
    v.delete_exchange("events")

    node = node.crash()
    v = node.vhost
    assert "events" not in v.exchanges
    assert node.bodies("jobs") == [b"new"]
    v.declare_exchange("events", "fanout", durable=True)  # no binding comes back with it
    assert v.bindings() == []
    node.store.close()


# ------------------------------------------------------------------ messages
def test_only_persistent_messages_in_durable_queues_survive(node: Node) -> None:
    node.vhost.declare_queue("durable", durable=True)
    node.vhost.declare_queue("transient", durable=False)
    node.publish("durable", b"keep")
    node.publish("durable", b"lose", persistent=False)
    node.publish("transient", b"lose")
    node.store.sync()

    node = node.crash()
    assert node.bodies("durable") == [b"keep"]
    assert "transient" not in node.vhost.queues
    node.store.close()


def test_what_was_not_synced_is_lost_whole_and_delivered_flags_are_not(node: Node) -> None:
    node.vhost.declare_queue("q", durable=True)
    node.publish("q", b"confirmed")
    node.store.sync()
    node.publish("q", b"never confirmed")
    node.get("q")  # "confirmed", handed to a consumer: its flag is written before the delivery goes out
    node = node.crash(confirmed=False)
    assert [(e.message.body, e.redelivered) for e in node.queue("q").ready_entries()] == [(b"confirmed", True)]
    node.store.close()


def test_a_message_comes_back_whole(node: Node) -> None:
    node.vhost.declare_exchange("cc", "direct", durable=True)
    node.vhost.declare_queue("a", durable=True)
    node.vhost.declare_queue("b", durable=True)
    node.vhost.bind("cc", Destination.queue("a"), "a")
    node.vhost.bind("cc", Destination.queue("b"), "b")
    node.publish("a", b"\x00body\xff" * 1000, exchange="cc", headers={"CC": ["b"], "n": 1.5},
                 content_type="application/json", message_id="m-1", priority=3)
    original = node.queue("a").ready_entries()[0].message
    node.store.sync()

    node = node.crash()
    for queue in ("a", "b"):
        message = node.queue(queue).ready_entries()[0].message
        assert message.body == original.body
        assert message.raw_properties == original.raw_properties  # the publisher's bytes
        assert (message.exchange, message.routing_key, message.routing_keys) == ("cc", "a", ("a", "b"))
        assert message.properties.headers == {"CC": ["b"], "n": 1.5}
    node.store.close()


def test_delivered_unacked_messages_come_back_redelivered_and_acked_ones_do_not(node: Node) -> None:
    node.vhost.declare_queue("q", durable=True, arguments={"x-queue-type": "quorum"})
    for body in (b"acked", b"unacked", b"waiting"):
        node.publish("q", body)
    node.vhost.ack(node.queue("q"), [node.get("q")])
    node.get("q")

    node = node.crash()
    entries = node.queue("q").ready_entries()
    assert [(e.message.body, e.redelivered, e.delivery_count) for e in entries] == [
        (b"unacked", True, 1), (b"waiting", False, 0)]
    node = node.crash()  # the new count was written: a second crash does not add another
    assert [e.delivery_count for e in node.queue("q").ready_entries()] == [1, 0]
    node.store.close()


def test_requeue_reject_purge_and_order_survive(node: Node) -> None:
    node.vhost.declare_queue("q", durable=True, arguments={"x-max-priority": 5})
    node.vhost.declare_queue("purged", durable=True)
    for n, priority in enumerate((0, 5, 0, 5, 1)):
        node.publish("q", b"m%d" % n, priority=priority)
    node.publish("purged", b"gone")
    node.vhost.purge_queue("purged")
    node.publish("purged", b"after purge")
    first, second = node.get("q"), node.get("q")  # m1, m3 (priority 5)
    node.vhost.requeue(node.queue("q"), [second], node.clock.now_ms())
    node.vhost.reject(node.queue("q"), [first], node.clock.now_ms())
    before = node.bodies("q")

    node = node.crash()
    assert node.bodies("q") == before == [b"m3", b"m4", b"m0", b"m2"]
    assert [e.redelivered for e in node.queue("q").ready_entries()] == [True, False, False, False]
    assert node.bodies("purged") == [b"after purge"]
    node.publish("q", b"new", priority=5)
    assert node.bodies("q")[:2] == [b"m3", b"new"]  # sequence numbers continue after the old ones
    node.store.close()


def test_ttl_deadlines_are_absolute_across_a_restart(node: Node) -> None:
    v = node.vhost
    v.declare_exchange("dlx", "fanout", durable=True)
    v.declare_queue("expired", durable=True)
    v.bind("dlx", Destination.queue("expired"), "")
    v.declare_queue("q", durable=True, arguments={"x-message-ttl": 10_000, "x-dead-letter-exchange": "dlx"})
    node.publish("q", b"queue ttl")
    node.publish("q", b"own ttl", expiration="4000")  # expires behind the head, at the head only
    node.clock.advance(3_000)

    node = node.restart()
    node.clock.advance(3_000)  # 6 s after publishing: the 4 s message is due but not at the head
    node.broker.run_timers()
    assert node.bodies("q") == [b"queue ttl", b"own ttl"]
    node.clock.advance(4_000)  # 10 s: the head expires, then the one behind it
    node.broker.run_timers()
    assert node.bodies("q") == []
    assert node.bodies("expired") == [b"queue ttl", b"own ttl"]

    node = node.crash()  # the dead-lettered copies are persistent messages in a durable queue
    dead = node.queue("expired").ready_entries()[0].message
    assert dead.properties.headers["x-death"][0]["reason"] == "expired"
    assert node.bodies("expired") == [b"queue ttl", b"own ttl"]
    node.store.close()


def test_delivery_limit_counts_survive_and_an_unacked_delivery_counts(node: Node) -> None:
    v = node.vhost
    v.declare_exchange("dlx", "fanout", durable=True)
    v.declare_queue("poison", durable=True)
    v.bind("dlx", Destination.queue("poison"), "")
    v.declare_queue("q", durable=True, arguments={"x-delivery-limit": 2, "x-dead-letter-exchange": "dlx"})
    node.publish("q", b"m")
    for _ in range(2):
        node.vhost.requeue(node.queue("q"), [node.get("q")], node.clock.now_ms())

    node = node.crash()
    assert [e.delivery_count for e in node.queue("q").ready_entries()] == [2]
    node.get("q")  # a third delivery, never settled: the crash returns it over the limit
    node = node.crash()
    assert node.bodies("q") == []
    assert node.bodies("poison") == [b"m"]
    node.store.close()


def test_a_fanout_message_is_kept_until_every_queue_is_done_with_it(node: Node) -> None:
    v = node.vhost
    v.declare_exchange("f", "fanout", durable=True)
    for name in ("a", "b"):
        v.declare_queue(name, durable=True)
        v.bind("f", Destination.queue(name), "")
    node.publish("", b"both", exchange="f")
    node.vhost.ack(node.queue("a"), [node.get("a")])

    node = node.crash()
    assert (node.bodies("a"), node.bodies("b")) == ([], [b"both"])
    node.store.close()


def test_delayed_messages_wait_on_across_a_crash(node: Node) -> None:
    v = node.vhost
    v.declare_exchange("later", "x-delayed-message", durable=True, arguments={"x-delayed-type": "direct"})
    v.declare_queue("jobs", durable=True)
    v.bind("later", Destination.queue("jobs"), "run")
    node.publish("run", b"in 5 s", exchange="later", headers={"x-delay": 5000})
    node.publish("run", b"transient", exchange="later", headers={"x-delay": 5000}, persistent=False)
    node.clock.advance(2_000)

    node = node.crash()
    assert len(node.vhost.delayed) == 1 and node.bodies("jobs") == []
    node.clock.advance(2_999)
    node.broker.run_timers()
    assert node.bodies("jobs") == []
    node.clock.advance(1)  # 5 s after publishing, as if nothing had happened
    node.broker.run_timers()
    assert node.bodies("jobs") == [b"in 5 s"]
    assert node.queue("jobs").ready_entries()[0].message.properties.headers == {"x-delay": -5000}

    node = node.crash()  # routed: now an ordinary persistent message in a durable queue
    assert (len(node.vhost.delayed), node.bodies("jobs")) == (0, [b"in 5 s"])
    node.store.close()


def test_a_recovered_message_still_holds_its_deduplication_key(node: Node) -> None:
    node.vhost.declare_queue("once", durable=True, arguments={"x-message-deduplication": True})
    node.publish("once", b"first", headers={"x-deduplication-header": "order-1"})
    node = node.crash()
    node.publish("once", b"again", headers={"x-deduplication-header": "order-1"})
    assert node.bodies("once") == [b"first"]
    node.store.close()


# --------------------------------------------------------------------- space
def test_steady_publish_and_ack_keeps_the_store_small(node: Node) -> None:
    node = node.restart()
    node.store.segment_size = 64 * 1024
    node.vhost.declare_queue("q", durable=True)
    for n in range(20_000):
        node.publish("q", b"x" * 100)
        if n >= 50:  # a consumer 50 messages behind
            node.vhost.ack(node.queue("q"), [node.get("q")])
        if n % 1000 == 0:
            node.store.sync()
            files = os.listdir(node.path / "msgs")
            assert len(files) <= 6, files  # (msg + ack) x (the segment being written + one or two behind)
    node.store.sync()
    assert node.store.stats()["bytes"] < 4 * 64 * 1024
    node.store.close()


def test_declare_and_delete_churn_keeps_the_topology_log_small(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("leveret.store.topology.TOPOLOGY_COMPACT_MIN", 50)
    node.vhost.declare_queue("keeper", durable=True)
    node.publish("keeper", b"kept")
    sizes = []
    for n in range(400):
        node.vhost.declare_queue(f"worker-{n}", durable=True)
        node.vhost.bind("amq.direct", Destination.queue(f"worker-{n}"), "work")
        node.vhost.delete_queue(f"worker-{n - 1}")
        node.store.write_through()
        if n % 50 == 49:
            node.store.sync()
            sizes.append((node.path / "topology.log").stat().st_size)
    assert max(sizes) < 8000  # about 100 records at most, not 1 200
    node = node.crash(confirmed=False)
    assert set(node.vhost.queues) == {"keeper", "worker-399"}
    assert [(b.source, b.destination.name) for b in node.vhost.bindings()] == [("amq.direct", "worker-399")]
    assert node.bodies("keeper") == [b"kept"]
    node.store.close()


def test_a_segment_goes_when_its_last_message_does(node: Node) -> None:
    node = node.restart()
    node.store.segment_size = 4096
    node.vhost.declare_queue("slow", durable=True)
    node.vhost.declare_queue("fast", durable=True)
    node.publish("slow", b"stuck")
    for _ in range(300):
        node.publish("fast", b"y" * 100)
        node.vhost.ack(node.queue("fast"), [node.get("fast")])
    node.store.sync()
    assert "0000000001.msg" in os.listdir(node.path / "msgs")  # held by "stuck"
    assert len(os.listdir(node.path / "msgs")) <= 4
    node.vhost.purge_queue("slow")
    node.store.sync()
    assert "0000000001.msg" not in os.listdir(node.path / "msgs")
    node.store.close()


# -------------------------------------------------------------- damaged files
def _segment(node: Node) -> Path:
    return sorted((node.path / "msgs").glob("*.msg"))[-1]


def _filled(node: Node, count: int = 5) -> Node:
    node.vhost.declare_queue("q", durable=True)
    for n in range(count):
        node.publish("q", b"message %d " % n + b"." * 200)
    node.store.close()
    return node


@pytest.mark.parametrize("cut", [1, 7, 8, 30, 150, 212])
def test_a_torn_last_write_is_dropped_with_a_log_line(
    node: Node, cut: int, caplog: pytest.LogCaptureFixture
) -> None:
    segment = _segment(_filled(node))
    size = segment.stat().st_size
    os.truncate(segment, size - cut)  # the last record loses its last `cut` bytes
    with caplog.at_level(logging.WARNING, logger="leveret.store"):
        node = Node(node.path, node.clock)
    assert node.bodies("q") == [b"message %d " % n + b"." * 200 for n in range(4)]
    assert len(node.store.report.dropped) == 1
    assert f"{segment.name}: torn tail, dropped" in caplog.text
    node.publish("q", b"after")  # the store goes on, and the torn bytes are gone for good
    node = node.restart()
    assert len(node.bodies("q")) == 5 and node.store.report.dropped == []
    node.store.close()


def test_a_corrupt_record_in_the_middle_costs_only_that_record(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    segment = _segment(_filled(node))
    data = bytearray(segment.read_bytes())
    middle = data.index(b"message 2 ")
    data[middle] ^= 0xFF
    segment.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="leveret.store"):
        node = Node(node.path, node.clock)
    assert [body[:9] for body in node.bodies("q")] == [b"message 0", b"message 1", b"message 3", b"message 4"]
    assert "corrupt record, dropped" in caplog.text
    node.store.close()


def test_a_torn_ack_log_keeps_the_records_before_it(node: Node) -> None:
    node.vhost.declare_queue("q", durable=True)
    for n in range(3):
        node.publish("q", b"m%d" % n)
    for _ in range(3):
        node.vhost.ack(node.queue("q"), [node.get("q")])
    node.store.close()
    ack_log = sorted((node.path / "msgs").glob("*.ack"))[-1]
    os.truncate(ack_log, ack_log.stat().st_size - 3)  # the last "removed" record is torn
    node = Node(node.path, node.clock)
    assert node.bodies("q") == [b"m2"]  # at least once: the torn ack only costs a redelivery
    assert node.queue("q").ready_entries()[0].redelivered
    node.store.close()


def test_an_unreadable_file_is_set_aside_and_the_broker_starts(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    segment = _segment(_filled(node))
    segment.write_bytes(b"garbage" * 100)
    (node.path / "topology.log").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="leveret.store"):
        node = Node(node.path, node.clock)
    assert "q" not in node.vhost.queues
    assert (segment.parent / (segment.name + ".corrupt")).exists()
    assert "no valid header" in caplog.text
    node.store.close()


def test_a_torn_topology_log_loses_only_its_last_change(node: Node) -> None:
    node.vhost.declare_queue("first", durable=True)
    node.store.close()
    node = Node(node.path, node.clock)
    node.vhost.declare_queue("second", durable=True)
    node = node.crash()
    node.store.close()
    topology = node.path / "topology.log"
    os.truncate(topology, topology.stat().st_size - 1)
    node = Node(node.path, node.clock)
    assert set(node.vhost.queues) == {"first"}
    node.store.close()


def test_a_data_directory_serves_one_broker_at_a_time(node: Node) -> None:
    with pytest.raises(StoreLocked) as raised:
        Store.open(node.path)
    assert f"(pid {os.getpid()})" in str(raised.value)


# ---------------------------------------------------------------- confirms
def test_held_replies_go_out_in_order_once_synced(node: Node) -> None:
    sent: list[tuple[int, int, bool]] = []
    gate = ReplyGate(node.store, lambda kind, tag, multiple: sent.append((kind, tag, multiple)))
    node.vhost.declare_queue("q", durable=True)
    for tag, kind in ((1, ACK), (2, ACK), (3, ACK), (4, NACK), (5, ACK), (6, COMMIT_OK)):
        node.publish("q", b"m")
        gate.hold(node.store.position, kind, tag)
    node.store.completed()
    assert sent == []  # nothing is on disk yet
    node.store.sync()
    assert sent == [(ACK, 3, True), (NACK, 4, False), (ACK, 5, False), (COMMIT_OK, 6, False)]
    node.store.close()


def test_reply_after_a_failed_write_is_a_nack(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[int, int, bool]] = []
    gate = ReplyGate(node.store, lambda kind, tag, multiple: sent.append((kind, tag, multiple)))
    node.vhost.declare_queue("q", durable=True)
    node.store.sync()

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr("leveret.store.writer._fdatasync", broken)
    node.publish("q", b"m")
    gate.hold(node.store.position, ACK, 1)
    node.store.sync()
    assert sent == [(NACK, 1, False)]
    monkeypatch.undo()
    node.store.close()


def test_fsync_time_is_counted_for_metrics(node: Node) -> None:
    assert (node.store.fsync_count, node.store.fsync_seconds_total) == (0, 0.0)
    node.vhost.declare_queue("durable", durable=True)
    node.publish("durable", b"keep")
    node.store.sync()
    assert node.store.fsync_count >= 1
    assert node.store.fsync_seconds_total > 0.0
