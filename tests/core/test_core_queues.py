"""Queues in a virtual host: ordering, consumers, settlement, declare rules.

Expected orders, counts and texts are RabbitMQ 3.10.8's (recorded against the
reference broker: /work/oracle/resultsA.json, resultsC.json, and pika probes).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.core.core_support import OTHER, OWNER, FakeConsumer, World, error_of

V = "in vhost '/'"
LOCKED = (
    "cannot obtain exclusive access to locked queue 'q' in vhost '/'. It could be originally "
    "declared on another connection or the exclusive property value does not match that of "
    "the original declaration."
)


def fill(world: World, queue: str, count: int, prefix: str = "m") -> None:
    for number in range(1, count + 1):
        world.publish("", queue, f"{prefix}{number}".encode())


# ------------------------------------------------------------------ order
def test_fifo(world: World) -> None:
    world.queue("q")
    fill(world, "q", 5)
    assert world.count("q") == 5
    assert world.drain("q") == [b"m1", b"m2", b"m3", b"m4", b"m5"]


def test_round_robin_between_consumers(world: World) -> None:
    world.queue("q")
    consumers = [world.consume("q", FakeConsumer(tag)) for tag in "abc"]
    fill(world, "q", 9)
    assert [c.bodies() for c in consumers] == [
        [b"m1", b"m4", b"m7"], [b"m2", b"m5", b"m8"], [b"m3", b"m6", b"m9"],
    ]


def test_round_robin_skips_consumers_without_credit(world: World) -> None:
    world.queue("q")
    a = world.consume("q", FakeConsumer("a", prefetch=1))
    b = world.consume("q", FakeConsumer("b", prefetch=3))
    fill(world, "q", 5)
    assert (a.bodies(), b.bodies()) == ([b"m1"], [b"m2", b"m3", b"m4"])
    assert world.count("q") == 1
    world.ack(a)
    assert a.bodies() == [b"m1", b"m5"]


def test_consumer_priorities(world: World) -> None:
    # resultsC: x-priority 10, 0, 5 with prefetch 1 each, 5 messages.
    world.queue("q")
    low = world.consume("q", FakeConsumer("p0", priority=0, prefetch=1))
    high = world.consume("q", FakeConsumer("p10", priority=10, prefetch=1))
    mid = world.consume("q", FakeConsumer("p5", priority=5, prefetch=1))
    fill(world, "q", 5)
    assert (high.bodies(), mid.bodies(), low.bodies()) == ([b"m1"], [b"m2"], [b"m3"])
    assert world.count("q") == 2
    world.ack(low)  # only the low one has room: it gets the next
    assert low.bodies() == [b"m3", b"m4"]
    world.ack(high)
    assert high.bodies() == [b"m1", b"m5"]


def test_high_priority_consumer_with_credit_takes_everything(world: World) -> None:
    world.queue("q")
    low = world.consume("q", FakeConsumer("low"))
    high = world.consume("q", FakeConsumer("high", priority=1))
    fill(world, "q", 4)
    assert (len(high.received), len(low.received)) == (4, 0)


def test_equal_priorities_round_robin_below_a_blocked_higher_one(world: World) -> None:
    world.queue("q")
    world.consume("q", FakeConsumer("top", priority=9, prefetch=1))
    a = world.consume("q", FakeConsumer("a", priority=1))
    b = world.consume("q", FakeConsumer("b", priority=1))
    fill(world, "q", 5)
    assert (a.bodies(), b.bodies()) == ([b"m2", b"m4"], [b"m3", b"m5"])


def test_single_active_consumer_and_takeover(world: World) -> None:
    world.queue("q", arguments={"x-single-active-consumer": True})
    first = world.consume("q", FakeConsumer("first", priority=0, prefetch=2))
    second = world.consume("q", FakeConsumer("second", priority=5))
    fill(world, "q", 4)
    assert (first.bodies(), second.bodies()) == ([b"m1", b"m2"], [])
    assert world.vhost.queues["q"].consumer_count == 2
    # Cancel does not requeue: the next consumer takes over what is ready.
    world.cancel("q", first)
    assert second.bodies() == [b"m3", b"m4"]
    assert world.count("q") == 0


def test_exclusive_consumers(world: World) -> None:
    world.queue("q")
    world.consume("q", FakeConsumer("a"))
    in_use = (403, f"queue 'q' {V} in exclusive use")
    assert error_of(lambda: world.consume("q", FakeConsumer("x"), exclusive=True)) == in_use
    world.queue("r")
    world.consume("r", FakeConsumer("x"), exclusive=True)
    assert error_of(lambda: world.consume("r", FakeConsumer("b"))) == (403, f"queue 'r' {V} in exclusive use")


# ------------------------------------------------------------ settlement
def test_requeue_goes_back_to_the_original_position(world: World) -> None:
    # resultsC: get m1..m3, nack m2 then m1 with requeue, then get all.
    world.queue("q")
    fill(world, "q", 5)
    queue = world.vhost.queues["q"]
    m1, m2, m3 = (world.get("q", no_ack=False) for _ in range(3))
    assert m1 is not None and m2 is not None and m3 is not None
    world.vhost.requeue(queue, [m2], world.now)
    world.vhost.requeue(queue, [m1], world.now)
    entries = []
    while (entry := world.get("q")) is not None:
        entries.append((entry.message.body, entry.redelivered))
    assert entries == [(b"m1", True), (b"m2", True), (b"m4", False), (b"m5", False)]
    assert queue.unacked_count == 1


def test_requeue_in_any_order_restores_publish_order(world: World) -> None:
    world.queue("q")
    fill(world, "q", 5)
    taken = [world.get("q", no_ack=False) for _ in range(3)]
    assert None not in taken
    queue = world.vhost.queues["q"]
    assert queue.unacked_count == 3
    world.vhost.requeue(queue, [taken[2], taken[0]], world.now)  # type: ignore[list-item]  # m3, m1
    assert world.drain("q") == [b"m1", b"m3", b"m4", b"m5"]
    assert queue.unacked_count == 1


def test_requeued_message_is_redelivered_to_consumers(world: World) -> None:
    world.queue("q")
    consumer = world.consume("q", FakeConsumer("c", prefetch=1))
    fill(world, "q", 2)
    world.requeue(consumer)
    assert consumer.log() == [(b"m1", False), (b"m1", True)]


def test_ack_and_reject_without_dead_letter_exchange(world: World) -> None:
    world.queue("q")
    consumer = world.consume("q", FakeConsumer("c", prefetch=2))
    fill(world, "q", 4)
    world.ack(consumer, 1)
    world.reject(consumer, 1)
    assert consumer.bodies() == [b"m1", b"m2", b"m3", b"m4"]
    queue = world.vhost.queues["q"]
    assert (queue.message_count, queue.unacked_count) == (0, 2)


def test_get_reports_message_count_after_the_get(world: World) -> None:
    world.queue("q")
    fill(world, "q", 4)
    counts = []
    for _ in range(5):
        outcome = world.vhost.get("q", no_ack=True, owner=None, now_ms=world.now)
        counts.append((outcome.entry.message.body if outcome.entry else None, outcome.message_count))
    assert counts == [(b"m1", 3), (b"m2", 2), (b"m3", 1), (b"m4", 0), (None, 0)]


def test_get_without_no_ack_keeps_the_message_unacked(world: World) -> None:
    world.queue("q")
    fill(world, "q", 2)
    entry = world.get("q", no_ack=False)
    queue = world.vhost.queues["q"]
    assert entry is not None
    assert (queue.message_count, queue.unacked_count) == (1, 1)
    world.vhost.ack(queue, [entry])
    assert queue.unacked_count == 0


def test_purge_counts_ready_messages_only(world: World) -> None:
    # resultsC: 5 published, 2 taken unacked, 1 held by a consumer: purge-ok 2.
    world.queue("q")
    fill(world, "q", 5)
    world.get("q", no_ack=False)
    world.get("q", no_ack=False)
    consumer = world.consume("q", FakeConsumer("c", prefetch=1))
    assert world.vhost.purge_queue("q") == 2
    queue = world.vhost.queues["q"]
    assert (queue.message_count, queue.unacked_count, queue.consumer_count) == (0, 3, 1)
    world.requeue(consumer)
    assert world.count("q") == 0  # the consumer took it straight back
    assert consumer.bodies() == [b"m3", b"m3"]


# ----------------------------------------------------------------- delete
def test_queue_delete_rules(world: World) -> None:
    assert world.vhost.delete_queue("missing") == 0
    assert world.vhost.delete_queue("missing", if_unused=True, if_empty=True) == 0
    world.queue("q")
    fill(world, "q", 3)
    consumer = world.consume("q", FakeConsumer("c", prefetch=1))
    # if-empty is checked before if-unused.
    assert error_of(lambda: world.vhost.delete_queue("q", if_empty=True, if_unused=True)) == (
        406, f"queue 'q' {V} not empty"
    )
    assert error_of(lambda: world.vhost.delete_queue("q", if_unused=True)) == (406, f"queue 'q' {V} in use")
    world.cancel("q", consumer)
    world.requeue(consumer)
    assert world.vhost.delete_queue("q", if_unused=True) == 3
    assert "q" not in world.vhost.queues


def test_if_empty_ignores_unacked_messages(world: World) -> None:
    world.queue("q")
    fill(world, "q", 1)
    world.get("q", no_ack=False)
    assert world.vhost.delete_queue("q", if_empty=True) == 0
    assert "q" not in world.vhost.queues


def test_deleting_a_queue_drops_its_messages_and_bindings(world: World) -> None:
    world.queue("q", arguments={"x-dead-letter-exchange": "amq.fanout"})
    world.queue("dead")
    world.bind("amq.fanout", "dead")
    world.bind("amq.direct", "q", "k")
    fill(world, "q", 2)
    consumer = world.consume("q", FakeConsumer("c", prefetch=1))
    assert world.vhost.delete_queue("q") == 1
    assert world.publish("amq.direct", "k").routed is False
    world.reject(consumer)  # settling after deletion: nothing is dead-lettered
    assert world.count("dead") == 0


# ------------------------------------------------------------------ declare
def test_server_named_queues(world: World) -> None:
    names = {world.queue("").name for _ in range(50)}
    assert len(names) == 50
    for name in names:
        assert re.fullmatch(r"amq\.gen-[A-Za-z0-9_-]{22}", name), name
    refused = error_of(lambda: world.queue("amq.gen-xyz"))
    assert refused == (403, "queue name 'amq.gen-xyz' contains reserved prefix 'amq.*'")
    existing = next(iter(names))
    assert error_of(lambda: world.queue(existing))[0] == 403  # not even its own name
    assert world.queue(existing, passive=True).name == existing
    assert error_of(lambda: world.queue("amq.foo", passive=True)) == (404, f"no queue 'amq.foo' {V}")
    assert error_of(lambda: world.queue("nope", passive=True)) == (404, f"no queue 'nope' {V}")


def test_exclusive_queue_belongs_to_its_connection(world: World) -> None:
    world.queue("q", exclusive=True)
    vhost = world.vhost
    locked = (405, LOCKED)
    calls = {
        "declare": lambda: vhost.declare_queue("q", owner=OTHER),
        "declare exclusive": lambda: vhost.declare_queue("q", exclusive=True, owner=OTHER),
        "declare passive": lambda: vhost.declare_queue("q", passive=True, owner=OTHER),
        "consume": lambda: vhost.consume("q", FakeConsumer("c"), exclusive=False, owner=OTHER, observer=None, now_ms=0),
        "get": lambda: vhost.get("q", no_ack=True, owner=OTHER, now_ms=0),
        "purge": lambda: vhost.purge_queue("q", owner=OTHER),
        "delete": lambda: vhost.delete_queue("q", owner=OTHER),
        # The owner itself must ask for an exclusive queue.
        "owner non-exclusive": lambda: vhost.declare_queue("q", owner=OWNER),
    }
    assert {name: error_of(call) for name, call in calls.items()} == dict.fromkeys(calls, locked)
    assert world.publish("", "q").queues == ["q"]  # anyone may publish
    assert vhost.declare_queue("q", exclusive=True, owner=OWNER).message_count == 1
    assert vhost.declare_queue("q", passive=True, owner=OWNER).name == "q"
    vhost.owner_closed(OWNER)
    assert "q" not in vhost.queues


def test_non_exclusive_queue_redeclared_exclusive_is_locked(world: World) -> None:
    world.queue("q")
    assert error_of(lambda: world.vhost.declare_queue("q", exclusive=True, owner=OWNER)) == (405, LOCKED)


def test_exclusive_queues_are_never_durable(world: World) -> None:
    queue = world.queue("q", exclusive=True, durable=True)
    assert queue.durable is False
    world.vhost.declare_queue("q", exclusive=True, durable=False, owner=OWNER)
    world.vhost.declare_queue("q", exclusive=True, durable=True, owner=OWNER)


def test_exclusive_check_comes_before_flags(world: World) -> None:
    world.queue("q", durable=True, auto_delete=True)
    assert error_of(lambda: world.vhost.declare_queue("q", exclusive=True, owner=OWNER)) == (405, LOCKED)


def inequivalent(arg: str, detail: str) -> str:
    return f"inequivalent arg '{arg}' for queue 'q' {V}: {detail}"


REDECLARE: list[tuple[dict[str, Any], dict[str, Any], str | None]] = [
    # (first, second, expected text or None for ok)
    ({"durable": False}, {"durable": True}, inequivalent("durable", "received 'true' but current is 'false'")),
    ({"durable": True}, {"durable": False}, inequivalent("durable", "received 'false' but current is 'true'")),
    ({}, {"auto_delete": True}, inequivalent("auto_delete", "received 'true' but current is 'false'")),
    ({"auto_delete": True}, {}, inequivalent("auto_delete", "received 'false' but current is 'true'")),
    ({"durable": True}, {"auto_delete": True}, inequivalent("durable", "received 'false' but current is 'true'")),
    ({"x-message-ttl": 1000}, {"x-message-ttl": 2000}, inequivalent("x-message-ttl", "received '2000' but current is '1000'")),
    ({}, {"x-message-ttl": 1000},
     inequivalent("x-message-ttl", "received the value '1000' of type 'short' but current is none")),
    ({"x-message-ttl": 1000}, {},
     inequivalent("x-message-ttl", "received none but current is the value '1000' of type 'short'")),
    ({"x-message-ttl": 1000}, {"x-message-ttl": "1000"}, inequivalent("x-message-ttl", "received '1000' but current is '1000'")),
    ({"x-max-length": 10}, {"x-max-length": 20}, inequivalent("x-max-length", "received '20' but current is '10'")),
    ({"x-max-length": 3}, {"x-max-length": True}, inequivalent("x-max-length", "received 'true' but current is '3'")),
    ({}, {"x-max-priority": 10}, inequivalent("x-max-priority", "received the value '10' of type 'byte' but current is none")),
    ({"x-dead-letter-exchange": "a"}, {"x-dead-letter-exchange": "b"},
     inequivalent("x-dead-letter-exchange", "received 'b' but current is 'a'")),
    ({"x-single-active-consumer": True}, {"x-single-active-consumer": False},
     inequivalent("x-single-active-consumer", "received 'false' but current is 'true'")),
    ({"x-queue-mode": "lazy"}, {},
     inequivalent("x-queue-mode", "received none but current is the value 'lazy' of type 'longstr'")),
    ({"x-queue-master-locator": "client-local"}, {"x-queue-master-locator": "min-masters"},
     inequivalent("x-queue-master-locator", "received 'min-masters' but current is 'client-local'")),
    ({}, {"x-queue-type": "quorum"},
     inequivalent("x-queue-type", "received the value 'quorum' of type 'longstr' but current is none")),
    ({"x-queue-type": "classic"}, {"x-queue-type": "quorum"},
     inequivalent("x-queue-type", "received 'quorum' but current is 'classic'")),
    ({"x-delivery-limit": 3}, {"x-delivery-limit": 4}, inequivalent("x-delivery-limit", "received '4' but current is '3'")),
    # Equivalent: integer widths are one type, unknown and other types' arguments are not compared.
    ({"x-message-ttl": 1000}, {"x-message-ttl": 1000}, None),
    ({"x-expires": 100}, {"x-expires": 100_000}, inequivalent("x-expires", "received '100000' but current is '100'")),
    ({"x-max-length": 2**40}, {"x-max-length": 2**40}, None),
    ({"x-dead-letter-exchange": "a"}, {"x-dead-letter-exchange": b"a"}, None),
    ({"x-foo": 1}, {"x-foo": 2}, None),
    ({}, {"x-max-age": "1D"}, None),
    ({}, {"x-message-deduplication": True}, None),
    ({}, {"x-queue-type": "classic"}, None),
    ({"x-queue-type": "classic"}, {}, None),
    ({"x-overflow": "reject-publish"}, {"x-overflow": "reject-publish"}, None),
]


@pytest.mark.parametrize(("first", "second", "text"), REDECLARE)
def test_queue_redeclare_equivalence(world: World, first: dict[str, Any], second: dict[str, Any], text: str | None) -> None:
    def split(options: dict[str, Any]) -> dict[str, Any]:
        flags = {k: v for k, v in options.items() if not k.startswith("x-")}
        return {**flags, "arguments": {k: v for k, v in options.items() if k.startswith("x-")}}

    world.queue("q", **split(first))
    if text is None:
        assert world.queue("q", **split(second)).name == "q"
    else:
        assert error_of(lambda: world.queue("q", **split(second))) == (406, text)


def test_passive_redeclare_ignores_flags_and_arguments(world: World) -> None:
    world.queue("q", durable=True, arguments={"x-max-length": 1})
    assert world.queue("q", passive=True, durable=False, arguments={"x-message-ttl": -1}).durable


def test_redeclare_compares_but_does_not_validate(world: World) -> None:
    world.queue("q")
    world.queue("q", arguments={"x-max-age": "nonsense", "x-max-in-memory-length": -5})
    assert error_of(lambda: world.queue("q", arguments={"x-max-length": -1})) == (
        406, inequivalent("x-max-length", "received the value '-1' of type 'byte' but current is none")
    )


def invalid(arg: str, why: str) -> str:
    return f"invalid arg '{arg}' for queue 'q' {V}: {why}"


ARGUMENT_ERRORS: list[tuple[dict[str, Any], str]] = [
    ({"x-max-length": -1}, invalid("x-max-length", "{value_negative,-1}")),
    ({"x-max-length": "10"}, invalid("x-max-length", '"expected integer, got longstr"')),
    ({"x-max-length-bytes": -1}, invalid("x-max-length-bytes", "{value_negative,-1}")),
    ({"x-message-ttl": -1}, invalid("x-message-ttl", "{value_negative,-1}")),
    ({"x-message-ttl": "1000"}, invalid("x-message-ttl", '"expected integer, got longstr"')),
    ({"x-message-ttl": 1.5}, invalid("x-message-ttl", '"expected integer, got float"')),
    ({"x-message-ttl": True}, invalid("x-message-ttl", '"expected integer, got bool"')),
    ({"x-message-ttl": 2**40}, invalid("x-message-ttl", "{value_too_large,1099511627776}")),
    ({"x-expires": 0}, invalid("x-expires", "{value_zero,0}")),
    ({"x-expires": -1}, invalid("x-expires", "{value_negative,-1}")),
    ({"x-expires": "1"}, invalid("x-expires", '"expected integer, got longstr"')),
    ({"x-expires": 315_360_000_001}, invalid("x-expires", "{value_too_large,315360000001}")),
    ({"x-overflow": "foo"}, invalid("x-overflow", "invalid_overflow")),
    ({"x-overflow": 1}, invalid("x-overflow", "{unacceptable_type,byte}")),
    ({"x-max-priority": 256}, invalid("x-max-priority", "{max_value_exceeded,256}")),
    ({"x-max-priority": -1}, invalid("x-max-priority", "{value_negative,-1}")),
    ({"x-max-priority": "1"}, invalid("x-max-priority", '"expected integer, got longstr"')),
    ({"x-dead-letter-routing-key": "k"}, invalid("x-dead-letter-routing-key", "routing_key_but_no_dlx_defined")),
    ({"x-dead-letter-routing-key": 5}, invalid("x-dead-letter-routing-key", "{unacceptable_type,byte}")),
    ({"x-dead-letter-exchange": 1}, f"invalid type 'byte' for arg 'x-dead-letter-exchange' in queue 'q' {V}"),
    ({"x-queue-mode": "foo"}, invalid("x-queue-mode", "\"unsupported queue mode 'foo'\"")),
    ({"x-queue-mode": 1}, invalid("x-queue-mode", "{unacceptable_type,byte}")),
    ({"x-single-active-consumer": "yes"}, invalid("x-single-active-consumer", "{unacceptable_type,longstr}")),
    ({"x-single-active-consumer": 1}, invalid("x-single-active-consumer", "{unacceptable_type,byte}")),
    ({"x-queue-type": "foo"}, invalid("x-queue-type", "\"unsupported queue type 'foo'\"")),
    ({"x-queue-type": 5}, invalid("x-queue-type", "{unacceptable_type,byte}")),
    ({"x-delivery-limit": -1}, invalid("x-delivery-limit", "{value_negative,-1}")),
    ({"x-max-in-memory-length": 3}, f"invalid arg 'x-max-in-memory-length' for queue 'q' {V} of queue type rabbit_classic_queue"),
    ({"x-max-age": "1D"}, f"invalid arg 'x-max-age' for queue 'q' {V} of queue type rabbit_classic_queue"),
    ({"x-queue-leader-locator": "client-local"},
     f"invalid arg 'x-queue-leader-locator' for queue 'q' {V} of queue type rabbit_classic_queue"),
    # RabbitMQ's order: the DLX type (the channel's check), x-queue-type, then declare_args order.
    ({"x-max-length": -1, "x-expires": 0}, invalid("x-expires", "{value_zero,0}")),
    ({"x-max-length": -1, "x-dead-letter-exchange": 5},
     f"invalid type 'byte' for arg 'x-dead-letter-exchange' in queue 'q' {V}"),
    ({"x-max-priority": 256, "x-overflow": "foo"}, invalid("x-max-priority", "{max_value_exceeded,256}")),
    ({"x-queue-type": "foo", "x-max-length": -1}, invalid("x-queue-type", "\"unsupported queue type 'foo'\"")),
    ({"x-max-length": -1, "x-max-age": "1D"}, invalid("x-max-length", "{value_negative,-1}")),
    ({"x-queue-type": "quorum", "x-max-priority": 1},
     f"invalid arg 'x-max-priority' for queue 'q' {V} of queue type rabbit_quorum_queue"),
    ({"x-queue-type": "quorum", "x-queue-mode": "lazy"},
     f"invalid arg 'x-queue-mode' for queue 'q' {V} of queue type rabbit_quorum_queue"),
    ({"x-queue-type": "quorum", "x-dead-letter-strategy": "foo"}, invalid("x-dead-letter-strategy", "invalid_dlx_strategy")),
    ({"x-queue-type": "quorum", "x-dead-letter-strategy": ""}, invalid("x-dead-letter-strategy", "invalid_dlx_strategy")),
    ({"x-queue-type": "quorum", "x-dead-letter-strategy": 5},
     invalid("x-dead-letter-strategy", "{unacceptable_type,byte}")),
    ({"x-queue-type": "quorum", "x-dead-letter-strategy": True},
     invalid("x-dead-letter-strategy", "{unacceptable_type,bool}")),
    # Checked right after the dead-letter routing key, also among arguments of another type.
    ({"x-queue-type": "quorum", "x-dead-letter-strategy": "foo", "x-max-length": -1},
     invalid("x-dead-letter-strategy", "invalid_dlx_strategy")),
    ({"x-queue-type": "quorum", "x-dead-letter-strategy": "foo", "x-dead-letter-routing-key": "k"},
     invalid("x-dead-letter-routing-key", "routing_key_but_no_dlx_defined")),
    ({"x-dead-letter-strategy": "at-most-once", "x-max-in-memory-length": 1},
     f"invalid arg 'x-dead-letter-strategy' for queue 'q' {V} of queue type rabbit_classic_queue"),
    # rabbit_amqqueue's check_initial_cluster_size_arg and check_queue_leader_locator_arg.
    ({"x-queue-type": "quorum", "x-quorum-initial-group-size": 0},
     invalid("x-quorum-initial-group-size", "{value_zero,0}")),
    ({"x-queue-type": "quorum", "x-quorum-initial-group-size": -1},
     invalid("x-quorum-initial-group-size", "{value_negative,-1}")),
    ({"x-queue-type": "quorum", "x-quorum-initial-group-size": "3"},
     invalid("x-quorum-initial-group-size", '"expected integer, got longstr"')),
    ({"x-queue-type": "quorum", "x-queue-leader-locator": "nearest"},
     invalid("x-queue-leader-locator", "invalid_queue_locator_arg")),
    ({"x-queue-type": "quorum", "x-queue-leader-locator": 5},
     invalid("x-queue-leader-locator", "{unacceptable_type,byte}")),
    # In declare_args order: the group size before the leader locator, after the type.
    ({"x-queue-type": "quorum", "x-queue-leader-locator": "nearest", "x-quorum-initial-group-size": 0},
     invalid("x-quorum-initial-group-size", "{value_zero,0}")),
    ({"x-queue-type": "quorum", "x-quorum-initial-group-size": 0, "x-overflow": "foo"},
     invalid("x-overflow", "invalid_overflow")),
]


@pytest.mark.parametrize(("arguments", "text"), ARGUMENT_ERRORS)
def test_argument_validation(world: World, arguments: dict[str, Any], text: str) -> None:
    assert error_of(lambda: world.queue("q", durable=True, arguments=arguments)) == (406, text)
    assert "q" not in world.vhost.queues


ACCEPTED: list[dict[str, Any]] = [
    {"x-max-length": 0},
    {"x-max-length-bytes": 0},
    {"x-message-ttl": 0},
    {"x-message-ttl": 2**32 + 1},
    {"x-expires": 315_360_000_000},
    {"x-max-priority": 0},
    {"x-max-priority": 255},
    {"x-queue-mode": "lazy"},
    {"x-queue-mode": "default"},
    {"x-dead-letter-exchange": ""},
    {"x-dead-letter-exchange": "missing-exchange"},
    {"x-foo": "bar"},
    {"x-queue-master-locator": "client-local"},
    {"x-delivery-limit": 0},  # ours on classic queues
    {"x-queue-type": "quorum", "x-delivery-limit": 3, "x-max-in-memory-length": 1},
    # RabbitMQ does not check a quorum queue's x-delivery-limit (non-integers mean no limit).
    {"x-queue-type": "quorum", "x-delivery-limit": -1},
    {"x-queue-type": "quorum", "x-delivery-limit": "2"},
    {"x-queue-type": "quorum", "x-delivery-limit": True},
    {"x-queue-type": "quorum", "x-dead-letter-strategy": "at-most-once"},
    {"x-queue-type": "quorum", "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"},
    {"x-queue-type": "quorum", "x-quorum-initial-group-size": 3},
    {"x-queue-type": "quorum", "x-queue-leader-locator": "client-local"},
    {"x-queue-type": "quorum", "x-queue-leader-locator": "balanced"},
    {"x-queue-type": "quorum", "x-queue-leader-locator": "least-leaders"},
]


@pytest.mark.parametrize("arguments", ACCEPTED)
def test_accepted_arguments(world: World, arguments: dict[str, Any]) -> None:
    assert world.queue("q", durable=True, arguments=arguments).arguments == arguments


QUORUM_PROPERTIES = [
    ({"durable": False}, "non-durable"),
    ({"durable": True, "exclusive": True}, "exclusive-owner"),
    ({"durable": False, "exclusive": True}, "exclusive-owner"),
    ({"durable": True, "auto_delete": True}, "auto-delete"),
    ({"durable": False, "exclusive": True, "auto_delete": True}, "auto-delete"),
]


@pytest.mark.parametrize(("flags", "prop"), QUORUM_PROPERTIES)
def test_quorum_queue_properties(world: World, flags: dict[str, Any], prop: str) -> None:
    arguments = {"x-queue-type": "quorum"}
    assert error_of(lambda: world.queue("q", arguments=arguments, **flags)) == (
        406, f"invalid property '{prop}' for queue 'q' {V}"
    )


def test_quorum_arguments_are_checked_before_properties(world: World) -> None:
    arguments = {"x-queue-type": "quorum", "x-max-priority": 1}
    assert error_of(lambda: world.queue("q", durable=False, arguments=arguments)) == (
        406, f"invalid arg 'x-max-priority' for queue 'q' {V} of queue type rabbit_quorum_queue"
    )


def test_declare_ok_counts(world: World) -> None:
    world.queue("q")
    fill(world, "q", 3)
    world.consume("q", FakeConsumer("c", prefetch=1))
    queue = world.queue("q")
    assert (queue.message_count, queue.consumer_count) == (2, 1)
