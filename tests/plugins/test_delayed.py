"""x-delayed-message: validation, delays, release, the store interface, in process."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from leveret.amqp_wire.fieldtable import Field
from leveret.bindings.model import Destination
from leveret.exchanges.delayed import MAX_DELAY_MS, DelayedMessage, DelayedMessages, delay_of

from leveret.broker.broker import Broker
from leveret.clock import VirtualClock
from tests.core.core_support import (
    FakeConsumer,
    World,
    error_of,
    headers,
    make_message,
    typed_headers,
)


@pytest.fixture
def world() -> World:
    return World()


def delayed_world(world: World, kind: str = "direct", **arguments: Any) -> World:
    world.exchange("later", "x-delayed-message", arguments={"x-delayed-type": kind, **arguments})
    world.queue("q")
    world.bind("later", "q", "k" if kind in ("direct", "topic") else "")
    return world


def advance(world: World, ms: int) -> None:
    world.clock.advance(ms)
    world.vhost.run_timers(world.now)


# -------------------------------------------------------------- declaring
DECLARE_ERRORS = [
    ({}, 406, "Invalid argument, 'x-delayed-type' must be an existing exchange type"),
    ({"x-delayed-type": 5}, 406, "Invalid argument, 'x-delayed-type' must be an existing exchange type"),
    ({"x-delayed-type": "x-delayed-message"}, 406,
     "Invalid argument, 'x-delayed-message' can't be used for 'x-delayed-type'"),
    ({"x-delayed-type": "topics"}, 503, "unknown exchange type 'topics'"),
    ({"x-delayed-type": "foo"}, 503, "invalid exchange type 'foo'"),
    # The delayed type's own checks apply too.
    ({"x-delayed-type": "x-consistent-hash", "hash-property": "app_id"}, 406, "Unsupported property: app_id"),
    ({"x-delayed-type": "x-message-deduplication"}, 406,
     "Missing or invalid argument, 'x-cache-size' must be an integer greater than 0"),
]


@pytest.mark.parametrize(("arguments", "code", "text"), DECLARE_ERRORS)
def test_declare_checks_x_delayed_type(world: World, arguments: dict[str, Any], code: int, text: str) -> None:
    assert error_of(lambda: world.exchange("later", "x-delayed-message", arguments=arguments)) == (code, text)
    assert "later" not in world.vhost.exchanges


@pytest.mark.parametrize("kind", ["direct", "fanout", "topic", "headers", "x-consistent-hash"])
def test_any_other_type_can_be_the_delayed_type(world: World, kind: str) -> None:
    world.exchange("later", "x-delayed-message", arguments={"x-delayed-type": kind})
    assert world.vhost.exchanges["later"].type_name == "x-delayed-message"


# ---------------------------------------------------------------- x-delay
DELAYS = [
    # (x-delay header value, the delay applied; None routes at once)
    (1000, 1000),
    (1, 1),
    (2**40, None),  # past Erlang's longest timer: at once, as the plugin
    (MAX_DELAY_MS, MAX_DELAY_MS),
    (0, None),
    (-5, None),
    ("2500", 2500),  # a string of digits is converted
    ("+7", 7),
    ("soon", None),
    ("1.5", None),
    (1.9, 1),  # floats and decimals truncate
    (Decimal("250.7"), 250),
    (True, None),
    (bytearray(b"100"), None),  # a byte array is not one of the plugin's string types
    (None, None),
]


@pytest.mark.parametrize(("value", "delay"), DELAYS)
def test_x_delay_is_read_as_the_plugin_reads_it(value: Any, delay: int | None) -> None:
    assert delay_of({"x-delay": value}) == delay


def test_no_x_delay_header_means_no_delay() -> None:
    assert delay_of(None) is None
    assert delay_of({"x-other": 5}) is None


# ----------------------------------------------------------------- delays
def test_a_delayed_message_is_routed_when_its_delay_is_over(world: World) -> None:
    delayed_world(world)
    outcome = world.publish("later", "k", b"m", headers={"x-delay": 500})
    assert (outcome.queues, outcome.routed, outcome.delayed, outcome.rejected) == ([], False, 500, False)
    assert world.vhost.next_deadline() == world.now + 500
    advance(world, 499)
    assert world.count("q") == 0
    advance(world, 1)
    assert world.drain("q") == [b"m"]
    assert world.vhost.next_deadline() is None
    assert len(world.vhost.delayed) == 0


def test_without_x_delay_it_routes_at_once_as_its_type(world: World) -> None:
    delayed_world(world, "topic")
    world.queue("all")
    world.bind("later", "all", "#")
    assert sorted(world.publish("later", "k", b"now").queues) == ["all", "q"]
    assert sorted(world.publish("later", "k", b"zero", headers={"x-delay": 0}).queues) == ["all", "q"]
    assert world.publish("later", "other", b"x").queues == ["all"]


def test_delays_do_not_wait_behind_each_other(world: World) -> None:
    delayed_world(world)
    consumer = world.consume("q", FakeConsumer("c", no_ack=True))
    for body, delay in [(b"10s", 10_000), (b"1s", 1000), (b"5s", 5000), (b"1s again", 1000)]:
        world.publish("later", "k", body, headers={"x-delay": delay})
    advance(world, 1000)
    assert consumer.bodies() == [b"1s", b"1s again"]  # same moment: publish order
    advance(world, 4000)
    assert consumer.bodies()[-1] == b"5s"
    advance(world, 5000)
    assert consumer.bodies() == [b"1s", b"1s again", b"5s", b"10s"]


def test_the_delay_is_swapped_to_its_negative_and_other_bytes_kept(world: World) -> None:
    delayed_world(world)
    world.publish("later", "k", b"m", headers={"x-delay": "1500", "trace-id": "abc", "n": 3},
                  expiration="60000")
    advance(world, 1500)
    entry = world.get("q")
    assert entry is not None
    table = typed_headers(entry.message)
    assert table.get("x-delay") == Field("I", -1500)
    assert headers(entry.message) == {"x-delay": -1500, "trace-id": "abc", "n": 3}
    assert entry.message.properties.expiration == "60000"
    assert entry.message.exchange == "later" and entry.message.routing_key == "k"


def test_it_routes_through_the_bindings_as_they_are_when_the_delay_ends(world: World) -> None:
    delayed_world(world)
    world.queue("late")
    world.publish("later", "k", b"m", headers={"x-delay": 100})
    world.bind("later", "late", "k")
    world.vhost.unbind("later", Destination.queue("q"), "k")
    advance(world, 100)
    assert (world.count("q"), world.count("late")) == (0, 1)


def test_the_alternate_exchange_sees_it_when_it_is_routed_not_at_publish(world: World) -> None:
    world.exchange("ae", "fanout")
    world.queue("unrouted")
    world.bind("ae", "unrouted")
    delayed_world(world, **{"alternate-exchange": "ae"})
    world.publish("later", "nowhere", b"m", headers={"x-delay": 100})
    assert world.count("unrouted") == 0
    advance(world, 100)
    assert world.drain("unrouted") == [b"m"]


def test_deleting_the_exchange_discards_its_delayed_messages(world: World) -> None:
    delayed_world(world)
    world.exchange("other", "x-delayed-message", arguments={"x-delayed-type": "fanout"})
    world.bind("other", "q")
    world.publish("later", "k", b"gone", headers={"x-delay": 100})
    world.publish("other", "k", b"kept", headers={"x-delay": 100})
    assert world.vhost.delayed.count("later") == 1
    world.vhost.delete_exchange("later")
    delayed_world(world)  # the same name again: a new exchange
    advance(world, 100)
    assert world.drain("q") == [b"kept"]


def test_a_dead_letter_with_a_positive_x_delay_is_delayed_too(world: World) -> None:
    delayed_world(world)
    world.queue("work", arguments={"x-dead-letter-exchange": "later", "x-dead-letter-routing-key": "k",
                                   "x-message-ttl": 10})
    world.publish("", "work", b"m", headers={"x-delay": 1000})
    advance(world, 10)
    assert world.count("q") == 0 and len(world.vhost.delayed) == 1
    advance(world, 1000)
    entry = world.get("q")
    assert entry is not None
    assert headers(entry.message)["x-delay"] == -1000
    assert headers(entry.message)["x-death"][0]["reason"] == "expired"


def test_a_message_delayed_once_is_not_delayed_again(world: World) -> None:
    # Another delayed exchange behind the first: the swapped header is negative.
    delayed_world(world)
    world.exchange("second", "x-delayed-message", arguments={"x-delayed-type": "fanout"})
    world.queue("end")
    world.bind("second", "end")
    world.queue("relay", arguments={"x-dead-letter-exchange": "second"})
    world.bind("later", "relay", "k")
    world.publish("later", "k", b"m", headers={"x-delay": 100})
    advance(world, 100)
    entry = world.get("relay", no_ack=False)
    assert entry is not None
    world.vhost.reject(world.vhost.queues["relay"], [entry], world.now)
    assert world.drain("end") == [b"m"]


def test_the_broker_timer_includes_delayed_messages() -> None:
    clock = VirtualClock()
    broker = Broker(clock=clock)
    vhost = broker.vhost("/")
    vhost.declare_exchange("later", "x-delayed-message", arguments={"x-delayed-type": "fanout"})
    vhost.declare_queue("q")
    vhost.bind("later", Destination.queue("q"), "")
    vhost.publish("later", make_message("later", "", b"m", headers={"x-delay": 250}), clock.now_ms())
    assert broker.next_deadline() == clock.now_ms() + 250
    clock.advance(250)
    broker.run_timers()
    assert vhost.queues["q"].message_count == 1


# ------------------------------------------------------------ persistence
class FakeStore:
    def __init__(self) -> None:
        self.kept: dict[int, DelayedMessage] = {}

    def delayed(self, vhost: str, entry: DelayedMessage) -> None:
        self.kept[entry.seq] = entry

    def released(self, vhost: str, entry: DelayedMessage) -> None:
        del self.kept[entry.seq]


def test_only_persistent_messages_of_durable_exchanges_go_to_the_store(world: World) -> None:
    store = FakeStore()
    world.vhost.delayed.store = store
    world.exchange("durable", "x-delayed-message", durable=True, arguments={"x-delayed-type": "fanout"})
    world.exchange("transient", "x-delayed-message", arguments={"x-delayed-type": "fanout"})
    world.queue("q")
    world.bind("durable", "q")
    world.bind("transient", "q")
    persistent = make_message("durable", "", b"kept", headers={"x-delay": 100})
    persistent.properties.delivery_mode = 2
    world.vhost.publish("durable", persistent, world.now)
    world.publish("durable", "", b"not persistent", headers={"x-delay": 100})
    transient = make_message("transient", "", b"transient exchange", headers={"x-delay": 100})
    transient.properties.delivery_mode = 2
    world.vhost.publish("transient", transient, world.now)
    assert [entry.message.body for entry in store.kept.values()] == [b"kept"]
    advance(world, 100)
    assert store.kept == {}
    assert world.count("q") == 3


def test_restored_messages_are_routed_when_due_even_if_overdue(world: World) -> None:
    delayed_world(world)
    store = FakeStore()
    first = DelayedMessages("/", store)
    first.add("later", make_message("later", "k", b"overdue", headers={"x-delay": 50}), 50, world.now,
              durable=True)
    first.add("later", make_message("later", "k", b"later", headers={"x-delay": 5000}), 5000, world.now,
              durable=True)
    world.clock.advance(1000)  # a restart
    for entry in sorted(store.kept.values(), key=lambda e: e.seq):
        world.vhost.delayed.restore(entry)
    world.vhost.delayed.store = store
    assert world.vhost.next_deadline() is not None and world.vhost.next_deadline() < world.now
    world.vhost.run_timers(world.now)
    assert world.drain("q") == [b"overdue"]
    assert [entry.message.body for entry in store.kept.values()] == [b"later"]
    added = world.vhost.delayed.add("later", make_message("later", "k"), 10, world.now, durable=False)
    assert added.seq > max(store.kept)  # sequence numbers continue after the restored ones
