"""Message deduplication (the rabbitmq-message-deduplication plugin's interface).

A message names itself with the `x-deduplication-header` header; messages
without it are never deduplicated.

Queue level (`x-message-deduplication` queue argument): a message whose
header value belongs to a message still in the queue is refused, and the
publisher's confirm is a basic.nack (the plugin answers `{true, reject}` to
RabbitMQ 3.8-3.12's is_duplicate). A message is "in the queue" from enqueue
until it leaves: acked, delivered to a no-ack consumer or basic.get, rejected
or dead-lettered for any reason (rejected, expired, maxlen, delivery limit),
purged, or the queue deleted. Requeued messages stay. As in the plugin, a key
also lapses when the message's TTL runs out, even if the message is still
stuck behind a head that does not expire.

Exchange level: see leveret.exchanges.deduplication (it shares `deduplication_key`).

Values compare as the plugin's cache keys do (Erlang terms, exact match): an
integer is not the float of the same value, a string and a byte array with
the same bytes are the same key, a void header is a key of its own.

Where we differ from the plugin, and why:
- a message handed to a no-ack consumer straight from publish leaves the queue
  (the plugin keeps its key until the TTL, as if it were still queued);
- a message leaving removes its key only if that key is still its own (the
  plugin removes the value even when a later message now holds it);
- a full exchange cache evicts the oldest entry after the expired ones (the
  plugin evicts an arbitrary one, and says FIFO is what it would prefer);
- the queue argument works on quorum queues too (the plugin ignores them).
"""

from __future__ import annotations

import datetime
import decimal
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

from leveret.queues.message import Message
from leveret.queues.queue import DeadLetter, Entry, Queue

HEADER = "x-deduplication-header"
QUEUE_ARGUMENT = "x-message-deduplication"


def deduplication_key(headers: Mapping[str, Any] | None) -> Hashable | None:
    """The message's deduplication key, or None when it has no such header."""
    if not headers or HEADER not in headers:
        return None
    return _key(headers[HEADER])


def _key(value: Any) -> Hashable:
    if value is None:
        return ("void",)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, float):
        return ("float", value)
    if isinstance(value, str):
        return ("bin", value.encode("utf-8", "surrogateescape"))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ("bin", bytes(value))
    if isinstance(value, decimal.Decimal):
        return ("decimal", value.as_tuple())
    if isinstance(value, datetime.datetime):
        return ("int", int(value.timestamp()))  # an AMQP timestamp is an integer to Erlang
    if isinstance(value, Mapping):
        return ("table", tuple((str(k), _key(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return ("array", tuple(_key(v) for v in value))
    return ("other", repr(value))


def deduplicates(arguments: Mapping[str, Any]) -> bool:
    """Whether queue arguments turn deduplication on. The plugin reads the value
    with Elixir truthiness: anything but false and void (even "false") is on."""
    value = arguments.get(QUEUE_ARGUMENT)
    return value is not None and value is not False


class DeduplicatingQueue(Queue):
    """A Queue declared with `x-message-deduplication` (see the module docstring).

    Theory of operation. `held` maps each deduplication key to the message
    that holds it and that message's deadline (its entry's TTL deadline, or
    None). A message is registered when its entry is made, before it can be
    delivered or dropped, and unregistered wherever a message leaves the
    queue: `_hand_out` without ack, `ack`, `_dead_letter_into` (every reject,
    expiry, drop-head and delivery-limit drop goes through it, dead-letter
    exchange or not) and `purge`. Unregistering compares the message by
    identity, so a message that never got in (a refused duplicate, a
    reject-publish-dlx) cannot remove the key of the one that did.
    """

    # `held` keeps each message in memory (and matches it by identity): paging would save nothing.
    pageable = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.held: dict[Hashable, tuple[Message, int | None]] = {}

    def is_duplicate(self, message: Message, now_ms: int) -> bool:
        key = deduplication_key(message.properties.headers)
        if key is None or key not in self.held:
            return False
        deadline = self.held[key][1]
        return deadline is None or deadline > now_ms

    def enqueue(self, message: Message, now_ms: int) -> tuple[bool, list[DeadLetter]]:
        # RabbitMQ 3.10 checks the overflow rule before asking whether the
        # message is a duplicate (rabbit_amqqueue_process:maybe_deliver_or_enqueue).
        if self.refuses_publish(len(message.body)):
            return super().enqueue(message, now_ms)
        if self.is_duplicate(message, now_ms):
            return False, []
        return super().enqueue(message, now_ms)

    def _new_entry(self, message: Message, now_ms: int) -> Entry:
        entry = super()._new_entry(message, now_ms)
        key = deduplication_key(message.properties.headers)
        if key is not None:
            self.held[key] = (message, entry.expires_at)
        return entry

    def restore(self, entries: list[Entry]) -> list[DeadLetter]:
        # Messages recovered from the store (leveret.store) hold their keys again.
        for entry in entries:
            key = deduplication_key(entry.message.properties.headers)
            if key is not None:
                self.held[key] = (entry.message, entry.expires_at)
        return super().restore(entries)

    def _leave(self, message: Message) -> None:
        if not self.held:
            return
        key = deduplication_key(message.properties.headers)
        if key is not None:
            held = self.held.get(key)
            if held is not None and held[0] is message:
                del self.held[key]

    def _hand_out(self, entry: Entry, no_ack: bool) -> None:
        super()._hand_out(entry, no_ack)
        if no_ack:
            self._leave(entry.message)

    def ack(self, entries: Iterable[Entry]) -> None:
        entries = list(entries)
        super().ack(entries)
        for entry in entries:
            self._leave(entry.message)

    def _dead_letter_into(self, dead: list[DeadLetter], message: Message, reason: str) -> None:
        super()._dead_letter_into(dead, message, reason)
        self._leave(message)

    def purge(self) -> int:
        # The plugin flushes the whole cache, keys of unacked messages too.
        self.held.clear()
        return super().purge()
