"""Bindings as values, and the index protocol every exchange type implements.

A binding is identified by (source, destination, binding_key, arguments), as in
RabbitMQ: binding the same pair twice with other arguments makes a second
binding, binding it twice with the same ones is a no-op. Arguments are kept
frozen (sorted tuples) so a Binding is hashable and compares by value.
"""

from __future__ import annotations

import datetime
import decimal
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

FrozenValue = Any
FrozenTable = tuple[tuple[str, FrozenValue], ...]


def field_type(value: Any) -> str:
    """RabbitMQ's type for a field value: the wire type it came with (numbers
    read by leveret.amqp_wire.fieldtable carry a `type_name`), else the type RabbitMQ
    gives such a value when it writes one itself (an int is a long, a float a
    double), which is also how the store writes it, so a binding made here
    compares equal to itself after a restart."""
    wire = getattr(value, "type_name", None)
    if wire is not None:
        return str(wire)
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, (str, bytes)):  # bytes: a long string that is not UTF-8
        return "longstr"
    if isinstance(value, (bytearray, memoryview)):
        return "binary"
    if isinstance(value, decimal.Decimal):
        return "decimal"
    if isinstance(value, datetime.datetime):
        return "timestamp"
    if isinstance(value, Mapping):
        return "table"
    if isinstance(value, (list, tuple)):
        return "array"
    if value is None:
        return "void"
    return type(value).__name__


def freeze(value: Any) -> FrozenValue:
    """A hashable copy of a field value, tagged with its field type.

    RabbitMQ identifies a binding by its arguments as Erlang terms: the top
    level sorted by key, every value with its type (signedint 1, byte 1,
    double 1.0 and bool true all differ), nested tables in wire order.
    """
    if isinstance(value, Mapping):
        return ("table", tuple((str(k), freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return ("array", tuple(freeze(v) for v in value))
    if isinstance(value, (bytearray, memoryview)):
        return ("binary", bytes(value))
    return (field_type(value), value)


def freeze_table(table: Mapping[str, Any] | None) -> FrozenTable:
    if not table:
        return ()
    return tuple(sorted((str(k), freeze(v)) for k, v in table.items()))


def thaw(value: FrozenValue) -> Any:
    tag, inner = value
    if tag == "table":
        return {k: thaw(v) for k, v in inner}
    if tag == "array":
        return [thaw(v) for v in inner]
    if tag == "binary":
        return bytearray(inner)
    return inner


def thaw_table(table: FrozenTable) -> dict[str, Any]:
    return {k: thaw(v) for k, v in table}


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a binding leads: a queue or (exchange-to-exchange) an exchange."""

    kind: Literal["queue", "exchange"]
    name: str

    @classmethod
    def queue(cls, name: str) -> Destination:
        return cls("queue", name)

    @classmethod
    def exchange(cls, name: str) -> Destination:
        return cls("exchange", name)

    def __str__(self) -> str:
        return f"{self.kind} '{self.name}'"


@dataclass(frozen=True, slots=True)
class Binding:
    source: str
    destination: Destination
    binding_key: str
    arguments: FrozenTable = ()

    @classmethod
    def make(
        cls,
        source: str,
        destination: Destination,
        binding_key: str,
        arguments: Mapping[str, Any] | None = None,
    ) -> Binding:
        return cls(source, destination, binding_key, freeze_table(arguments))

    @property
    def arguments_dict(self) -> dict[str, Any]:
        return thaw_table(self.arguments)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why a binding did or did not match: what the playground shows."""

    matched: bool
    reason: str


Headers = Mapping[str, Any]


class BindingSet:
    """The bindings an index holds, kept as a set: duplicates are no-ops and
    `len`/iteration are the index's. Indexes subclass it and add their lookup
    structure beside it."""

    __slots__ = ("_bindings",)

    def __init__(self) -> None:
        self._bindings: set[Binding] = set()

    def __len__(self) -> int:
        return len(self._bindings)

    def __iter__(self) -> Iterator[Binding]:
        return iter(self._bindings)


class BindingIndex(Protocol):
    """The per-exchange index an exchange type builds.

    `add` parses at bind time (and raises pamqp reply-code errors for bad
    arguments); `match` must not allocate index state on a miss. Each
    destination is yielded at most once per call.
    """

    def add(self, binding: Binding) -> None: ...

    def remove(self, binding: Binding) -> None: ...

    def match(self, routing_key: str, headers: Headers | None) -> Iterable[Destination]: ...

    def explain(self, binding: Binding, routing_key: str, headers: Headers | None) -> Verdict: ...

    def __len__(self) -> int: ...


@dataclass(frozen=True, slots=True)
class RoutedMessage:
    """A message as an index that routes on all of it sees it (see MessageIndex).
    Matching it changes nothing: what an exchange remembers of a route, its type
    records after routing (leveret.exchanges.base.ExchangeType.after_routing)."""

    routing_keys: tuple[str, ...]
    headers: Headers | None
    properties: Any = None  # pamqp's Basic.Properties, when the caller has them
    now_ms: int | None = None  # the broker's clock, when the caller has it


class MessageIndex(BindingIndex, Protocol):
    """An index that routes each message once, on more than a key and the headers.

    x-consistent-hash hashes the first routing key or a property; the
    x-message-deduplication exchange skips what it routed before. The router calls
    `match_message` (once per exchange on the path) instead of `match` per key,
    and the trace `explain_message` instead of `explain`.
    """

    def match_message(self, message: RoutedMessage) -> Iterable[Destination]: ...

    def explain_message(self, binding: Binding, message: RoutedMessage) -> Verdict: ...
