"""The exchange-type protocol, its registry, and the Exchange value.

An exchange type is a small object registered by its wire name that makes the
binding index an exchange of that type routes with (see bindings/).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from leveret.bindings.model import Binding, BindingIndex


class ExchangeType(Protocol):
    name: str

    def new_index(self, arguments: Mapping[str, Any]) -> BindingIndex: ...


REGISTRY: dict[str, ExchangeType] = {}

T = TypeVar("T")


def register(cls: Callable[[], T]) -> Callable[[], T]:
    instance: Any = cls()
    REGISTRY[instance.name] = instance
    return cls


class Exchange:
    """A declared exchange: its flags, arguments and bindings (the index routes)."""

    __slots__ = (
        "name", "type", "durable", "auto_delete", "internal", "arguments",
        "index", "bindings", "alternate_exchange", "routes_message",
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
        self.bindings: set[Binding] = set()
        alternate = self.arguments.get("alternate-exchange")
        if isinstance(alternate, bytes):
            alternate = alternate.decode("utf-8", "replace")
        self.alternate_exchange: str | None = alternate if isinstance(alternate, str) else None

    @property
    def type_name(self) -> str:
        return self.type.name

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
