"""A classic queue: ready messages, consumers and the rules that drop messages.

Theory of operation. A queue holds *entries* (a message plus its per-queue
state: sequence number, deadline, redelivered flag, delivery count). Ready
entries wait in FIFO order, one deque per priority level when the queue has
`x-max-priority`. An entry handed to a consumer or to basic.get (without
no_ack) is *unacked*: the channel holds it and later acks, requeues or rejects
it here. Requeued entries go back to their original position (ordered by
sequence number), as RabbitMQ's classic queues do. Other queue types
(queues/quorum.py) change where returns go through `_return_order`,
`_put_back` and the publisher-blocking hooks.

Invariants:
- `self._ready_bytes` is the body size of all ready entries; limits count ready
  entries only, as RabbitMQ does.
- Messages expire only at the head of the queue, the next ready entry to
  deliver (RabbitMQ's classic queue rule; with priorities a short-lived
  message waits behind a long-lived one of higher priority), so
  `next_deadline` looks at that head only.
- The queue never routes: operations that dead-letter return `DeadLetter`
  records (only when a dead-letter exchange is configured) and the virtual host
  re-routes them.
- Paging (issue 19): each priority level keeps at most `head_limit` entries
  in memory (`_ready`); once a level is past it, later entries of that level
  go to its `PageLog` (on disk, oldest first) until the log is drained, and
  the head is refilled from the log in slices of PAGE_BATCH as it empties.
  So every paged entry is newer than every in-memory entry of its level, a
  requeued entry (which came from the head) goes back into memory, and the
  head is never empty while its level has paged entries: the head rules
  above (TTL at the head, drop-head, next_deadline) need no change. Counts and
  bytes cover paged entries too; `ready_entries` lists only the in-memory ones.
- A durable queue's `journal` (leveret.store) hears of every entry exactly once
  as it arrives (`enqueued`), is handed out (`delivered`), comes back
  (`requeued`) and leaves (`removed`, `purged`), whatever the path: a new way
  for entries to leave must tell it, or they come back after a restart.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from leveret.queues.arguments import (
    MAX_EXPIRY_MS,
    QueueArguments,
    effective_queue_arguments,
    parse_queue_arguments,
    resolve_policy,
)
from leveret.queues.message import Message
from pamqp import exceptions


def _seq(entry: Entry) -> int:
    return entry.seq


class Entry:
    """A message in one queue, with the state that queue keeps for it."""

    __slots__ = ("message", "seq", "expires_at", "priority", "redelivered", "delivery_count")

    def __init__(self, message: Message, seq: int, expires_at: int | None, priority: int) -> None:
        self.message = message
        self.seq = seq
        self.expires_at = expires_at
        self.priority = priority
        self.redelivered = False
        self.delivery_count = 0

    def __repr__(self) -> str:
        return f"Entry(seq={self.seq}, rk={self.message.routing_key!r})"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message leaving `queue` for its dead-letter exchange."""

    message: Message
    reason: str  # rejected | expired | maxlen | delivery_limit
    queue: str
    dead_letter_exchange: str
    dead_letter_routing_key: str | None


# Publisher back-pressure, RabbitMQ's credit flow approximated by backlog: a
# queue that has consumers and more ready messages than FLOW_HIGH asks its
# publishers to pause reading until it is down to FLOW_LOW (the frontend also
# bounds the pause, so a stuck consumer only slows publishers, never stops them).
FLOW_HIGH = 5000
FLOW_LOW = 2500


class FlowWaiter(Protocol):
    def flow_resume(self, queue: Queue) -> None: ...


class Consumer(Protocol):
    """What a queue delivers to (a channel's subscription)."""

    consumer_tag: str
    priority: int
    no_ack: bool

    def has_credit(self) -> bool: ...

    def deliver(self, queue: Queue, entry: Entry) -> None: ...


class QueueJournal(Protocol):
    """Told every change to a durable queue's entries (leveret.store.segments.QueueLog persists them)."""

    def enqueued(self, entry: Entry) -> None: ...
    def delivered(self, entry: Entry, no_ack: bool) -> None: ...
    def requeued(self, entry: Entry) -> None: ...
    def removed(self, entry: Entry) -> None: ...
    def purged(self, entries: Iterable[Entry]) -> None: ...
    def purged_ids(self, message_ids: Iterable[int]) -> None: ...


class PageLog(Protocol):
    """Entries of one queue level kept on disk, oldest first (leveret.store.paging.PageFile)."""

    def __len__(self) -> int: ...
    def append(self, entry: Entry) -> None: ...
    def take(self, count: int) -> list[Entry]: ...
    def message_ids(self) -> list[int]: ...
    def clear(self) -> None: ...


class Pager(Protocol):
    """Where queues page to (leveret.store.paging.PageFiles); the broker wires it."""

    def open(self, queue: str) -> PageLog: ...


# Entries a level keeps in memory before it pages (RabbitMQ's default classic
# queue keeps a few thousand in RAM too); lazy queues keep only a refill slice.
HEAD_LIMIT = 4096
LAZY_HEAD_LIMIT = 256
PAGE_BATCH = 128  # entries read back per refill: a slice of a millisecond or so


def parse_expiration(expiration: str) -> int:
    """The `expiration` property as RabbitMQ reads it (rabbit_basic:parse_expiration:
    Erlang's string:to_integer, then the ten-year limit), or a 406 with its text."""
    digits = expiration[1:] if expiration[:1] in ("+", "-") else expiration
    length = len(digits) - len(digits.lstrip("0123456789"))
    prefix = f"invalid expiration '{expiration}': "
    if not length:
        error = "no_integer"
    else:
        sign = len(expiration) - len(digits)
        value = int(expiration[: sign + length])
        rest = expiration[sign + length:]
        if rest:
            error = _erlang_pair("leftover_string", f'"{rest}"', prefix)
        elif value < 0:
            error = _erlang_pair("value_negative", str(value), prefix)
        elif value > MAX_EXPIRY_MS:
            error = _erlang_pair("value_too_large", str(value), prefix)
        else:
            return value
    raise exceptions.AMQPPreconditionFailed(prefix + error)


def _erlang_pair(tag: str, value: str, prefix: str) -> str:
    """`{tag,value}` as Erlang's ~p prints it after `prefix`: a term that would
    reach column 79 breaks after the comma, the value aligned inside the brace
    (probed on 3.10.8; columns count bytes, as Erlang formats the binary: the
    property was decoded with surrogateescape, so encoding so gives them back)."""
    column = len(prefix.encode("utf-8", "surrogateescape"))
    flat = f"{{{tag},{value}}}"
    if column + len(flat.encode("utf-8", "surrogateescape")) <= 78:
        return flat
    return f"{{{tag},\n{' ' * (column + 1)}{value}}}"


def message_ttl(message: Message) -> int | None:
    """The per-message TTL from `expiration` (milliseconds as a string); None if absent or bad."""
    expiration = message.properties.expiration
    if not expiration:
        return None
    try:
        return parse_expiration(expiration)
    except exceptions.AMQPPreconditionFailed:
        return None


class Queue:
    pageable = True  # may be given a pager (see the module doc)

    def __init__(
        self,
        name: str,
        vhost: str = "/",
        *,
        durable: bool = False,
        exclusive_owner: object | None = None,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
        now_ms: int = 0,
    ) -> None:
        self.name = name
        self.vhost = vhost
        self.durable = durable
        self.exclusive_owner = exclusive_owner
        self.auto_delete = auto_delete
        self.arguments: dict[str, Any] = dict(arguments or {})
        # What the queue acts on: its arguments, or under a policy the mix of the
        # two (apply_policy), recomputed when the policy changes, never per message.
        self.args: QueueArguments = parse_queue_arguments(self.arguments, name, vhost)
        # The policy and operator policy in force (names) and their merged definition.
        self.policy: str | None = None
        self.operator_policy: str | None = None
        self.policy_definition: dict[str, Any] | None = None
        levels = (self.args.max_priority or 0) + 1
        self._ready: list[deque[Entry]] = [deque() for _ in range(levels)]
        self._ready_count = 0
        self._ready_bytes = 0
        self._unacked = 0
        self._seq = 0
        self.consumers: list[Consumer] = []
        self.exclusive_consumer: Consumer | None = None
        # Single active consumer: the active one was cancelled holding unacked
        # messages, and the next takes over once they are settled (see handover).
        self.handover_pending = False
        self.flow_waiters: set[FlowWaiter] = set()
        self.had_consumers = False
        self.last_used_ms = now_ms
        self.deleted = False
        # Statistics for management and metrics.
        self.stats = {"published": 0, "delivered": 0, "acked": 0, "redelivered": 0, "dead_lettered": 0}
        # (reason, has a dead-letter exchange) -> messages that left for it; without
        # an exchange they are dropped (RabbitMQ's dead_letter_strategy "disabled").
        self.dead_letter_counts: dict[tuple[str, bool], int] = {}
        # Set by the store on durable queues: every entry event goes to it.
        self.journal: QueueJournal | None = None
        # Set by the broker: where levels page to (None: everything stays in memory).
        self.pager: Pager | None = None
        self.lazy = self.arguments.get("x-queue-mode") in ("lazy", b"lazy")
        self.head_limit = LAZY_HEAD_LIMIT if self.lazy else HEAD_LIMIT
        self._paged: list[PageLog | None] = [None] * levels
        self._paged_count = 0

    # ---------------------------------------------------------------- policy
    def apply_policy(
        self, policy: str | None, operator_policy: str | None,
        definition: Mapping[str, Any] | None, now_ms: int,
    ) -> list[DeadLetter]:
        """A policy now applies (or none does): act on the settings it makes at once,
        as RabbitMQ's process_args_policy does: a lower limit drops or dead-letters
        the head (drop-head), a new expiry restarts its timer, and what is past its
        deadline goes. Messages already queued keep the deadline they came with."""
        self.policy, self.operator_policy = policy, operator_policy
        self.policy_definition = dict(definition) if definition else None
        before = self.args
        self.args = effective_queue_arguments(self.arguments, definition, before.queue_type)
        mode = resolve_policy(self.arguments, definition, before.queue_type).get("x-queue-mode")
        if (mode in ("lazy", b"lazy")) != self.lazy:
            self.set_lazy(not self.lazy)
        if self.args == before:
            return []
        if self.args.expires != before.expires:
            self.last_used_ms = now_ms
        self._settings_changed()
        dead: list[DeadLetter] = []
        self._enforce_drop_head(dead)
        self._drop_expired_heads(now_ms, dead)
        return dead

    # ----------------------------------------------------------------- counts
    @property
    def message_count(self) -> int:
        """Ready messages (what queue.declare-ok and basic.get-ok report)."""
        return self._ready_count

    @property
    def next_seq_id(self) -> int:
        """How many entries this queue has made (RabbitMQ's next_seq_id)."""
        return self._seq

    @property
    def unacked_count(self) -> int:
        return self._unacked

    @property
    def ready_bytes(self) -> int:
        return self._ready_bytes

    @property
    def consumer_count(self) -> int:
        return len(self.consumers)

    @property
    def is_exclusive(self) -> bool:
        return self.exclusive_owner is not None

    @property
    def paged_count(self) -> int:
        """Ready entries on disk, not in memory."""
        return self._paged_count

    def set_lazy(self, lazy: bool) -> None:
        """queue-mode lazy (argument or policy): keep only a refill slice in memory."""
        self.lazy = lazy
        self.head_limit = LAZY_HEAD_LIMIT if lazy else HEAD_LIMIT

    def page_out(self, pressure: bool) -> int:
        """Memory is short (`pressure`): keep only a refill slice in memory, paging
        the newest in-memory entries of levels that do not page yet; or it is not
        short any more. Returns the entries paged now."""
        self.head_limit = LAZY_HEAD_LIMIT if pressure or self.lazy else HEAD_LIMIT
        if self.pager is None or not pressure:
            return 0
        moved = 0
        for priority, level in enumerate(self._ready):
            excess = len(level) - self.head_limit
            if excess <= 0 or self._paged[priority] is not None:
                continue  # a level that pages already has only older entries in memory
            tail = [level.pop() for _ in range(excess)]
            paged = self._paged[priority] = self.pager.open(self.name)
            for entry in reversed(tail):
                paged.append(entry)
            moved += excess
        self._paged_count += moved
        return moved

    def ready_entries(self) -> list[Entry]:
        """Ready entries in memory, in delivery order (highest priority first)."""
        return [entry for level in reversed(self._ready) for entry in level]

    # --------------------------------------------------------------- enqueue
    def enqueue(self, message: Message, now_ms: int) -> tuple[bool, list[DeadLetter]]:
        """Accept a published message. Returns (accepted, dead letters).

        `accepted` is False when `x-overflow` is reject-publish(-dlx) and the
        queue is full: the publisher's confirm becomes a nack.
        """
        dead: list[DeadLetter] = []
        self.stats["published"] += 1
        if self.refuses_publish(len(message.body)):
            if self.args.overflow == "reject-publish-dlx":
                self._dead_letter_into(dead, message, "maxlen")
            return False, dead
        entry = self._new_entry(message, now_ms)
        if self.journal is not None:
            self.journal.enqueued(entry)
        if not self._ready_count:
            consumer = self._next_consumer()
            if consumer is not None:
                # RabbitMQ hands a message to a waiting consumer before it is
                # queued, so no TTL applies (a TTL of 0 included) and no limit drops it.
                self._deliver(consumer, entry)
                return True, dead
        self._push(entry)
        dead.extend(self.dispatch(now_ms))
        self._block_publishers_if_over()
        self._enforce_drop_head(dead)
        # A TTL of 0 expires at once when no consumer took the message.
        self._drop_expired_heads(now_ms, dead)
        return True, dead

    def _new_entry(self, message: Message, now_ms: int) -> Entry:
        self._seq += 1
        ttl = message_ttl(message)
        queue_ttl = self.args.message_ttl
        if queue_ttl is not None and (ttl is None or queue_ttl < ttl):
            ttl = queue_ttl
        max_priority = self.args.max_priority
        priority = 0
        if max_priority:
            priority = min(message.properties.priority or 0, max_priority)
        return Entry(message, self._seq, None if ttl is None else now_ms + ttl, priority)

    def _push(self, entry: Entry) -> None:
        priority = entry.priority
        self._ready_count += 1
        self._ready_bytes += len(entry.message.body)
        paged = self._paged[priority]
        if paged is None and self.pager is not None and len(self._ready[priority]) >= self.head_limit:
            paged = self._paged[priority] = self.pager.open(self.name)
        if paged is not None:
            paged.append(entry)
            self._paged_count += 1
        else:
            self._ready[priority].append(entry)

    def _refill(self, priority: int) -> None:
        """Bring paged entries of `priority` back into memory, one slice at a time."""
        paged = self._paged[priority]
        if paged is None:
            return
        level = self._ready[priority]
        if len(level) > self.head_limit - PAGE_BATCH:
            return
        before = len(paged)
        entries = paged.take(PAGE_BATCH)
        level.extend(entries)
        self._paged_count -= before - len(paged)
        # A record lost to a damaged page file (the store logged it) leaves the counts.
        self._ready_count -= before - len(paged) - len(entries)
        if not len(paged):
            paged.clear()
            self._paged[priority] = None

    def _over_limit(self, extra_bytes: int = 0, extra_count: int = 0) -> bool:
        max_length = self.args.max_length
        if max_length is not None and self._ready_count + extra_count > max_length:
            return True
        max_bytes = self.args.max_length_bytes
        return max_bytes is not None and self._ready_bytes + extra_bytes > max_bytes

    def refuses_publish(self, size: int) -> bool:
        """reject-publish(-dlx): would a message of `size` body bytes be refused now?
        A classic queue refuses what would take it over a limit."""
        if self.args.overflow == "drop-head":
            return False
        return self._over_limit(extra_bytes=size, extra_count=1)

    def _settings_changed(self) -> None:
        """`self.args` changed (a policy): a queue type with state derived from it updates it."""

    def _block_publishers_if_over(self) -> None:
        """After the ready count grew: a queue type that blocks publishers decides here."""

    def _unblock_publishers_if_below(self) -> None:
        """Before the ready count grows: a queue type that blocks publishers decides here."""

    def _enforce_drop_head(self, dead: list[DeadLetter]) -> None:
        if self.args.overflow != "drop-head":
            # reject-publish(-dlx) only refuses publishes: messages coming back
            # (requeue, recover, channel close) may leave the queue over its limit,
            # and RabbitMQ 3.10 keeps them all (rabbit_amqqueue_process:maybe_drop_head).
            return
        while self._ready_count and self._over_limit():
            entry = self._pop_head()
            if self.journal is not None:
                self.journal.removed(entry)
            self._dead_letter_into(dead, entry.message, "maxlen")

    # --------------------------------------------------------------- delivery
    def _head_level(self) -> deque[Entry] | None:
        for level in reversed(self._ready):
            if level:
                return level
        return None

    def _pop_head(self) -> Entry:
        level = self._head_level()
        assert level is not None
        entry = level.popleft()
        self._ready_count -= 1
        self._ready_bytes -= len(entry.message.body)
        if self._paged_count:
            self._refill(entry.priority)
        return entry

    def _drop_expired_heads(self, now_ms: int, dead: list[DeadLetter]) -> None:
        # In delivery order, stopping at the first live message: a lower priority
        # is reached only when every higher one has expired (rabbit_priority_queue's
        # dropwhile moves on only from a level it emptied).
        for level in reversed(self._ready):
            while level and level[0].expires_at is not None and level[0].expires_at <= now_ms:
                entry = level.popleft()
                self._ready_count -= 1
                self._ready_bytes -= len(entry.message.body)
                if self._paged_count:
                    self._refill(entry.priority)
                if self.journal is not None:
                    self.journal.removed(entry)
                self._dead_letter_into(dead, entry.message, "expired")
            if level:
                return

    def _next_consumer(self) -> Consumer | None:
        """The consumer to deliver to: highest priority with credit, round-robin within it."""
        consumers = self.consumers
        if self.args.single_active_consumer:
            if self.handover_pending:
                return None
            return consumers[0] if consumers and consumers[0].has_credit() else None
        for consumer in consumers:
            if consumer.has_credit():
                return consumer
        return None

    def _rotate(self, consumer: Consumer) -> None:
        """Move `consumer` behind the others of its priority (round-robin)."""
        consumers = self.consumers
        index = consumers.index(consumer)
        end = index
        while end + 1 < len(consumers) and consumers[end + 1].priority == consumer.priority:
            end += 1
        if end != index:
            consumers.insert(end, consumers.pop(index))

    def dispatch(self, now_ms: int) -> list[DeadLetter]:
        """Deliver ready messages while some consumer has credit."""
        dead: list[DeadLetter] = []
        if not self.consumers:
            return dead
        while self._ready_count:
            consumer = self._next_consumer()
            if consumer is None:
                break
            level = self._head_level()
            assert level is not None
            head = level[0]
            if head.expires_at is not None and head.expires_at <= now_ms:
                self._drop_expired_heads(now_ms, dead)
                continue
            self._deliver(consumer, self._pop_head())
        if self.flow_waiters and self._ready_count <= FLOW_LOW:
            self.release_flow()
        return dead

    def wants_flow_control(self) -> bool:
        """Publishers should pause: consumers are here but falling behind."""
        return self._ready_count > FLOW_HIGH and bool(self.consumers)

    def release_flow(self) -> None:
        waiters, self.flow_waiters = self.flow_waiters, set()
        for waiter in waiters:
            waiter.flow_resume(self)

    def _deliver(self, consumer: Consumer, entry: Entry) -> None:
        self._hand_out(entry, no_ack=consumer.no_ack)
        if not self.args.single_active_consumer:
            self._rotate(consumer)
        consumer.deliver(self, entry)

    def _hand_out(self, entry: Entry, no_ack: bool) -> None:
        self.stats["delivered"] += 1
        if entry.redelivered:
            self.stats["redelivered"] += 1
        if not no_ack:
            self._unacked += 1
        if self.journal is not None:
            self.journal.delivered(entry, no_ack)

    def get(self, now_ms: int, no_ack: bool) -> tuple[Entry | None, list[DeadLetter]]:
        """basic.get: the head message, skipping (and dead-lettering) expired ones."""
        dead: list[DeadLetter] = []
        self.last_used_ms = now_ms
        self._drop_expired_heads(now_ms, dead)
        if not self._ready_count:
            return None, dead
        entry = self._pop_head()
        self._hand_out(entry, no_ack)
        # RabbitMQ drops what expired behind it before it counts the rest
        # (rabbit_amqqueue_process:fetch), so get-ok's message_count excludes them.
        self._drop_expired_heads(now_ms, dead)
        return entry, dead

    # ------------------------------------------------------ settling unacked
    def ack(self, entries: Iterable[Entry]) -> None:
        journal = self.journal
        for entry in entries:
            self._unacked -= 1
            self.stats["acked"] += 1
            if journal is not None:
                journal.removed(entry)

    def requeue(self, entries: Iterable[Entry], now_ms: int, *, consumer_gone: bool = False) -> list[DeadLetter]:
        """Unacked entries come back, each counted as a delivery; over x-delivery-limit
        they dead-letter. `consumer_gone`: the channel holding them closed (else the
        client returned them); a classic queue puts both back in their original place."""
        dead: list[DeadLetter] = []
        limit = self.args.delivery_limit
        returning: list[Entry] = []
        journal = self.journal
        for entry in self._return_order(entries):
            self._unacked -= 1
            if self.deleted:
                if journal is not None:
                    journal.removed(entry)
                continue
            entry.redelivered = True
            entry.delivery_count += 1
            if limit is not None and entry.delivery_count > limit:
                if journal is not None:
                    journal.removed(entry)
                self._dead_letter_into(dead, entry.message, "delivery_limit")
                continue
            if journal is not None:
                journal.requeued(entry)
            returning.append(entry)
        self._unblock_publishers_if_below()
        if returning:
            self._put_back(returning, consumer_gone)
        self._block_publishers_if_over()
        # RabbitMQ's requeue_and_run: drop-head drops over the limit, then what expired
        # while it was out (its deadline stands), then deliver.
        self._enforce_drop_head(dead)
        self._drop_expired_heads(now_ms, dead)
        dead.extend(self.dispatch(now_ms))
        return dead

    def _return_order(self, entries: Iterable[Entry]) -> list[Entry]:
        return sorted(entries, key=_seq)

    def _put_back(self, returning: list[Entry], consumer_gone: bool) -> None:
        """Make `returning` (in `_return_order`) ready again: here, where each was."""
        by_priority: dict[int, list[Entry]] = {}
        for entry in returning:
            by_priority.setdefault(entry.priority, []).append(entry)
        for priority, batch in by_priority.items():
            self._insert_by_seq(priority, batch)

    def _insert_by_seq(self, priority: int, batch: list[Entry]) -> None:
        """Put `batch` (ascending seq) back in sequence order: usually all before the head."""
        level = self._ready[priority]
        if not level or batch[-1].seq < level[0].seq:
            level.extendleft(reversed(batch))
        elif batch[0].seq > level[-1].seq:
            level.extend(batch)
        else:  # interleaved: one linear merge, not one scan per entry
            merged = list(heapq.merge(level, batch, key=_seq))
            level.clear()
            level.extend(merged)
        self._ready_count += len(batch)
        self._ready_bytes += sum(len(entry.message.body) for entry in batch)

    def reject(self, entries: Iterable[Entry]) -> list[DeadLetter]:
        """Rejected or nacked without requeue: dead-letter with reason `rejected`."""
        dead: list[DeadLetter] = []
        for entry in entries:
            self._unacked -= 1
            if self.journal is not None:
                self.journal.removed(entry)
            if not self.deleted:
                self._dead_letter_into(dead, entry.message, "rejected")
        return dead

    # ---------------------------------------------------------------- timers
    def next_deadline(self) -> int | None:
        level = self._head_level()
        deadline = level[0].expires_at if level is not None else None
        expiry = self.expiry_deadline()
        if expiry is not None and (deadline is None or expiry < deadline):
            deadline = expiry
        return deadline

    def expiry_deadline(self) -> int | None:
        """When `x-expires` deletes this unused queue (None while it has consumers)."""
        if self.args.expires is None or self.consumers:
            return None
        return self.last_used_ms + self.args.expires

    def expire_messages(self, now_ms: int) -> list[DeadLetter]:
        dead: list[DeadLetter] = []
        self._drop_expired_heads(now_ms, dead)
        return dead

    # ------------------------------------------------------------- consumers
    def add_consumer(self, consumer: Consumer, exclusive: bool, now_ms: int) -> None:
        self.last_used_ms = now_ms
        # Keep higher priorities first; equal priorities in arrival order.
        index = len(self.consumers)
        if not self.args.single_active_consumer:
            while index and self.consumers[index - 1].priority < consumer.priority:
                index -= 1
        self.consumers.insert(index, consumer)
        if exclusive:
            self.exclusive_consumer = consumer
        self.had_consumers = True
        self.handover_pending = False  # RabbitMQ re-elects on a new consumer (observed)

    def remove_consumer(self, consumer: Consumer, now_ms: int, holding: bool = False) -> None:
        """`holding`: the consumer still has unacked messages. If it was the single
        active one, the next waits for `handover` (when those are settled), so a
        redelivery never overtakes what was queued behind it: RabbitMQ 3.10 does
        not switch either (observed), though it may then never switch at all."""
        if self.flow_waiters and len(self.consumers) <= 1:
            self.release_flow()
        if (holding and self.args.single_active_consumer and self.consumers
                and self.consumers[0] is consumer):
            self.handover_pending = True
        if consumer in self.consumers:
            self.consumers.remove(consumer)
        if self.exclusive_consumer is consumer:
            self.exclusive_consumer = None
        self.last_used_ms = now_ms

    def touch(self, now_ms: int) -> None:
        self.last_used_ms = now_ms

    # ------------------------------------------------------------ lifecycle
    def purge(self) -> int:
        if self.flow_waiters:
            self.release_flow()
        count = self._ready_count
        if self.journal is not None and count:
            self.journal.purged(self.ready_entries())
        for level in self._ready:
            level.clear()
        for priority, paged in enumerate(self._paged):
            if paged is not None:
                if self.journal is not None:
                    self.journal.purged_ids(paged.message_ids())
                paged.clear()
                self._paged[priority] = None
        self._paged_count = 0
        self._ready_count = 0
        self._ready_bytes = 0
        return count

    def mark_deleted(self) -> int:
        """The queue is gone: ready messages are dropped (not dead-lettered), as in RabbitMQ."""
        self.deleted = True
        return self.purge()

    def restore(self, entries: list[Entry]) -> list[DeadLetter]:
        """Entries recovered from the store, in seq order, ready again; those
        already over x-delivery-limit dead-letter as a requeue would make them."""
        dead: list[DeadLetter] = []
        limit = self.args.delivery_limit
        for entry in entries:
            if limit is not None and entry.delivery_count > limit:
                if self.journal is not None:
                    self.journal.removed(entry)
                self._dead_letter_into(dead, entry.message, "delivery_limit")
                continue
            self._push(entry)
        if entries:
            self._seq = max(self._seq, entries[-1].seq)
        self._block_publishers_if_over()  # as RabbitMQ tells channels that register anew
        return dead

    def keep_dead_letter(self, record: DeadLetter, now_ms: int) -> bool:
        """`record`, dead-lettered here, reached no queue: keep it to try again?
        A classic queue drops it (at-most-once)."""
        return False

    def _dead_letter_into(self, dead: list[DeadLetter], message: Message, reason: str) -> None:
        exchange = self.args.dead_letter_exchange
        key = (reason, exchange is not None)
        self.dead_letter_counts[key] = self.dead_letter_counts.get(key, 0) + 1
        if exchange is None:
            return
        self.stats["dead_lettered"] += 1
        dead.append(
            DeadLetter(message, reason, self.name, exchange, self.args.dead_letter_routing_key)
        )
