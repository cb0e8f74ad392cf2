"""The exchange-type behaviour and the Exchange value.

An exchange type owns every rule that belongs to it: which arguments it takes
(checked at declare), the binding index it routes with (see bindings/),
whether it holds a message at publish before routing it (x-delayed-message),
and what it records once a message has been routed (x-message-deduplication's
cache). The broker knows none of the types by name; it asks the exchange's
type. `PlainExchangeType` is the behaviour of a type with no rules of its own
beyond its index (direct, fanout, topic, headers). Every type is listed in
leveret.exchanges.registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from leveret.bindings.model import Binding, BindingIndex, RoutedMessage
from leveret.queues.message import Message


class ExchangeType(Protocol):
    name: str  # the wire name exchange.declare gives
    description: str  # one line, for the management API
    # Whether `hold` or `after_routing` can do anything: the broker skips the
    # calls on its hot path when they cannot.
    holds_messages: bool
    records_routes: bool

    def check_arguments(self, arguments: Mapping[str, Any]) -> None:
        """Refuse arguments the type cannot take (406 with the plugin's text)."""

    def new_index(self, arguments: Mapping[str, Any]) -> BindingIndex:
        """The binding index an exchange of this type routes with (arguments checked)."""

    def routes_as(self, arguments: Mapping[str, Any]) -> str:
        """The name of the type whose binding rules the exchange follows."""

    def hold(self, message: Message) -> int | None:
        """Milliseconds to hold `message` before routing it, or None to route it now."""

    def release(self, message: Message, held_ms: int) -> Message:
        """The message as routed once its hold of `held_ms` is over."""

    def after_routing(self, exchange: Exchange, message: RoutedMessage) -> None:
        """Remember what `exchange` routed (called once per exchange on the path)."""


class PlainExchangeType:
    """The defaults: an index and nothing else (subclasses set name, description, new_index)."""

    name = ""
    description = ""
    holds_messages = False
    records_routes = False

    def check_arguments(self, arguments: Mapping[str, Any]) -> None:
        return None

    def new_index(self, arguments: Mapping[str, Any]) -> BindingIndex:
        raise NotImplementedError

    def routes_as(self, arguments: Mapping[str, Any]) -> str:
        return self.name

    def hold(self, message: Message) -> int | None:
        return None

    def release(self, message: Message, held_ms: int) -> Message:
        return message

    def after_routing(self, exchange: Exchange, message: RoutedMessage) -> None:
        return None


class Exchange:
    """A declared exchange: its flags, arguments and bindings (the index routes)."""

    __slots__ = (
        "name", "type", "durable", "auto_delete", "internal", "arguments",
        "index", "bindings", "alternate_exchange", "routes_message", "records_routes",
    )

    def __init__(
        self,
        name: str,
        exchange_type: ExchangeType,
        *,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.type = exchange_type
        self.durable = durable
        self.auto_delete = auto_delete
        self.internal = internal
        self.arguments: dict[str, Any] = dict(arguments or {})
        self.index: BindingIndex = exchange_type.new_index(self.arguments)
        # A MessageIndex routes each message once, on all of it (leveret.bindings.model).
        self.routes_message = callable(getattr(self.index, "match_message", None))
        self.records_routes = exchange_type.records_routes
        self.bindings: set[Binding] = set()
        alternate = self.arguments.get("alternate-exchange")
        if isinstance(alternate, bytes):
            alternate = alternate.decode("utf-8", "replace")
        self.alternate_exchange: str | None = alternate if isinstance(alternate, str) else None

    @property
    def type_name(self) -> str:
        return self.type.name

    @property
    def routes_as(self) -> str:
        return self.type.routes_as(self.arguments)

    def __repr__(self) -> str:
        return f"Exchange({self.name!r}, {self.type_name})"


# rabbit_exchange:check_type looks the name up with binary_to_existing_atom: a
# name that is an Erlang atom in the node's VM gets "invalid exchange type", any
# other unknown name "unknown exchange type". Which names are atoms depends on the
# node's history: a name becomes one for good once any code on the node makes it
# one (a plugin loaded, the management API given it...), so "Direct" is "unknown"
# on a freshly started 3.10.8 and "invalid" on some that have been up for a while.
# leveret answers as a fresh node: these are names a 3.10.8 node answered
# "invalid" for that are atoms of the code it loads at boot.
_ATOM_TYPE_NAMES = frozenset({
    "", "foo", "bar", "test", "queue", "exchange", "true", "false", "undefined", "classic",
    "quorum", "stream", "match", "default", "local", "binary", "error", "ok", "none",
    "all", "any", "amqp", "atom", "durable", "transient", "federation", "infinity",
    "list", "map", "nil", "normal", "null", "rabbit", "string",
})


def unknown_type_text(exchange_type: str) -> str:
    word = "invalid" if exchange_type in _ATOM_TYPE_NAMES else "unknown"
    return f"{word} exchange type '{exchange_type}'"
