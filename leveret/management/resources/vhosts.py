"""GET /api/vhosts[/VHOST]; PUT and DELETE /api/vhosts/VHOST.

A vhost made over HTTP gives its maker full permissions in it, as RabbitMQ's
management plugin does; deleting one deletes everything in it and closes its
connections (320 CONNECTION_FORCED, "vhost 'V' is deleted").
"""

from __future__ import annotations

from typing import Any

from pamqp import exceptions

from leveret.broker.vhost import VirtualHost
from leveret.management.core import Management
from leveret.management.http import Response
from leveret.management.routes import Call, Route, not_found
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
    return [vhost_info(call.m, v) for v in call.vhosts()]


def vhost(call: Call, vhost: str) -> dict[str, Any]:
    return vhost_info(call.m, call.vhost(vhost))


def put_vhost(call: Call, vhost: str) -> Response:
    call.body()  # description, tags, default_queue_type: accepted, not kept
    admin = call.m.broker.admin

    def create() -> bool:
        if not admin.add_vhost(vhost):
            return False
        admin.set_permissions(call.user.name, vhost)
        return True

    return Response(201 if call.run(create) else 204)


def delete_vhost(call: Call, vhost: str) -> Response:
    def delete() -> bool:
        if not call.m.broker.admin.delete_vhost(vhost):
            return False
        for live in call.m.connections():
            if live.connection.vhost is not None and live.connection.vhost.name == vhost:
                live.connection.close_with(exceptions.AMQPConnectionForced(f"vhost '{vhost}' is deleted"))
        return True

    if not call.run(delete):
        raise not_found()
    return Response(204)


ROUTES = (
    Route("GET", "vhosts", vhosts),
    Route("GET", "vhosts/{vhost}", vhost),
    Route("PUT", "vhosts/{vhost}", put_vhost, "administrator"),
    Route("DELETE", "vhosts/{vhost}", delete_vhost, "administrator"),
)
