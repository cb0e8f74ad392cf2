"""The x-message-deduplication exchange type (the rabbitmq-message-deduplication
plugin's interface): a fanout exchange that routes a message only if its
`x-deduplication-header` value was not seen within the cache's window.

Arguments, checked as the plugin's validate/1 does (406 with its text):
`x-cache-size` (required, an integer > 0: the most values remembered),
`x-cache-ttl` (optional, ms > 0: how long a value is remembered; a message's own
`x-cache-ttl` header wins), `x-cache-persistence` (`memory` or `disk`; leveret
keeps the cache in memory either way).

A duplicate routes nowhere, so the broker answers it as any unroutable message:
basic.return (312 NO_ROUTE) when mandatory, then basic.ack when confirming; an
alternate exchange, if any, gets it. The plugin's texts are Elixir strings
broken over two source lines, which puts a run of spaces in the middle of each;
we send them with one space.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from leveret.bindings.fanout import FanoutIndex
from leveret.bindings.model import Binding, Destination, Headers, RoutedMessage, Verdict
from leveret.exchanges.base import Exchange, PlainExchangeType
from leveret.exchanges.dedup_cache import DedupCache, message_cache_ttl
from leveret.queues.dedup import deduplication_key
from pamqp import exceptions

_SIZE_ERROR = "Missing or invalid argument, 'x-cache-size' must be an integer greater than 0"
_TTL_ERROR = "Invalid argument, 'x-cache-ttl' must be an integer greater than 0"
_PERSISTENCE_ERROR = "Invalid argument, 'x-cache-persistence' must be either 'disk' or 'memory'"


def _positive(value: Any) -> int | None:
    """An integer > 0, or a string of one (the plugin converts strings)."""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "replace")
    if isinstance(value, str):
        try:
            value = int(value, 10)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return None
    return value


def cache_settings(arguments: Mapping[str, Any]) -> tuple[int, int | None]:
    """(size, ttl) from the exchange arguments, or the plugin's 406."""
    size = _positive(arguments.get("x-cache-size"))
    if size is None:
        raise exceptions.AMQPPreconditionFailed(_SIZE_ERROR)
    ttl: int | None = None
    if "x-cache-ttl" in arguments:
        ttl = _positive(arguments["x-cache-ttl"])
        if ttl is None:
            raise exceptions.AMQPPreconditionFailed(_TTL_ERROR)
    if "x-cache-persistence" in arguments:
        persistence = arguments["x-cache-persistence"]
        if isinstance(persistence, (bytes, bytearray)):
            persistence = bytes(persistence).decode("utf-8", "replace")
        if persistence not in ("disk", "memory"):
            raise exceptions.AMQPPreconditionFailed(_PERSISTENCE_ERROR)
    return size, ttl


class DeduplicationIndex:
    """A fanout index behind a DedupCache (a MessageIndex: it routes a value it has
    not seen; the type remembers the value after routing)."""

    __slots__ = ("cache", "_fanout")

    def __init__(self, cache: DedupCache) -> None:
        self.cache = cache
        self._fanout = FanoutIndex()

    def __len__(self) -> int:
        return len(self._fanout)

    def __iter__(self) -> Iterator[Binding]:
        return iter(self._fanout)

    def add(self, binding: Binding) -> None:
        self._fanout.add(binding)

    def remove(self, binding: Binding) -> None:
        self._fanout.remove(binding)

    def match(self, routing_key: str, headers: Headers | None = None) -> list[Destination]:
        return self._fanout.match(routing_key, headers)

    def explain(self, binding: Binding, routing_key: str, headers: Headers | None = None) -> Verdict:
        return self._fanout.explain(binding, routing_key, headers)

    def match_message(self, message: RoutedMessage) -> list[Destination]:
        key = deduplication_key(message.headers)
        if key is not None and self.cache.contains(key, message.now_ms):
            return []
        return self._fanout.match("", None)

    def explain_message(self, binding: Binding, message: RoutedMessage) -> Verdict:
        key = deduplication_key(message.headers)
        if key is None:
            return Verdict(True, "no x-deduplication-header: not deduplicated, fanout")
        value = (message.headers or {}).get("x-deduplication-header")
        if self.cache.contains(key, message.now_ms):
            return Verdict(False, f"x-deduplication-header {value!r} was seen: a duplicate, not routed")
        return Verdict(True, f"x-deduplication-header {value!r} not seen yet: fanout")


class DeduplicationExchangeType(PlainExchangeType):
    """Routes like fanout, once per `x-deduplication-header` value within the cache window."""

    name = "x-message-deduplication"
    description = __doc__ or ""
    records_routes = True

    def check_arguments(self, arguments: Mapping[str, Any]) -> None:
        cache_settings(arguments)

    def new_index(self, arguments: Mapping[str, Any]) -> DeduplicationIndex:
        size, ttl = cache_settings(arguments)
        return DeduplicationIndex(DedupCache(size, ttl))

    def after_routing(self, exchange: Exchange, message: RoutedMessage) -> None:
        """The value is seen from now on (a duplicate's entry keeps its expiry)."""
        key = deduplication_key(message.headers)
        if key is not None and message.now_ms is not None and isinstance(exchange.index, DeduplicationIndex):
            exchange.index.cache.insert(key, message.now_ms, message_cache_ttl(message.headers))

