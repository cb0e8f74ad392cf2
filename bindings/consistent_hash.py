"""The x-consistent-hash exchange's binding index: weighted buckets, picked by
jump consistent hashing (the rabbitmq_consistent_hash_exchange plugin's design).

Semantics, as the plugin has them since RabbitMQ 3.8:

- The binding key is the binding's weight: a decimal integer (Erlang's
  list_to_integer: an optional sign, then digits) of at least 1. Anything else
  is refused at bind time with the plugin's text (406).
- Each binding owns `weight` consecutive buckets, appended in the order the
  bindings were made; N is the total. A message's hash picks a bucket in
  [0, N) with jump consistent hashing (Lamping and Veach, 2014), and the
  bucket's binding is the one destination. Adding a binding of weight w moves
  only the hashes that now land in its new buckets, w/(N+w) of them.
- Removing a binding drops its buckets and moves the later ones down, as the
  plugin does: unbinding the newest binding moves only its own hashes,
  unbinding an older one also reshuffles the bindings made after it.
- What is hashed: the message's first routing key (CC and BCC keys play no
  part), or the header named by the exchange's `hash-header`, or the property
  named by `hash-property` (message_id, correlation_id, or timestamp as its
  decimal seconds). A message without that header or property hashes as one
  fixed value, so all of them go to the same destination.

Where we differ: the hash is BLAKE2b of a canonical encoding of the value, not
Erlang's phash2 seeding an exs1024 generator, so a given key may land on
another queue than in RabbitMQ (the spread and the stability are the same); and
a destination bound twice keeps one range per binding, each removed with its
own binding (the plugin drops all of the destination's buckets on either unbind).

Theory of operation. `_ranges` lists (binding, first bucket, weight) in binding
order and `_starts` the first buckets, so a bucket's binding is a bisect;
bucket numbers are never materialised, so a weight of a million costs nothing.
"""

from __future__ import annotations

import bisect
import datetime
import hashlib
import re
from dataclasses import dataclass
from typing import Any, Literal

from leveret.bindings.headers import _erl_binary
from leveret.bindings.model import Binding, BindingSet, Destination, Headers, RoutedMessage, Verdict
from pamqp import exceptions

__all__ = ["ConsistentHashIndex", "HashSource", "HASH_PROPERTIES", "jump_hash", "parse_weight"]

# The properties the plugin can hash on (its ?PROPERTIES), by AMQP name.
HASH_PROPERTIES = ("correlation_id", "message_id", "timestamp")

_WEIGHT = re.compile(r"[+-]?[0-9]+", re.ASCII)
_MASK64 = (1 << 64) - 1
_UNDEFINED = b"undefined"  # what a missing header or property hashes as


@dataclass(frozen=True, slots=True)
class HashSource:
    """What the exchange hashes: the routing key, a header, or a property."""

    kind: Literal["routing_key", "header", "property"] = "routing_key"
    name: str = ""

    def describe(self) -> str:
        if self.kind == "routing_key":
            return "the routing key"
        return f"{self.kind} '{self.name}'"


def parse_weight(binding_key: str) -> int:
    """A binding key as the plugin reads it (validate_binding), or its 406."""
    if not _WEIGHT.fullmatch(binding_key):
        shown = _erl_binary(binding_key.encode("utf-8", "surrogateescape"))
        text = f"The binding key must be an integer: {shown}"
        raise exceptions.AMQPPreconditionFailed(text.encode("latin-1").decode("utf-8", "replace"))
    weight = int(binding_key)
    if weight < 1:
        raise exceptions.AMQPPreconditionFailed("The binding key must be greater than 0")
    return weight


def jump_hash(key: int, buckets: int) -> int:
    """Jump consistent hash: a bucket in [0, buckets) for a 64-bit key."""
    bucket, jump = -1, 0
    while jump < buckets:
        bucket = jump
        key = (key * 2862933555777941757 + 1) & _MASK64
        jump = int((bucket + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return bucket


def hash_of(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def _canonical(value: Any) -> bytes:
    """Bytes standing for a header value: equal values (of one type) hash alike."""
    if value is None:
        return b"V"
    if isinstance(value, bool):
        return b"t1" if value else b"t0"
    if isinstance(value, str):
        return b"S" + value.encode("utf-8", "surrogateescape")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return b"S" + bytes(value)
    if isinstance(value, int):
        return b"l" + str(value).encode()
    if isinstance(value, datetime.datetime):
        return b"T" + str(int(value.timestamp())).encode()
    return type(value).__name__.encode() + repr(value).encode()


class ConsistentHashIndex(BindingSet):
    """BindingIndex (and MessageIndex) for x-consistent-hash exchanges."""

    __slots__ = ("source", "_ranges", "_starts", "_total")

    def __init__(self, source: HashSource | None = None) -> None:
        super().__init__()
        self.source = source or HashSource()
        self._ranges: list[tuple[Binding, int, int]] = []
        self._starts: list[int] = []
        self._total = 0

    @property
    def buckets(self) -> int:
        return self._total

    def add(self, binding: Binding) -> None:
        """Append the binding's buckets (raises AMQPPreconditionFailed for a bad weight)."""
        if binding in self._bindings:
            return
        weight = parse_weight(binding.binding_key)
        self._bindings.add(binding)
        self._ranges.append((binding, self._total, weight))
        self._starts.append(self._total)
        self._total += weight

    def remove(self, binding: Binding) -> None:
        """Drop the binding's buckets; later ones move down. Unknown bindings are ignored."""
        if binding not in self._bindings:
            return
        self._bindings.discard(binding)
        ranges: list[tuple[Binding, int, int]] = []
        total = 0
        for kept, _, weight in self._ranges:
            if kept != binding:
                ranges.append((kept, total, weight))
                total += weight
        self._ranges = ranges
        self._starts = [start for _, start, _ in ranges]
        self._total = total

    # ------------------------------------------------------------- routing
    def key_of(self, routing_key: str, headers: Headers | None, properties: Any = None) -> bytes:
        """The bytes hashed for a message (see the module docstring)."""
        source = self.source
        if source.kind == "routing_key":
            return routing_key.encode("utf-8", "surrogateescape")
        if source.kind == "header":
            if not headers or source.name not in headers:
                return _UNDEFINED
            return _canonical(headers[source.name])
        value = getattr(properties, source.name, None) if properties is not None else None
        if value is None:
            return _UNDEFINED
        if source.name == "timestamp":
            seconds = int(value.timestamp()) if isinstance(value, datetime.datetime) else int(value)
            return str(seconds).encode()
        return str(value).encode("utf-8", "surrogateescape")

    def bucket_for(self, key: bytes) -> int | None:
        if not self._total:
            return None
        return jump_hash(hash_of(key), self._total)

    def binding_for(self, key: bytes) -> Binding | None:
        bucket = self.bucket_for(key)
        if bucket is None:
            return None
        return self._ranges[bisect.bisect_right(self._starts, bucket) - 1][0]

    def match(self, routing_key: str, headers: Headers | None = None) -> list[Destination]:
        binding = self.binding_for(self.key_of(routing_key, headers))
        return [] if binding is None else [binding.destination]

    def match_message(self, message: RoutedMessage) -> list[Destination]:
        key = self.key_of(message.routing_keys[0], message.headers, message.properties)
        binding = self.binding_for(key)
        return [] if binding is None else [binding.destination]

    # ------------------------------------------------------------- explain
    def explain(self, binding: Binding, routing_key: str, headers: Headers | None = None) -> Verdict:
        return self._verdict(binding, self.key_of(routing_key, headers))

    def explain_message(self, binding: Binding, message: RoutedMessage) -> Verdict:
        if self.source.kind == "property" and message.properties is None:
            return Verdict(False, f"hashes property '{self.source.name}', which is not known here")
        key = self.key_of(message.routing_keys[0], message.headers, message.properties)
        return self._verdict(binding, key)

    def _verdict(self, binding: Binding, key: bytes) -> Verdict:
        chosen = self.binding_for(key)
        bucket = self.bucket_for(key)
        what = self.source.describe()
        if key == _UNDEFINED and self.source.kind != "routing_key":
            what = f"{what} (absent)"
        owned = next(((start, weight) for b, start, weight in self._ranges if b == binding), None)
        if owned is None:
            return Verdict(False, f"binding refused: not a weight: '{binding.binding_key}'")
        start, weight = owned
        span = f"bucket {start}" if weight == 1 else f"buckets {start}-{start + weight - 1}"
        found = f"{what} hashes to bucket {bucket} of {self._total}"
        if chosen == binding:
            return Verdict(True, f"{found}, this binding's ({span})")
        return Verdict(False, f"{found}; this binding has {span}")
