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
        "policy", "operator_policy", "policy_definition",
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
        self.alternate_exchange: str | None = _name(self.arguments.get("alternate-exchange"))
        # The policy and operator policy in force (names), their merged definition.
        self.policy: str | None = None
        self.operator_policy: str | None = None
        self.policy_definition: dict[str, Any] | None = None

    def apply_policy(
        self, policy: str | None, operator_policy: str | None, definition: Mapping[str, Any] | None
    ) -> None:
        """The exchange's own alternate-exchange argument wins over a policy's
        (rabbit_policy:get_arg); routing reads the result, never the policy."""
        self.policy, self.operator_policy = policy, operator_policy
        self.policy_definition = dict(definition) if definition else None
        own = _name(self.arguments.get("alternate-exchange"))
        if own is None and definition and self.name:
            # The default exchange shows the policy but routes without it (3.10 as probed).
            own = _name(definition.get("alternate-exchange"))
        self.alternate_exchange = own

    @property
    def type_name(self) -> str:
        return self.type.name

    def __repr__(self) -> str:
        return f"Exchange({self.name!r}, {self.type_name})"


def _name(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


# Erlang atoms RabbitMQ's VM happens to know: for those it says "invalid
# exchange type", for any other unknown name "unknown exchange type"
# (rabbit_exchange:check_type). Observed on 3.10.8.
_ATOM_TYPE_NAMES = frozenset({
    "", "foo", "bar", "test", "queue", "exchange", "true", "false", "undefined", "classic",
    "quorum", "stream", "match", "default", "local", "binary", "error", "ok", "none",
    "Direct", "all", "any", "amqp", "atom", "durable", "transient", "federation", "infinity",
    "list", "map", "nil", "normal", "null", "rabbit", "string",
})


def unknown_type_text(exchange_type: str) -> str:
    word = "invalid" if exchange_type in _ATOM_TYPE_NAMES else "unknown"
    return f"{word} exchange type '{exchange_type}'"
