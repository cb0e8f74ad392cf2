"""Time on a virtual clock: message TTLs, queue TTLs, queue expiry, timers.

RabbitMQ 3.10.8 facts used (resultsC.json): messages expire only at the head
of a queue; a TTL of 0 reaches a waiting consumer and otherwise expires at
once; a requeued message keeps its deadline; passive declare, basic.get and
consumers keep an `x-expires` queue alive, publishing does not.
"""

from __future__ import annotations

import pytest

from tests.core.core_support import FakeConsumer, World, error_of, headers, x_death

DLX = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"}


def dead_world(**arguments: object) -> World:
    world = World()
    world.queue("dead")
    world.queue("q", arguments={**DLX, **arguments})
    return world


def test_per_message_ttl_expires_at_its_deadline() -> None:
    world = dead_world()
    world.publish("", "q", b"m", expiration="100")
    assert world.vhost.next_deadline() == world.now + 100
    world.advance(99)
    assert (world.count("q"), world.count("dead")) == (1, 0)
    world.advance(1)
    assert (world.count("q"), world.count("dead")) == (0, 1)
    entry = world.get("dead")
    assert entry is not None
    assert entry.message.properties.expiration is None
    assert x_death(entry.message) == [{
        "count": 1, "reason": "expired", "queue": "q", "exchange": "", "routing-keys": ["q"],
        "original-expiration": "100",
    }]
    assert world.vhost.next_deadline() is None


def test_per_queue_ttl() -> None:
    world = dead_world(**{"x-message-ttl": 50})
    world.publish("", "q", b"a")
    world.advance(25)
    world.publish("", "q", b"b")
    world.advance(25)
    assert world.drain("q") == [b"b"]
    entry = world.get("dead")
    assert entry is not None
    assert x_death(entry.message) == [{"count": 1, "reason": "expired", "queue": "q", "exchange": "", "routing-keys": ["q"]}]


def test_the_smaller_of_queue_and_message_ttl_applies() -> None:
    world = dead_world(**{"x-message-ttl": 100})
    world.publish("", "q", b"message-shorter", expiration="30")
    world.advance(30)
    assert world.count("q") == 0
    world.publish("", "q", b"queue-shorter", expiration="60000")
    world.advance(99)
    assert world.count("q") == 1
    world.advance(1)
    assert world.count("q") == 0
    # The message keeps its expiration property until it is dead-lettered.
    world.publish("", "q", b"kept", expiration="60000")
    entry = world.get("q")
    assert entry is not None
    assert entry.message.properties.expiration == "60000"


def test_only_the_head_expires() -> None:
    # resultsC: m1 expiration 5000, m2 expiration 100; at 300 ms both are
    # counted; basic.get gives m1 and then counts 0 (m2 is dropped behind it).
    world = dead_world()
    world.publish("", "q", b"m1", expiration="5000")
    world.publish("", "q", b"m2", expiration="100")
    assert world.vhost.next_deadline() == world.now + 5000
    world.advance(300)
    assert world.count("q") == 2
    outcome = world.vhost.get("q", no_ack=True, owner=None, now_ms=world.now)
    assert outcome.entry is not None
    assert (outcome.entry.message.body, outcome.message_count) == (b"m1", 0)
    assert world.drain("dead") == [b"m2"]


def test_a_long_ttl_at_the_head_holds_short_ones_back() -> None:
    world = dead_world()
    world.publish("", "q", b"long", expiration="1000")
    world.publish("", "q", b"short", expiration="10")
    world.publish("", "q", b"forever")
    world.advance(999)
    assert world.count("q") == 3
    world.advance(1)
    assert world.drain("q") == [b"forever"]
    assert world.drain("dead") == [b"long", b"short"]  # in queue order


def test_in_a_priority_queue_only_the_next_to_deliver_expires() -> None:
    # Probed on 3.10.8: lo-short (1), hi-long (5), hi-short (5): at 400 ms all
    # three are counted and none dead; once hi-long is fetched, hi-short then
    # lo-short are dead-lettered, in delivery order.
    world = dead_world(**{"x-max-priority": 5})
    world.publish("", "q", b"lo-short", priority=1, expiration="100")
    world.publish("", "q", b"hi-long", priority=5, expiration="100000")
    world.publish("", "q", b"hi-short", priority=5, expiration="100")
    assert world.vhost.next_deadline() == world.now + 100000
    world.advance(400)
    assert (world.count("q"), world.count("dead")) == (3, 0)
    outcome = world.vhost.get("q", no_ack=True, owner=None, now_ms=world.now)
    assert outcome.entry is not None
    assert (outcome.entry.message.body, outcome.message_count) == (b"hi-long", 0)
    assert world.drain("dead") == [b"hi-short", b"lo-short"]


def test_in_a_priority_queue_expiry_stops_at_a_live_lower_priority_message() -> None:
    world = dead_world(**{"x-max-priority": 5})
    start = world.now
    world.publish("", "q", b"hi-short", priority=5, expiration="100")
    world.publish("", "q", b"lo-long", priority=1, expiration="100000")
    world.publish("", "q", b"lo-short", priority=1, expiration="100")
    world.advance(100)
    assert (world.count("q"), world.drain("dead")) == (2, [b"hi-short"])
    assert world.vhost.next_deadline() == start + 100000


def test_expired_messages_are_not_delivered() -> None:
    world = dead_world(**{"x-message-ttl": 100})
    world.publish("", "q", b"old")
    world.clock.advance(100)  # no timer has run yet
    consumer = world.consume("q", FakeConsumer("c"))
    world.publish("", "q", b"new")
    assert consumer.bodies() == [b"new"]
    assert world.drain("dead") == [b"old"]


def test_ttl_zero_reaches_a_waiting_consumer_and_expires_otherwise() -> None:
    for arguments, expiration in (({"x-message-ttl": 0}, None), ({}, "0")):
        world = dead_world(**arguments)
        world.publish("", "q", b"nobody", expiration=expiration)
        assert (world.count("q"), world.count("dead")) == (0, 1)
        consumer = world.consume("q", FakeConsumer("c"))
        world.publish("", "q", b"someone", expiration=expiration)
        assert consumer.bodies() == [b"someone"]
        assert consumer.received[0].message.properties.expiration == expiration
        assert world.count("dead") == 1


def test_ttl_zero_behind_other_messages_expires() -> None:
    world = dead_world()
    consumer = world.consume("q", FakeConsumer("c", prefetch=1))
    world.publish("", "q", b"first")
    world.publish("", "q", b"waits")
    world.publish("", "q", b"zero", expiration="0")
    world.ack(consumer)
    assert consumer.bodies() == [b"first", b"waits"]
    world.ack(consumer)
    assert world.drain("dead") == [b"zero"]


def test_requeued_message_keeps_its_deadline() -> None:
    # resultsC: x-message-ttl 400, get at 300 ms, nack with requeue, get at 500 ms: empty.
    world = dead_world(**{"x-message-ttl": 400})
    world.publish("", "q", b"m")
    world.advance(300)
    entry = world.get("q", no_ack=False)
    assert entry is not None
    world.vhost.requeue(world.vhost.queues["q"], [entry], world.now)
    world.advance(200)
    assert world.get("q") is None
    assert world.drain("dead") == [b"m"]


def test_a_message_requeued_after_its_deadline_expires_at_once() -> None:
    world = dead_world(**{"x-message-ttl": 100})
    world.publish("", "q", b"m")
    entry = world.get("q", no_ack=False)
    assert entry is not None
    world.clock.advance(150)  # no timer runs: the message is out with a consumer
    world.vhost.requeue(world.vhost.queues["q"], [entry], world.now)
    assert (world.count("q"), world.drain("dead")) == (0, [b"m"])


def test_requeued_message_keeps_its_deadline_after_the_timers_forgot_the_queue() -> None:
    world = dead_world()
    consumer = world.consume("q", FakeConsumer("c"))
    world.publish("", "q", b"m", expiration="100")  # straight to the consumer
    world.advance(50)
    assert world.vhost.next_deadline() is None
    world.cancel("q", consumer)
    world.requeue(consumer)
    assert world.vhost.next_deadline() == world.now + 50
    world.advance(50)
    assert (world.count("q"), world.drain("dead")) == (0, [b"m"])


def test_x_expires_deletes_an_unused_queue() -> None:
    world = World()
    world.exchange("x", "fanout", auto_delete=True)
    world.queue("q", arguments={"x-expires": 1000})
    world.bind("x", "q")
    assert world.vhost.next_deadline() == world.now + 1000
    world.advance(500)
    world.publish("x", "k")  # publishing is not using
    world.advance(499)
    assert "q" in world.vhost.queues
    world.advance(1)
    assert "q" not in world.vhost.queues
    assert "x" not in world.vhost.exchanges  # its auto-delete exchange went with it
    assert world.vhost.next_deadline() is None


def test_x_expires_is_renewed_by_declare_get_and_consumers() -> None:
    world = World()
    world.queue("q", arguments={"x-expires": 1000})
    world.advance(700)
    world.queue("q", passive=True)
    world.advance(700)
    world.queue("q", arguments={"x-expires": 1000})
    world.advance(700)
    world.get("q")
    world.advance(700)
    consumer = world.consume("q", FakeConsumer("c"))
    assert world.vhost.next_deadline() is None
    world.advance(10_000)
    assert "q" in world.vhost.queues
    world.cancel("q", consumer)
    world.advance(999)
    assert "q" in world.vhost.queues
    world.advance(1)
    assert "q" not in world.vhost.queues


def test_x_expires_is_not_renewed_by_purge_bind_or_publish() -> None:
    world = World()
    world.queue("q", arguments={"x-expires": 1000})
    world.advance(300)
    world.vhost.purge_queue("q")
    world.bind("amq.direct", "q", "k")
    world.publish("amq.direct", "k")
    world.advance(700)
    assert "q" not in world.vhost.queues


def test_x_expires_drops_messages_without_dead_lettering() -> None:
    world = World()
    world.queue("dead")
    world.queue("q", arguments={**DLX, "x-expires": 100})
    world.publish("", "q", b"m")
    world.advance(100)
    assert "q" not in world.vhost.queues
    assert world.count("dead") == 0


def test_next_deadline_is_the_earliest_of_all_queues() -> None:
    world = World()
    assert world.vhost.next_deadline() is None
    world.queue("a", arguments={"x-message-ttl": 300})
    world.queue("b", arguments={"x-expires": 200})
    world.queue("c")
    assert world.vhost.next_deadline() == world.now + 200
    world.publish("", "c", b"m", expiration="50")
    assert world.vhost.next_deadline() == world.now + 50
    world.publish("", "a", b"m")
    world.advance(60)
    assert world.vhost.next_deadline() == world.now + 140  # b's expiry
    world.advance(140)
    assert world.vhost.next_deadline() == world.now + 100  # a's message
    world.advance(100)
    assert world.vhost.next_deadline() is None


def test_run_timers_handles_due_queues_in_deadline_order() -> None:
    world = World()
    world.queue("dead")
    world.queue("slow", arguments={**DLX, "x-message-ttl": 20})
    world.queue("fast", arguments={**DLX, "x-message-ttl": 10})
    world.publish("", "slow", b"slow")
    world.publish("", "fast", b"fast")
    world.clock.advance(1000)
    world.vhost.run_timers(world.now)  # both overdue in one run
    assert world.drain("dead") == [b"fast", b"slow"]


def test_run_timers_follows_chains_that_fall_due_in_one_run() -> None:
    world = World()
    world.queue("end")
    world.queue("second", arguments={"x-message-ttl": 0, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "end"})
    world.queue("first", arguments={"x-message-ttl": 10, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "second"})
    world.publish("", "first", b"m")
    world.clock.advance(10)
    world.vhost.run_timers(world.now)
    entry = world.get("end")
    assert entry is not None
    assert [(d["queue"], d["reason"]) for d in x_death(entry.message)] == [("second", "expired"), ("first", "expired")]
    assert headers(entry.message)["x-first-death-queue"] == "first"


def _wrapped(expiration: str, tag: str, value: str) -> str:
    # Erlang's ~p: past column 78 the pair breaks after the comma, the value
    # aligned one column inside the brace.
    head = f"invalid expiration '{expiration}': "
    return f"{head}{{{tag},\n{' ' * (len(head.encode()) + 1)}{value}}}"


# 3.10.8's texts, probed with pika (columns count bytes: 'é' is two).
EXPIRATION_ERRORS: list[tuple[str, str]] = [
    ("abc", "invalid expiration 'abc': no_integer"),
    ("1" + "a" * 17, "invalid expiration '1aaaaaaaaaaaaaaaaa': {leftover_string,\"aaaaaaaaaaaaaaaaa\"}"),
    ("1" + "a" * 18, _wrapped("1" + "a" * 18, "leftover_string", '"' + "a" * 18 + '"')),
    ("12" + "a" * 17, _wrapped("12" + "a" * 17, "leftover_string", '"' + "a" * 17 + '"')),
    ("1\u00e9" + "a" * 20, _wrapped("1\u00e9" + "a" * 20, "leftover_string", '"\u00e9' + "a" * 20 + '"')),
    ("9" * 18, "invalid expiration '999999999999999999': {value_too_large,999999999999999999}"),
    ("-" + "9" * 18, "invalid expiration '-999999999999999999': {value_negative,-999999999999999999}"),
    ("9" * 19, _wrapped("9" * 19, "value_too_large", "9" * 19)),
    ("99999999999999999999",
     "invalid expiration '99999999999999999999': {value_too_large,\n" + " " * 44 + "99999999999999999999}"),
    ("+" + "9" * 20, _wrapped("+" + "9" * 20, "value_too_large", "9" * 20)),
    ("-" + "9" * 19, _wrapped("-" + "9" * 19, "value_negative", "-" + "9" * 19)),
]


@pytest.mark.parametrize(("expiration", "text"), EXPIRATION_ERRORS)
def test_invalid_expiration_texts(expiration: str, text: str) -> None:
    world = dead_world()
    assert error_of(lambda: world.publish("", "q", b"m", expiration=expiration)) == (406, text)
    assert world.count("q") == 0
