"""Publishing into a virtual host: route (leveret.exchanges.router), enqueue
into each queue, then drain the dead-letter records the queues returned: each
is rewritten (leveret.queues.dead_letter) and routed again from its
dead-letter exchange, with RabbitMQ's cycle rule, until no record remains.

An exchange's type may hold a message before routing it (ExchangeType.hold,
x-delayed-message): it waits in the vhost's `delayed` store and is routed when
the timers release it, through the type's `release`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pamqp import exceptions

from leveret.broker.vhost_state import DeadLetterEvent, VhostState
from leveret.exchanges.base import Exchange
from leveret.exchanges.router import RouteTrace, route, trace
from leveret.queues.dead_letter import cycle_free_queues, make_dead_letter
from leveret.queues.message import Message, Properties
from leveret.queues.queue import DeadLetter, parse_expiration


@dataclass(slots=True)
class PublishOutcome:
    queues: list[str]
    rejected: bool = False  # a queue refused it (reject-publish): confirm with nack
    delayed: int | None = None  # ms its exchange's type holds it for before routing

    @property
    def routed(self) -> bool:
        return bool(self.queues)


class Publishing:
    def __init__(self, state: VhostState) -> None:
        self.state = state

    def publish(self, exchange_name: str, message: Message, now_ms: int) -> PublishOutcome:
        """Route and enqueue. The caller checks `mandatory` against `outcome.routed`."""
        exchange = self.state.exchange(exchange_name)
        if exchange.internal:
            raise exceptions.AMQPAccessRefused(
                f"cannot publish to internal exchange '{exchange_name}' in vhost '{self.state.name}'"
            )
        if message.properties.expiration:
            parse_expiration(message.properties.expiration)  # 406 for a bad one
        if exchange.type.holds_messages:
            delay = exchange.type.hold(message)
            if delay is not None:
                return self._hold(exchange, message, delay, now_ms)
        return self._route_and_enqueue(exchange, message, now_ms)

    def _route_and_enqueue(self, exchange: Exchange, message: Message, now_ms: int) -> PublishOutcome:
        state = self.state
        names = route(
            state.exchanges, state.queues, exchange, message.routing_keys, message.properties.headers,
            properties=message.properties, now_ms=now_ms,
        )
        outcome = PublishOutcome(names)
        dead: list[DeadLetter] = []
        for name in names:
            queue = state.queues[name]
            if message.properties.expiration is not None:
                state.timed.add(queue)
            accepted, records = queue.enqueue(message, now_ms)
            if not accepted:
                outcome.rejected = True
            elif state.on_arrival is not None:
                state.on_arrival(name, message, now_ms)
            dead.extend(records)
        if dead:
            self.dead_letter(dead, now_ms)
        return outcome

    def trace(
        self, exchange_name: str, routing_keys: Iterable[str], headers: Mapping[str, Any] | None,
        properties: Properties | None = None, now_ms: int | None = None,
    ) -> RouteTrace:
        state = self.state
        return trace(
            state.exchanges, state.queues, state.exchange(exchange_name), list(routing_keys), headers,
            properties=properties, now_ms=now_ms,
        )

    # ------------------------------------------------------------ holding
    def _hold(self, exchange: Exchange, message: Message, delay: int, now_ms: int) -> PublishOutcome:
        """Hold the message for `delay` ms, as its exchange's type asks. It routes nowhere
        now: a mandatory publish is returned and a confirm is an ack."""
        self.state.delayed.add(
            exchange.name, message, delay, now_ms, durable=exchange.durable and message.persistent,
        )
        return PublishOutcome([], delayed=delay)

    def release_held(self, now_ms: int) -> None:
        """Route the messages whose hold is over through their exchange, as it is now."""
        state = self.state
        for entry in state.delayed.pop_due(now_ms):
            exchange = state.exchanges.get(entry.exchange)
            if exchange is not None:
                self._route_and_enqueue(exchange, exchange.type.release(entry.message, entry.delay), now_ms)
            state.delayed.forget(entry)

    # ------------------------------------------------------ dead letters
    def dead_letter(self, records: list[DeadLetter], now_ms: int) -> None:
        """Re-route dead-lettered messages until none remain (a bounded walk: cycles are dropped)."""
        state = self.state
        pending = list(records)
        while pending:
            record = pending.pop(0)
            exchange = state.exchanges.get(record.dead_letter_exchange)
            if exchange is None:
                if state.dead_letter_log is not None:
                    state.dead_letter_log.append(DeadLetterEvent(
                        record.reason, record.queue, record.dead_letter_exchange, (), [], missing_exchange=True,
                    ))
                self._undelivered_dead_letter(record, now_ms)
                continue
            message = make_dead_letter(
                record.message,
                reason=record.reason,
                queue=record.queue,
                dead_letter_exchange=record.dead_letter_exchange,
                dead_letter_routing_key=record.dead_letter_routing_key,
                now_ms=now_ms,
            )
            if exchange.type.holds_messages:
                delay = exchange.type.hold(message)
                if delay is not None:
                    self._hold(exchange, message, delay, now_ms)
                    continue
            names = route(
                state.exchanges, state.queues, exchange, message.routing_keys, message.properties.headers,
                properties=message.properties, now_ms=now_ms,
            )
            names, cycles = cycle_free_queues(message, record.reason, names)
            if state.dead_letter_log is not None:
                state.dead_letter_log.append(
                    DeadLetterEvent(
                        record.reason, record.queue, exchange.name, message.routing_keys, names, cycles, message,
                    )
                )
            delivered = False
            for name in names:
                queue = state.queues[name]
                if message.properties.expiration is not None:
                    state.timed.add(queue)
                accepted, more = queue.enqueue(message, now_ms)
                delivered = delivered or accepted
                if accepted and state.on_arrival is not None:
                    state.on_arrival(name, message, now_ms)
                pending.extend(more)
            if not delivered:
                self._undelivered_dead_letter(record, now_ms)

    def _undelivered_dead_letter(self, record: DeadLetter, now_ms: int) -> None:
        """No queue took `record`: its queue may keep it to try again (quorum at-least-once)."""
        source = self.state.queues.get(record.queue)
        if source is not None and source.keep_dead_letter(record, now_ms):
            self.state.timed.add(source)
