"""The x-delayed-message exchange type (the rabbitmq-delayed-message-exchange
plugin's interface) and the virtual host's store of messages waiting on it.

Semantics, as the plugin has them:

- `x-delayed-type` names the type the exchange routes as: any registered type
  but x-delayed-message itself, refused with the plugin's texts (406), or
  RabbitMQ's own 503 for a type that does not exist. The exchange's index is
  that type's index, built with the same arguments (so its checks apply too).
- A message published with an `x-delay` header of d milliseconds, 0 < d <=
  2^32-1 (Erlang's longest timer), is held for d ms, then routed through the
  exchange's bindings as they are then. Integers of any width count; a string
  of digits and a float or decimal (truncated) are converted; any other value,
  a delay <= 0 or a longer one routes at once.
- When a delay is over, the message's `x-delay` becomes -d (a signedint), so
  consumers can tell it was delayed and the exchange does not delay it again.
- At publish the exchange routes a delayed message nowhere: a mandatory publish
  gets basic.return (312 NO_ROUTE) and is still delivered later; a confirm is a
  basic.ack at once. That is what the plugin does (its README: "the mandatory
  flag is not supported").

Where we differ: the delay applies where a message enters the virtual host
(publish and dead-lettering) and not at an exchange reached through an
exchange-to-exchange binding, which routes at once as its x-delayed-type; the
alternate exchange is consulted when the delayed message is routed, not also
at publish (the plugin sends a copy to it at once, its issue #36); deleting
the exchange discards its waiting messages (the plugin keeps them and routes
them through whatever exchange has that name later); only persistent messages
to durable exchanges are kept over a restart (the plugin's Mnesia table keeps
them all).

Theory of operation. `DelayedMessages` is a heap of (deliver_at, seq) over
`_waiting` (seq -> DelayedMessage), so delays of any length are independent:
a short one never waits behind a long one. Deleting an exchange removes its
entries from `_waiting`; the heap forgets them lazily. The virtual host holds what an exchange type's
`hold` asks for here, asks `next_deadline` for the broker's timer and routes
what `pop_due` returns, through the type's `release`.
A `DelayStore`, when set, is told of every message it must keep or forget.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from leveret.amqp_wire.fieldtable import Field, TypedTable
from leveret.amqp_wire.properties import decode_properties, encode_properties, replace_headers
from leveret.bindings.model import BindingIndex
from leveret.exchanges.base import ExchangeType, PlainExchangeType, unknown_type_text
from leveret.queues.message import Message
from pamqp import exceptions

DELAY_HEADER = "x-delay"
DELAYED_TYPE_ARGUMENT = "x-delayed-type"
MAX_DELAY_MS = 4_294_967_295  # ?ERL_MAX_T: the longest Erlang timer

_DIGITS = re.compile(r"[+-]?[0-9]+", re.ASCII)


class DelayedMessageExchangeType(PlainExchangeType):
    """Routes as its `x-delayed-type`, after the message's `x-delay` milliseconds."""

    name = "x-delayed-message"
    description = __doc__ or ""
    holds_messages = True

    def __init__(self, types: Mapping[str, ExchangeType]) -> None:
        self._types = types  # the types it may route as (leveret.exchanges.registry)

    def delayed_type(self, arguments: Mapping[str, Any]) -> ExchangeType:
        """The type named by `x-delayed-type`, checked as the plugin's validate/1."""
        value = arguments.get(DELAYED_TYPE_ARGUMENT)
        if isinstance(value, (bytes, bytearray)):
            value = bytes(value).decode("utf-8", "replace")
        if not isinstance(value, str):
            raise exceptions.AMQPPreconditionFailed(
                "Invalid argument, 'x-delayed-type' must be an existing exchange type"
            )
        if value == self.name:
            raise exceptions.AMQPPreconditionFailed(
                "Invalid argument, 'x-delayed-message' can't be used for 'x-delayed-type'"
            )
        kind = self._types.get(value)
        if kind is None:
            # rabbit_exchange:check_type, the same 503 as exchange.declare's.
            raise exceptions.AMQPCommandInvalid(unknown_type_text(value))
        return kind

    def check_arguments(self, arguments: Mapping[str, Any]) -> None:
        self.delayed_type(arguments).check_arguments(arguments)

    def new_index(self, arguments: Mapping[str, Any]) -> BindingIndex:
        return self.delayed_type(arguments).new_index(arguments)

    def routes_as(self, arguments: Mapping[str, Any]) -> str:
        value = arguments.get(DELAYED_TYPE_ARGUMENT, "")
        if isinstance(value, (bytes, bytearray)):
            value = bytes(value).decode("utf-8", "replace")
        return str(value)

    def hold(self, message: Message) -> int | None:
        return delay_of(message.properties.headers)

    def release(self, message: Message, held_ms: int) -> Message:
        return released(message, held_ms)


def delay_of(headers: Mapping[str, Any] | None) -> int | None:
    """The delay the plugin would apply (rabbit_delayed_message_utils:get_delay
    and delay_message/2), or None to route at once."""
    if not headers or DELAY_HEADER not in headers:
        return None
    value = headers[DELAY_HEADER]
    delay: int | None = None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        delay = value
    elif isinstance(value, (float, Decimal)):
        delay = int(value)  # Erlang's trunc
    elif isinstance(value, str):
        # binary_to_integer; the plugin crashes the channel on other text
        delay = int(value) if _DIGITS.fullmatch(value) else None
    if delay is None or not 0 < delay <= MAX_DELAY_MS:
        return None
    return delay


def released(message: Message, delay: int) -> Message:
    """The message as routed when its delay is over: `x-delay` is -delay
    (rabbit_delayed_message_utils:swap_delay_header), every other byte kept."""
    raw = message.raw_properties
    if raw is None:
        raw = encode_properties(message.properties)
    tag = "I" if delay <= 2**31 else "l"  # signedint, unless -delay needs more bits
    raw = replace_headers(raw, lambda table: _swap(table, Field(tag, -delay)))
    return Message(
        message.exchange, message.routing_key, decode_properties(raw), message.body, raw,
        message.routing_keys,
    )


def _swap(table: TypedTable | None, value: Field) -> TypedTable:
    return (table or TypedTable()).keystore(DELAY_HEADER, value)


@dataclass(frozen=True, slots=True)
class DelayedMessage:
    """A message waiting for its delay to end, to be routed by `exchange`."""

    deliver_at: int  # epoch ms on the broker's clock
    seq: int
    exchange: str
    delay: int
    message: Message
    durable: bool  # kept over a restart: persistent, and for a durable exchange


class DelayStore(Protocol):
    """What persistence implements to keep durable delayed messages over a restart.

    On start it hands them back with `DelayedMessages.restore`."""

    def delayed(self, vhost: str, entry: DelayedMessage) -> None: ...

    def released(self, vhost: str, entry: DelayedMessage) -> None: ...


class DelayedMessages:
    """A virtual host's delayed messages (see the module docstring)."""

    __slots__ = ("vhost", "store", "_heap", "_waiting", "_seq")

    def __init__(self, vhost: str = "/", store: DelayStore | None = None) -> None:
        self.vhost = vhost
        self.store = store
        self._heap: list[tuple[int, int]] = []
        self._waiting: dict[int, DelayedMessage] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def __iter__(self) -> Iterator[DelayedMessage]:
        """Waiting messages, soonest first."""
        return iter(sorted(self._waiting.values(), key=lambda e: (e.deliver_at, e.seq)))

    def count(self, exchange: str) -> int:
        """Messages waiting for `exchange` (the plugin's messages_delayed)."""
        return sum(1 for entry in self._waiting.values() if entry.exchange == exchange)

    def add(self, exchange: str, message: Message, delay: int, now_ms: int, *, durable: bool) -> DelayedMessage:
        self._seq += 1
        entry = DelayedMessage(now_ms + delay, self._seq, exchange, delay, message, durable)
        self._push(entry)
        if durable and self.store is not None:
            self.store.delayed(self.vhost, entry)
        return entry

    def restore(self, entry: DelayedMessage) -> None:
        """Take back a message the store kept (its deliver_at may be past: it goes first)."""
        self._seq = max(self._seq, entry.seq)
        self._push(entry)

    def _push(self, entry: DelayedMessage) -> None:
        self._waiting[entry.seq] = entry
        heapq.heappush(self._heap, (entry.deliver_at, entry.seq))

    def next_deadline(self) -> int | None:
        heap = self._heap
        while heap and heap[0][1] not in self._waiting:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, now_ms: int) -> list[DelayedMessage]:
        """Messages whose delay is over, in deliver_at order (then publish order)."""
        due: list[DelayedMessage] = []
        heap = self._heap
        while heap and heap[0][0] <= now_ms:
            _, seq = heapq.heappop(heap)
            entry = self._waiting.pop(seq, None)
            if entry is not None:
                due.append(entry)
        return due

    def forget(self, entry: DelayedMessage) -> None:
        """The message was routed: the store may let it go."""
        if entry.durable and self.store is not None:
            self.store.released(self.vhost, entry)

    def discard_exchange(self, exchange: str) -> int:
        """The exchange was deleted: its waiting messages go with it."""
        gone = [entry for entry in self._waiting.values() if entry.exchange == exchange]
        for entry in gone:
            del self._waiting[entry.seq]
            self.forget(entry)
        return len(gone)
