"""GET /api/overview, /api/nodes[/NODE], /api/whoami, /api/health/checks/{alarms,local-alarms}."""

from __future__ import annotations

import os
import platform
from typing import Any

from leveret.exchanges.registry import REGISTRY as EXCHANGE_TYPES
from leveret.management.core import Management, process_memory_bytes
from leveret.management.routes import Call, Route, json_response, not_found
from leveret.management.values import with_rates
from leveret.version import RABBITMQ_VERSION, __version__


def overview(call: Call) -> dict[str, Any]:
    m = call.m
    totals = m.message_totals()
    ready = sum(q.message_count for q in m.queues())
    unacked = sum(q.unacked_count for q in m.queues())
    return {
        "management_version": RABBITMQ_VERSION,
        "rates_mode": "basic",
        "exchange_types": exchange_types(),
        "product_version": __version__,
        "product_name": "leveret",
        "rabbitmq_version": RABBITMQ_VERSION,
        "cluster_name": m.node,
        "python_version": platform.python_version(),
        "disable_stats": False,
        "enable_queue_totals": False,
        "message_stats": with_rates(totals, lambda f: m.rate("overview", f)),
        "churn_rates": with_rates(m.churn_totals(), lambda f: m.rate("overview", f)),
        "queue_totals": with_rates({
            "messages": ready + unacked, "messages_ready": ready, "messages_unacknowledged": unacked,
        }, lambda f: m.rate("overview", f)),
        "object_totals": m.object_totals(),
        "statistics_db_event_queue": 0,
        "node": m.node,
        "listeners": [
            {"node": m.node, "protocol": protocol, "ip_address": host, "port": port, "socket_opts": {}}
            for protocol, host, port in m.listeners
        ],
        "contexts": [
            {"node": m.node, "description": "leveret management", "path": "/", "port": str(port)}
            for protocol, _, port in m.listeners if protocol == "http"
        ],
    }


def exchange_types() -> list[dict[str, Any]]:
    types = []
    for name, kind in sorted(EXCHANGE_TYPES.items()):
        types.append({"name": name, "description": kind.description, "enabled": True})
    return types


def whoami(call: Call) -> dict[str, Any]:
    return {"name": call.user.name, "tags": list(call.user.tags)}


def node(m: Management) -> dict[str, Any]:
    resources = m.broker.resources
    return {
        "name": m.node, "type": "disc", "running": True, "os_pid": str(os.getpid()),
        "mem_used": process_memory_bytes(), "uptime": m.uptime_ms(), "processors": os.cpu_count() or 1,
        "sockets_used": len(m.connections()), "rates_mode": "basic",
        "exchange_types": exchange_types(),
        "partitions": [], "mem_alarm": resources.memory_alarm, "disk_free_alarm": resources.disk_alarm,
        "mem_limit": resources.memory_limit,
        "disk_free": resources.disk_free, "disk_free_limit": resources.disk_free_limit,
    }


def nodes(call: Call) -> list[dict[str, Any]]:
    return [node(call.m)]


def node_named(call: Call, name: str) -> dict[str, Any]:
    if name != call.m.node:
        raise not_found()
    return node(call.m)


def alarms(call: Call) -> Any:
    """RabbitMQ's health check: 200 ok, or 503 naming the alarm in effect."""
    resources = call.m.broker.resources
    if not resources.alarm:
        return {"status": "ok"}
    kinds = [kind for kind, on in (("memory", resources.memory_alarm), ("disk", resources.disk_alarm)) if on]
    body = {"status": "failed", "reason": "resource alarm(s) in effect in the cluster",
            "alarms": [{"node": call.m.node, "resource": kind} for kind in kinds]}
    return json_response(503, body)


ROUTES = (
    Route("GET", "overview", overview),
    Route("GET", "whoami", whoami),
    Route("GET", "nodes", nodes, "monitoring"),
    Route("GET", "nodes/{node}", node_named, "monitoring"),
    Route("GET", "health/checks/alarms", alarms),
    Route("GET", "health/checks/local-alarms", alarms),
)
