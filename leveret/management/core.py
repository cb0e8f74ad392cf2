"""What management and metrics read: the broker, its AMQP server, counters and rates.

Theory of operation. Nothing here is on the message path. Counters are kept
where things happen (queues count publish/deliver/ack/redeliver and
dead-letters per reason, channels count publishes and fold them into
`Broker.counters` when they close, virtual hosts keep the counters of deleted
queues), so every total below is a sum computed when asked, and never goes
backwards. `Management.sample()` runs every `sample_interval` seconds on the
broker's loop: it keeps the previous sample to turn counters into per-second
rates (RabbitMQ's `*_details.rate`, from its 5 s statistics interval) and
watches dead-letter rates per queue for storms, logging when one starts and
when it ends.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from leveret.broker.broker import Broker
from leveret.broker.vhost import VirtualHost
from leveret.queues.queue import Queue

if TYPE_CHECKING:
    from leveret.server.channel import Channel
    from leveret.server.connection import Connection
    from leveret.server.shell import Server

log = logging.getLogger("leveret.management")

SAMPLE_INTERVAL = 5.0  # seconds, RabbitMQ's collect_statistics_interval
STORM_RATE = 100.0  # dead-letters per second from one queue for one reason

# Queue.stats key -> RabbitMQ's message_stats field
QUEUE_STATS = (("published", "publish"), ("delivered", "deliver_get"), ("acked", "ack"),
               ("redelivered", "redeliver"))
DEAD_LETTER_REASONS = ("expired", "rejected", "maxlen", "delivery_limit")
# A queue none of whose counters moved over a whole sample is idle.
ACTIVITY_FIELDS = ("publish", "deliver_get", "ack", "messages_ready", "messages_unacknowledged")


@dataclass(frozen=True, slots=True)
class LiveConnection:
    connection: Connection
    peer_host: str
    peer_port: int
    host: str
    port: int


def _address(value: Any) -> tuple[str, int]:
    if isinstance(value, tuple) and len(value) >= 2:
        return str(value[0]), int(value[1])
    return "", 0


def process_memory_bytes() -> int:
    """Resident set size: /proc on Linux, else the peak from getrusage."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
    except (ImportError, OSError):
        return 0


class Management:
    def __init__(
        self,
        broker: Broker,
        server: Server | None = None,
        *,
        node: str | None = None,
        sample_interval: float = SAMPLE_INTERVAL,
        storm_rate: float = STORM_RATE,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.broker = broker
        self.server = server
        self.node = node or f"leveret@{socket.gethostname()}"
        self.sample_interval = sample_interval
        self.storm_rate = storm_rate
        self.monotonic = monotonic
        self.started = monotonic()
        self.listeners: list[tuple[str, str, int]] = []  # (protocol, host, port)
        self.rates: dict[tuple[Any, ...], float] = {}
        self._previous: tuple[float, dict[tuple[Any, ...], int]] | None = None
        self._storms: set[tuple[str, str, str]] = set()
        self._idle_since: dict[Queue, int] = {}  # wall ms of the first sample that saw it idle

    # ------------------------------------------------------------ objects
    def vhosts(self) -> list[VirtualHost]:
        return list(self.broker.vhosts.values())

    def queues(self) -> Iterator[Queue]:
        for vhost in self.broker.vhosts.values():
            yield from vhost.queues.values()

    def connections(self) -> list[LiveConnection]:
        if self.server is None:
            return []
        live = []
        for protocol in list(self.server.protocols):
            connection = protocol.connection
            transport = protocol.transport
            if connection is None or transport is None:
                continue
            peer_host, peer_port = _address(transport.get_extra_info("peername"))
            host, port = _address(transport.get_extra_info("sockname"))
            live.append(LiveConnection(connection, peer_host, peer_port, host, port))  # type: ignore[arg-type]
        live.sort(key=lambda c: c.connection.name)
        return live

    def channels(self) -> Iterator[tuple[LiveConnection, Channel]]:
        for live in self.connections():
            for number in sorted(live.connection.channels):
                yield live, live.connection.channels[number]

    def unacked_by_queue(self) -> dict[Queue, tuple[int, int]]:
        """Queue -> (unacked messages, their body bytes), from the channels holding them."""
        held: dict[Queue, tuple[int, int]] = {}
        for _, channel in self.channels():
            for queue, entry, _ in channel.unacked.values():
                count, size = held.get(queue, (0, 0))
                held[queue] = (count + 1, size + len(entry.message.body))
        return held

    # ------------------------------------------------------------- totals
    def message_totals(self) -> dict[str, int]:
        """Broker-wide message_stats counts (RabbitMQ's overview field names)."""
        counters = self.broker.counters
        totals = {
            "publish": counters.published, "confirm": counters.confirmed,
            "return_unroutable": counters.returned_unroutable, "drop_unroutable": counters.dropped_unroutable,
            "deliver_get": 0, "ack": 0, "redeliver": 0,
        }
        for _, channel in self.channels():
            totals["publish"] += channel.published
            totals["confirm"] += channel.publish_seq if channel.confirm else 0
            totals["return_unroutable"] += channel.returned_unroutable
            totals["drop_unroutable"] += channel.dropped_unroutable
        for vhost in self.broker.vhosts.values():
            stat_sets = [vhost.removed_queue_stats, *(q.stats for q in vhost.queues.values())]
            for stats in stat_sets:
                for key, field in QUEUE_STATS[1:]:
                    totals[field] += stats.get(key, 0)
        return totals

    def churn_totals(self) -> dict[str, int]:
        counters = self.broker.counters
        return {
            "channel_closed": counters.channels_closed, "channel_created": counters.channels_opened,
            "connection_closed": counters.connections_closed, "connection_created": counters.connections_opened,
            "queue_created": sum(v.queues_created for v in self.broker.vhosts.values()),
            "queue_deleted": sum(v.queues_deleted for v in self.broker.vhosts.values()),
        }

    def object_totals(self) -> dict[str, int]:
        connections = self.connections()
        channels = [c for live in connections for c in live.connection.channels.values()]
        return {
            "connections": len(connections),
            "channels": len(channels),
            "consumers": sum(len(c.consumers) for c in channels),
            "exchanges": sum(len(v.exchanges) for v in self.broker.vhosts.values()),
            "queues": sum(len(v.queues) for v in self.broker.vhosts.values()),
        }

    def uptime_ms(self) -> int:
        return int((self.monotonic() - self.started) * 1000)

    # -------------------------------------------------------------- rates
    def rate(self, *key: Any) -> float:
        return round(self.rates.get(key, 0.0), 1)

    def _counts(self) -> dict[tuple[Any, ...], int]:
        counts: dict[tuple[Any, ...], int] = {}
        for field, value in self.message_totals().items():
            counts[("overview", field)] = value
        ready = unacked = 0
        for queue in self.queues():
            base = ("queue", queue.vhost, queue.name)
            for key, field in QUEUE_STATS:
                counts[(*base, field)] = queue.stats.get(key, 0)
            counts[(*base, "messages_ready")] = queue.message_count
            counts[(*base, "messages_unacknowledged")] = queue.unacked_count
            counts[(*base, "messages")] = queue.message_count + queue.unacked_count
            ready += queue.message_count
            unacked += queue.unacked_count
            for (reason, has_exchange), value in queue.dead_letter_counts.items():
                if not has_exchange:
                    continue  # dropped, not dead-lettered: no storm of those
                dead_key = (*base, "dead_lettered", reason)
                counts[dead_key] = counts.get(dead_key, 0) + value
        counts[("overview", "messages_ready")] = ready
        counts[("overview", "messages_unacknowledged")] = unacked
        counts[("overview", "messages")] = ready + unacked
        for field, value in self.churn_totals().items():
            counts[("overview", field)] = value
        for vhost in self.broker.vhosts.values():
            vhost_ready = sum(q.message_count for q in vhost.queues.values())
            vhost_unacked = sum(q.unacked_count for q in vhost.queues.values())
            counts[("vhost", vhost.name, "messages_ready")] = vhost_ready
            counts[("vhost", vhost.name, "messages_unacknowledged")] = vhost_unacked
            counts[("vhost", vhost.name, "messages")] = vhost_ready + vhost_unacked
        for live, channel in self.channels():
            channel_key = ("channel", live.connection.name, channel.number)
            counts[(*channel_key, "publish")] = channel.published
            counts[(*channel_key, "deliver_get")] = channel.delivery_tag
            counts[(*channel_key, "confirm")] = channel.publish_seq if channel.confirm else 0
        return counts

    def sample(self) -> None:
        """Take a sample now: update rates and look for dead-letter storms."""
        now = self.monotonic()
        counts = self._counts()
        previous = self._previous
        self._previous = (now, counts)
        self._note_idle(counts, previous[1] if previous is not None else None)
        if previous is None or now <= previous[0]:
            return
        elapsed = now - previous[0]
        before = previous[1]
        self.rates = {key: (value - before.get(key, value)) / elapsed for key, value in counts.items()}
        self._watch_storms()

    def idle_since(self, queue: Queue) -> int | None:
        """When `queue` was first seen idle (RabbitMQ reports idle_since once
        its queue process, quiet for a while, hibernates); None while busy."""
        return self._idle_since.get(queue)

    def _note_idle(self, counts: dict[tuple[Any, ...], int], before: dict[tuple[Any, ...], int] | None) -> None:
        now_ms = self.broker.now_ms()
        idle: dict[Queue, int] = {}
        for queue in self.queues():
            base = ("queue", queue.vhost, queue.name)
            if before is not None and all(before.get((*base, f)) == counts[(*base, f)] for f in ACTIVITY_FIELDS):
                idle[queue] = self._idle_since.get(queue, now_ms)
        self._idle_since = idle  # deleted queues drop out

    def _watch_storms(self) -> None:
        storms: set[tuple[str, str, str]] = set()
        for key, rate in self.rates.items():
            if key[0] != "queue" or len(key) != 5 or key[3] != "dead_lettered":
                continue
            storm = (key[1], key[2], key[4])
            if rate >= self.storm_rate or (storm in self._storms and rate >= self.storm_rate / 2):
                storms.add(storm)
                if storm not in self._storms:
                    log.warning("dead-letter storm", extra={
                        "event": "dead_letter_storm", "vhost": storm[0], "queue": storm[1],
                        "reason": storm[2], "rate": round(rate, 1),
                    })
        for vhost, queue, reason in self._storms - storms:
            log.warning("dead-letter storm ended", extra={
                "event": "dead_letter_storm_ended", "vhost": vhost, "queue": queue, "reason": reason,
            })
        self._storms = storms
