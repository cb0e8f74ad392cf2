"""Length limits, overflow modes and priority queues.

RabbitMQ 3.10.8 facts used (resultsC.json and pika probes): limits count ready
messages and body bytes only; drop-head dead-letters the head with reason
`maxlen`; reject-publish nacks the publish (the message still counts as
routed) even with a consumer waiting; reject-publish-dlx also dead-letters
it; a requeue that overfills a drop-head queue drops the (requeued) head,
while reject-publish(-dlx) queues keep everything that comes back; priorities
above x-max-priority count as the maximum, FIFO within one priority.
"""

from __future__ import annotations

from typing import Any

import pytest
from leveret.queues.quorum import QuorumQueue

from tests.core.core_support import FakeConsumer, World, headers, x_death

DLX = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"}


def limited(**arguments: Any) -> World:
    world = World()
    world.queue("dead")
    world.queue("q", arguments=arguments)
    return world


def publish_all(world: World, *bodies: bytes, **options: Any) -> list[bool]:
    """Publish each body to queue q; True where the publish was refused (a nack)."""
    return [world.publish("", "q", body, **options).rejected for body in bodies]


def maxlen_death() -> list[dict[str, Any]]:
    return [{"count": 1, "reason": "maxlen", "queue": "q", "exchange": "", "routing-keys": ["q"]}]


def test_drop_head_dead_letters_the_oldest() -> None:
    world = limited(**{"x-max-length": 2}, **DLX)
    assert publish_all(world, b"m1", b"m2", b"m3") == [False, False, False]
    assert world.drain("q") == [b"m2", b"m3"]
    entry = world.get("dead")
    assert entry is not None
    assert entry.message.body == b"m1"
    assert x_death(entry.message) == maxlen_death()
    assert {k: v for k, v in headers(entry.message).items() if k != "x-death"} == {
        "x-first-death-exchange": "", "x-first-death-queue": "q", "x-first-death-reason": "maxlen",
    }


def test_drop_head_without_dead_letter_exchange_just_drops() -> None:
    world = limited(**{"x-max-length": 1})
    publish_all(world, b"m1", b"m2")
    assert world.drain("q") == [b"m2"]


def test_reject_publish() -> None:
    world = limited(**{"x-max-length": 2, "x-overflow": "reject-publish"}, **DLX)
    outcomes = [world.publish("", "q", body) for body in (b"m1", b"m2", b"m3")]
    assert [(o.routed, o.rejected) for o in outcomes] == [(True, False), (True, False), (True, True)]
    assert world.drain("q") == [b"m1", b"m2"]
    assert world.count("dead") == 0


def test_reject_publish_dlx_rejects_and_dead_letters() -> None:
    world = limited(**{"x-max-length": 2, "x-overflow": "reject-publish-dlx"}, **DLX)
    assert publish_all(world, b"m1", b"m2", b"m3") == [False, False, True]
    assert world.drain("q") == [b"m1", b"m2"]
    entry = world.get("dead")
    assert entry is not None
    assert entry.message.body == b"m3"
    assert x_death(entry.message) == maxlen_death()


def test_one_full_queue_nacks_a_publish_the_others_took() -> None:
    world = limited(**{"x-max-length": 0, "x-overflow": "reject-publish"})
    world.queue("other")
    world.bind("amq.fanout", "q")
    world.bind("amq.fanout", "other")
    outcome = world.publish("amq.fanout", "k", b"m")
    assert (sorted(outcome.queues), outcome.rejected) == (["other", "q"], True)
    assert (world.count("q"), world.count("other")) == (0, 1)


def test_max_length_zero() -> None:
    world = limited(**{"x-max-length": 0}, **DLX)
    publish_all(world, b"dropped")
    assert (world.count("q"), world.drain("dead")) == (0, [b"dropped"])
    consumer = world.consume("q", FakeConsumer("c"))
    publish_all(world, b"delivered")
    assert consumer.bodies() == [b"delivered"]
    # reject-publish refuses even with a consumer waiting.
    world.queue("strict", arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
    waiting = world.consume("strict", FakeConsumer("w"))
    assert world.publish("", "strict", b"m").rejected
    assert waiting.received == []


def test_limits_count_ready_messages_only() -> None:
    # resultsC: max 2 reject-publish, 2 taken unacked, then a publish is accepted.
    world = limited(**{"x-max-length": 2, "x-overflow": "reject-publish"})
    publish_all(world, b"m1", b"m2")
    world.get("q", no_ack=False)
    world.get("q", no_ack=False)
    assert publish_all(world, b"m3", b"m4", b"m5") == [False, False, True]


def test_max_length_bytes_counts_bodies() -> None:
    # resultsC: 10 bytes: bodies 4,4,4 keep the last two; 10 then 1 keeps "x";
    # a single 11-byte body is dropped; headers do not count.
    world = limited(**{"x-max-length-bytes": 10})
    publish_all(world, b"aaaa", b"bbbb", b"cccc", headers={"pad": "h" * 1000})
    assert world.drain("q") == [b"bbbb", b"cccc"]
    publish_all(world, b"0123456789", b"x")
    assert world.drain("q") == [b"x"]
    publish_all(world, b"0123456789A")
    assert world.drain("q") == []
    world.queue("r", arguments={"x-max-length-bytes": 10, "x-overflow": "reject-publish"})
    refused = [world.publish("", "r", b"", headers={"pad": "h" * 1000}).rejected for _ in range(3)]
    assert (refused, world.count("r")) == ([False, False, False], 3)


def test_both_limits_apply() -> None:
    world = limited(**{"x-max-length": 3, "x-max-length-bytes": 5})
    publish_all(world, b"aa", b"bb", b"cc")
    assert world.drain("q") == [b"bb", b"cc"]
    publish_all(world, b"1", b"2", b"3", b"4")
    assert world.drain("q") == [b"2", b"3", b"4"]


def test_requeue_that_overfills_drops_the_requeued_head() -> None:
    # Probed on 3.10.8: max 1, m1 taken, m2 published, m1 requeued -> m1 is dead-lettered.
    world = limited(**{"x-max-length": 1}, **DLX)
    publish_all(world, b"m1")
    entry = world.get("q", no_ack=False)
    assert entry is not None
    publish_all(world, b"m2")
    world.vhost.requeue(world.vhost.queues["q"], [entry], world.now)
    assert world.drain("q") == [b"m2"]
    dead = world.get("dead")
    assert dead is not None
    assert (dead.message.body, x_death(dead.message)[0]["reason"]) == (b"m1", "maxlen")


@pytest.mark.parametrize("overflow", ["reject-publish", "reject-publish-dlx"])
def test_requeue_over_the_limit_keeps_everything_when_publishes_are_refused(overflow: str) -> None:
    # Probed on 3.10.8 (nack, basic.recover and channel close alike): max 2, u1
    # taken, u3 accepted, u4 refused; u1 comes back: the queue holds 3, none dead.
    world = limited(**{"x-max-length": 2, "x-overflow": overflow}, **DLX)
    publish_all(world, b"u1", b"u2")
    entry = world.get("q", no_ack=False)
    assert entry is not None
    assert publish_all(world, b"u3", b"u4") == [False, True]
    world.vhost.requeue(world.vhost.queues["q"], [entry], world.now)
    assert world.count("q") == 3
    assert publish_all(world, b"u5") == [True]  # still over: refused
    assert world.drain("q") == [b"u1", b"u2", b"u3"]
    assert world.drain("dead") == ([b"u4", b"u5"] if overflow == "reject-publish-dlx" else [])


def test_requeue_over_the_byte_limit_keeps_everything_when_publishes_are_refused() -> None:
    world = limited(**{"x-max-length-bytes": 4, "x-overflow": "reject-publish"}, **DLX)
    publish_all(world, b"aa", b"bb")
    entry = world.get("q", no_ack=False)
    assert entry is not None
    assert publish_all(world, b"cc", b"dd") == [False, True]
    world.vhost.requeue(world.vhost.queues["q"], [entry], world.now)
    assert (world.drain("q"), world.drain("dead")) == ([b"aa", b"bb", b"cc"], [])


def test_waiting_consumer_gets_the_message_before_the_limit_counts() -> None:
    world = limited(**{"x-max-length": 1}, **DLX)
    consumer = world.consume("q", FakeConsumer("c", prefetch=1))
    publish_all(world, b"m1", b"m2", b"m3")
    assert consumer.bodies() == [b"m1"]
    assert world.drain("q") == [b"m3"]
    assert world.drain("dead") == [b"m2"]


# --------------------------------------------------------------- priorities
def test_priority_queue_order() -> None:
    # resultsC: x-max-priority 10, priorities [None, 0, 5, 10, 20, 255, 3, 5].
    world = limited(**{"x-max-priority": 10})
    priorities = [None, 0, 5, 10, 20, 255, 3, 5]
    for number, priority in enumerate(priorities):
        world.publish("", "q", f"p{priority}#{number}".encode(), priority=priority)
    assert world.drain("q") == [
        b"p10#3", b"p20#4", b"p255#5", b"p5#2", b"p5#7", b"p3#6", b"pNone#0", b"p0#1",
    ]


def test_priority_property_is_delivered_unchanged() -> None:
    world = limited(**{"x-max-priority": 10})
    world.publish("", "q", b"m", priority=20)
    entry = world.get("q")
    assert entry is not None
    assert entry.message.properties.priority == 20


def test_priority_is_ignored_without_x_max_priority() -> None:
    world = limited()
    for priority in (1, 9, 5):
        world.publish("", "q", f"p{priority}".encode(), priority=priority)
    assert world.drain("q") == [b"p1", b"p9", b"p5"]


def test_priority_queue_requeue() -> None:
    # resultsC: get p5, p5, nack both with requeue: p5, p5 (redelivered), p1, p1.
    world = limited(**{"x-max-priority": 10})
    for body, priority in ((b"p1", 1), (b"p5", 5), (b"p1", 1), (b"p5", 5)):
        world.publish("", "q", body, priority=priority)
    taken = [world.get("q", no_ack=False), world.get("q", no_ack=False)]
    world.vhost.requeue(world.vhost.queues["q"], [e for e in taken if e is not None], world.now)
    got = []
    while (entry := world.get("q")) is not None:
        got.append((entry.message.body, entry.redelivered))
    assert got == [(b"p5", True), (b"p5", True), (b"p1", False), (b"p1", False)]


def test_priority_consumers_and_priority_messages() -> None:
    world = limited(**{"x-max-priority": 2})
    publish_all(world, b"low")
    world.publish("", "q", b"high", priority=2)
    consumer = world.consume("q", FakeConsumer("c"))
    assert consumer.bodies() == [b"high", b"low"]


def test_drop_head_in_a_priority_queue_drops_the_next_to_deliver() -> None:
    world = limited(**{"x-max-priority": 5, "x-max-length": 2}, **DLX)
    world.publish("", "q", b"low")
    world.publish("", "q", b"high", priority=5)
    world.publish("", "q", b"mid", priority=3)
    assert world.drain("q") == [b"mid", b"low"]
    assert world.drain("dead") == [b"high"]


# ----------------------------------------------------------- quorum queues
QUORUM = {"x-queue-type": "quorum"}


def quorum(**arguments: Any) -> World:
    world = World()
    world.queue("dead")
    world.queue("q", durable=True, arguments={**QUORUM, **arguments})
    return world


@pytest.mark.parametrize("max_length", [0, 1, 2, 3])
def test_quorum_reject_publish_refuses_only_once_over_the_limit(max_length: int) -> None:
    # Probed on 3.10.8: a quorum queue refuses a publish only when it is already
    # over its limit, so it takes one message more than x-max-length.
    world = quorum(**{"x-max-length": max_length, "x-overflow": "reject-publish"})
    bodies = [f"p{i}".encode() for i in range(max_length + 3)]
    assert publish_all(world, *bodies) == [False] * (max_length + 1) + [True, True]
    assert world.drain("q") == bodies[: max_length + 1]


def test_quorum_reject_publish_counts_bytes_the_same_way() -> None:
    world = quorum(**{"x-max-length-bytes": 10, "x-overflow": "reject-publish"})
    assert publish_all(world, b"aaaa", b"bbbb", b"cccc", b"dddd", b"e") == [False, False, False, True, True]
    assert world.drain("q") == [b"aaaa", b"bbbb", b"cccc"]


def test_quorum_publishers_stay_refused_until_the_queue_is_down_to_80_percent() -> None:
    # Probed on 3.10.8 with x-max-length 5: 6 taken, then refused at 5 ready,
    # accepted again at 4 (trunc(5 * 0.8)).
    world = quorum(**{"x-max-length": 5, "x-overflow": "reject-publish"})
    assert publish_all(world, *[b"m"] * 7) == [False] * 6 + [True]
    world.get("q")
    assert publish_all(world, b"x0") == [True]
    world.get("q")
    assert publish_all(world, b"x1", b"x2", b"x3") == [False, False, True]


def test_quorum_publishers_are_refused_after_a_requeue_takes_the_queue_over() -> None:
    # Probed on 3.10.8: max 2; u1 taken, u3 and u4 accepted (u4 takes it over),
    # u5 refused; u1 comes back (its channel closed: to the front) and the queue holds four.
    world = quorum(**{"x-max-length": 2, "x-overflow": "reject-publish"})
    publish_all(world, b"u1", b"u2")
    entry = world.get("q", no_ack=False)
    assert entry is not None
    assert publish_all(world, b"u3", b"u4", b"u5") == [False, False, True]
    world.vhost.requeue(world.vhost.queues["q"], [entry], world.now, consumer_gone=True)
    assert publish_all(world, b"u6") == [True]
    assert world.drain("q") == [b"u1", b"u2", b"u3", b"u4"]


def test_quorum_reject_publish_dlx_drops_the_head() -> None:
    # 3.10.8 accepts reject-publish-dlx on a quorum queue and behaves as drop-head.
    world = quorum(**{"x-max-length": 1, "x-overflow": "reject-publish-dlx"}, **DLX)
    assert publish_all(world, b"x0", b"x1", b"x2") == [False, False, False]
    assert world.drain("q") == [b"x2"]
    dead = [world.get("dead") for _ in range(2)]
    assert [(e.message.body, x_death(e.message)[0]["reason"]) for e in dead if e is not None] == [
        (b"x0", "maxlen"), (b"x1", "maxlen"),
    ]


def test_quorum_returns_go_to_the_back_without_a_delivery_limit() -> None:
    # rabbit_fifo turns a client's return into a fresh enqueue: m1 comes after m3.
    world = quorum()
    publish_all(world, b"m1", b"m2", b"m3")
    first = world.get("q", no_ack=False)
    assert first is not None
    world.vhost.requeue(world.vhost.queues["q"], [first], world.now)
    assert world.drain("q") == [b"m2", b"m3", b"m1"]


def test_quorum_returns_go_to_the_front_with_a_limit_or_when_the_channel_closes() -> None:
    for arguments, consumer_gone in (({"x-delivery-limit": 5}, False), ({}, True)):
        world = quorum(**arguments)
        publish_all(world, b"m1", b"m2", b"m3")
        taken = [world.get("q", no_ack=False), world.get("q", no_ack=False)]
        returned = [entry for entry in taken if entry is not None]
        world.vhost.requeue(world.vhost.queues["q"], returned[::-1], world.now, consumer_gone=consumer_gone)
        # In the order given (the channel's delivery order), ahead of what never left.
        assert world.drain("q") == [b"m2", b"m1", b"m3"]


def test_quorum_at_least_once_keeps_an_unrouted_dead_letter_and_retries_it() -> None:
    world = quorum(**{"x-max-length": 2, "x-overflow": "reject-publish", "x-dead-letter-strategy": "at-least-once",
                      "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "later"})
    publish_all(world, b"m1", b"m2")
    first = world.get("q", no_ack=False)
    assert first is not None
    world.vhost.reject(world.vhost.queues["q"], [first], world.now)
    # The kept m1 counts: m3 takes the queue over its limit of 2, m4 is refused.
    assert publish_all(world, b"m3", b"m4") == [False, True]
    world.queue("later")
    assert world.vhost.next_deadline() == world.now + 180_000
    world.clock.advance(180_000)
    world.vhost.run_timers(world.now)
    assert world.drain("later") == [b"m1"]
    queue = world.vhost.queues["q"]
    assert isinstance(queue, QuorumQueue) and queue.kept_dead_letters == 0
