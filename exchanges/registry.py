"""Every exchange type leveret has, by wire name: the one list the broker, the
management API and the playground read. A type is added here, not registered
by importing its module."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from leveret.exchanges.base import ExchangeType
from leveret.exchanges.consistent_hash import ConsistentHashExchangeType
from leveret.exchanges.deduplication import DeduplicationExchangeType
from leveret.exchanges.delayed import DelayedMessageExchangeType
from leveret.exchanges.direct import DirectExchangeType
from leveret.exchanges.fanout import FanoutExchangeType
from leveret.exchanges.headers import HeadersExchangeType
from leveret.exchanges.topic import TopicExchangeType

DIRECT: ExchangeType = DirectExchangeType()
FANOUT: ExchangeType = FanoutExchangeType()
TOPIC: ExchangeType = TopicExchangeType()
HEADERS: ExchangeType = HeadersExchangeType()
CONSISTENT_HASH: ExchangeType = ConsistentHashExchangeType()
DEDUPLICATION: ExchangeType = DeduplicationExchangeType()
# x-delayed-message routes as any of the others (never as itself).
_ROUTABLE = {kind.name: kind for kind in (DIRECT, FANOUT, TOPIC, HEADERS, CONSISTENT_HASH, DEDUPLICATION)}
DELAYED: ExchangeType = DelayedMessageExchangeType(MappingProxyType(_ROUTABLE))

# In the order the playground lists them.
TYPES: tuple[ExchangeType, ...] = (DIRECT, FANOUT, TOPIC, HEADERS, DELAYED, CONSISTENT_HASH, DEDUPLICATION)
REGISTRY: Mapping[str, ExchangeType] = MappingProxyType({kind.name: kind for kind in TYPES})
