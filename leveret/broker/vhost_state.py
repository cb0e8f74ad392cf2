"""What every part of a virtual host shares: its name, its exchanges and
queues by name, the store's journal, and the lookups that raise RabbitMQ's
404 and 405. The parts (topology, queue_table, routing, consumers) each hold
this state and none of them holds another's data; leveret.broker.vhost puts
them together.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from pamqp import exceptions

from leveret.broker.limits import NO_VHOST_LIMITS, VhostLimits
from leveret.broker.policies import PolicySet
from leveret.exchanges.base import Exchange
from leveret.exchanges.delayed import DelayedMessages
from leveret.queues.message import Message
from leveret.queues.queue import Pager, Queue
from leveret.store import TopologyJournal


class QueueObserver(Protocol):
    """What the frontend learns about queues it consumes from."""

    def queue_deleted(self, queue: Queue) -> None: ...


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


class VhostState:
    def __init__(self, name: str) -> None:
        self.name = name
        self.exchanges: dict[str, Exchange] = {}
        self.queues: dict[str, Queue] = {}
        self.limits: VhostLimits = NO_VHOST_LIMITS  # max-connections (checked by the frontend), max-queues
        self.observers: dict[Queue, set[QueueObserver]] = {}
        self.policies = PolicySet()  # policies and operator policies (leveret.broker.policy_table)
        self.dead_letter_log: list[DeadLetterEvent] | None = None  # set to a list to record
        # Called with (queue name, message, now) for every message a queue accepts
        # (the playground's record of arrivals); None on the broker's hot path.
        self.on_arrival: Callable[[str, Message, int], None] | None = None
        # Queues with a message TTL or an expiry: the ones the timers look at.
        self.timed: set[Queue] = set()
        # The store (leveret.store), once attached: told every durable topology change.
        self.journal: TopologyJournal | None = None
        # Where queues page what they do not keep in memory (set by the broker).
        self.pager: Pager | None = None
        # Messages exchanges hold before routing them (ExchangeType.hold).
        self.delayed = DelayedMessages(name)
        # Totals for management and metrics: counters of deleted queues are kept
        # here so that totals never go backwards.
        self.queues_created = 0
        self.queues_deleted = 0
        self.removed_queue_stats: dict[str, int] = {}
        self.removed_dead_letter_counts: dict[tuple[str, bool], int] = {}

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
            self.check_exclusive(queue, owner)
        return queue

    def check_exclusive(self, queue: Queue, owner: object | None) -> None:
        if queue.exclusive_owner is not None and queue.exclusive_owner is not owner:
            raise self.locked(queue)

    def locked(self, queue: Queue) -> exceptions.AMQPResourceLocked:
        return exceptions.AMQPResourceLocked(
            f"cannot obtain exclusive access to locked queue '{queue.name}' in vhost "
            f"'{self.name}'. It could be originally declared on another connection or the "
            "exclusive property value does not match that of the original declaration."
        )
