"""Dead-lettering through a virtual host: reasons, x-death, routing, cycles.

The byte-level rewrite is leveret.queues.dead_letter's (tested in tests/queues); here
the vhost must call it at the right moments and re-route its result. Facts
(RabbitMQ 3.10.8, resultsC.json and pika probes): x-death's first entry is
count, reason, queue, time, exchange, routing-keys[, original-expiration];
routing-keys hold the routing key and CC keys, never BCC; without a
dead-letter routing key the message re-routes with all its keys, BCC
included; a dead-letter cycle with no rejection in it is dropped.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from leveret.amqp_wire.fieldtable import Field

from tests.core.core_support import FakeConsumer, World, headers, typed_headers, x_death


def rejected_world(**arguments: Any) -> tuple[World, FakeConsumer]:
    world = World()
    world.exchange("dlx", "direct")
    world.queue("dead")
    world.bind("dlx", "dead", "q")
    world.queue("q", arguments={"x-dead-letter-exchange": "dlx", **arguments})
    return world, world.consume("q", FakeConsumer("c"))


def test_reject_dead_letters_with_rabbitmq_x_death() -> None:
    world, consumer = rejected_world()
    world.exchange("work", "direct")
    world.bind("work", "q", "q")
    world.publish("work", "q", b"m", headers={"app": "v"})
    world.reject(consumer)
    entry = world.get("dead")
    assert entry is not None
    assert (entry.message.exchange, entry.message.routing_key) == ("dlx", "q")
    table = typed_headers(entry.message)
    assert [name for name, _ in table] == [
        "app", "x-death", "x-first-death-exchange", "x-first-death-queue", "x-first-death-reason",
    ]
    x_death_field = table.get("x-death")
    assert x_death_field is not None and x_death_field.tag == "A"
    (death,) = x_death_field.value
    assert [(name, value.tag) for name, value in death.value] == [
        ("count", "l"), ("reason", "S"), ("queue", "S"), ("time", "T"), ("exchange", "S"), ("routing-keys", "A"),
    ]
    assert death.value.get("time") == Field("T", world.now // 1000)
    assert x_death(entry.message, keep_time=True) == [{
        "count": 1, "reason": "rejected", "queue": "q",
        "time": datetime.datetime.fromtimestamp(world.now // 1000, tz=datetime.UTC),
        "exchange": "work", "routing-keys": ["q"],
    }]
    assert headers(entry.message)["x-first-death-exchange"] == "work"


def test_nack_and_reject_of_several_messages() -> None:
    world, consumer = rejected_world()
    for body in (b"a", b"b", b"c"):
        world.publish("", "q", body)
    world.reject(consumer)  # nack multiple, requeue=false
    assert world.drain("dead") == [b"a", b"b", b"c"]


def test_without_a_dead_letter_exchange_rejected_messages_are_dropped() -> None:
    world = World()
    world.queue("q")
    consumer = world.consume("q", FakeConsumer("c"))
    world.publish("", "q", b"m")
    world.reject(consumer)
    assert world.vhost.dead_letter_log == []


def test_missing_or_unroutable_dead_letter_exchange_drops() -> None:
    world = World()
    world.queue("q1", arguments={"x-dead-letter-exchange": "missing"})
    world.queue("q2", arguments={"x-dead-letter-exchange": "amq.direct"})
    one, two = world.consume("q1", FakeConsumer("1")), world.consume("q2", FakeConsumer("2"))
    world.publish("", "q1", b"m")
    world.publish("", "q2", b"m")
    world.reject(one)
    world.reject(two)
    log = world.vhost.dead_letter_log
    assert log is not None
    assert [(e.from_queue, e.exchange, e.queues, e.missing_exchange) for e in log] == [
        ("q1", "missing", [], True),
        ("q2", "amq.direct", [], False),
    ]
    assert world.vhost.queues["q1"].message_count == 0  # dropped, not kept


def test_dead_letter_routing_key_replaces_keys_and_drops_cc() -> None:
    world, consumer = rejected_world(**{"x-dead-letter-routing-key": "q"})
    world.queue("cc-queue")
    world.publish("", "q", b"m", headers={"CC": ["cc-queue"], "BCC": ["cc-queue"]})
    world.reject(consumer)
    entry = world.get("dead")
    assert entry is not None
    assert entry.message.routing_key == "q"
    assert "CC" not in headers(entry.message)
    assert x_death(entry.message)[0]["routing-keys"] == ["q", "cc-queue"]
    assert world.count("cc-queue") == 1  # only the original publish


def test_without_dead_letter_routing_key_all_keys_route_bcc_included() -> None:
    # Probed on 3.10.8: CC and BCC destinations both get the dead letter; x-death lists CC only.
    world = World()
    world.exchange("dlx", "direct")
    for name in ("a", "b", "src-copy"):
        world.queue(name)
    world.bind("dlx", "a", "ka")
    world.bind("dlx", "b", "kb")
    world.bind("dlx", "src-copy", "src")
    world.queue("src", arguments={"x-dead-letter-exchange": "dlx"})
    consumer = world.consume("src", FakeConsumer("c"))
    world.publish("", "src", b"m", headers={"CC": ["ka"], "BCC": ["kb"]})
    world.reject(consumer)
    for name in ("a", "b", "src-copy"):
        entry = world.get(name)
        assert entry is not None, name
        assert entry.message.routing_key == "src"
        assert headers(entry.message)["CC"] == ["ka"]
        assert "BCC" not in headers(entry.message)
        assert x_death(entry.message) == [
            {"count": 1, "reason": "rejected", "queue": "src", "exchange": "", "routing-keys": ["src", "ka"]}
        ]


def test_expired_keeps_original_expiration_and_drops_expiration() -> None:
    world = World()
    world.queue("dead")
    world.queue("q", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"})
    world.publish("", "q", b"m", expiration="250")
    world.advance(250)
    entry = world.get("dead")
    assert entry is not None
    assert entry.message.properties.expiration is None
    assert x_death(entry.message) == [{
        "count": 1, "reason": "expired", "queue": "q", "exchange": "", "routing-keys": ["q"],
        "original-expiration": "250",
    }]


def test_rejected_message_with_expiration_records_it() -> None:
    world, consumer = rejected_world()
    world.publish("", "q", b"m", expiration="60000")
    world.reject(consumer)
    entry = world.get("dead")
    assert entry is not None
    assert x_death(entry.message)[0]["original-expiration"] == "60000"
    assert entry.message.properties.expiration is None


def test_delivery_limit() -> None:
    world, consumer = rejected_world(**{"x-delivery-limit": 2})
    world.publish("", "q", b"m")
    for _ in range(2):
        world.requeue(consumer)
    assert consumer.log() == [(b"m", False), (b"m", True), (b"m", True)]
    world.requeue(consumer)  # the third return exceeds the limit
    assert len(consumer.received) == 3
    entry = world.get("dead")
    assert entry is not None
    assert x_death(entry.message) == [
        {"count": 1, "reason": "delivery_limit", "queue": "q", "exchange": "", "routing-keys": ["q"]}
    ]


def test_delivery_limit_zero_dead_letters_on_the_first_return() -> None:
    world, consumer = rejected_world(**{"x-delivery-limit": 0})
    world.publish("", "q", b"m")
    world.requeue(consumer)
    assert (len(consumer.received), world.drain("dead")) == (1, [b"m"])


@pytest.mark.parametrize(("limit", "deliveries"), [(-1, 1), (-5, 1), ("2", 6), (True, 6)])
def test_quorum_delivery_limit_that_is_no_count(limit: Any, deliveries: int) -> None:
    # Probed on 3.10.8: a quorum queue takes any x-delivery-limit; a negative one
    # dead-letters on the first return, a string or bool never does.
    world = World()
    world.queue("dead")
    world.queue("q", durable=True, arguments={
        "x-queue-type": "quorum", "x-delivery-limit": limit,
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"})
    consumer = world.consume("q", FakeConsumer("c"))
    world.publish("", "q", b"m")
    for _ in range(5):
        world.requeue(consumer)
    assert len(consumer.received) == deliveries
    assert world.drain("dead") == ([b"m"] if deliveries == 1 else [])


def test_deaths_are_counted_per_queue_and_reason_newest_first() -> None:
    # q1 and q2 reject into each other; the application finally parks the message.
    world = World()
    world.queue("q1", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "q2"})
    world.queue("q2", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "q1"})
    one, two = world.consume("q1", FakeConsumer("1")), world.consume("q2", FakeConsumer("2"))
    world.publish("", "q1", b"m")
    world.reject(one)  # q1 -> q2
    world.reject(two)  # q2 -> q1
    world.reject(one)  # q1 -> q2 again
    last = two.received[-1].message
    assert [(d["queue"], d["reason"], d["count"]) for d in x_death(last)] == [("q1", "rejected", 2), ("q2", "rejected", 1)]
    assert headers(last)["x-first-death-queue"] == "q1"
    assert (len(one.received), len(two.received)) == (2, 2)


def test_a_cycle_without_rejection_is_dropped() -> None:
    world = World()
    world.queue("loop", arguments={"x-message-ttl": 10, "x-dead-letter-exchange": ""})
    world.publish("", "loop", b"m")
    world.advance(10)
    assert world.count("loop") == 0
    log = world.vhost.dead_letter_log
    assert log is not None
    assert [(e.reason, e.queues, e.dropped_cycles) for e in log] == [("expired", [], ["loop"])]


def test_an_expiry_ping_pong_is_dropped_when_it_comes_back() -> None:
    world = World()
    world.queue("a", arguments={"x-message-ttl": 10, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "b"})
    world.queue("b", arguments={"x-message-ttl": 10, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "a"})
    world.publish("", "a", b"m")
    world.advance(100)
    assert (world.count("a"), world.count("b")) == (0, 0)
    log = world.vhost.dead_letter_log
    assert log is not None
    assert [(e.from_queue, e.queues, e.dropped_cycles) for e in log] == [("a", ["b"], []), ("b", [], ["a"])]


def test_a_cycle_through_a_rejection_is_kept() -> None:
    world = World()
    world.queue("work", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "wait"})
    world.queue("wait", arguments={"x-message-ttl": 10, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "work"})
    consumer = world.consume("work", FakeConsumer("c"))
    world.publish("", "work", b"m")
    world.reject(consumer)
    world.advance(10)
    assert len(consumer.received) == 2


def test_maxlen_into_a_full_queue_cycles_are_dropped() -> None:
    world = World()
    world.queue("q", arguments={"x-max-length": 1, "x-dead-letter-exchange": ""})
    world.publish("", "q", b"m1")
    world.publish("", "q", b"m2")  # m1 dead-letters back to q: a maxlen cycle
    assert world.drain("q") == [b"m2"]
