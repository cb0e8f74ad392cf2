"""Consumer bookkeeping in a virtual host: basic.consume/cancel (exclusive and
single-active consumers), basic.get, dispatch, ack/requeue/reject; every dead
letter a queue returns goes back through publishing's dead-letter walk, and an
auto-delete queue goes once its last consumer leaves."""

from __future__ import annotations

from dataclasses import dataclass

from pamqp import exceptions

from leveret.broker.publishing import Publishing
from leveret.broker.queue_table import QueueTable
from leveret.broker.vhost_state import QueueObserver, VhostState
from leveret.queues.queue import Consumer, Entry, Queue


@dataclass(slots=True)
class GetOutcome:
    entry: Entry | None
    message_count: int


class Consumers:
    def __init__(self, state: VhostState, queue_table: QueueTable, publishing: Publishing) -> None:
        self.state = state
        self.queue_table = queue_table
        self.publishing = publishing

    def consume(
        self, queue_name: str, consumer: Consumer, *, exclusive: bool, owner: object | None,
        observer: QueueObserver | None, now_ms: int, dispatch: bool = True,
    ) -> Queue:
        queue = self.state.queue(queue_name, owner)
        # A single-active-consumer queue never takes an exclusive consumer (3.10 as observed).
        if queue.exclusive_consumer is not None or (
            exclusive and (queue.consumers or queue.args.single_active_consumer)
        ):
            raise exceptions.AMQPAccessRefused(f"queue '{queue_name}' in vhost '{self.state.name}' in exclusive use")
        queue.add_consumer(consumer, exclusive, now_ms)
        if observer is not None:
            self.state.observers.setdefault(queue, set()).add(observer)
        if dispatch:
            self.dispatch(queue, now_ms)
        return queue

    def cancel(self, queue: Queue, consumer: Consumer, now_ms: int, holding: bool = False) -> None:
        """`holding`: the consumer leaves unacked messages behind (Queue.remove_consumer)."""
        queue.remove_consumer(consumer, now_ms, holding)
        if queue.auto_delete and not queue.consumers and queue.had_consumers:
            self.queue_table.remove_queue(queue, "auto_delete")
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
        observers = self.state.observers.get(queue)
        if observers is not None:
            observers.discard(observer)

    def get(self, queue_name: str, *, no_ack: bool, owner: object | None, now_ms: int) -> GetOutcome:
        queue = self.state.queue(queue_name, owner)
        entry, dead = queue.get(now_ms, no_ack)
        if dead:
            self.publishing.dead_letter(dead, now_ms)
        return GetOutcome(entry, queue.message_count)

    def dispatch(self, queue: Queue, now_ms: int) -> None:
        dead = queue.dispatch(now_ms)
        if dead:
            self.publishing.dead_letter(dead, now_ms)

    def ack(self, queue: Queue, entries: list[Entry]) -> None:
        queue.ack(entries)

    def requeue(self, queue: Queue, entries: list[Entry], now_ms: int, *, consumer_gone: bool = False) -> None:
        dead = queue.requeue(entries, now_ms, consumer_gone=consumer_gone)
        if queue.next_deadline() is not None:
            self.state.timed.add(queue)  # a requeued message keeps its deadline
        if dead:
            self.publishing.dead_letter(dead, now_ms)

    def reject(self, queue: Queue, entries: list[Entry], now_ms: int) -> None:
        dead = queue.reject(entries)
        if dead:
            self.publishing.dead_letter(dead, now_ms)
