"""/api/queues: list, show, declare (PUT), delete, purge (DELETE .../contents), bindings."""

from __future__ import annotations

from typing import Any

from leveret.bindings.model import Destination
from leveret.broker.definitions import json_value
from leveret.broker.vhost import VirtualHost
from leveret.management.core import DEAD_LETTER_REASONS, Management
from leveret.management.http import Response
from leveret.management.queue_fields import backing_queue_status, rfc3339
from leveret.management.resources.bindings import binding, default_binding, sorted_bindings
from leveret.management.resources.connections import consumer_info
from leveret.management.routes import Call, Route, flag, not_found, truthy
from leveret.management.values import with_rates
from leveret.queues.queue import Queue
from leveret.queues.quorum import QuorumQueue
from leveret.queues.stream import StreamQueue


def find_queue(call: Call, vhost_name: str, name: str) -> tuple[VirtualHost, Queue]:
    vhost = call.vhost(vhost_name)
    queue = vhost.queues.get(name)
    if queue is None:
        raise not_found()
    return vhost, queue


def listed(m: Management, vhosts: list[VirtualHost]) -> list[dict[str, Any]]:
    held = m.unacked_by_queue()
    return [
        queue_info(m, queue, held.get(queue, (0, 0))[1])
        for v in vhosts for queue in sorted(v.queues.values(), key=lambda q: q.name)
    ]


def queues(call: Call) -> list[dict[str, Any]]:
    return listed(call.m, call.vhosts())


def vhost_queues(call: Call, vhost: str) -> list[dict[str, Any]]:
    return listed(call.m, [call.vhost(vhost)])


def queue(call: Call, vhost: str, name: str) -> dict[str, Any]:
    m = call.m
    _, found = find_queue(call, vhost, name)
    held = m.unacked_by_queue()
    info = queue_info(m, found, held.get(found, (0, 0))[1])
    info["consumer_details"] = [
        consumer_info(m, live, channel, consumer)
        for live, channel in m.channels() for consumer in channel.consumers.values()
        if consumer.queue is found
    ]
    info["incoming"] = []
    info["deliveries"] = []
    return info


def queue_info(m: Management, queue: Queue, unacked_bytes: int) -> dict[str, Any]:
    ready, unacked = queue.message_count, queue.unacked_count
    stream = isinstance(queue, StreamQueue)
    if stream:
        unacked = unacked_bytes = 0  # RabbitMQ counts a stream's messages, all "ready", whatever was delivered

    def rate(field: str) -> float:
        return m.rate("queue", queue.vhost, queue.name, field)

    stats = {field: queue.stats.get(key, 0) for key, field in
             (("published", "publish"), ("delivered", "deliver_get"), ("acked", "ack"),
              ("redelivered", "redeliver"))}
    exclusive_consumer = queue.exclusive_consumer
    active = queue.consumers[0] if queue.args.single_active_consumer and queue.consumers else None
    info: dict[str, Any] = {
        "arguments": json_value(queue.arguments),
        "auto_delete": queue.auto_delete,
        "consumers": queue.consumer_count,
        "durable": queue.durable,
        "effective_policy_definition": json_value(queue.policy_definition or {}),
        "exclusive": queue.is_exclusive,
        "exclusive_consumer_tag": exclusive_consumer.consumer_tag if exclusive_consumer is not None else None,
        "head_message_timestamp": None,
        "message_bytes": queue.ready_bytes + unacked_bytes,
        "message_bytes_paged_out": 0,
        "message_bytes_ram": queue.ready_bytes + unacked_bytes,
        "message_bytes_ready": queue.ready_bytes,
        "message_bytes_unacknowledged": unacked_bytes,
        "message_stats": with_rates(stats, rate),
        **with_rates({"messages": ready + unacked}, rate),
        "messages_paged_out": 0,
        "messages_ram": ready + unacked,
        **with_rates({"messages_ready": ready}, rate),
        "messages_ready_ram": ready,
        **with_rates({"messages_unacknowledged": unacked}, rate),
        "messages_unacknowledged_ram": unacked,
        "name": queue.name,
        "node": m.node,
        "operator_policy": queue.operator_policy,
        "policy": queue.policy,
        "recoverable_slaves": None,
        "single_active_consumer_tag": active.consumer_tag if active is not None else None,
        "state": "running",
        "type": queue.args.queue_type,
        "vhost": queue.vhost,
    }
    if isinstance(queue, QuorumQueue):
        info.update({"leader": m.node, "members": [m.node], "online": [m.node],
                     "messages_dlx": queue.kept_dead_letters, "message_bytes_dlx": queue.kept_dead_letter_bytes})
    elif stream:
        # As RabbitMQ 3.10 lists a stream: its replicas and readers, no paging.
        info.update({"members": [m.node], "online": [m.node], "readers": {m.node: queue.consumer_count}})
    else:
        info["backing_queue_status"] = backing_queue_status(queue, rate)
        idle_since = m.idle_since(queue)
        if idle_since is not None:
            info["idle_since"] = rfc3339(idle_since)
    info["dead_lettered"] = {
        reason: sum(v for (r, dlx), v in queue.dead_letter_counts.items() if r == reason and dlx)
        for reason in DEAD_LETTER_REASONS
    }
    return info


def declare_queue(call: Call, vhost: str, name: str) -> Response:
    target = call.as_client(vhost, "configure", name)
    body = call.body()
    existed = name in target.queues
    call.run(lambda: target.declare_queue(
        name, durable=flag(body, "durable", True), auto_delete=flag(body, "auto_delete", False),
        arguments=body.get("arguments") or {}, now_ms=call.m.broker.now_ms(),
    ))
    return Response(204 if existed else 201)


def delete_queue(call: Call, vhost: str, name: str) -> Response:
    target, _ = find_queue(call, vhost, name)
    call.as_client(vhost, "configure", name)
    call.run(lambda: target.delete_queue(
        name, if_empty=truthy(call.query.get("if-empty")),
        if_unused=truthy(call.query.get("if-unused")), reason="management",
    ))
    return Response(204)


def purge_queue(call: Call, vhost: str, name: str) -> Response:
    target, _ = find_queue(call, vhost, name)
    call.as_client(vhost, "read", name)
    call.run(lambda: target.purge_queue(name))
    return Response(204)


def queue_bindings(call: Call, vhost: str, name: str) -> list[dict[str, Any]]:
    target, found = find_queue(call, vhost, name)
    destination = Destination.queue(found.name)
    return [default_binding(target, found.name)] + [
        binding(target, b) for b in sorted_bindings(target.bindings()) if b.destination == destination
    ]


ROUTES = (
    Route("GET", "queues", queues),
    Route("GET", "queues/{vhost}", vhost_queues),
    Route("GET", "queues/{vhost}/{name}", queue),
    Route("PUT", "queues/{vhost}/{name}", declare_queue),
    Route("DELETE", "queues/{vhost}/{name}", delete_queue),
    Route("DELETE", "queues/{vhost}/{name}/contents", purge_queue),
    Route("GET", "queues/{vhost}/{name}/bindings", queue_bindings),
)
