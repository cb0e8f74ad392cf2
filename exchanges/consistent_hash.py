"""The x-consistent-hash exchange type (the rabbitmq_consistent_hash_exchange
plugin's interface): binding key = weight; the routing key, a header
(`hash-header`) or a property (`hash-property`) is hashed onto the weighted
buckets (see leveret.bindings.consistent_hash)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from leveret.bindings.consistent_hash import HASH_PROPERTIES, ConsistentHashIndex, HashSource
from leveret.exchanges.base import PlainExchangeType
from leveret.queues.arguments import type_name
from pamqp import exceptions


def hash_source(arguments: Mapping[str, Any]) -> HashSource:
    """The exchange's `hash-header` / `hash-property`, checked as the plugin's validate/1."""
    header = _string_argument(arguments, "hash-header")
    prop = _string_argument(arguments, "hash-property")
    if header is not None and prop is not None:
        raise exceptions.AMQPPreconditionFailed("hash-header and hash-property are mutually exclusive")
    if prop is not None:
        if prop not in HASH_PROPERTIES:
            raise exceptions.AMQPPreconditionFailed(f"Unsupported property: {prop}")
        return HashSource("property", prop)
    if header is not None:
        return HashSource("header", header)
    return HashSource()


def _string_argument(arguments: Mapping[str, Any], name: str) -> str | None:
    if name not in arguments:
        return None
    value = arguments[name]
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "replace")
    if not isinstance(value, str):
        # The plugin only matches longstr here and crashes the channel on
        # anything else (541); a 406 says what is wrong instead.
        raise exceptions.AMQPPreconditionFailed(
            f"Invalid argument, '{name}' must be a string, got {type_name(value)}"
        )
    return value


class ConsistentHashExchangeType(PlainExchangeType):
    """Each message goes to one destination, picked by the hash of its routing key
    (or header, or property) over buckets in proportion to the binding keys."""

    name = "x-consistent-hash"
    description = "Each message goes to one destination, picked by the hash of its routing key"

    def check_arguments(self, arguments: Mapping[str, Any]) -> None:
        hash_source(arguments)

    def new_index(self, arguments: Mapping[str, Any]) -> ConsistentHashIndex:
        return ConsistentHashIndex(hash_source(arguments))
