"""A virtual host: its exchanges, queues and bindings, and every operation a
client (through the frontend) or the playground performs on them.

Theory of operation. The vhost owns name -> Exchange and name -> Queue maps,
plus a reverse map from each destination to the bindings that lead to it, so
deleting a queue or exchange removes its bindings in time proportional to
them. Publishing routes through `router.route`, enqueues into each queue and
then drains dead-letter records the queues returned: each is rewritten
(`leveret.queues.dead_letter`) and routed again from its dead-letter exchange, with
RabbitMQ's cycle rule, until no record remains. Every operation that can make
messages expire or queues vanish takes `now_ms` from the broker's clock.

Errors are pamqp reply-code exceptions with RabbitMQ's texts; the frontend
turns them into channel or connection closes.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pamqp import exceptions

from leveret.bindings.model import Binding, Destination
from leveret.broker.limits import NO_VHOST_LIMITS
from leveret.exchanges import base
from leveret.exchanges.base import Exchange
from leveret.exchanges.delayed import DELAYED, DelayedMessage, DelayedMessages, delay_of, released
from leveret.exchanges.router import DEFAULT_EXCHANGE, RouteTrace, route, trace
from leveret.queues.arguments import (
    assert_equivalent,
    check_queue_properties,
    describe,
    type_class,
    type_name,
    validate_queue_arguments,
)
from leveret.queues.dead_letter import cycle_free_queues, make_dead_letter
from leveret.queues.dedup import DeduplicatingQueue, deduplicates
from leveret.queues.message import Message
from leveret.queues.queue import Consumer, DeadLetter, Entry, Queue, parse_expiration
from leveret.queues.stream import StreamQueue
from leveret.store.store import TopologyJournal

# Importing the modules registers the built-in exchange types.
import leveret.exchanges.direct  # noqa: F401,E402  isort: skip
import leveret.exchanges.fanout  # noqa: F401,E402  isort: skip
import leveret.exchanges.headers  # noqa: F401,E402  isort: skip
import leveret.exchanges.topic  # noqa: F401,E402  isort: skip
import leveret.exchanges.consistent_hash  # noqa: F401,E402  isort: skip
import leveret.exchanges.deduplication  # noqa: F401,E402  isort: skip

log = logging.getLogger("leveret.vhost")

PREDECLARED = (
    ("amq.direct", "direct"),
    ("amq.fanout", "fanout"),
    ("amq.topic", "topic"),
    ("amq.headers", "headers"),
    ("amq.match", "headers"),
)
# RabbitMQ declares the firehose tracer's exchange in every vhost: internal, so
# clients cannot publish to it.
TRACE_EXCHANGE = "amq.rabbitmq.trace"


class QueueObserver(Protocol):
    """What the frontend learns about queues it consumes from."""

    def queue_deleted(self, queue: Queue) -> None: ...


@dataclass(slots=True)
class PublishOutcome:
    queues: list[str]
    rejected: bool = False  # a queue refused it (reject-publish): confirm with nack
    delayed: int | None = None  # held for x-delay ms by an x-delayed-message exchange

    @property
    def routed(self) -> bool:
        return bool(self.queues)


@dataclass(slots=True)
class GetOutcome:
    entry: Entry | None
    message_count: int


@dataclass(slots=True)
class DeadLetterEvent:
    """A dead-letter hop, for the playground's trace and for metrics."""

    reason: str
    from_queue: str
    exchange: str
    routing_keys: tuple[str, ...]
    queues: list[str]
    dropped_cycles: list[str] = field(default_factory=list)
    message: Message | None = None  # as rewritten for the dead-letter exchange
    missing_exchange: bool = False  # the dead-letter exchange does not exist: dropped


def _text(value: Any) -> str | None:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def _flag(value: bool) -> str:
    return "true" if value else "false"


class VirtualHost:
    def __init__(self, name: str = "/") -> None:
        self.name = name
        self.exchanges: dict[str, Exchange] = {}
        self.queues: dict[str, Queue] = {}
        self.limits = NO_VHOST_LIMITS  # max-connections (checked by the frontend), max-queues
        self._bindings_to: dict[Destination, set[Binding]] = {}
        self.observers: dict[Queue, set[QueueObserver]] = {}
        self.dead_letter_log: list[DeadLetterEvent] | None = None  # set to a list to record
        # Called with (queue name, message, now) for every message a queue accepts
        # (the playground's record of arrivals); None on the broker's hot path.
        self.on_arrival: Callable[[str, Message, int], None] | None = None
        self._timed: set[Queue] = set()
        # The store (leveret.store.store), once attached: told every durable topology change.
        self.journal: TopologyJournal | None = None
        # Messages an x-delayed-message exchange holds until their x-delay is over.
        self.delayed = DelayedMessages(name)
        # Totals for management and metrics: counters of deleted queues are kept
        # here so that totals never go backwards.
        self.queues_created = 0
        self.queues_deleted = 0
        self.removed_queue_stats: dict[str, int] = {}
        self.removed_dead_letter_counts: dict[tuple[str, bool], int] = {}
        self.exchanges[DEFAULT_EXCHANGE] = Exchange(DEFAULT_EXCHANGE, base.REGISTRY["direct"], durable=True)
        for exchange_name, kind_name in PREDECLARED:
            self.exchanges[exchange_name] = Exchange(exchange_name, base.REGISTRY[kind_name], durable=True)
        self.exchanges[TRACE_EXCHANGE] = Exchange(
            TRACE_EXCHANGE, base.REGISTRY["topic"], durable=True, internal=True
        )

    # ----------------------------------------------------------- lookups
    def exchange(self, name: str) -> Exchange:
        exchange = self.exchanges.get(name)
        if exchange is None:
            raise exceptions.AMQPNotFound(f"no exchange '{name}' in vhost '{self.name}'")
        return exchange

    def queue(self, name: str, owner: object | None = None) -> Queue:
        queue = self.queues.get(name)
        if queue is None:
            raise exceptions.AMQPNotFound(f"no queue '{name}' in vhost '{self.name}'")
        if owner is not None or queue.exclusive_owner is not None:
            self._check_exclusive(queue, owner)
        return queue

    def _check_exclusive(self, queue: Queue, owner: object | None) -> None:
        if queue.exclusive_owner is not None and queue.exclusive_owner is not owner:
            raise self._locked(queue)

    def _locked(self, queue: Queue) -> exceptions.AMQPResourceLocked:
        return exceptions.AMQPResourceLocked(
            f"cannot obtain exclusive access to locked queue '{queue.name}' in vhost "
            f"'{self.name}'. It could be originally declared on another connection or the "
            "exclusive property value does not match that of the original declaration."
        )

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
        if passive:
            if name == DEFAULT_EXCHANGE:
                raise exceptions.AMQPAccessRefused("operation not permitted on the default exchange")
            return self.exchange(name)
        kind = base.REGISTRY.get(exchange_type)
        if kind is None:
            raise exceptions.AMQPCommandInvalid(base.unknown_type_text(exchange_type))
        if name == DEFAULT_EXCHANGE:
            raise exceptions.AMQPAccessRefused("operation not permitted on the default exchange")
        received = dict(arguments or {})
        existing = self.exchanges.get(name)
        if existing is not None:
            self._assert_exchange_equivalent(existing, exchange_type, durable, auto_delete, internal, received)
            return existing
        if name.startswith("amq."):
            raise exceptions.AMQPAccessRefused(f"exchange name '{name}' contains reserved prefix 'amq.*'")
        # A long string only (a byte array is refused here, yet redeclares one: 3.10).
        if "alternate-exchange" in received and not isinstance(received["alternate-exchange"], (str, bytes)):
            raise exceptions.AMQPPreconditionFailed(
                f"invalid type '{type_name(received['alternate-exchange'])}' for arg "
                f"'alternate-exchange' in exchange '{name}' in vhost '{self.name}'"
            )
        exchange = Exchange(
            name, kind, durable=durable, auto_delete=auto_delete, internal=internal, arguments=received
        )
        self.exchanges[name] = exchange
        if durable and self.journal is not None:
            self.journal.exchange_declared(self.name, exchange)
        return exchange

    def _assert_exchange_equivalent(
        self, exchange: Exchange, exchange_type: str, durable: bool, auto_delete: bool,
        internal: bool, arguments: Mapping[str, Any],
    ) -> None:
        def refuse(arg: str, received: str, current: str) -> exceptions.AMQPPreconditionFailed:
            return exceptions.AMQPPreconditionFailed(
                f"inequivalent arg '{arg}' for exchange '{exchange.name}' in vhost '{self.name}': "
                f"received '{received}' but current is '{current}'"
            )

        if exchange.type_name != exchange_type:
            raise refuse("type", exchange_type, exchange.type_name)
        if exchange.durable != durable:
            raise refuse("durable", _flag(durable), _flag(exchange.durable))
        if exchange.auto_delete != auto_delete:
            raise refuse("auto_delete", _flag(auto_delete), _flag(exchange.auto_delete))
        if exchange.internal != internal:
            raise refuse("internal", _flag(internal), _flag(exchange.internal))
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
            f"inequivalent arg '{key}' for exchange '{exchange.name}' in vhost '{self.name}': "
            f"received {_typed_value(received, key)} but current is {_typed_value(current, key)}"
        )

    def delete_exchange(self, name: str, if_unused: bool = False) -> None:
        if name == DEFAULT_EXCHANGE:
            raise exceptions.AMQPAccessRefused("operation not permitted on the default exchange")
        if name.startswith("amq."):
            raise exceptions.AMQPAccessRefused(
                f"deletion of system exchange '{name}' in vhost '{self.name}' not allowed"
            )
        exchange = self.exchanges.get(name)
        if exchange is None:
            return  # deleting what is not there succeeds, as in RabbitMQ
        if if_unused and exchange.bindings:
            # In use means bound as a source; being a destination does not count.
            raise exceptions.AMQPPreconditionFailed(f"exchange '{name}' in vhost '{self.name}' in use")
        self._remove_exchange(exchange)

    def _remove_exchange(self, exchange: Exchange) -> None:
        self.exchanges.pop(exchange.name, None)
        if exchange.durable and self.journal is not None:
            self.journal.exchange_deleted(self.name, exchange)
        if exchange.type is DELAYED and self.delayed:
            self.delayed.discard_exchange(exchange.name)
        for binding in list(exchange.bindings):
            self._remove_binding(binding, cascade=False)
        for binding in list(self._bindings_to.get(Destination.exchange(exchange.name), ())):
            self._remove_binding(binding, cascade=True)

    # ------------------------------------------------------------ queues
    def declare_queue(
        self,
        name: str,
        *,
        passive: bool = False,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
        owner: object | None = None,
        now_ms: int = 0,
        authorize: Callable[[str], None] | None = None,
        authorize_new: Callable[[str], None] | None = None,
    ) -> Queue:
        """`authorize(name)` and `authorize_new(name)` are the caller's permission
        checks, made where RabbitMQ makes them: the first on the actual
        (server-generated) name before anything else, the second, for a queue
        that does not exist yet, after the vhost's queue limit."""
        if passive:
            queue = self.queue(name, owner)
            queue.touch(now_ms)
            return queue
        if not name:
            name = self._server_named()
        elif name.startswith("amq."):
            raise exceptions.AMQPAccessRefused(f"queue name '{name}' contains reserved prefix 'amq.*'")
        if authorize is not None:
            authorize(name)
        if name not in self.queues:
            most = self.limits.max_queues
            if most is not None and len(self.queues) >= most:
                raise exceptions.AMQPPreconditionFailed(
                    f"cannot declare queue '{name}': queue limit in vhost '{self.name}' ({most}) is reached"
                )
            if authorize_new is not None:
                authorize_new(name)
        # RabbitMQ never makes an exclusive queue durable: it ignores the flag.
        durable = durable and not exclusive
        received = dict(arguments or {})
        existing = self.queues.get(name)
        if existing is not None:
            self._assert_queue_equivalent(existing, durable, exclusive, auto_delete, received, owner)
            existing.touch(now_ms)
            return existing
        queue_type = validate_queue_arguments(received, name, self.name)
        check_queue_properties(
            queue_type, durable=durable, exclusive=exclusive, auto_delete=auto_delete,
            queue=name, vhost=self.name, arguments=received,
        )
        queue_class: type[Queue] = Queue
        if queue_type == "stream":
            queue_class = StreamQueue
        elif deduplicates(received):
            queue_class = DeduplicatingQueue
        queue = queue_class(
            name,
            self.name,
            durable=durable,
            exclusive_owner=owner if exclusive else None,
            auto_delete=auto_delete,
            arguments=received,
            now_ms=now_ms,
        )
        self.queues[name] = queue
        self.queues_created += 1
        if durable and self.journal is not None:
            self.journal.queue_declared(self.name, queue)
        if queue.args.message_ttl is not None or queue.args.expires is not None:
            self._timed.add(queue)
        return queue

    def _server_named(self) -> str:
        while True:
            name = "amq.gen-" + base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
            if name not in self.queues:
                return name

    def _assert_queue_equivalent(
        self, queue: Queue, durable: bool, exclusive: bool, auto_delete: bool,
        arguments: Mapping[str, Any], owner: object | None,
    ) -> None:
        def refuse(arg: str, received: bool, current: bool) -> exceptions.AMQPPreconditionFailed:
            return exceptions.AMQPPreconditionFailed(
                f"inequivalent arg '{arg}' for queue '{queue.name}' in vhost '{self.name}': "
                f"received '{_flag(received)}' but current is '{_flag(current)}'"
            )

        # RabbitMQ's strict check, made first: the declaring connection must own
        # the queue exactly when it asks for an exclusive one.
        if queue.exclusive_owner is not (owner if exclusive else None):
            raise self._locked(queue)
        if queue.durable != durable:
            raise refuse("durable", durable, queue.durable)
        if queue.auto_delete != auto_delete:
            raise refuse("auto_delete", auto_delete, queue.auto_delete)
        assert_equivalent(queue.arguments, arguments, queue.name, self.name)

    def delete_queue(
        self, name: str, *, if_unused: bool = False, if_empty: bool = False, owner: object | None = None,
        reason: str = "deleted",
    ) -> int:
        queue = self.queues.get(name)
        if queue is None:
            return 0
        self._check_exclusive(queue, owner)
        if isinstance(queue, StreamQueue):
            return self._remove_queue(queue, reason)  # a stream ignores if-empty and if-unused
        # The queue process checks if-empty before if-unused (rabbit_amqqueue_process).
        if if_empty and queue.message_count:
            raise exceptions.AMQPPreconditionFailed(f"queue '{name}' in vhost '{self.name}' not empty")
        if if_unused and queue.consumers:
            raise exceptions.AMQPPreconditionFailed(f"queue '{name}' in vhost '{self.name}' in use")
        return self._remove_queue(queue, reason)

    def _remove_queue(self, queue: Queue, reason: str = "deleted") -> int:
        """`reason` is for the log: deleted, auto_delete, expired, owner_closed, or the caller's."""
        if self.queues.get(queue.name) is not queue:
            return 0
        del self.queues[queue.name]
        self._timed.discard(queue)
        if queue.durable and self.journal is not None:
            self.journal.queue_deleted(self.name, queue)
        count = queue.mark_deleted()
        self.queues_deleted += 1
        for key, value in queue.stats.items():
            self.removed_queue_stats[key] = self.removed_queue_stats.get(key, 0) + value
        for reason_key, value in queue.dead_letter_counts.items():
            self.removed_dead_letter_counts[reason_key] = self.removed_dead_letter_counts.get(reason_key, 0) + value
        log.info("queue deleted", extra={
            "event": "queue_deleted", "vhost": self.name, "queue": queue.name, "reason": reason,
            "messages": count,
        })
        for binding in list(self._bindings_to.get(Destination.queue(queue.name), ())):
            self._remove_binding(binding, cascade=True)
        for observer in list(self.observers.pop(queue, ())):
            observer.queue_deleted(queue)
        queue.consumers.clear()
        return count

    def purge_queue(self, name: str, owner: object | None = None) -> int:
        return self.queue(name, owner).purge()

    def owner_closed(self, owner: object) -> None:
        """A connection went away: its exclusive queues go with it."""
        for queue in [q for q in self.queues.values() if q.exclusive_owner is owner]:
            self._remove_queue(queue, "owner_closed")

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
        self._refuse_default(source, destination)
        exchange = self.exchange(source)
        if destination.kind == "queue":
            self.queue(destination.name, owner)
        else:
            self.exchange(destination.name)
        binding = Binding.make(source, destination, binding_key, arguments)
        if binding in exchange.bindings:
            return binding  # binding twice is a no-op
        exchange.index.add(binding)  # parses arguments; may refuse them
        exchange.bindings.add(binding)
        self._bindings_to.setdefault(destination, set()).add(binding)
        if self.journal is not None and exchange.durable and self._durable(destination):
            self.journal.bound(self.name, binding)  # RabbitMQ keeps a binding whose ends are durable
        return binding

    def _durable(self, destination: Destination) -> bool:
        if destination.kind == "queue":
            queue = self.queues.get(destination.name)
            return queue is not None and queue.durable
        target = self.exchanges.get(destination.name)
        return target is not None and target.durable

    @staticmethod
    def _refuse_default(source: str, destination: Destination) -> None:
        if source == DEFAULT_EXCHANGE or (
            destination.kind == "exchange" and destination.name == DEFAULT_EXCHANGE
        ):
            raise exceptions.AMQPAccessRefused("operation not permitted on the default exchange")

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
        self._refuse_default(source, destination)
        exchange = self.exchanges.get(source)
        if exchange is None:
            return
        binding = Binding.make(source, destination, binding_key, arguments)
        if binding not in exchange.bindings:
            return
        if destination.kind == "queue":
            queue = self.queues.get(destination.name)
            if queue is not None:
                self._check_exclusive(queue, owner)
        self._remove_binding(binding, cascade=True)

    def _remove_binding(self, binding: Binding, cascade: bool) -> None:
        if self.journal is not None:
            self.journal.unbound(self.name, binding)  # the store ignores one it does not keep
        exchange = self.exchanges.get(binding.source)
        if exchange is not None and binding in exchange.bindings:
            exchange.bindings.discard(binding)
            exchange.index.remove(binding)
        to = self._bindings_to.get(binding.destination)
        if to is not None:
            to.discard(binding)
            if not to:
                del self._bindings_to[binding.destination]
        if cascade and exchange is not None and exchange.auto_delete and not exchange.bindings:
            self._remove_exchange(exchange)

    def bindings(self) -> list[Binding]:
        return [b for exchange in self.exchanges.values() for b in exchange.bindings]

    # ------------------------------------------------------------ publish
    def publish(self, exchange_name: str, message: Message, now_ms: int) -> PublishOutcome:
        """Route and enqueue. The caller checks `mandatory` against `outcome.routed`."""
        exchange = self.exchange(exchange_name)
        if exchange.internal:
            raise exceptions.AMQPAccessRefused(
                f"cannot publish to internal exchange '{exchange_name}' in vhost '{self.name}'"
            )
        if message.properties.expiration:
            parse_expiration(message.properties.expiration)  # 406 for a bad one
        if exchange.type is DELAYED:
            delay = delay_of(message.properties.headers)
            if delay is not None:
                return self._delay(exchange, message, delay, now_ms)
        return self._route_and_enqueue(exchange, message, now_ms)

    def _route_and_enqueue(self, exchange: Exchange, message: Message, now_ms: int) -> PublishOutcome:
        names = route(
            self.exchanges, self.queues, exchange, message.routing_keys, message.properties.headers,
            properties=message.properties, now_ms=now_ms,
        )
        outcome = PublishOutcome(names)
        dead: list[DeadLetter] = []
        for name in names:
            queue = self.queues[name]
            if message.properties.expiration is not None:
                self._timed.add(queue)
            accepted, records = queue.enqueue(message, now_ms)
            if not accepted:
                outcome.rejected = True
            elif self.on_arrival is not None:
                self.on_arrival(name, message, now_ms)
            dead.extend(records)
        if dead:
            self.dead_letter(dead, now_ms)
        return outcome

    def trace(
        self, exchange_name: str, routing_keys: Iterable[str], headers: Mapping[str, Any] | None,
        properties: Any = None, now_ms: int | None = None,
    ) -> RouteTrace:
        return trace(
            self.exchanges, self.queues, self.exchange(exchange_name), list(routing_keys), headers,
            properties=properties, now_ms=now_ms,
        )

    # ----------------------------------------------------------- delayed
    def _delay(self, exchange: Exchange, message: Message, delay: int, now_ms: int) -> PublishOutcome:
        """Hold the message for x-delay ms. It routes nowhere now, as with the plugin:
        a mandatory publish is returned and a confirm is an ack (leveret.exchanges.delayed)."""
        self.delayed.add(
            exchange.name, message, delay, now_ms, durable=exchange.durable and message.persistent,
        )
        return PublishOutcome([], delayed=delay)

    def _release_delayed(self, now_ms: int) -> None:
        """Route the messages whose delay is over through their exchange, as it is now."""
        for entry in self.delayed.pop_due(now_ms):
            exchange = self.exchanges.get(entry.exchange)
            if exchange is not None:
                self._route_and_enqueue(exchange, released(entry.message, entry.delay), now_ms)
            self.delayed.forget(entry)

    def dead_letter(self, records: list[DeadLetter], now_ms: int) -> None:
        """Re-route dead-lettered messages until none remain (a bounded walk: cycles are dropped)."""
        pending = list(records)
        while pending:
            record = pending.pop(0)
            exchange = self.exchanges.get(record.dead_letter_exchange)
            if exchange is None:
                if self.dead_letter_log is not None:
                    self.dead_letter_log.append(DeadLetterEvent(
                        record.reason, record.queue, record.dead_letter_exchange, (), [], missing_exchange=True,
                    ))
                continue
            message = make_dead_letter(
                record.message,
                reason=record.reason,
                queue=record.queue,
                dead_letter_exchange=record.dead_letter_exchange,
                dead_letter_routing_key=record.dead_letter_routing_key,
                now_ms=now_ms,
            )
            if exchange.type is DELAYED:
                delay = delay_of(message.properties.headers)
                if delay is not None:
                    self._delay(exchange, message, delay, now_ms)
                    continue
            names = route(
                self.exchanges, self.queues, exchange, message.routing_keys, message.properties.headers,
                properties=message.properties, now_ms=now_ms,
            )
            names, cycles = cycle_free_queues(message, record.reason, names)
            if self.dead_letter_log is not None:
                self.dead_letter_log.append(
                    DeadLetterEvent(
                        record.reason, record.queue, exchange.name, message.routing_keys, names, cycles, message,
                    )
                )
            for name in names:
                queue = self.queues[name]
                if message.properties.expiration is not None:
                    self._timed.add(queue)
                accepted, more = queue.enqueue(message, now_ms)
                if accepted and self.on_arrival is not None:
                    self.on_arrival(name, message, now_ms)
                pending.extend(more)

    # ---------------------------------------------------------- consuming
    def consume(
        self, queue_name: str, consumer: Consumer, *, exclusive: bool, owner: object | None,
        observer: QueueObserver | None, now_ms: int, dispatch: bool = True,
    ) -> Queue:
        queue = self.queue(queue_name, owner)
        # A single-active-consumer queue never takes an exclusive consumer (3.10 as observed).
        if queue.exclusive_consumer is not None or (
            exclusive and (queue.consumers or queue.args.single_active_consumer)
        ):
            raise exceptions.AMQPAccessRefused(f"queue '{queue_name}' in vhost '{self.name}' in exclusive use")
        queue.add_consumer(consumer, exclusive, now_ms)
        if observer is not None:
            self.observers.setdefault(queue, set()).add(observer)
        if dispatch:
            self.dispatch(queue, now_ms)
        return queue

    def cancel(self, queue: Queue, consumer: Consumer, now_ms: int, holding: bool = False) -> None:
        """`holding`: the consumer leaves unacked messages behind (Queue.remove_consumer)."""
        queue.remove_consumer(consumer, now_ms, holding)
        if queue.auto_delete and not queue.consumers and queue.had_consumers:
            self._remove_queue(queue, "auto_delete")
        elif queue.consumers and not queue.deleted:
            # With a single active consumer the next one takes over now.
            self.dispatch(queue, now_ms)

    def handover(self, queue: Queue, now_ms: int) -> None:
        """A cancelled single active consumer's messages are all settled: the next takes over."""
        if queue.handover_pending:
            queue.handover_pending = False
            if not queue.deleted:
                self.dispatch(queue, now_ms)

    def forget_observer(self, queue: Queue, observer: QueueObserver) -> None:
        observers = self.observers.get(queue)
        if observers is not None:
            observers.discard(observer)

    def get(self, queue_name: str, *, no_ack: bool, owner: object | None, now_ms: int) -> GetOutcome:
        queue = self.queue(queue_name, owner)
        entry, dead = queue.get(now_ms, no_ack)
        if dead:
            self.dead_letter(dead, now_ms)
        return GetOutcome(entry, queue.message_count)

    def dispatch(self, queue: Queue, now_ms: int) -> None:
        dead = queue.dispatch(now_ms)
        if dead:
            self.dead_letter(dead, now_ms)

    def ack(self, queue: Queue, entries: list[Entry]) -> None:
        queue.ack(entries)

    def requeue(self, queue: Queue, entries: list[Entry], now_ms: int) -> None:
        dead = queue.requeue(entries, now_ms)
        if queue.next_deadline() is not None:
            self._timed.add(queue)  # a requeued message keeps its deadline
        if dead:
            self.dead_letter(dead, now_ms)

    def reject(self, queue: Queue, entries: list[Entry], now_ms: int) -> None:
        dead = queue.reject(entries)
        if dead:
            self.dead_letter(dead, now_ms)

    # ------------------------------------------------------------ storage
    def attach_journal(self, journal: TopologyJournal, now_ms: int) -> None:
        """Durable changes go to `journal` from now on; durable queues get back the
        messages it recovered (and those over x-delivery-limit dead-letter)."""
        self.journal = journal
        for queue in [q for q in self.queues.values() if q.durable]:
            dead = journal.attach_queue(self.name, queue, now_ms)
            if queue.next_deadline() is not None:
                self._timed.add(queue)  # recovered messages keep their TTL deadlines
            if dead:
                self.dead_letter(dead, now_ms)
        # Persistent messages waiting on durable x-delayed-message exchanges, due
        # when they were (a time already past routes them at the next timer).
        self.delayed.store = journal
        for entry in journal.recovered_delayed(self.name):
            message = entry.message
            delay = delay_of(message.properties.headers) or 0
            self.delayed.restore(DelayedMessage(
                entry.expires_at or now_ms, entry.seq, message.exchange, delay, message, durable=True))

    # ------------------------------------------------------------- timers
    def next_deadline(self) -> int | None:
        deadline = self.delayed.next_deadline() if self.delayed else None
        for queue in self._timed:
            at = queue.next_deadline()
            if at is not None and (deadline is None or at < deadline):
                deadline = at
        return deadline

    def run_timers(self, now_ms: int) -> None:
        """Expire messages at queue heads and delete queues unused past `x-expires`.

        Due queues are handled in deadline order (then by name, so runs repeat
        exactly), and again while dead-lettering makes other queues due. Delayed
        messages whose delay is over are routed first."""
        if self.delayed:
            self._release_delayed(now_ms)
        while True:
            due: list[tuple[int, str, Queue]] = []
            for queue in list(self._timed):
                if queue.deleted:
                    self._timed.discard(queue)
                    continue
                at = queue.next_deadline()
                if at is None:
                    if queue.args.message_ttl is None and queue.args.expires is None:
                        self._timed.discard(queue)
                elif at <= now_ms:
                    due.append((at, queue.name, queue))
            if not due:
                return
            due.sort(key=lambda item: (item[0], item[1]))
            for _, _, queue in due:
                if queue.deleted:
                    continue
                dead = queue.expire_messages(now_ms)
                if dead:
                    self.dead_letter(dead, now_ms)
                expiry = queue.expiry_deadline()
                if expiry is not None and expiry <= now_ms:
                    self._remove_queue(queue, "expired")


def _typed_value(table: Mapping[str, Any], name: str) -> str:
    if name not in table:
        return "none"
    return f"the value '{describe(table[name])}' of type '{type_name(table[name])}'"
