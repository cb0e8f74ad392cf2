"""A channel's settlements: basic.ack, nack, reject and recover, and transactions.

Theory of operation. `unacked` holds deliveries in tag order, so a `multiple`
settlement pops from the front without scanning the rest. The settled entries
go back to their queues grouped by queue (ack, requeue or dead-letter); credit
they free is used once per read (`dispatch_later`), not once per ack frame. A
consumer cancelled while holding messages hands its queue over to the next
single active consumer once its last one is settled. In tx mode publishes and
settlements wait in `tx` for tx.commit; the settled tags leave `unacked` at
once and rollback puts them back, as RabbitMQ does.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING

from pamqp import commands, exceptions

from leveret.queues.queue import Entry, Queue
from leveret.queues.stream import StreamQueue, not_supported
from leveret.server.channel_state import ChannelState
from leveret.store import COMMIT_OK, Store

if TYPE_CHECKING:
    from leveret.amqp_wire import methods
    from leveret.server.channel_state import ChannelConsumer

_BASIC = commands.Basic


class Settlement(ChannelState):
    if TYPE_CHECKING:  # from channel_delivery and channel_publish
        def dispatch_consumed_queues(self) -> None: ...

        def _replies_held(self) -> bool: ...

        def _hold_reply(self, store: Store, kind: int, tag: int) -> None: ...

    def _take(self, delivery_tag: int, multiple: bool) -> list[tuple[int, Queue, Entry, ChannelConsumer | None]]:
        unacked = self.unacked
        if multiple and delivery_tag == 0:
            taken = [(tag, *item) for tag, item in unacked.items()]
            unacked.clear()
        elif delivery_tag not in unacked:
            raise exceptions.AMQPPreconditionFailed(f"unknown delivery tag {delivery_tag}")
        elif multiple:
            taken = []
            while unacked:
                tag, item = unacked.popitem(last=False)
                taken.append((tag, *item))
                if tag == delivery_tag:
                    break
        else:
            taken = [(delivery_tag, *unacked.pop(delivery_tag))]
        for _, _, _, consumer in taken:
            if consumer is not None:
                consumer.unacked -= 1
        return taken

    def _settle(self, delivery_tag: int, multiple: bool, action: str) -> None:
        taken = self._take(delivery_tag, multiple)
        if action != "ack":
            for _, queue, _, _ in taken:
                if isinstance(queue, StreamQueue):
                    raise not_supported("basic.nack and basic.reject", queue.name, queue.vhost)
        if self.tx is not None:
            # As RabbitMQ: the tags leave `unacked` now; rollback puts them back.
            self.tx_settled.extend(taken)
            self.tx.append(lambda: self._apply_settlement(taken, action))
            return
        self._apply_settlement(taken, action)

    def _apply_settlement(self, taken: list[tuple[int, Queue, Entry, ChannelConsumer | None]], action: str) -> None:
        now = self.now()
        by_queue: dict[Queue, list[Entry]] = {}
        for _, queue, entry, _ in taken:
            by_queue.setdefault(queue, []).append(entry)
        for queue, entries in by_queue.items():
            if action == "ack":
                self.vhost.ack(queue, entries)
            elif action == "requeue":
                self.vhost.requeue(queue, entries, now)
            else:
                self.vhost.reject(queue, entries, now)
        self._hand_over((consumer for _, _, _, consumer in taken), now)
        # Freed credit is used once per read, not once per ack frame.
        self.connection.dispatch_later(self)

    def _basic_ack(self, method: _BASIC.Ack | methods.Ack) -> None:
        if method.multiple or self.tx is not None:
            self._settle(method.delivery_tag, method.multiple, "ack")
            return
        # The common case, one ack outside a transaction, without the batching.
        item = self.unacked.pop(method.delivery_tag, None)
        if item is None:
            raise exceptions.AMQPPreconditionFailed(f"unknown delivery tag {method.delivery_tag}")
        queue, entry, consumer = item
        self.vhost.ack(queue, [entry])
        if consumer is not None:
            consumer.unacked -= 1
            if consumer.leaving and not consumer.unacked:
                self._hand_over((consumer,), self.now())
        self.connection.dispatch_later(self)

    def _basic_nack(self, method: _BASIC.Nack) -> None:
        self._settle(method.delivery_tag, method.multiple, "requeue" if method.requeue else "reject")

    def _basic_reject(self, method: _BASIC.Reject) -> None:
        self._settle(method.delivery_tag or 0, False, "requeue" if method.requeue else "reject")

    def _basic_recover(self, method: _BASIC.Recover) -> None:
        self._check_recover(method.requeue)
        # As RabbitMQ, whose queues redeliver after the channel replied: recover-ok first.
        self.send(_BASIC.RecoverOk())
        self._recover()

    def _basic_recover_async(self, method: _BASIC.RecoverAsync) -> None:
        self._check_recover(method.requeue)
        self._recover()

    @staticmethod
    def _check_recover(requeue: bool) -> None:
        # RabbitMQ implements requeue=true only (redelivery to the same consumer is not offered).
        if not requeue:
            raise exceptions.AMQPNotImplemented("requeue=false")

    def _recover(self) -> None:
        if any(isinstance(queue, StreamQueue) for queue, _, _ in self.unacked.values()):
            raise exceptions.AMQPInternalError()  # RabbitMQ 3.10's channel crashes on it (541)
        self._requeue_all(self.now())
        self.dispatch_consumed_queues()

    def _hand_over(self, settled: Iterable[ChannelConsumer | None], now: int) -> None:
        """After settling: a cancelled consumer with nothing left unacked lets the
        next single active consumer take over (Queue.remove_consumer)."""
        for consumer in settled:
            if consumer is not None and consumer.leaving and not consumer.unacked:
                consumer.leaving = False
                self.vhost.handover(consumer.queue, now)

    def _requeue_all(self, now: int, *, consumer_gone: bool = False) -> None:
        """Everything unacked goes back: `consumer_gone` when the channel closes
        (a quorum queue serves those first), else a basic.recover."""
        by_queue: dict[Queue, list[Entry]] = {}
        settled = []
        for queue, entry, consumer in self.unacked.values():
            by_queue.setdefault(queue, []).append(entry)
            if consumer is not None:
                consumer.unacked -= 1
                settled.append(consumer)
        self.unacked.clear()
        for queue, entries in by_queue.items():
            self.vhost.requeue(queue, entries, now, consumer_gone=consumer_gone)
        self._hand_over(settled, now)

    def _tx_select(self, method: commands.Tx.Select) -> None:
        if self.confirm:
            raise exceptions.AMQPPreconditionFailed("cannot switch from confirm to tx mode")
        if self.tx is None:
            self.tx = []
        self.send(commands.Tx.SelectOk())

    def _tx_commit(self, method: commands.Tx.Commit) -> None:
        if self.tx is None:
            raise exceptions.AMQPPreconditionFailed("channel is not transactional")
        pending, self.tx = self.tx, None
        self.tx_settled = []
        store = self.connection.broker.store
        before = store.position if store is not None else 0
        try:
            for action in pending:
                action()
        finally:
            self.tx = []
        if store is not None and (store.position != before or self._replies_held()):
            self._hold_reply(store, COMMIT_OK, 0)  # as RabbitMQ: commit-ok once on disk
        else:
            self.send(commands.Tx.CommitOk())

    def _tx_rollback(self, method: commands.Tx.Rollback) -> None:
        if self.tx is None:
            raise exceptions.AMQPPreconditionFailed("channel is not transactional")
        self.tx = []
        self._restore_tx_settled()
        self.send(commands.Tx.RollbackOk())

    def _restore_tx_settled(self) -> None:
        """Uncommitted acks/nacks are undone: their deliveries are unacked again, in tag order."""
        if not self.tx_settled:
            return
        merged = sorted([(tag, *item) for tag, item in self.unacked.items()] + self.tx_settled, key=lambda t: t[0])
        self.unacked = OrderedDict((tag, (queue, entry, consumer)) for tag, queue, entry, consumer in merged)
        for _, _, _, consumer in self.tx_settled:
            if consumer is not None:
                consumer.unacked += 1
        self.tx_settled = []

