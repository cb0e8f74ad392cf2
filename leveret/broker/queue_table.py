"""A virtual host's queues: queue.declare (with its permission hooks and the
vhost's queue limit), delete, purge, and the exclusive queues of a closed
connection. Deleting a queue removes its bindings (leveret.broker.topology),
tells its observers, and keeps its counters in the vhost's totals.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from pamqp import exceptions

from leveret.bindings.model import Destination
from leveret.broker.policy_table import apply_queue_policy
from leveret.broker.topology import Topology, flag
from leveret.broker.vhost_state import VhostState
from leveret.queues.arguments import (
    assert_equivalent,
    check_queue_properties,
    check_server_named,
    validate_queue_arguments,
)
from leveret.queues.queue import Queue
from leveret.queues.stream import StreamQueue
from leveret.queues.types import queue_class

log = logging.getLogger("leveret.vhost")


class QueueTable:
    def __init__(self, state: VhostState, topology: Topology) -> None:
        self.state = state
        self.topology = topology

    def declare_queue(
        self,
        name: str,
        *,
        passive: bool = False,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
        owner: object | None = None,
        now_ms: int = 0,
        authorize: Callable[[str], None] | None = None,
        authorize_new: Callable[[str], None] | None = None,
    ) -> Queue:
        """`authorize(name)` and `authorize_new(name)` are the caller's permission
        checks, made where RabbitMQ makes them: the first on the actual
        (server-generated) name before anything else, the second, for a queue
        that does not exist yet, after the vhost's queue limit."""
        state = self.state
        if passive:
            queue = state.queue(name, owner)
            queue.touch(now_ms)
            return queue
        if not name:
            check_server_named(arguments or {})
            name = self._server_named()
        elif name.startswith("amq."):
            raise exceptions.AMQPAccessRefused(f"queue name '{name}' contains reserved prefix 'amq.*'")
        if authorize is not None:
            authorize(name)
        if name not in state.queues:
            most = state.limits.max_queues
            if most is not None and len(state.queues) >= most:
                raise exceptions.AMQPPreconditionFailed(
                    f"cannot declare queue '{name}': queue limit in vhost '{state.name}' ({most}) is reached"
                )
            if authorize_new is not None:
                authorize_new(name)
        # RabbitMQ never makes an exclusive queue durable: it ignores the flag.
        durable = durable and not exclusive
        received = dict(arguments or {})
        existing = state.queues.get(name)
        if existing is not None:
            self._assert_equivalent(existing, durable, exclusive, auto_delete, received, owner)
            existing.touch(now_ms)
            return existing
        queue_type = validate_queue_arguments(received, name, state.name)
        check_queue_properties(
            queue_type, durable=durable, exclusive=exclusive, auto_delete=auto_delete,
            queue=name, vhost=state.name, arguments=received,
        )
        queue = queue_class(queue_type, received)(
            name,
            state.name,
            durable=durable,
            exclusive_owner=owner if exclusive else None,
            auto_delete=auto_delete,
            arguments=received,
            now_ms=now_ms,
        )
        if queue.pageable:
            queue.pager = state.pager
        state.queues[name] = queue
        if state.policies:
            apply_queue_policy(state, queue, now_ms)  # empty yet: nothing to drop
        state.queues_created += 1
        if durable and state.journal is not None:
            state.journal.queue_declared(state.name, queue)
        if queue.args.message_ttl is not None or queue.args.expires is not None:
            state.timed.add(queue)
        return queue

    def _server_named(self) -> str:
        while True:
            name = "amq.gen-" + base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
            if name not in self.state.queues:
                return name

    def _assert_equivalent(
        self, queue: Queue, durable: bool, exclusive: bool, auto_delete: bool,
        arguments: Mapping[str, Any], owner: object | None,
    ) -> None:
        vhost = self.state.name

        def refuse(arg: str, received: bool, current: bool) -> exceptions.AMQPPreconditionFailed:
            return exceptions.AMQPPreconditionFailed(
                f"inequivalent arg '{arg}' for queue '{queue.name}' in vhost '{vhost}': "
                f"received '{flag(received)}' but current is '{flag(current)}'"
            )

        # RabbitMQ's strict check, made first: the declaring connection must own
        # the queue exactly when it asks for an exclusive one.
        if queue.exclusive_owner is not (owner if exclusive else None):
            raise self.state.locked(queue)
        if queue.durable != durable:
            raise refuse("durable", durable, queue.durable)
        if queue.auto_delete != auto_delete:
            raise refuse("auto_delete", auto_delete, queue.auto_delete)
        assert_equivalent(queue.arguments, arguments, queue.name, vhost)

    def delete_queue(
        self, name: str, *, if_unused: bool = False, if_empty: bool = False, owner: object | None = None,
        reason: str = "deleted",
    ) -> int:
        queue = self.state.queues.get(name)
        if queue is None:
            return 0
        self.state.check_exclusive(queue, owner)
        if isinstance(queue, StreamQueue):
            return self.remove_queue(queue, reason)  # a stream ignores if-empty and if-unused
        vhost = self.state.name
        # The queue process checks if-empty before if-unused (rabbit_amqqueue_process).
        if if_empty and queue.message_count:
            raise exceptions.AMQPPreconditionFailed(f"queue '{name}' in vhost '{vhost}' not empty")
        if if_unused and queue.consumers:
            raise exceptions.AMQPPreconditionFailed(f"queue '{name}' in vhost '{vhost}' in use")
        return self.remove_queue(queue, reason)

    def remove_queue(self, queue: Queue, reason: str = "deleted") -> int:
        """`reason` is for the log: deleted, auto_delete, expired, owner_closed, or the caller's."""
        state = self.state
        if state.queues.get(queue.name) is not queue:
            return 0
        del state.queues[queue.name]
        state.timed.discard(queue)
        if queue.durable and state.journal is not None:
            state.journal.queue_deleted(state.name, queue)
        count = queue.mark_deleted()
        state.queues_deleted += 1
        for key, value in queue.stats.items():
            state.removed_queue_stats[key] = state.removed_queue_stats.get(key, 0) + value
        for reason_key, value in queue.dead_letter_counts.items():
            state.removed_dead_letter_counts[reason_key] = state.removed_dead_letter_counts.get(reason_key, 0) + value
        log.info("queue deleted", extra={
            "event": "queue_deleted", "vhost": state.name, "queue": queue.name, "reason": reason,
            "messages": count,
        })
        self.topology.remove_bindings_to(Destination.queue(queue.name))
        for observer in list(state.observers.pop(queue, ())):
            observer.queue_deleted(queue)
        queue.consumers.clear()
        return count

    def purge_queue(self, name: str, owner: object | None = None) -> int:
        return self.state.queue(name, owner).purge()

    def owner_closed(self, owner: object) -> None:
        """A connection went away: its exclusive queues go with it."""
        for queue in [q for q in self.state.queues.values() if q.exclusive_owner is owner]:
            self.remove_queue(queue, "owner_closed")
