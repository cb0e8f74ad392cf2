"""The exchange-type registry is the one list of types: every type module's
behaviour is in it, and the broker, the playground and the management API
all offer exactly those types."""

from __future__ import annotations

import importlib
import pkgutil

import leveret.exchanges
from leveret.exchanges.base import PlainExchangeType
from leveret.exchanges.registry import REGISTRY

from leveret.broker.vhost import VirtualHost
from leveret.management.resources.overview import exchange_types
from leveret.playground.parser import EXCHANGE_TYPES


def _type_classes() -> set[type]:
    found: set[type] = set()
    for info in pkgutil.iter_modules(leveret.exchanges.__path__):
        module = importlib.import_module(f"leveret.exchanges.{info.name}")
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, PlainExchangeType) and value is not PlainExchangeType:
                found.add(value)
    return found


def test_every_type_module_is_listed_once() -> None:
    assert {type(kind) for kind in REGISTRY.values()} == _type_classes()
    assert all(name == kind.name and kind.description for name, kind in REGISTRY.items())


def test_broker_playground_and_management_offer_the_registry() -> None:
    assert EXCHANGE_TYPES == tuple(REGISTRY)
    assert [t["name"] for t in exchange_types()] == sorted(REGISTRY)
    vhost = VirtualHost()
    for name in REGISTRY:
        arguments = {"x-delayed-message": {"x-delayed-type": "direct"}, "x-message-deduplication": {"x-cache-size": 5}}
        exchange = vhost.declare_exchange(f"e-{name}", name, arguments=arguments.get(name, {}))
        assert exchange.type is REGISTRY[name]
