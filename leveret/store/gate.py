"""Replies held for the store: publisher confirms and tx.commit-ok.

A channel's `ReplyGate` holds each such reply with the store position it
must wait for, and releases held replies in the order they were made
(RabbitMQ's order) once what came before them is synced. A run of acks goes
out as one basic.ack with multiple=true for its last tag: every earlier tag
is settled by then. If the store failed, held acks it never synced become nacks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

ACK, NACK, COMMIT_OK = 0, 1, 2


class Durability(Protocol):
    """The part of the store a gate reads (leveret.store.Store)."""

    @property
    def position(self) -> int: ...
    @property
    def synced(self) -> int: ...
    @property
    def durable(self) -> int: ...
    @property
    def failure(self) -> BaseException | None: ...

    def when_durable(self, ticket: int, callback: Callable[[], None]) -> None: ...


class ReplyGate:
    """One channel's held replies; see the module doc."""

    __slots__ = ("store", "send", "held", "_waiting")

    def __init__(self, store: Durability, send: Callable[[int, int, bool], None]) -> None:
        self.store = store
        self.send = send  # (ACK | NACK | COMMIT_OK, delivery tag, multiple)
        self.held: deque[tuple[int, int, int]] = deque()  # (ticket, kind, tag)
        self._waiting = False

    def hold(self, ticket: int, kind: int, tag: int) -> None:
        self.held.append((ticket, kind, tag))
        if not self._waiting:
            self._waiting = True
            self.store.when_durable(ticket, self._release)

    def _release(self) -> None:
        self._waiting = False
        store, held, send = self.store, self.held, self.send
        failed = store.failure is not None
        durable = store.position if failed else store.durable
        last_ack, run = 0, 0
        while held and held[0][0] <= durable:
            ticket, kind, tag = held.popleft()
            if failed and kind == ACK and ticket > store.synced:
                kind = NACK
            if kind == ACK:
                last_ack, run = tag, run + 1
                continue
            if run:
                send(ACK, last_ack, run > 1)
                run = 0
            send(kind, tag, False)
        if run:
            send(ACK, last_ack, run > 1)
        if held:
            self._waiting = True
            store.when_durable(held[0][0], self._release)
