"""`VirtualHost.trace` (the playground's explanation of a route) must reach
exactly the queues `route` reaches, and both must agree with a plain
reference walk written from RabbitMQ's rule (rabbit_exchange:route: a work
list with a seen-set; an exchange none of whose bindings matched hands the
message to its alternate exchange; missing exchanges and queues are skipped).
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st
from leveret.bindings.model import Destination
from leveret.exchanges.router import ExchangeHop, route
from leveret.queues.message import Message

from leveret.broker.vhost import VirtualHost
from tests.core.core_support import make_message

EXCHANGES = ["e0", "e1", "e2", "e3", "e4"]
QUEUES = ["q0", "q1", "q2", "q3"]
KEYS = ["", "a", "b", "a.b", "a.c", "b.a", "a.b.c", "*", "#", "a.*", "*.b", "a.#", "#.c", "a..b"]
ROUTING_KEYS = ["", "a", "b", "a.b", "a.c", "b.a", "a.b.c", "a..b", "x"]


@dataclass(frozen=True)
class Topology:
    kinds: dict[str, str]
    alternates: dict[str, str]
    bindings: list[tuple[str, str, str, str]]  # source, kind, destination, key
    deleted_queues: list[str]


def topic_matches(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(topic_matches(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head == "*" or head == words[0]) and topic_matches(rest, words[1:])


def matches(kind: str, binding_key: str, routing_key: str) -> bool:
    if kind == "fanout":
        return True
    if kind == "direct":
        return binding_key == routing_key
    split = lambda key: key.split(".") if key else []  # noqa: E731
    return topic_matches(split(binding_key), split(routing_key))


def reference_route(topology: Topology, start: str, routing_keys: list[str]) -> set[str]:
    queues = set(QUEUES) - set(topology.deleted_queues)
    if start == "":
        return {key for key in routing_keys if key in queues}
    live = {(s, k, d, key) for s, k, d, key in topology.bindings if not (k == "queue" and d in topology.deleted_queues)}
    found: set[str] = set()
    seen = {start}
    work = [start]
    while work:
        exchange = work.pop()
        kind = topology.kinds[exchange]
        destinations = {
            (k, d) for s, k, d, key in live
            if s == exchange and any(matches(kind, key, rk) for rk in routing_keys)
        }
        if not destinations and exchange in topology.alternates:
            destinations = {("exchange", topology.alternates[exchange])}
        for k, d in destinations:
            if k == "queue":
                found.add(d)
            elif d not in seen:
                seen.add(d)
                if d in topology.kinds:
                    work.append(d)
    return found


@st.composite
def topologies(draw: st.DrawFn) -> Topology:
    count = draw(st.integers(1, len(EXCHANGES)))
    names = EXCHANGES[:count]
    kinds = {name: draw(st.sampled_from(["direct", "fanout", "topic"])) for name in names}
    alternates = {
        name: draw(st.sampled_from([*names, "missing"]))
        for name in names if draw(st.booleans())
    }
    binding = st.tuples(
        st.sampled_from(names),
        st.sampled_from(["queue", "exchange"]),
        st.integers(0, 9),
        st.sampled_from(KEYS),
    )
    bindings = []
    for source, kind, pick, key in draw(st.lists(binding, max_size=14)):
        pool = QUEUES if kind == "queue" else names
        bindings.append((source, kind, pool[pick % len(pool)], key))
    deleted = draw(st.lists(st.sampled_from(QUEUES), max_size=1))
    return Topology(kinds, alternates, bindings, deleted)


def build(topology: Topology) -> VirtualHost:
    vhost = VirtualHost()
    for name in QUEUES:
        vhost.declare_queue(name)
    for name, kind in topology.kinds.items():
        arguments = {"alternate-exchange": topology.alternates[name]} if name in topology.alternates else None
        vhost.declare_exchange(name, kind, arguments=arguments)
    for source, kind, destination, key in topology.bindings:
        where = Destination.queue(destination) if kind == "queue" else Destination.exchange(destination)
        vhost.bind(source, where, key)
    for name in topology.deleted_queues:
        vhost.delete_queue(name)
    return vhost


@settings(max_examples=300, deadline=None)
@given(
    topologies(),
    st.integers(0, len(EXCHANGES)),
    st.lists(st.sampled_from(ROUTING_KEYS + QUEUES), min_size=1, max_size=3),
)
def test_trace_reaches_the_queues_route_reaches(topology: Topology, pick: int, routing_keys: list[str]) -> None:
    vhost = build(topology)
    names = list(topology.kinds)
    start = "" if pick == len(EXCHANGES) else names[pick % len(names)]
    exchange = vhost.exchange(start)
    routed = route(vhost.exchanges, vhost.queues, exchange, routing_keys, None)
    traced = vhost.trace(start, routing_keys, None)
    assert len(routed) == len(set(routed))
    assert sorted(traced.queues) == sorted(routed)
    assert set(routed) == reference_route(topology, start, routing_keys)
    outcome = vhost.publish(start, _message(start, routing_keys), 0)
    assert sorted(outcome.queues) == sorted(routed)


def _message(exchange: str, routing_keys: list[str]) -> Message:
    """The first key is the routing key, the others arrive as CC."""
    return make_message(exchange, routing_keys[0], headers={"CC": routing_keys[1:]})


def test_trace_golden() -> None:
    vhost = VirtualHost()
    for name in ("orders", "audit", "unrouted"):
        vhost.declare_queue(name)
    vhost.declare_exchange("ae", "fanout")
    vhost.declare_exchange("t", "topic", arguments={"alternate-exchange": "ae"})
    vhost.declare_exchange("copy", "fanout")
    vhost.bind("t", Destination.queue("orders"), "order.*")
    vhost.bind("t", Destination.exchange("copy"), "order.#")
    vhost.bind("copy", Destination.queue("audit"), "")
    vhost.bind("copy", Destination.exchange("t"), "")  # a cycle back
    vhost.bind("ae", Destination.queue("unrouted"), "")

    hit = vhost.trace("t", ["order.new"], None)
    assert sorted(hit.queues) == ["audit", "orders"]
    assert [v.binding.destination.name for v in hit.root.matched] == ["copy", "orders"]
    assert hit.root.alternate is None
    (copy,) = hit.root.hops
    assert (copy.exchange, copy.exchange_type, copy.arrived_via) == ("copy", "fanout", "binding 'order.#'")
    assert copy.queues == ["audit"]
    assert [(h.exchange, h.already_seen) for h in copy.hops] == [("t", True)]

    miss = vhost.trace("t", ["invoice.new"], None)
    assert miss.queues == ["unrouted"]
    assert miss.root.matched == []
    assert len(miss.root.unmatched) == 2
    alternate = miss.root.alternate
    assert isinstance(alternate, ExchangeHop)
    assert (alternate.exchange, alternate.arrived_via, alternate.queues) == ("ae", "alternate-exchange", ["unrouted"])

    vhost.declare_exchange("lonely", "direct", arguments={"alternate-exchange": "gone"})
    lonely = vhost.trace("lonely", ["k"], None)
    assert lonely.queues == []
    assert lonely.root.alternate is not None and lonely.root.alternate.missing

    default = vhost.trace("", ["orders", "nope"], None)
    assert default.queues == ["orders"]
    assert [v.verdict.matched for v in default.root.matched + default.root.unmatched] == [True, False]
