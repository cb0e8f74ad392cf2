"""A virtual host's exchanges and bindings: exchange.declare/delete and
queue/exchange bind/unbind, in RabbitMQ's order of checks and with its texts.

Theory of operation. Besides each exchange's own bindings (its source side),
`bindings_to` maps each destination to the bindings that lead to it, so
deleting a queue or exchange removes its bindings in time proportional to
them. Removing the last binding of an auto-delete exchange deletes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pamqp import exceptions

from leveret.bindings.model import Binding, Destination
from leveret.broker.vhost_state import VhostState
from leveret.exchanges.base import Exchange, unknown_type_text
from leveret.exchanges.registry import REGISTRY
from leveret.exchanges.router import DEFAULT_EXCHANGE
from leveret.queues.arguments import describe, type_class, type_name


def _text(value: Any) -> str | None:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def flag(value: bool) -> str:
    return "true" if value else "false"


def _typed_value(table: Mapping[str, Any], name: str) -> str:
    if name not in table:
        return "none"
    return f"the value '{describe(table[name])}' of type '{type_name(table[name])}'"


class Topology:
    def __init__(self, state: VhostState) -> None:
        self.state = state
        self.bindings_to: dict[Destination, set[Binding]] = {}

    # --------------------------------------------------------- exchanges
    def declare_exchange(
        self,
        name: str,
        exchange_type: str,
        *,
        passive: bool = False,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> Exchange:
        """exchange.declare in RabbitMQ's order of checks (rabbit_channel): the type
        (503, even for an existing exchange), the default exchange (403), then an
        existing exchange must be equivalent (406) and a new one may not be `amq.*`."""
        state = self.state
        if passive:
            if name == DEFAULT_EXCHANGE:
                raise exceptions.AMQPAccessRefused("operation not permitted on the default exchange")
            return state.exchange(name)
        kind = REGISTRY.get(exchange_type)
        if kind is None:
            raise exceptions.AMQPCommandInvalid(unknown_type_text(exchange_type))
        if name == DEFAULT_EXCHANGE:
            raise exceptions.AMQPAccessRefused("operation not permitted on the default exchange")
        received = dict(arguments or {})
        existing = state.exchanges.get(name)
        if existing is not None:
            self._assert_equivalent(existing, exchange_type, durable, auto_delete, internal, received)
            return existing
        if name.startswith("amq."):
            raise exceptions.AMQPAccessRefused(f"exchange name '{name}' contains reserved prefix 'amq.*'")
        # A long string only (a byte array is refused here, yet redeclares one: 3.10).
        if "alternate-exchange" in received and not isinstance(received["alternate-exchange"], (str, bytes)):
            raise exceptions.AMQPPreconditionFailed(
                f"invalid type '{type_name(received['alternate-exchange'])}' for arg "
                f"'alternate-exchange' in exchange '{name}' in vhost '{state.name}'"
            )
        kind.check_arguments(received)
        exchange = Exchange(
            name, kind, durable=durable, auto_delete=auto_delete, internal=internal, arguments=received
        )
        state.exchanges[name] = exchange
        if durable and state.journal is not None:
            state.journal.exchange_declared(state.name, exchange)
        return exchange

    def _assert_equivalent(
        self, exchange: Exchange, exchange_type: str, durable: bool, auto_delete: bool,
        internal: bool, arguments: Mapping[str, Any],
    ) -> None:
        vhost = self.state.name

        def refuse(arg: str, received: str, current: str) -> exceptions.AMQPPreconditionFailed:
            return exceptions.AMQPPreconditionFailed(
                f"inequivalent arg '{arg}' for exchange '{exchange.name}' in vhost '{vhost}': "
                f"received '{received}' but current is '{current}'"
            )

        if exchange.type_name != exchange_type:
            raise refuse("type", exchange_type, exchange.type_name)
        if exchange.durable != durable:
            raise refuse("durable", flag(durable), flag(exchange.durable))
        if exchange.auto_delete != auto_delete:
            raise refuse("auto_delete", flag(auto_delete), flag(exchange.auto_delete))
        if exchange.internal != internal:
            raise refuse("internal", flag(internal), flag(exchange.internal))
        # Of the arguments, RabbitMQ compares only the alternate exchange.
        key = "alternate-exchange"
        current, received = exchange.arguments, arguments
        if key not in current and key not in received:
            return
        if key in current and key in received:
            old, new = current[key], received[key]
            if type_class(old) == type_class(new) and _text(old) == _text(new):
                return
            raise refuse(key, describe(new), describe(old))
        raise exceptions.AMQPPreconditionFailed(
            f"inequivalent arg '{key}' for exchange '{exchange.name}' in vhost '{vhost}': "
            f"received {_typed_value(received, key)} but current is {_typed_value(current, key)}"
        )

    def delete_exchange(self, name: str, if_unused: bool = False) -> None:
        vhost = self.state.name
        if name == DEFAULT_EXCHANGE:
            raise exceptions.AMQPAccessRefused("operation not permitted on the default exchange")
        if name.startswith("amq."):
            raise exceptions.AMQPAccessRefused(f"deletion of system exchange '{name}' in vhost '{vhost}' not allowed")
        exchange = self.state.exchanges.get(name)
        if exchange is None:
            return  # deleting what is not there succeeds, as in RabbitMQ
        if if_unused and exchange.bindings:
            # In use means bound as a source; being a destination does not count.
            raise exceptions.AMQPPreconditionFailed(f"exchange '{name}' in vhost '{vhost}' in use")
        self.remove_exchange(exchange)

    def remove_exchange(self, exchange: Exchange) -> None:
        state = self.state
        state.exchanges.pop(exchange.name, None)
        if exchange.durable and state.journal is not None:
            state.journal.exchange_deleted(state.name, exchange)
        if state.delayed:
            state.delayed.discard_exchange(exchange.name)
        for binding in list(exchange.bindings):
            self.remove_binding(binding, cascade=False)
        self.remove_bindings_to(Destination.exchange(exchange.name))

    # ---------------------------------------------------------- bindings
    def bind(
        self,
        source: str,
        destination: Destination,
        binding_key: str,
        arguments: Mapping[str, Any] | None = None,
        owner: object | None = None,
    ) -> Binding:
        """queue.bind / exchange.bind in RabbitMQ's order of checks: the default
        exchange on either side (403), the source (404), the destination (404),
        exclusive access (405), then the binding's arguments (406)."""
        state = self.state
        _refuse_default(source, destination)
        exchange = state.exchange(source)
        if destination.kind == "queue":
            state.queue(destination.name, owner)
        else:
            state.exchange(destination.name)
        binding = Binding.make(source, destination, binding_key, arguments)
        if binding in exchange.bindings:
            return binding  # binding twice is a no-op
        exchange.index.add(binding)  # parses arguments; may refuse them
        exchange.bindings.add(binding)
        self.bindings_to.setdefault(destination, set()).add(binding)
        if state.journal is not None and exchange.durable and self._durable(destination):
            state.journal.bound(state.name, binding)  # RabbitMQ keeps a binding whose ends are durable
        return binding

    def _durable(self, destination: Destination) -> bool:
        if destination.kind == "queue":
            queue = self.state.queues.get(destination.name)
            return queue is not None and queue.durable
        target = self.state.exchanges.get(destination.name)
        return target is not None and target.durable

    def unbind(
        self,
        source: str,
        destination: Destination,
        binding_key: str,
        arguments: Mapping[str, Any] | None = None,
        owner: object | None = None,
    ) -> None:
        """Removing a binding that is not there (or whose ends are missing) succeeds,
        as in RabbitMQ; only an existing binding to another connection's exclusive
        queue is refused (405)."""
        _refuse_default(source, destination)
        exchange = self.state.exchanges.get(source)
        if exchange is None:
            return
        binding = Binding.make(source, destination, binding_key, arguments)
        if binding not in exchange.bindings:
            return
        if destination.kind == "queue":
            queue = self.state.queues.get(destination.name)
            if queue is not None:
                self.state.check_exclusive(queue, owner)
        self.remove_binding(binding, cascade=True)

    def remove_binding(self, binding: Binding, cascade: bool) -> None:
        state = self.state
        if state.journal is not None:
            state.journal.unbound(state.name, binding)  # the store ignores one it does not keep
        exchange = state.exchanges.get(binding.source)
        if exchange is not None and binding in exchange.bindings:
            exchange.bindings.discard(binding)
            exchange.index.remove(binding)
        to = self.bindings_to.get(binding.destination)
        if to is not None:
            to.discard(binding)
            if not to:
                del self.bindings_to[binding.destination]
        if cascade and exchange is not None and exchange.auto_delete and not exchange.bindings:
            self.remove_exchange(exchange)

    def remove_bindings_to(self, destination: Destination) -> None:
        for binding in list(self.bindings_to.get(destination, ())):
            self.remove_binding(binding, cascade=True)

    def bindings(self) -> list[Binding]:
        return [b for exchange in self.state.exchanges.values() for b in exchange.bindings]


def _refuse_default(source: str, destination: Destination) -> None:
    if source == DEFAULT_EXCHANGE or (destination.kind == "exchange" and destination.name == DEFAULT_EXCHANGE):
        raise exceptions.AMQPAccessRefused("operation not permitted on the default exchange")
