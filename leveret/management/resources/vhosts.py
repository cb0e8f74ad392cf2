"""GET /api/vhosts[/VHOST]."""

from __future__ import annotations

from typing import Any

from leveret.broker.vhost import VirtualHost
from leveret.management.core import Management
from leveret.management.routes import Call, Route
from leveret.management.values import with_rates


def vhost_info(m: Management, vhost: VirtualHost) -> dict[str, Any]:
    ready = sum(q.message_count for q in vhost.queues.values())
    unacked = sum(q.unacked_count for q in vhost.queues.values())
    description = "Default virtual host" if vhost.name == "/" else ""
    return {
        "name": vhost.name, "description": description, "tags": [],
        "metadata": {"description": description, "tags": []}, "tracing": False,
        "default_queue_type": "undefined", "cluster_state": {m.node: "running"},
        **with_rates({"messages": ready + unacked, "messages_ready": ready,
                      "messages_unacknowledged": unacked}, lambda f: m.rate("vhost", vhost.name, f)),
    }


def vhosts(call: Call) -> list[dict[str, Any]]:
    return [vhost_info(call.m, v) for v in call.m.vhosts()]


def vhost(call: Call, vhost: str) -> dict[str, Any]:
    return vhost_info(call.m, call.vhost(vhost))


ROUTES = (
    Route("GET", "vhosts", vhosts),
    Route("GET", "vhosts/{vhost}", vhost),
)
