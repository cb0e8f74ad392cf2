"""A virtual host: its exchanges, queues and bindings, and every operation a
client (through the frontend) or the playground performs on them.

Theory of operation. The state every part shares (leveret.broker.vhost_state)
is the VirtualHost itself; each seam is a part that holds it: `topology`
(exchanges and bindings), `queue_table` (queue declaration and deletion),
`publishing` (routing, held messages, dead-letter re-routing) and `consumers`
(consume, get, ack, requeue). The vhost's operations are the parts' bound
methods, so a call costs what it did before the split. What is left here is
what spans the parts: the timers and attaching the store. Every operation that
can make messages expire or queues vanish takes `now_ms` from the broker's clock.

Errors are pamqp reply-code exceptions with RabbitMQ's texts; the frontend
turns them into channel or connection closes.
"""

from __future__ import annotations

from leveret.broker.consumers import Consumers, GetOutcome
from leveret.broker.publishing import Publishing, PublishOutcome
from leveret.broker.queue_table import QueueTable
from leveret.broker.topology import Topology
from leveret.broker.vhost_state import DeadLetterEvent, QueueObserver, VhostState
from leveret.exchanges.base import Exchange
from leveret.exchanges.delayed import DelayedMessage
from leveret.exchanges.registry import DIRECT, REGISTRY, TOPIC
from leveret.exchanges.router import DEFAULT_EXCHANGE
from leveret.queues.queue import Queue
from leveret.store import TopologyJournal

__all__ = ["DeadLetterEvent", "GetOutcome", "PublishOutcome", "QueueObserver", "VirtualHost"]

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


class VirtualHost(VhostState):
    def __init__(self, name: str = "/") -> None:
        super().__init__(name)
        self.exchanges[DEFAULT_EXCHANGE] = Exchange(DEFAULT_EXCHANGE, DIRECT, durable=True)
        for exchange_name, kind_name in PREDECLARED:
            self.exchanges[exchange_name] = Exchange(exchange_name, REGISTRY[kind_name], durable=True)
        self.exchanges[TRACE_EXCHANGE] = Exchange(TRACE_EXCHANGE, TOPIC, durable=True, internal=True)
        self.topology = topology = Topology(self)
        self.queue_table = queue_table = QueueTable(self, topology)
        self.publishing = publishing = Publishing(self)
        self.consumers = consumers = Consumers(self, queue_table, publishing)
        # exchanges and bindings
        self.declare_exchange = topology.declare_exchange
        self.delete_exchange = topology.delete_exchange
        self.bind = topology.bind
        self.unbind = topology.unbind
        self.bindings = topology.bindings
        # queues
        self.declare_queue = queue_table.declare_queue
        self.delete_queue = queue_table.delete_queue
        self.purge_queue = queue_table.purge_queue
        self.owner_closed = queue_table.owner_closed
        # publish and dead letters
        self.publish = publishing.publish
        self.trace = publishing.trace
        self.dead_letter = publishing.dead_letter
        # consumers
        self.consume = consumers.consume
        self.cancel = consumers.cancel
        self.handover = consumers.handover
        self.forget_observer = consumers.forget_observer
        self.get = consumers.get
        self.dispatch = consumers.dispatch
        self.ack = consumers.ack
        self.requeue = consumers.requeue
        self.reject = consumers.reject

    # ------------------------------------------------------------ storage
    def attach_journal(self, journal: TopologyJournal, now_ms: int) -> None:
        """Durable changes go to `journal` from now on; durable queues get back the
        messages it recovered (and those over x-delivery-limit dead-letter)."""
        self.journal = journal
        for queue in [q for q in self.queues.values() if q.durable]:
            dead = journal.attach_queue(self.name, queue, now_ms)
            if queue.next_deadline() is not None:
                self.timed.add(queue)  # recovered messages keep their TTL deadlines
            if dead:
                self.dead_letter(dead, now_ms)
        # Persistent messages held by durable exchanges, due when they were (a
        # time already past routes them at the next timer).
        self.delayed.store = journal
        for entry in journal.recovered_delayed(self.name):
            message = entry.message
            exchange = self.exchanges.get(message.exchange)
            delay = (exchange.type.hold(message) if exchange is not None else None) or 0
            self.delayed.restore(DelayedMessage(
                entry.expires_at or now_ms, entry.seq, message.exchange, delay, message, durable=True))

    # ------------------------------------------------------------- timers
    def next_deadline(self) -> int | None:
        deadline = self.delayed.next_deadline() if self.delayed else None
        for queue in self.timed:
            at = queue.next_deadline()
            if at is not None and (deadline is None or at < deadline):
                deadline = at
        return deadline

    def run_timers(self, now_ms: int) -> None:
        """Expire messages at queue heads and delete queues unused past `x-expires`.

        Due queues are handled in deadline order (then by name, so runs repeat
        exactly), and again while dead-lettering makes other queues due. Held
        messages whose hold is over are routed first."""
        if self.delayed:
            self.publishing.release_held(now_ms)
        while True:
            due: list[tuple[int, str, Queue]] = []
            for queue in list(self.timed):
                if queue.deleted:
                    self.timed.discard(queue)
                    continue
                at = queue.next_deadline()
                if at is None:
                    if queue.args.message_ttl is None and queue.args.expires is None:
                        self.timed.discard(queue)
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
                    self.queue_table.remove_queue(queue, "expired")
