"""Where a message goes: the default exchange, exchange-to-exchange hops, the
alternate exchange, and a traced variant that says why (for the playground).

RabbitMQ's rule (rabbit_exchange:route): walk a work list of exchanges with a
seen-set, so cycles of exchange bindings end and each queue is named once; an
exchange whose own bindings give no destination at all hands the message to
its alternate exchange (a missing alternate exchange is ignored).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from leveret.bindings.model import Binding, Destination, MessageIndex, RoutedMessage, Verdict
from leveret.exchanges.base import Exchange
from leveret.queues.arguments import type_name
from pamqp import exceptions

DEFAULT_EXCHANGE = ""


def publish_routing_keys(routing_key: str, headers: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The keys a publish routes with: its routing key, then the CC and BCC header keys.

    Sender-selected distribution (RabbitMQ): each header is an array of
    strings; another type is refused with 406, as RabbitMQ does. The caller
    removes BCC from the stored headers.
    """
    keys: tuple[str, ...] = (routing_key,)
    if headers:
        for name in ("CC", "BCC"):
            if name in headers:
                keys += _header_keys(headers[name], name)
    return keys


def _header_keys(value: Any, name: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise exceptions.AMQPPreconditionFailed(
            f'invalid message: {{unacceptable_type_in_header,"{name}",{type_name(value)}}}'
        )
    keys = []
    for item in value:
        # Long strings only (rabbit_basic:header_routes): a byte array is no key.
        if isinstance(item, bytes):  # a long string that is not UTF-8
            item = item.decode("utf-8", "surrogateescape")
        if isinstance(item, str):
            keys.append(item)
    return tuple(keys)


def _destinations(exchange: Exchange, routing_keys: Sequence[str], headers: Mapping[str, Any] | None) -> list[Destination]:
    index = exchange.index
    if len(routing_keys) == 1:
        return list(index.match(routing_keys[0], headers))
    found: dict[Destination, None] = {}
    for routing_key in routing_keys:
        for destination in index.match(routing_key, headers):
            found[destination] = None
    return list(found)


def route(
    exchanges: Mapping[str, Exchange],
    queues: Mapping[str, Any],
    start: Exchange,
    routing_keys: Sequence[str],
    headers: Mapping[str, Any] | None,
    *,
    properties: Any = None,
    now_ms: int | None = None,
) -> list[str]:
    """Names of the queues a message reaches, each once, in discovery order.

    `properties` and `now_ms` are for exchanges that route on the whole message
    (leveret.bindings.model.MessageIndex)."""
    if start.name == DEFAULT_EXCHANGE:
        return [key for key in dict.fromkeys(routing_keys) if key in queues]
    found: dict[str, None] = {}
    seen = {start.name}
    work = [start]
    routed: RoutedMessage | None = None
    while work:
        exchange = work.pop()
        if exchange.routes_message:
            if routed is None:
                routed = RoutedMessage(tuple(routing_keys), headers, properties, now_ms)
            destinations = list(cast(MessageIndex, exchange.index).match_message(routed))
        else:
            destinations = _destinations(exchange, routing_keys, headers)
        if not destinations and exchange.alternate_exchange is not None:
            destinations = [Destination.exchange(exchange.alternate_exchange)]
        for destination in destinations:
            if destination.kind == "queue":
                if destination.name in queues:
                    found[destination.name] = None
            elif destination.name not in seen:
                seen.add(destination.name)
                next_exchange = exchanges.get(destination.name)
                if next_exchange is not None:
                    work.append(next_exchange)
    return list(found)


@dataclass(slots=True)
class BindingVerdict:
    binding: Binding
    verdict: Verdict


@dataclass(slots=True)
class ExchangeHop:
    """One exchange on a message's path, with every binding's verdict."""

    exchange: str
    exchange_type: str
    arrived_via: str  # "publish", "binding 'key'", "alternate-exchange"
    missing: bool = False
    already_seen: bool = False
    matched: list[BindingVerdict] = field(default_factory=list)
    unmatched: list[BindingVerdict] = field(default_factory=list)
    queues: list[str] = field(default_factory=list)
    hops: list[ExchangeHop] = field(default_factory=list)
    alternate: ExchangeHop | None = None


@dataclass(slots=True)
class RouteTrace:
    root: ExchangeHop
    queues: list[str]


def trace(
    exchanges: Mapping[str, Exchange],
    queues: Mapping[str, Any],
    start: Exchange,
    routing_keys: Sequence[str],
    headers: Mapping[str, Any] | None,
    *,
    properties: Any = None,
    now_ms: int | None = None,
) -> RouteTrace:
    """`route` with reasons: the same walk, recording each binding's verdict.
    It changes nothing (a deduplicating exchange does not remember the message)."""
    root = ExchangeHop(start.name, start.type_name, "publish")
    if start.name == DEFAULT_EXCHANGE:
        for key in dict.fromkeys(routing_keys):
            destination = Destination.queue(key)
            binding = Binding(DEFAULT_EXCHANGE, destination, key)
            if key in queues:
                root.matched.append(BindingVerdict(binding, Verdict(True, f"default exchange: queue named '{key}'")))
                root.queues.append(key)
            else:
                root.unmatched.append(BindingVerdict(binding, Verdict(False, f"default exchange: no queue named '{key}'")))
        return RouteTrace(root, list(root.queues))

    found: dict[str, None] = {}
    seen = {start.name}
    work: list[tuple[Exchange, ExchangeHop]] = [(start, root)]
    routed = RoutedMessage(tuple(routing_keys), headers, properties, now_ms, dry_run=True)
    while work:
        exchange, hop = work.pop()
        destinations: dict[Destination, Binding] = {}
        for binding in sorted(exchange.bindings, key=_binding_order):
            if exchange.routes_message:
                verdict = cast(MessageIndex, exchange.index).explain_message(binding, routed)
            else:
                verdicts = [exchange.index.explain(binding, key, headers) for key in routing_keys]
                verdict = next((v for v in verdicts if v.matched), verdicts[0])
            (hop.matched if verdict.matched else hop.unmatched).append(BindingVerdict(binding, verdict))
            if verdict.matched:
                destinations.setdefault(binding.destination, binding)
        pending: list[tuple[Destination, str]] = [(d, f"binding '{b.binding_key}'") for d, b in destinations.items()]
        if not destinations and exchange.alternate_exchange is not None:
            pending = [(Destination.exchange(exchange.alternate_exchange), "alternate-exchange")]
        for destination, via in pending:
            if destination.kind == "queue":
                if destination.name in queues:
                    hop.queues.append(destination.name)
                    found[destination.name] = None
                continue
            child = ExchangeHop(destination.name, "", via)
            next_exchange = exchanges.get(destination.name)
            if destination.name in seen:
                child.already_seen = True
            elif next_exchange is None:
                child.missing = True
            else:
                seen.add(destination.name)
                child.exchange_type = next_exchange.type_name
                work.append((next_exchange, child))
            if via == "alternate-exchange":
                hop.alternate = child
            else:
                hop.hops.append(child)
    return RouteTrace(root, list(found))


def _binding_order(binding: Binding) -> tuple[str, str, str]:
    return (binding.destination.kind, binding.destination.name, binding.binding_key)
