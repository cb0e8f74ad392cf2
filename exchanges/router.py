"""Where a message goes: the default exchange, exchange-to-exchange hops, the
alternate exchange, and, when asked, a trace that says why (for the playground
and the management API).

RabbitMQ's rule (rabbit_exchange:route): walk a work list of exchanges with a
seen-set, so cycles of exchange bindings end and each queue is named once; an
exchange whose own bindings give no destination at all hands the message to
its alternate exchange (a missing alternate exchange is ignored). Once the
walk is over, each exchange on the path whose type records routes (the
deduplication cache) is told of the message; a trace records nothing.

`route` and `trace` are the one walk, `_walk`: with a root ExchangeHop it asks
every binding for its verdict and records the hops; without one (the hot path)
it asks the index for the destinations and allocates nothing per binding.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from leveret.bindings.model import (
    Binding,
    Destination,
    Headers,
    MessageIndex,
    RoutedMessage,
    Verdict,
)
from leveret.exchanges.base import Exchange
from leveret.queues.arguments import type_name
from leveret.queues.message import Properties
from pamqp import exceptions

DEFAULT_EXCHANGE = ""


def publish_routing_keys(routing_key: str, headers: Headers | None) -> tuple[str, ...]:
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


def route(
    exchanges: Mapping[str, Exchange],
    queues: Container[str],
    start: Exchange,
    routing_keys: Sequence[str],
    headers: Headers | None,
    *,
    properties: Properties | None = None,
    now_ms: int | None = None,
) -> list[str]:
    """Names of the queues a message reaches, each once, in discovery order.

    `properties` and `now_ms` are for exchanges that route on the whole message
    (leveret.bindings.model.MessageIndex) or record what they routed."""
    if start.name == DEFAULT_EXCHANGE:
        return [key for key in dict.fromkeys(routing_keys) if key in queues]
    return _walk(exchanges, queues, start, routing_keys, headers, properties, now_ms, None)


def trace(
    exchanges: Mapping[str, Exchange],
    queues: Container[str],
    start: Exchange,
    routing_keys: Sequence[str],
    headers: Headers | None,
    *,
    properties: Properties | None = None,
    now_ms: int | None = None,
) -> RouteTrace:
    """`route` with reasons: the same walk, recording each binding's verdict.
    It changes nothing (a deduplicating exchange does not remember the message)."""
    root = ExchangeHop(start.name, start.type_name, "publish")
    if start.name == DEFAULT_EXCHANGE:
        for key in dict.fromkeys(routing_keys):
            binding = Binding(DEFAULT_EXCHANGE, Destination.queue(key), key)
            if key in queues:
                root.matched.append(BindingVerdict(binding, Verdict(True, f"default exchange: queue named '{key}'")))
                root.queues.append(key)
            else:
                root.unmatched.append(BindingVerdict(binding, Verdict(False, f"default exchange: no queue named '{key}'")))
        return RouteTrace(root, list(root.queues))
    found = _walk(exchanges, queues, start, routing_keys, headers, properties, now_ms, root)
    return RouteTrace(root, found)


def _walk(
    exchanges: Mapping[str, Exchange],
    queues: Container[str],
    start: Exchange,
    routing_keys: Sequence[str],
    headers: Headers | None,
    properties: Properties | None,
    now_ms: int | None,
    root: ExchangeHop | None,
) -> list[str]:
    found: dict[str, None] = {}
    seen = {start.name}
    work = [start]
    hops = None if root is None else [root]  # beside `work`, only when tracing
    routed: RoutedMessage | None = None
    recorders: list[Exchange] | None = None
    while work:
        exchange = work.pop()
        if exchange.routes_message and routed is None:
            routed = RoutedMessage(tuple(routing_keys), headers, properties, now_ms)
        if exchange.records_routes:
            if recorders is None:
                recorders = []
            recorders.append(exchange)
        hop = matched = None
        if hops is not None:
            hop = hops.pop()
            matched = _explain(exchange, hop, routing_keys, headers, routed)
            destinations = list(matched)
        elif exchange.routes_message:
            destinations = list(cast(MessageIndex, exchange.index).match_message(cast(RoutedMessage, routed)))
        else:
            destinations = _destinations(exchange, routing_keys, headers)
        alternate = not destinations and exchange.alternate_exchange is not None
        if alternate:
            destinations = [Destination.exchange(cast(str, exchange.alternate_exchange))]
        for destination in destinations:
            name = destination.name
            if destination.kind == "queue":
                if name in queues:
                    found[name] = None
                    if hop is not None:
                        hop.queues.append(name)
                continue
            next_exchange = exchanges.get(name) if name not in seen else None
            if next_exchange is not None:
                seen.add(name)
                work.append(next_exchange)
            if hop is not None and hops is not None:
                via = "alternate-exchange" if matched is None or alternate else f"binding '{matched[destination].binding_key}'"
                child = ExchangeHop(name, "", via)
                if next_exchange is not None:
                    child.exchange_type = next_exchange.type_name
                    hops.append(child)
                elif name in seen:
                    child.already_seen = True
                else:
                    child.missing = True
                if alternate:
                    hop.alternate = child
                else:
                    hop.hops.append(child)
    if recorders is not None and root is None:
        message = routed or RoutedMessage(tuple(routing_keys), headers, properties, now_ms)
        for exchange in recorders:
            exchange.type.after_routing(exchange, message)
    return list(found)


def _destinations(exchange: Exchange, routing_keys: Sequence[str], headers: Headers | None) -> list[Destination]:
    index = exchange.index
    if len(routing_keys) == 1:
        return list(index.match(routing_keys[0], headers))
    found: dict[Destination, None] = {}
    for routing_key in routing_keys:
        for destination in index.match(routing_key, headers):
            found[destination] = None
    return list(found)


def _explain(
    exchange: Exchange, hop: ExchangeHop, routing_keys: Sequence[str], headers: Headers | None,
    routed: RoutedMessage | None,
) -> dict[Destination, Binding]:
    """Every binding's verdict into `hop`; each destination a matching binding leads
    to, with the first such binding."""
    destinations: dict[Destination, Binding] = {}
    for binding in sorted(exchange.bindings, key=_binding_order):
        if routed is not None and exchange.routes_message:
            verdict = cast(MessageIndex, exchange.index).explain_message(binding, routed)
        else:
            verdicts = [exchange.index.explain(binding, key, headers) for key in routing_keys]
            verdict = next((v for v in verdicts if v.matched), verdicts[0])
        (hop.matched if verdict.matched else hop.unmatched).append(BindingVerdict(binding, verdict))
        if verdict.matched:
            destinations.setdefault(binding.destination, binding)
    return destinations


def _binding_order(binding: Binding) -> tuple[str, str, str]:
    return (binding.destination.kind, binding.destination.name, binding.binding_key)
