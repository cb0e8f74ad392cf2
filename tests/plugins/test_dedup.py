"""Message deduplication, queue and exchange level, in process."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from leveret.exchanges.dedup_cache import DedupCache
from leveret.queues.dedup import DeduplicatingQueue, deduplicates, deduplication_key

from tests.core.core_support import FakeConsumer, World, error_of


@pytest.fixture
def world() -> World:
    return World()


def dedup_queue(world: World, name: str = "q", **arguments: Any) -> DeduplicatingQueue:
    queue = world.queue(name, arguments={"x-message-deduplication": True, **arguments})
    assert isinstance(queue, DeduplicatingQueue)
    return queue


def send(world: World, key: Any, body: bytes = b"m", queue: str = "q", **options: Any) -> bool:
    """Publish to `queue` with the deduplication header; True if the queue took it."""
    outcome = world.publish("", queue, body, headers={"x-deduplication-header": key}, **options)
    assert outcome.queues == [queue]  # a duplicate still counts as routed (no basic.return)
    return not outcome.rejected


# --------------------------------------------------------------- the key
KEYS = [
    # (a, b, the same key?)
    ("a", "a", True),
    ("a", b"a", True),  # longstr and byte array: both Erlang binaries
    (42, 42, True),
    (42, 42.0, False),  # Erlang's exact match: an integer is not a float
    (True, 1, False),
    (None, None, True),  # a void header is a key too
    (4.2, 4.2, True),
    ([1, "x"], [1, "x"], True),
    (datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC), 1704067200, True),  # a timestamp is an integer
]


@pytest.mark.parametrize(("a", "b", "same"), KEYS)
def test_keys_compare_as_the_plugins_cache(a: Any, b: Any, same: bool) -> None:
    key_a = deduplication_key({"x-deduplication-header": a})
    key_b = deduplication_key({"x-deduplication-header": b})
    assert (key_a == key_b) is same


def test_no_header_no_key() -> None:
    assert deduplication_key(None) is None
    assert deduplication_key({"other": 1}) is None


@pytest.mark.parametrize(("value", "on"), [(True, True), (False, False), (None, False), ("false", True), (0, True)])
def test_the_queue_argument_is_read_with_elixir_truthiness(value: Any, on: bool) -> None:
    assert deduplicates({"x-message-deduplication": value}) is on
    assert deduplicates({}) is False


# ----------------------------------------------------------------- queue
def test_a_duplicate_of_a_queued_message_is_refused(world: World) -> None:
    dedup_queue(world)
    assert send(world, "pay-1", b"first")
    assert not send(world, "pay-1", b"again")
    assert send(world, "pay-2", b"other")
    assert world.publish("", "q", b"no header").rejected is False
    assert world.publish("", "q", b"no header").rejected is False
    assert world.drain("q") == [b"first", b"other", b"no header", b"no header"]


def test_without_the_argument_nothing_is_deduplicated(world: World) -> None:
    world.queue("q")
    assert send(world, "k") and send(world, "k")
    assert world.count("q") == 2


def test_the_key_is_free_once_the_message_is_acked(world: World) -> None:
    dedup_queue(world)
    send(world, "k")
    consumer = world.consume("q", FakeConsumer("c"))
    assert not send(world, "k")  # delivered but unacked: still in the queue
    world.ack(consumer)
    assert send(world, "k")


def test_a_requeued_message_keeps_its_key(world: World) -> None:
    dedup_queue(world)
    send(world, "k")
    consumer = world.consume("q", FakeConsumer("c"))
    world.cancel("q", consumer)
    world.requeue(consumer)
    assert world.count("q") == 1
    assert not send(world, "k")


@pytest.mark.parametrize("dlx", [True, False])
def test_rejected_messages_leave_with_their_key(world: World, dlx: bool) -> None:
    if dlx:
        world.exchange("dlx", "fanout")
        world.queue("dead")
        world.bind("dlx", "dead")
    dedup_queue(world, **({"x-dead-letter-exchange": "dlx"} if dlx else {}))
    send(world, "k")
    consumer = world.consume("q", FakeConsumer("c"))
    world.reject(consumer)
    assert send(world, "k")


@pytest.mark.parametrize("no_ack_get", [True, False])
def test_messages_taken_without_ack_leave(world: World, no_ack_get: bool) -> None:
    dedup_queue(world)
    if no_ack_get:
        send(world, "k")
        assert world.get("q", no_ack=True) is not None
    else:
        # straight from publish to a waiting no-ack consumer (the plugin keeps the key here)
        world.consume("q", FakeConsumer("c", no_ack=True))
        send(world, "k")
    assert send(world, "k")


def test_expired_messages_leave(world: World) -> None:
    dedup_queue(world, **{"x-message-ttl": 1000})
    send(world, "k")
    world.clock.advance(1000)
    world.vhost.run_timers(world.now)
    assert world.count("q") == 0
    assert send(world, "k")


def test_a_key_lapses_with_its_ttl_even_while_the_message_is_stuck(world: World) -> None:
    # Classic queues expire at the head only; the plugin's key has the message's TTL anyway.
    dedup_queue(world)
    send(world, "head")  # never expires
    send(world, "k", expiration="500")
    world.clock.advance(500)
    assert world.count("q") == 2
    assert send(world, "k", b"again")


def test_drop_head_frees_the_dropped_key(world: World) -> None:
    # The plugin's queue_overflow case: max-length 1.
    dedup_queue(world, **{"x-max-length": 1})
    assert send(world, "this", b"this")
    assert send(world, "that", b"that")  # drops "this"
    assert send(world, "this", b"this again")  # drops "that"
    assert world.drain("q") == [b"this again"]


def test_delivery_limit_drops_free_the_key(world: World) -> None:
    dedup_queue(world, **{"x-delivery-limit": 0})
    send(world, "k")
    consumer = world.consume("q", FakeConsumer("c"))
    world.requeue(consumer)
    assert world.count("q") == 0
    assert send(world, "k")


def test_purge_forgets_every_key_and_an_old_ack_cannot_free_a_new_one(world: World) -> None:
    dedup_queue(world)
    send(world, "k", b"old")
    old = world.get("q", no_ack=False)
    assert old is not None
    send(world, "k2")
    world.vhost.purge_queue("q")
    assert send(world, "k", b"new") and send(world, "k2")
    queue = world.vhost.queues["q"]
    world.vhost.ack(queue, [old])  # the old message leaves: its key now belongs to "new"
    assert not send(world, "k", b"newer")


def test_overflow_is_checked_before_duplicates(world: World) -> None:
    world.exchange("dlx", "fanout")
    world.queue("dead")
    world.bind("dlx", "dead")
    dedup_queue(world, **{"x-max-length": 1, "x-overflow": "reject-publish-dlx", "x-dead-letter-exchange": "dlx"})
    send(world, "k", b"in")
    assert not send(world, "k", b"full and a duplicate")
    assert world.drain("dead") == [b"full and a duplicate"]  # dead-lettered as maxlen
    assert world.drain("q") == [b"in"]
    assert send(world, "k", b"the refused one did not free or take the key")


def test_a_refused_duplicate_does_not_free_the_key_when_it_leaves(world: World) -> None:
    world.exchange("fan", "fanout")
    dedup_queue(world, "a")
    world.queue("b")
    world.bind("fan", "a")
    world.bind("fan", "b")
    world.publish("fan", "", b"1", headers={"x-deduplication-header": "k"})
    outcome = world.publish("fan", "", b"2", headers={"x-deduplication-header": "k"})
    assert sorted(outcome.queues) == ["a", "b"] and outcome.rejected  # confirm: nack
    assert world.count("a") == 1 and world.count("b") == 2


def test_quorum_queues_deduplicate_too(world: World) -> None:
    queue = world.queue("qq", durable=True, arguments={"x-message-deduplication": True, "x-queue-type": "quorum"})
    assert isinstance(queue, DeduplicatingQueue)
    assert send(world, "k", queue="qq") and not send(world, "k", queue="qq")


# --------------------------------------------------------------- exchange
def dedup_exchange(world: World, **arguments: Any) -> None:
    world.exchange("once", "x-message-deduplication", arguments={"x-cache-size": 10, **arguments})
    world.queue("out")
    world.bind("once", "out")


def emit(world: World, key: Any = "k", body: bytes = b"m", **extra: Any) -> list[str]:
    headers = {"x-deduplication-header": key, **extra} if key is not None else extra or None
    return world.publish("once", "any", body, headers=headers).queues


EXCHANGE_ERRORS = [
    ({}, "Missing or invalid argument, 'x-cache-size' must be an integer greater than 0"),
    ({"x-cache-size": 0}, "Missing or invalid argument, 'x-cache-size' must be an integer greater than 0"),
    ({"x-cache-size": True}, "Missing or invalid argument, 'x-cache-size' must be an integer greater than 0"),
    ({"x-cache-size": "ten"}, "Missing or invalid argument, 'x-cache-size' must be an integer greater than 0"),
    ({"x-cache-size": 5, "x-cache-ttl": 0}, "Invalid argument, 'x-cache-ttl' must be an integer greater than 0"),
    ({"x-cache-size": 5, "x-cache-ttl": "x"}, "Invalid argument, 'x-cache-ttl' must be an integer greater than 0"),
    ({"x-cache-size": 5, "x-cache-persistence": "tape"},
     "Invalid argument, 'x-cache-persistence' must be either 'disk' or 'memory'"),
]


@pytest.mark.parametrize(("arguments", "text"), EXCHANGE_ERRORS)
def test_exchange_arguments_are_checked(world: World, arguments: dict[str, Any], text: str) -> None:
    assert error_of(lambda: world.exchange("once", "x-message-deduplication", arguments=arguments)) == (406, text)


def test_string_arguments_are_converted(world: World) -> None:
    world.exchange("once", "x-message-deduplication",
                   arguments={"x-cache-size": "5", "x-cache-ttl": "100", "x-cache-persistence": "disk"})
    index = world.vhost.exchanges["once"].index
    assert (index.cache.size, index.cache.ttl) == (5, 100)  # type: ignore[attr-defined]


def test_the_exchange_routes_like_fanout_once_per_value(world: World) -> None:
    dedup_exchange(world)
    world.queue("also")
    world.bind("once", "also", "ignored-key")
    assert sorted(emit(world, "k", b"1")) == ["also", "out"]
    assert emit(world, "k", b"2") == []
    assert emit(world, None, b"3") != [] and emit(world, None, b"4") != []
    assert world.drain("out") == [b"1", b"3", b"4"]


def test_the_window_is_x_cache_ttl_or_the_messages_own(world: World) -> None:
    dedup_exchange(world, **{"x-cache-ttl": 1000})
    emit(world, "k")
    world.clock.advance(999)
    assert emit(world, "k") == []
    world.clock.advance(1)
    assert emit(world, "k") == ["out"]
    emit(world, "short", **{"x-cache-ttl": 10})
    emit(world, "long", **{"x-cache-ttl": 5000})
    world.clock.advance(1000)
    assert emit(world, "short") == ["out"]
    assert emit(world, "long") == []


def test_without_a_ttl_values_are_kept_until_the_cache_is_full(world: World) -> None:
    dedup_exchange(world, **{"x-cache-size": 3})
    for key in ("a", "b", "c"):
        emit(world, key)
    world.clock.advance(10**9)
    assert emit(world, "a") == []
    emit(world, "d")  # full: the oldest, "a", goes
    assert emit(world, "a") == ["out"]
    assert emit(world, "c") == []


def test_a_duplicate_goes_to_the_alternate_exchange(world: World) -> None:
    world.exchange("ae", "fanout")
    world.queue("dupes")
    world.bind("ae", "dupes")
    dedup_exchange(world, **{"alternate-exchange": "ae"})
    emit(world, "k", b"first")
    assert emit(world, "k", b"second") == ["dupes"]


def test_a_deduplicating_exchange_behind_another_exchange(world: World) -> None:
    dedup_exchange(world)
    world.exchange("front", "topic")
    world.bind_exchange("front", "once", "#")
    headers = {"x-deduplication-header": "k"}
    assert world.publish("front", "a.b", b"1", headers=headers).queues == ["out"]
    assert world.publish("front", "a.b", b"2", headers=headers).queues == []


def test_a_trace_does_not_remember_the_message(world: World) -> None:
    dedup_exchange(world)
    headers = {"x-deduplication-header": "k"}
    before = world.vhost.trace("once", ["any"], headers, None, world.now)
    assert before.queues == ["out"]
    assert emit(world, "k") == ["out"]
    after = world.vhost.trace("once", ["any"], headers, None, world.now)
    assert after.queues == []
    assert "a duplicate" in after.root.unmatched[0].verdict.reason


def test_the_cache_drops_expired_entries_before_the_oldest() -> None:
    cache = DedupCache(size=2)
    assert cache.insert("forever", 0)
    assert cache.insert("brief", 0, ttl=10)
    assert cache.insert("new", 20)  # full: the expired "brief" makes room, "forever" stays
    assert cache.contains("forever", 20) and cache.contains("new", 20)
    assert not cache.contains("brief", 20)
    assert not cache.insert("forever", 30)
    assert len(cache) == 2
