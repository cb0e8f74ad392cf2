"""Exchanges and bindings in a virtual host, in-process.

Reply codes and texts are RabbitMQ 3.10.8's, recorded against the reference
broker (/work/oracle/resultsA.json and resultsC.json, and probes with pika).
"""

from __future__ import annotations

from typing import Any

import pytest
from leveret.bindings.model import Destination

from tests.core.core_support import OTHER, OWNER, World, error_of, headers, make_message

V = "in vhost '/'"


def routed(world: World, exchange: str, routing_key: str = "", **options: Any) -> list[str]:
    return sorted(world.publish(exchange, routing_key, b"m", **options).queues)


# ------------------------------------------------------------ exchange.declare
DECLARE_ERRORS = [
    # (name, type, options, code, text)
    ("amq.foo", "direct", {}, 403, "exchange name 'amq.foo' contains reserved prefix 'amq.*'"),
    ("amq.gen-x", "fanout", {}, 403, "exchange name 'amq.gen-x' contains reserved prefix 'amq.*'"),
    ("", "direct", {}, 403, "operation not permitted on the default exchange"),
    ("", "direct", {"passive": True}, 403, "operation not permitted on the default exchange"),
    ("amq.foo", "direct", {"passive": True}, 404, f"no exchange 'amq.foo' {V}"),
    ("missing", "direct", {"passive": True}, 404, f"no exchange 'missing' {V}"),
    ("amq.default", "direct", {"passive": True}, 404, f"no exchange 'amq.default' {V}"),
    # The type is checked first, for any name (a connection error, 503).
    ("x", "foo", {}, 503, "invalid exchange type 'foo'"),
    ("x", "", {}, 503, "invalid exchange type ''"),
    ("x", "topics", {}, 503, "unknown exchange type 'topics'"),
    ("x", "durable", {}, 503, "invalid exchange type 'durable'"),
    # Not an atom on a freshly started node (on one up for a while it may be: "invalid").
    ("x", "Direct", {}, 503, "unknown exchange type 'Direct'"),
    # (a plugin's type leveret does not build in; x-delayed-message and friends it does)
    ("x", "x-recent-history", {}, 503, "unknown exchange type 'x-recent-history'"),
    ("", "foo", {}, 503, "invalid exchange type 'foo'"),
    ("amq.foo", "foo", {}, 503, "invalid exchange type 'foo'"),
    ("amq.direct", "fanout", {"durable": True}, 406,
     f"inequivalent arg 'type' for exchange 'amq.direct' {V}: received 'fanout' but current is 'direct'"),
    ("amq.match", "headers", {}, 406,
     f"inequivalent arg 'durable' for exchange 'amq.match' {V}: received 'false' but current is 'true'"),
    ("x", "direct", {"arguments": {"alternate-exchange": 5}}, 406,
     f"invalid type 'byte' for arg 'alternate-exchange' in exchange 'x' {V}"),
    ("x", "direct", {"arguments": {"alternate-exchange": 1000}}, 406,
     f"invalid type 'short' for arg 'alternate-exchange' in exchange 'x' {V}"),
]


@pytest.mark.parametrize(("name", "kind", "options", "code", "text"), DECLARE_ERRORS)
def test_exchange_declare_errors(world: World, name: str, kind: str, options: dict[str, Any], code: int, text: str) -> None:
    assert error_of(lambda: world.exchange(name, kind, **options)) == (code, text)


def test_predeclared_exchanges(world: World) -> None:
    for name, kind in [("amq.direct", "direct"), ("amq.fanout", "fanout"), ("amq.topic", "topic"),
                       ("amq.headers", "headers"), ("amq.match", "headers")]:
        exchange = world.vhost.declare_exchange(name, kind, durable=True)
        assert (exchange.type_name, exchange.durable, exchange.internal) == (kind, True, False)
    trace = world.vhost.declare_exchange("amq.rabbitmq.trace", "topic", durable=True, internal=True)
    assert trace.internal
    assert error_of(lambda: world.publish("amq.rabbitmq.trace", "k")) == (
        403, f"cannot publish to internal exchange 'amq.rabbitmq.trace' {V}"
    )


def test_passive_declare_ignores_type_and_flags(world: World) -> None:
    world.exchange("x", "direct")
    assert world.vhost.declare_exchange("x", "fanout", passive=True).type_name == "direct"
    assert world.vhost.declare_exchange("x", "no-such-type", passive=True, durable=True).type_name == "direct"


def test_existing_exchange_with_unknown_type_is_503_not_406(world: World) -> None:
    world.exchange("x", "direct")
    assert error_of(lambda: world.exchange("x", "foo")) == (503, "invalid exchange type 'foo'")


def inequivalent(arg: str, detail: str) -> str:
    return f"inequivalent arg '{arg}' for exchange 'x' {V}: {detail}"


REDECLARE: list[tuple[dict[str, Any], dict[str, Any], str | None]] = [
    # (first options, second options, expected text or None for ok)
    ({}, {"exchange_type": "fanout"}, inequivalent("type", "received 'fanout' but current is 'direct'")),
    ({}, {"durable": True}, inequivalent("durable", "received 'true' but current is 'false'")),
    ({"durable": True}, {}, inequivalent("durable", "received 'false' but current is 'true'")),
    ({}, {"auto_delete": True}, inequivalent("auto_delete", "received 'true' but current is 'false'")),
    ({}, {"internal": True}, inequivalent("internal", "received 'true' but current is 'false'")),
    ({"internal": True}, {}, inequivalent("internal", "received 'false' but current is 'true'")),
    # type first, then durable, auto_delete, internal
    ({}, {"exchange_type": "fanout", "durable": True, "auto_delete": True},
     inequivalent("type", "received 'fanout' but current is 'direct'")),
    ({}, {"durable": True, "auto_delete": True, "internal": True},
     inequivalent("durable", "received 'true' but current is 'false'")),
    ({}, {"auto_delete": True, "internal": True},
     inequivalent("auto_delete", "received 'true' but current is 'false'")),
    ({"arguments": {"alternate-exchange": "a"}}, {"arguments": {"alternate-exchange": "b"}},
     inequivalent("alternate-exchange", "received 'b' but current is 'a'")),
    ({}, {"arguments": {"alternate-exchange": "b"}},
     inequivalent("alternate-exchange", "received the value 'b' of type 'longstr' but current is none")),
    ({"arguments": {"alternate-exchange": "a"}}, {},
     inequivalent("alternate-exchange", "received none but current is the value 'a' of type 'longstr'")),
    ({"arguments": {"alternate-exchange": "a"}}, {"arguments": {"alternate-exchange": 5}},
     inequivalent("alternate-exchange", "received '5' but current is 'a'")),
    ({}, {"arguments": {"alternate-exchange": 5}},
     inequivalent("alternate-exchange", "received the value '5' of type 'byte' but current is none")),
    # Other arguments are not compared.
    ({"arguments": {"x-foo": 1}}, {"arguments": {"x-foo": 2}}, None),
    ({"arguments": {"x-foo": 1}}, {}, None),
    ({"arguments": {"alternate-exchange": "a"}}, {"arguments": {"alternate-exchange": b"a"}}, None),
]


@pytest.mark.parametrize(("first", "second", "text"), REDECLARE)
def test_exchange_redeclare_equivalence(world: World, first: dict[str, Any], second: dict[str, Any], text: str | None) -> None:
    first, second = dict(first), dict(second)
    world.vhost.declare_exchange("x", first.pop("exchange_type", "direct"), **first)
    kind = second.pop("exchange_type", "direct")
    if text is None:
        assert world.vhost.declare_exchange("x", kind, **second).name == "x"
    else:
        assert error_of(lambda: world.vhost.declare_exchange("x", kind, **second)) == (406, text)


# ------------------------------------------------------------- exchange.delete
def test_exchange_delete_rules(world: World) -> None:
    assert error_of(lambda: world.vhost.delete_exchange("")) == (403, "operation not permitted on the default exchange")
    assert error_of(lambda: world.vhost.delete_exchange("amq.direct")) == (
        403, f"deletion of system exchange 'amq.direct' {V} not allowed"
    )
    assert error_of(lambda: world.vhost.delete_exchange("amq.foo", if_unused=True)) == (
        403, f"deletion of system exchange 'amq.foo' {V} not allowed"
    )
    world.vhost.delete_exchange("missing")
    world.vhost.delete_exchange("missing", if_unused=True)
    assert "missing" not in world.vhost.exchanges


def test_if_unused_counts_bindings_as_source_only(world: World) -> None:
    world.exchange("src", "fanout")
    world.exchange("dst", "fanout")
    world.exchange("used", "direct")
    world.queue("q")
    world.bind("used", "q", "k")
    world.bind_exchange("src", "dst")
    assert error_of(lambda: world.vhost.delete_exchange("used", if_unused=True)) == (406, f"exchange 'used' {V} in use")
    assert error_of(lambda: world.vhost.delete_exchange("src", if_unused=True)) == (406, f"exchange 'src' {V} in use")
    world.vhost.delete_exchange("dst", if_unused=True)  # only a destination: unused
    assert "dst" not in world.vhost.exchanges
    assert world.vhost.exchanges["src"].bindings == set()
    world.vhost.delete_exchange("used")
    assert world.vhost.bindings() == []


# ---------------------------------------------------------------- bindings
def test_bind_errors_in_rabbitmq_order(world: World) -> None:
    world.queue("q")
    world.exchange("x")
    default = (403, "operation not permitted on the default exchange")
    assert error_of(lambda: world.bind("", "q", "k")) == default
    assert error_of(lambda: world.bind("", "missing", "k")) == default
    assert error_of(lambda: world.bind_exchange("x", "")) == default
    assert error_of(lambda: world.bind_exchange("", "x")) == default
    assert error_of(lambda: world.bind("amq.default", "q")) == (404, f"no exchange 'amq.default' {V}")
    assert error_of(lambda: world.bind("nope", "missing")) == (404, f"no exchange 'nope' {V}")
    assert error_of(lambda: world.bind("x", "missing")) == (404, f"no queue 'missing' {V}")
    assert error_of(lambda: world.bind_exchange("nope", "gone")) == (404, f"no exchange 'nope' {V}")
    assert error_of(lambda: world.bind_exchange("x", "gone")) == (404, f"no exchange 'gone' {V}")
    assert world.vhost.bindings() == []


def test_unbind_of_what_is_not_there_succeeds(world: World) -> None:
    world.queue("q")
    world.exchange("x")
    world.vhost.unbind("x", Destination.queue("q"), "k")
    world.vhost.unbind("x", Destination.queue("missing"), "k")
    world.vhost.unbind("missing", Destination.queue("q"), "k")
    world.vhost.unbind("missing", Destination.exchange("gone"), "k")
    world.vhost.unbind("x", Destination.exchange("gone"), "k")
    assert error_of(lambda: world.vhost.unbind("", Destination.queue("q"), "k")) == (
        403, "operation not permitted on the default exchange"
    )


def test_exclusive_queue_of_another_connection_bind_and_unbind(world: World) -> None:
    world.queue("mine", exclusive=True)
    world.vhost.bind("amq.direct", Destination.queue("mine"), "k", owner=OWNER)
    locked = error_of(lambda: world.vhost.bind("amq.direct", Destination.queue("mine"), "j", owner=OTHER))
    assert locked[0] == 405
    assert locked[1].startswith("cannot obtain exclusive access to locked queue 'mine' in vhost '/'.")
    # Unbinding an existing binding is refused; a binding that is not there is a no-op.
    assert error_of(lambda: world.vhost.unbind("amq.direct", Destination.queue("mine"), "k", owner=OTHER)) == locked
    world.vhost.unbind("amq.direct", Destination.queue("mine"), "nothing", owner=OTHER)
    assert routed(world, "amq.direct", "k") == ["mine"]


def test_duplicate_bind_is_a_no_op(world: World) -> None:
    world.queue("q")
    world.exchange("x")
    world.bind("x", "q", "k")
    world.bind("x", "q", "k")
    assert len(world.vhost.bindings()) == 1
    world.vhost.unbind("x", Destination.queue("q"), "k")
    assert world.vhost.bindings() == []
    assert routed(world, "x", "k") == []


@pytest.mark.parametrize("kind", ["direct", "fanout", "topic"])
def test_bindings_with_other_arguments_are_distinct(world: World, kind: str) -> None:
    world.queue("q")
    world.exchange("x", kind)
    world.bind("x", "q", "k", {"a": 1})
    world.bind("x", "q", "k", {"a": 2})
    world.bind("x", "q", "k", {"a": 2})
    world.bind("x", "q", "k", {"a": True})  # typed: true is not 1
    assert len(world.vhost.bindings()) == 3
    assert world.publish("x", "k").queues == ["q"]  # one copy
    world.vhost.unbind("x", Destination.queue("q"), "k", {"a": 1})
    world.vhost.unbind("x", Destination.queue("q"), "k", {"a": True})
    assert routed(world, "x", "k") == ["q"]
    world.vhost.unbind("x", Destination.queue("q"), "k", {"a": 2})
    assert routed(world, "x", "k") == []
    assert world.count("q") == 2


def test_bad_binding_arguments_leave_no_binding(world: World) -> None:
    world.queue("q")
    world.exchange("h", "headers")
    code, text = error_of(lambda: world.bind("h", "q", "", {"x-match": "foo"}))
    assert code == 406
    assert text.startswith("Invalid x-match field value")
    assert world.vhost.bindings() == []


# ----------------------------------------------------------------- routing
def test_default_exchange_routes_by_queue_name_with_cc(world: World) -> None:
    world.queue("a")
    world.queue("b")
    assert routed(world, "", "a") == ["a"]
    assert routed(world, "", "missing") == []
    assert routed(world, "", "a", headers={"CC": ["b", "a", "missing"]}) == ["a", "b"]
    assert (world.count("a"), world.count("b")) == (2, 1)


@pytest.mark.parametrize("kind", ["direct", "topic", "fanout"])
def test_cc_and_bcc_add_routing_keys_and_bcc_is_removed(world: World, kind: str) -> None:
    world.exchange("x", kind)
    for name in ("a", "b", "c"):
        world.queue(name)
        world.bind("x", name, name)
    outcome = world.publish("x", "a", b"m", headers={"CC": ["b"], "BCC": ["c"], "other": "v"})
    assert sorted(outcome.queues) == ["a", "b", "c"]
    for name in ("a", "b", "c"):
        entry = world.get(name)
        assert entry is not None
        assert entry.message.routing_key == "a"
        assert headers(entry.message) == {"CC": ["b"], "other": "v"}
        assert world.get(name) is None


def test_same_queue_reached_by_two_keys_gets_one_copy(world: World) -> None:
    world.exchange("x")
    world.queue("q")
    world.bind("x", "q", "k1")
    world.bind("x", "q", "k2")
    assert world.publish("x", "k1", headers={"CC": ["k2"]}).queues == ["q"]
    assert world.count("q") == 1


def test_internal_exchange_refuses_publish_but_routes_e2e(world: World) -> None:
    world.exchange("inner", "fanout", internal=True)
    world.exchange("outer", "fanout")
    world.queue("q")
    world.bind("inner", "q")
    world.bind_exchange("outer", "inner")
    assert error_of(lambda: world.publish("inner", "k")) == (403, f"cannot publish to internal exchange 'inner' {V}")
    assert error_of(lambda: world.publish("missing", "k")) == (404, f"no exchange 'missing' {V}")
    assert routed(world, "outer", "k") == ["q"]


def test_exchange_to_exchange_chain_and_cycles(world: World) -> None:
    for name in ("x1", "x2", "x3"):
        world.exchange(name, "fanout")
    world.queue("q")
    world.queue("r")
    world.bind_exchange("x1", "x2")
    world.bind_exchange("x2", "x3")
    world.bind("x3", "q")
    assert routed(world, "x1") == ["q"]
    # A cycle x1 -> x2 -> x3 -> x1 with queues on every exchange: one copy each.
    world.bind_exchange("x3", "x1")
    world.bind("x1", "q")
    world.bind("x2", "r")
    world.bind("x2", "q")
    assert world.publish("x1", "k").queues.count("q") == 1
    assert routed(world, "x2") == ["q", "r"]
    assert routed(world, "x3") == ["q", "r"]
    # An exchange bound to itself.
    world.exchange("self", "fanout")
    world.bind_exchange("self", "self")
    world.bind("self", "q")
    assert routed(world, "self") == ["q"]


def test_diamond_gives_one_copy(world: World) -> None:
    for name in ("top", "left", "right"):
        world.exchange(name, "fanout")
    world.queue("q")
    world.bind_exchange("top", "left")
    world.bind_exchange("top", "right")
    world.bind("left", "q")
    world.bind("right", "q")
    assert world.publish("top", "k").queues == ["q"]
    assert world.count("q") == 1


def test_e2e_bindings_match_on_the_routing_key(world: World) -> None:
    world.exchange("t", "topic")
    world.exchange("d", "direct")
    world.queue("q")
    world.bind_exchange("t", "d", "a.*")
    world.bind("d", "q", "a.b")
    assert routed(world, "t", "a.b") == ["q"]
    assert routed(world, "t", "a.c") == []
    assert routed(world, "t", "b.b") == []


# -------------------------------------------------------- alternate exchange
def test_alternate_exchange_chain(world: World) -> None:
    world.exchange("x3", "fanout")
    world.exchange("x2", "direct", arguments={"alternate-exchange": "x3"})
    world.exchange("x1", "direct", arguments={"alternate-exchange": "x2"})
    world.queue("q")
    world.queue("direct-q")
    world.bind("x3", "q")
    world.bind("x1", "direct-q", "hit")
    assert routed(world, "x1", "nomatch") == ["q"]
    assert routed(world, "x1", "hit") == ["direct-q"]
    entry = world.get("q")
    assert entry is not None
    assert (entry.message.exchange, entry.message.routing_key) == ("x1", "nomatch")


def test_alternate_exchange_only_when_no_binding_matched(world: World) -> None:
    # x1's binding matches (to an exchange that routes nowhere): the AE is not used.
    world.exchange("ae", "fanout")
    world.exchange("empty", "direct")
    world.exchange("x1", "direct", arguments={"alternate-exchange": "ae"})
    world.queue("ae-q")
    world.bind("ae", "ae-q")
    world.bind_exchange("x1", "empty", "k")
    assert routed(world, "x1", "k") == []
    assert routed(world, "x1", "other") == ["ae-q"]
    # A binding to a queue that was deleted is gone too, so the AE applies again.
    world.queue("gone")
    world.bind("x1", "gone", "g")
    world.vhost.delete_queue("gone")
    assert routed(world, "x1", "g") == ["ae-q"]


def test_alternate_exchange_of_an_inner_exchange(world: World) -> None:
    world.exchange("ae", "fanout")
    world.exchange("inner", "direct", arguments={"alternate-exchange": "ae"})
    world.exchange("outer", "fanout")
    world.queue("ae-q")
    world.bind("ae", "ae-q")
    world.bind_exchange("outer", "inner")
    assert routed(world, "outer", "k") == ["ae-q"]


def test_missing_alternate_exchange_is_ignored(world: World) -> None:
    world.exchange("x", "direct", arguments={"alternate-exchange": "nowhere"})
    assert world.publish("x", "k").routed is False


def test_alternate_exchange_cycle_ends(world: World) -> None:
    world.exchange("x1", "direct", arguments={"alternate-exchange": "x2"})
    world.exchange("x2", "direct", arguments={"alternate-exchange": "x1"})
    world.exchange("x3", "direct", arguments={"alternate-exchange": "x3"})
    assert world.publish("x1", "k").routed is False
    assert world.publish("x3", "k").routed is False


def test_alternate_exchange_may_be_internal(world: World) -> None:
    world.exchange("ae", "fanout", internal=True)
    world.exchange("x", "direct", arguments={"alternate-exchange": "ae"})
    world.queue("q")
    world.bind("ae", "q")
    assert routed(world, "x", "k") == ["q"]


# ------------------------------------------------------------- auto-delete
def test_auto_delete_exchange_goes_with_its_last_binding(world: World) -> None:
    world.exchange("never", "fanout", auto_delete=True)
    world.exchange("x", "direct", auto_delete=True)
    world.queue("q1")
    world.queue("q2")
    world.bind("x", "q1", "k")
    world.bind("x", "q2", "k")
    world.vhost.unbind("x", Destination.queue("q1"), "k")
    assert "x" in world.vhost.exchanges
    world.vhost.unbind("x", Destination.queue("q2"), "k")
    assert "x" not in world.vhost.exchanges
    assert "never" in world.vhost.exchanges  # never bound: stays


def test_auto_delete_exchange_goes_when_its_queue_is_deleted(world: World) -> None:
    world.exchange("x", "fanout", auto_delete=True)
    world.queue("q")
    world.bind("x", "q")
    assert world.vhost.delete_queue("q") == 0
    assert "x" not in world.vhost.exchanges


def test_auto_delete_cascades_through_e2e_bindings(world: World) -> None:
    world.exchange("a", "fanout", auto_delete=True)
    world.exchange("b", "fanout", auto_delete=True)
    world.exchange("c", "fanout", auto_delete=True)  # its only binding leads to a
    world.queue("q")
    world.bind_exchange("a", "b")
    world.bind("b", "q")
    world.bind_exchange("c", "a")
    world.vhost.delete_queue("q")
    assert "b" not in world.vhost.exchanges
    assert "a" not in world.vhost.exchanges
    assert "c" not in world.vhost.exchanges  # lost its last binding (to a)
    assert world.vhost.bindings() == []


def test_auto_delete_exchange_as_e2e_destination_only_stays(world: World) -> None:
    world.exchange("src", "fanout", auto_delete=True)
    world.exchange("dst", "fanout", auto_delete=True)
    world.bind_exchange("src", "dst")
    world.vhost.unbind("src", Destination.exchange("dst"), "")
    assert "src" not in world.vhost.exchanges
    assert "dst" in world.vhost.exchanges


def test_auto_delete_queue_goes_with_its_last_consumer(world: World) -> None:
    from tests.core.core_support import FakeConsumer

    world.queue("q", auto_delete=True)
    world.queue("never", auto_delete=True)
    first, second = FakeConsumer("a"), FakeConsumer("b")
    world.consume("q", first)
    world.consume("q", second)
    world.get("q")  # basic.get is not a consumer
    world.cancel("q", first)
    assert "q" in world.vhost.queues
    world.cancel("q", second)
    assert "q" not in world.vhost.queues
    assert "never" in world.vhost.queues


def test_message_builder_matches_channel_rules() -> None:
    message = make_message("x", "a", headers={"CC": ["b"], "BCC": ["c"]})
    assert message.routing_keys == ("a", "b", "c")
    assert "BCC" not in message.headers
