"""The broker core: virtual hosts, the clock and the limits every frontend shares.

No I/O here: the asyncio shell (leveret.server.shell) and the playground both
drive a Broker, the first with the system clock, the second with a virtual one.
Persistence is optional: `attach_store` hands durable state to a leveret.store
Store (which does its own file I/O); without one everything lives in memory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from pamqp import exceptions

from leveret.broker.admin import Administration
from leveret.broker.auth import AccessControl
from leveret.broker.definitions import load_definitions
from leveret.broker.limits import DEFAULT_DISK_FREE_LIMIT, DEFAULT_WATERMARK, ResourceAlarms
from leveret.broker.vhost import VirtualHost
from leveret.clock import Clock, SystemClock
from leveret.queues.message import Message
from leveret.queues.queue import Entry
from leveret.store import Store
from leveret.store.paging import PageFiles

log = logging.getLogger("leveret.broker")

DIRECT_REPLY_PREFIX = "amq.rabbitmq.reply-to."

# RabbitMQ 3.10's default max_message_size (128 MiB).
DEFAULT_MAX_MESSAGE_SIZE = 134_217_728


PAGING_RATIO = 0.5  # RabbitMQ's vm_memory_high_watermark_paging_ratio


@dataclass(slots=True)
class BrokerSettings:
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    frame_max: int = 131_072
    channel_max: int = 2047
    heartbeat: int = 60
    # Seed users (name -> password) with full access to '/'; `Broker.access` holds
    # the users and permissions actually in force (a definitions file replaces them).
    users: dict[str, str] = field(default_factory=lambda: {"guest": "guest"})
    loopback_users: tuple[str, ...] = ("guest",)
    connection_max: int | None = None  # RabbitMQ's connection_max (unlimited)
    # vm_memory_high_watermark: a float is a fraction of memory, an int (or "1GiB") bytes.
    memory_high_watermark: float | int | str = DEFAULT_WATERMARK
    # disk_free_limit.absolute: below this many free bytes publishers block.
    disk_free_limit: int = DEFAULT_DISK_FREE_LIMIT
    consumer_timeout: int | None = 1_800_000  # ms a delivery may stay unacked; None: forever
    handshake_timeout: float = 10.0  # s from accept to connection.open
    tick_interval: float = 1.0  # s between the shell's housekeeping ticks (memory, timeouts)


@dataclass(slots=True)
class BrokerCounters:
    """Totals since start, for management and metrics. The frontend increments
    them where things happen; a closing channel folds its own counts in here."""

    connections_opened: int = 0
    connections_closed: int = 0
    channels_opened: int = 0
    channels_closed: int = 0
    published: int = 0
    confirmed: int = 0
    returned_unroutable: int = 0
    dropped_unroutable: int = 0


class Broker:
    def __init__(self, clock: Clock | None = None, settings: BrokerSettings | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self.settings = settings or BrokerSettings()
        self.vhosts: dict[str, VirtualHost] = {"/": VirtualHost("/")}
        # Direct reply-to: token -> (channel, consumer tag). The channel is the
        # frontend's; the core only hands it the message.
        self.direct_reply_to: dict[str, tuple[Any, str]] = {}
        self.counters = BrokerCounters()
        self.store: Store | None = None  # see attach_store
        self.access = AccessControl.with_passwords(self.settings.users, self.vhosts)
        self.admin = Administration(self)  # runtime changes to users, vhosts, permissions
        self.resources = ResourceAlarms()
        # Queues page to a temporary directory until a store gives them its own.
        self.pager = PageFiles()
        self.vhosts["/"].pager = self.pager
        self.paging_pressure = False  # see memory_pressure

    def attach_store(self, store: Store) -> None:
        """Take back what `store` recovered (durable exchanges, queues, bindings and
        persistent messages) and keep durable changes in it from now on. Call it
        before clients connect; the server shell starts the store's writer thread."""
        now = self.now_ms()
        # Users, vhosts, permissions, limits and parameters first: a vhost made
        # and deleted at run time stays as it was left.
        snapshot = store.admin.load()
        if snapshot is not None:
            for warning in self.admin.restore(snapshot):
                log.warning("recovery: %s", warning)
        self.admin.journal = store.admin
        definitions = store.definitions()
        # A vhost made at run time (not in --definitions) comes back with its durable
        # topology; made before `self.store` is set, add_vhost does not attach it twice.
        for kind in ("exchanges", "queues", "bindings", "policies", "parameters"):
            for item in definitions[kind]:
                self.add_vhost(item["vhost"])
        self.store = store
        self.pager.close()
        self.pager = PageFiles(store.directory)
        for vhost in self.vhosts.values():
            vhost.pager = self.pager
            for queue in vhost.queues.values():
                if queue.pageable and not queue.paged_count:
                    queue.pager = self.pager
        for vhost in self.vhosts.values():
            for warning in load_definitions(vhost, definitions, now_ms=now).warnings:
                log.warning("recovery: %s", warning)
            vhost.attach_journal(store, now)
        store.recovery_done()

    def memory_pressure(self, used: int, limit: int) -> None:
        """Past PAGING_RATIO of the memory limit every queue keeps only a refill slice
        in memory and pages the rest (RabbitMQ's vm_memory_high_watermark_paging_ratio),
        so the watermark alarm is the last line of defence, not the first."""
        pressure = limit > 0 and used > limit * PAGING_RATIO
        if not pressure and not self.paging_pressure:
            return
        self.paging_pressure = pressure
        for vhost in self.vhosts.values():
            for queue in vhost.queues.values():
                queue.page_out(pressure)

    def add_vhost(self, name: str) -> VirtualHost:
        """The vhost `name`, created if missing (and journalled like the others)."""
        vhost = self.vhosts.get(name)
        if vhost is None:
            vhost = self.vhosts[name] = VirtualHost(name)
            vhost.pager = self.pager
            if self.store is not None:
                vhost.attach_journal(self.store, self.now_ms())
        return vhost

    def vhost(self, name: str) -> VirtualHost:
        vhost = self.vhosts.get(name)
        if vhost is None:
            raise exceptions.AMQPNotAllowed(f"vhost {name} not found")
        return vhost

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def next_deadline(self) -> int | None:
        deadlines = [d for d in (v.next_deadline() for v in self.vhosts.values()) if d is not None]
        return min(deadlines) if deadlines else None

    def run_timers(self) -> None:
        now = self.clock.now_ms()
        for vhost in self.vhosts.values():
            vhost.run_timers(now)

    def deliver_direct_reply(self, routing_key: str, message: Message) -> bool:
        """A publish to `amq.rabbitmq.reply-to.TOKEN` goes straight to that consumer."""
        target = self.direct_reply_to.get(routing_key[len(DIRECT_REPLY_PREFIX):])
        if target is None:
            return False
        channel, consumer_tag = target
        channel.deliver(None, None, Entry(message, 0, None, 0), consumer_tag=consumer_tag)
        return True
