"""Which class carries a new queue's rules: its type's, with deduplication on top."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from leveret.queues.dedup import DeduplicatingQueue, deduplicates
from leveret.queues.queue import Queue
from leveret.queues.quorum import QuorumQueue
from leveret.queues.stream import StreamQueue


class DeduplicatingQuorumQueue(DeduplicatingQueue, QuorumQueue):
    """A quorum queue declared with `x-message-deduplication`."""


def queue_class(queue_type: str, arguments: Mapping[str, Any]) -> type[Queue]:
    if queue_type == "stream":
        return StreamQueue  # RabbitMQ's streams keep every message: no deduplication either
    dedup = deduplicates(arguments)
    if queue_type == "quorum":
        return DeduplicatingQuorumQueue if dedup else QuorumQueue
    return DeduplicatingQueue if dedup else Queue
