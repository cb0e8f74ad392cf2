"""x-consistent-hash: weights, spread, stability and the plugin's errors, in process."""

from __future__ import annotations

import datetime
from collections import Counter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from leveret.bindings.consistent_hash import (
    ConsistentHashIndex,
    HashSource,
    jump_hash,
    parse_weight,
)
from leveret.bindings.model import Binding, Destination, RoutedMessage
from leveret.queues.message import Message
from pamqp.commands import Basic

from tests.core.core_support import World, error_of

KEYS = [f"key-{i}" for i in range(100_000)]


def ring(*weights: int, source: HashSource | None = None) -> ConsistentHashIndex:
    index = ConsistentHashIndex(source)
    for number, weight in enumerate(weights):
        index.add(Binding("ring", Destination.queue(f"q{number}"), str(weight)))
    return index


def placement(index: ConsistentHashIndex, keys: list[str]) -> list[str]:
    return [index.match(key)[0].name for key in keys]


@pytest.fixture
def world() -> World:
    return World()


# ----------------------------------------------------------------- weights
WEIGHTS = [
    # (binding key, weight or the plugin's explanation)
    ("1", 1),
    ("10", 10),
    ("+5", 5),  # Erlang's list_to_integer takes a sign
    ("007", 7),
    ("1000000", 1_000_000),  # buckets are ranges: a big weight costs nothing
    ("0", "The binding key must be greater than 0"),
    ("-3", "The binding key must be greater than 0"),
    ("abc", 'The binding key must be an integer: <<"abc">>'),
    ("", "The binding key must be an integer: <<>>"),
    (" 5", 'The binding key must be an integer: <<" 5">>'),
    ("1.5", 'The binding key must be an integer: <<"1.5">>'),
    ("é", 'The binding key must be an integer: <<"é">>'),
    ('"', 'The binding key must be an integer: <<"\\"">>'),
]


@pytest.mark.parametrize(("key", "expected"), WEIGHTS)
def test_binding_key_is_a_weight(key: str, expected: int | str) -> None:
    if isinstance(expected, int):
        assert parse_weight(key) == expected
        return
    assert error_of(lambda: parse_weight(key)) == (406, expected)


def test_a_refused_binding_is_not_added(world: World) -> None:
    world.exchange("ring", "x-consistent-hash")
    world.queue("q")
    assert error_of(lambda: world.bind("ring", "q", "heavy"))[0] == 406
    assert world.vhost.exchanges["ring"].bindings == set()
    assert world.publish("ring", "k").queues == []


DECLARE_ERRORS = [
    ({"hash-header": "h", "hash-property": "message_id"}, 406,
     "hash-header and hash-property are mutually exclusive"),
    ({"hash-property": "app_id"}, 406, "Unsupported property: app_id"),
    ({"hash-header": 5}, 406, "Invalid argument, 'hash-header' must be a string, got byte"),
]


@pytest.mark.parametrize(("arguments", "code", "text"), DECLARE_ERRORS)
def test_exchange_arguments_are_checked(world: World, arguments: dict[str, Any], code: int, text: str) -> None:
    assert error_of(lambda: world.exchange("ring", "x-consistent-hash", arguments=arguments)) == (code, text)
    assert "ring" not in world.vhost.exchanges


# ------------------------------------------------------------------ spread
@pytest.mark.parametrize("weights", [(1, 1, 1, 1), (1, 2, 3, 4), (10, 20, 70)])
def test_keys_spread_in_proportion_to_the_weights(weights: tuple[int, ...]) -> None:
    counts = Counter(placement(ring(*weights), KEYS))
    total = sum(weights)
    for number, weight in enumerate(weights):
        expected = len(KEYS) * weight / total
        assert abs(counts[f"q{number}"] - expected) / expected < 0.03, (counts, weights)


# --------------------------------------------------------------- stability
@pytest.mark.parametrize("queues", [2, 4, 9])
def test_adding_a_queue_moves_about_one_nth_of_the_keys_all_to_it(queues: int) -> None:
    index = ring(*[1] * queues)
    before = placement(index, KEYS)
    index.add(Binding("ring", Destination.queue("new"), "1"))
    after = placement(index, KEYS)
    moved = [b for a, b in zip(before, after, strict=True) if a != b]
    assert abs(len(moved) / len(KEYS) - 1 / (queues + 1)) < 0.01
    assert set(moved) == {"new"}


def test_adding_weight_moves_only_what_the_new_buckets_take() -> None:
    index = ring(10, 10, 10)
    before = placement(index, KEYS)
    index.add(Binding("ring", Destination.queue("new"), "30"))  # half the buckets now
    after = placement(index, KEYS)
    moved = [b for a, b in zip(before, after, strict=True) if a != b]
    assert abs(len(moved) / len(KEYS) - 0.5) < 0.01
    assert set(moved) == {"new"}


def test_removing_the_newest_binding_moves_only_its_keys() -> None:
    index = ring(1, 1, 1)
    before = placement(index, KEYS)
    newest = Binding("ring", Destination.queue("new"), "1")
    index.add(newest)
    index.remove(newest)
    assert placement(index, KEYS) == before


def test_removing_an_older_binding_shifts_the_later_buckets_down_as_the_plugin_does() -> None:
    index = ring(1, 1, 1)
    index.remove(Binding("ring", Destination.queue("q0"), "1"))
    # q1 and q2 now own buckets 0 and 1: the same as a fresh ring of q1, q2.
    fresh = ConsistentHashIndex()
    fresh.add(Binding("ring", Destination.queue("q1"), "1"))
    fresh.add(Binding("ring", Destination.queue("q2"), "1"))
    assert placement(index, KEYS[:2000]) == placement(fresh, KEYS[:2000])
    assert index.buckets == 2


def test_a_queue_bound_twice_keeps_a_range_per_binding() -> None:
    index = ring(1)
    light = Binding("ring", Destination.queue("twice"), "1")
    heavy = Binding("ring", Destination.queue("twice"), "2")
    index.add(light)
    index.add(heavy)
    assert index.buckets == 4
    index.remove(light)
    assert index.buckets == 3
    assert set(placement(index, KEYS[:1000])) == {"q0", "twice"}


@given(st.text(), st.integers(min_value=1, max_value=50))
def test_jump_hash_stays_in_range_and_only_moves_to_new_buckets(key: str, buckets: int) -> None:
    index = ConsistentHashIndex()
    before = jump_hash(hash(key) & (2**64 - 1), buckets)
    after = jump_hash(hash(key) & (2**64 - 1), buckets + 1)
    assert 0 <= before < buckets
    assert after in (before, buckets)
    assert index.match(key) == []  # no bindings, no destination


# ---------------------------------------------------------------- routing
def test_one_queue_per_message_and_the_same_key_always_to_the_same_queue(world: World) -> None:
    world.exchange("ring", "x-consistent-hash")
    for name in ("a", "b", "c"):
        world.queue(name)
        world.bind("ring", name, "5")
    seen: dict[str, str] = {}
    for number in range(300):
        key = f"customer-{number % 50}"
        outcome = world.publish("ring", key, b"event")
        assert len(outcome.queues) == 1
        assert seen.setdefault(key, outcome.queues[0]) == outcome.queues[0]
    assert {world.count(name) for name in ("a", "b", "c")} != {0}
    assert sum(world.count(name) for name in ("a", "b", "c")) == 300


def test_only_the_first_routing_key_is_hashed(world: World) -> None:
    world.exchange("ring", "x-consistent-hash")
    for name in ("a", "b", "c", "d"):
        world.queue(name)
        world.bind("ring", name, "1")
    for number in range(40):
        alone = world.publish("ring", f"k{number}").queues
        with_cc = world.publish("ring", f"k{number}", headers={"CC": [f"other{number}", "x"]}).queues
        assert with_cc == alone


def test_hash_header_routes_on_the_header_and_without_it_to_one_queue(world: World) -> None:
    world.exchange("ring", "x-consistent-hash", arguments={"hash-header": "user"})
    for name in ("a", "b", "c", "d"):
        world.queue(name)
        world.bind("ring", name, "1")
    for user in ("ann", "bob", 42, b"raw"):
        places = {tuple(world.publish("ring", f"rk{n}", headers={"user": user}).queues) for n in range(20)}
        assert len(places) == 1
    missing = {tuple(world.publish("ring", f"rk{n}", headers={"other": n}).queues) for n in range(20)}
    no_headers = {tuple(world.publish("ring", f"rk{n}").queues) for n in range(20)}
    assert len(missing) == 1 and missing == no_headers


def publish_with(world: World, exchange: str, routing_key: str, **properties: Any) -> list[str]:
    props = Basic.Properties(**properties)
    message = Message(exchange, routing_key, props, b"", None)
    return world.vhost.publish(exchange, message, world.now).queues


@pytest.mark.parametrize("prop", ["message_id", "correlation_id", "timestamp"])
def test_hash_property_routes_on_the_property(world: World, prop: str) -> None:
    world.exchange("ring", "x-consistent-hash", arguments={"hash-property": prop})
    for name in ("a", "b", "c", "d"):
        world.queue(name)
        world.bind("ring", name, "1")
    values: list[Any] = (
        [datetime.datetime(2024, 1, 1, second=s, tzinfo=datetime.UTC) for s in range(20)]
        if prop == "timestamp" else [f"id-{n}" for n in range(20)]
    )
    places = set()
    for value in values:
        first = publish_with(world, "ring", "rk-1", **{prop: value})
        assert publish_with(world, "ring", "rk-2", **{prop: value}) == first
        places.add(tuple(first))
    assert len(places) > 1  # the property, not the routing key, decides
    unset = {tuple(publish_with(world, "ring", f"rk{n}")) for n in range(10)}
    assert len(unset) == 1


def test_a_consistent_hash_exchange_can_lead_to_exchanges(world: World) -> None:
    world.exchange("ring", "x-consistent-hash")
    world.exchange("left", "fanout")
    world.exchange("right", "fanout")
    world.queue("l")
    world.queue("r")
    world.bind("left", "l")
    world.bind("right", "r")
    world.bind_exchange("ring", "left", "1")
    world.bind_exchange("ring", "right", "1")
    reached = Counter(tuple(world.publish("ring", f"k{n}").queues) for n in range(200))
    assert set(reached) == {("l",), ("r",)}


def test_the_trace_explains_the_route_it_takes(world: World) -> None:
    world.exchange("ring", "x-consistent-hash", arguments={"hash-property": "message_id"})
    for name in ("a", "b", "c"):
        world.queue(name)
        world.bind("ring", name, "2")
    for number in range(30):
        properties = Basic.Properties(message_id=f"m{number}")
        traced = world.vhost.trace("ring", ["rk"], None, properties)
        assert traced.queues == publish_with(world, "ring", "rk", message_id=f"m{number}")
        assert len(traced.root.matched) == 1
        assert "hashes to bucket" in traced.root.matched[0].verdict.reason
    without = world.vhost.trace("ring", ["rk"], None)
    assert without.queues == []
    assert "not known here" in without.root.unmatched[0].verdict.reason


def test_the_router_gives_the_index_the_whole_message() -> None:
    index = ring(1, 1)
    message = RoutedMessage(("first", "second"), None)
    assert index.match_message(message) == index.match("first")
