"""A quorum queue: leveret's queue with the rules of RabbitMQ 3.10.8's rabbit_fifo
that a client can see (read in rabbit_fifo.erl, checked on the reference).

Theory of operation. Ready messages wait in two lines, as rabbit_fifo keeps
them: `returns`, served first, and `messages`. They are the queue's two ready
levels (Queue serves the higher level first, and expires and drops at the head
of that order), so every classic rule that looks at "the head" sees
rabbit_fifo's head.

- A message the client returns (basic.reject or basic.nack with requeue,
  basic.recover) goes to the back of `messages` when no x-delivery-limit is set:
  rabbit_fifo's leader turns such a return into a fresh enqueue (its aux
  machine's `requeue`). With a delivery limit it goes to `returns`.
- Messages held by a consumer that goes away (its channel or connection closed)
  go to `returns`, in the order they were delivered (return_all).
- Every return counts a delivery (the `x-delivery-count` header the channel
  adds; `redelivered` is "delivered before"); over x-delivery-limit the message
  dead-letters with reason delivery_limit, or is dropped without an exchange.
- reject-publish blocks publishers once a message has taken the queue over its
  limit and lets them go at 80% of it (evaluate_limit, is_below_soft_limit).
- x-dead-letter-strategy at-least-once (in effect only with x-overflow
  reject-publish and a dead-letter exchange; else at-most-once, as
  rabbit_quorum_queue:dlh falls back): a dead letter that reaches no queue stays
  here, counting towards the limits, and is routed again every 180 s
  (dead_letter_worker_publisher_confirm_timeout) until a queue takes it.

What leveret does not keep: RabbitMQ holds the "publishers blocked" state per
publishing channel, leveret one per queue; a restart puts ready messages back
in publish order, where rabbit_fifo's log replays the returns as they were;
and dead letters kept for at-least-once live in memory only.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

from leveret.queues.queue import DeadLetter, Entry, Queue

MESSAGES, RETURNS = 0, 1
DEAD_LETTER_RETRY_MS = 180_000


class QuorumQueue(Queue):
    # Returns go to the back of `messages`, behind what would be paged: not paged yet.
    pageable = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ready.append(deque())  # RETURNS, above MESSAGES: served first
        self._publish_blocked = False
        self._at_least_once = self._keeps_dead_letters()
        # Dead letters no queue took yet, with when to route each again (oldest first).
        self._kept: deque[tuple[int, DeadLetter]] = deque()
        self._kept_bytes = 0

    def _keeps_dead_letters(self) -> bool:
        parsed = self.args
        return (parsed.dead_letter_strategy == "at-least-once" and parsed.overflow == "reject-publish"
                and parsed.dead_letter_exchange is not None)

    def _settings_changed(self) -> None:
        # rabbit_fifo takes a new config: limits and the dead-letter handler anew.
        self._at_least_once = self._keeps_dead_letters()
        if self.args.overflow == "drop-head":
            self._publish_blocked = False
        else:
            self._unblock_publishers_if_below()
            self._block_publishers_if_over()

    def _return_order(self, entries: Iterable[Entry]) -> list[Entry]:
        # rabbit_fifo returns in message id order, the order they were handed out:
        # the order the channel holds them in.
        return list(entries)

    def _put_back(self, returning: list[Entry], consumer_gone: bool) -> None:
        to_back = not consumer_gone and self.args.delivery_limit is None
        line = self._ready[MESSAGES if to_back else RETURNS]
        line.extend(returning)
        self._ready_count += len(returning)
        self._ready_bytes += sum(len(entry.message.body) for entry in returning)

    # ---------------------------------------------------- at-least-once
    def keep_dead_letter(self, record: DeadLetter, now_ms: int) -> bool:
        if not self._at_least_once or self.deleted:
            return False
        self._kept.append((now_ms + DEAD_LETTER_RETRY_MS, record))
        self._kept_bytes += len(record.message.body)
        return True

    @property
    def kept_dead_letters(self) -> int:
        return len(self._kept)

    @property
    def kept_dead_letter_bytes(self) -> int:
        return self._kept_bytes

    def next_deadline(self) -> int | None:
        deadline = super().next_deadline()
        if self._kept and (deadline is None or self._kept[0][0] < deadline):
            deadline = self._kept[0][0]
        return deadline

    def expire_messages(self, now_ms: int) -> list[DeadLetter]:
        # Kept dead letters due again go out with the expired: the virtual host
        # routes them, and keeps them here again if still no queue takes them.
        dead = super().expire_messages(now_ms)
        while self._kept and self._kept[0][0] <= now_ms:
            record = self._kept.popleft()[1]
            self._kept_bytes -= len(record.message.body)
            dead.append(record)
        return dead

    def mark_deleted(self) -> int:
        self._kept.clear()
        self._kept_bytes = 0
        return super().mark_deleted()

    def _over_limit(self, extra_bytes: int = 0, extra_count: int = 0) -> bool:
        # Kept dead letters count (rabbit_fifo's is_over_limit adds the dlx state).
        return super()._over_limit(extra_bytes + self._kept_bytes, extra_count + len(self._kept))

    # ------------------------------------------------------ reject-publish
    def refuses_publish(self, size: int) -> bool:
        """A quorum queue refuses only while its publishers are blocked, so it
        holds one message more than its limit; a channel that first publishes
        while the queue is blocked but no longer over its limit is refused here,
        where RabbitMQ (which keeps the state per channel) takes that message."""
        if self.args.overflow == "drop-head":
            return False
        self._unblock_publishers_if_below()
        return self._publish_blocked

    def _block_publishers_if_over(self) -> None:
        if self.args.overflow != "drop-head" and self._over_limit():
            self._publish_blocked = True

    def _unblock_publishers_if_below(self) -> None:
        # Called before the ready count grows (publish, requeue): it only shrinks
        # in between, so no dip to the soft limit goes unseen.
        if not self._publish_blocked:
            return
        max_length, max_bytes = self.args.max_length, self.args.max_length_bytes
        # Erlang's trunc(Limit * 0.8), with the same double arithmetic.
        if max_length is not None and self._ready_count + len(self._kept) > int(max_length * 0.8):
            return
        if max_bytes is not None and self._ready_bytes + self._kept_bytes > int(max_bytes * 0.8):
            return
        self._publish_blocked = False
