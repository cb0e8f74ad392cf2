"""Queue fields that RabbitMQ's classic queues report from their own process,
given the values leveret has for them (a quorum queue reports none of these).

leveret keeps every message in memory, so in backing_queue_status everything is
in q4 (RabbitMQ's in-RAM queue) and nothing in q1-q3 or delta. Left out: the
queue's `memory` (leveret does not measure one queue's share of the heap),
`next_deliver_seq_id` and `avg_ack_ingress_rate` (not counted).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from leveret.queues.arguments import describe
from leveret.queues.queue import Queue


def backing_queue_status(queue: Queue, rate: Callable[[str], float]) -> dict[str, Any]:
    """`rate(field)`: the queue's rate of a message_stats field, per second."""
    ready = queue.message_count
    return {
        "avg_ack_egress_rate": rate("ack"),
        "avg_egress_rate": rate("deliver_get"),
        "avg_ingress_rate": rate("publish"),
        "delta": ["delta", "undefined", 0, 0, "undefined"],
        "len": ready,
        "mode": describe(queue.arguments["x-queue-mode"]) if "x-queue-mode" in queue.arguments else "default",
        "next_seq_id": queue.next_seq_id,
        "q1": 0,
        "q2": 0,
        "q3": 0,
        "q4": ready,
        "target_ram_count": "infinity",
        "version": 1,
    }


def rfc3339(ms: int) -> str:
    """A wall time as RabbitMQ's management prints it (calendar:system_time_to_rfc3339, ms)."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")
