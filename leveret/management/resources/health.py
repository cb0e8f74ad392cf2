"""/api/aliveness-test/VHOST and the /api/health/checks/* RabbitMQ 3.10 has.

A check answers 200 `{"status": "ok", ...}` or 503 `{"status": "failed",
"reason": ...}`. leveret is one node with no mirrors and no quorum peers,
so the cluster checks answer as RabbitMQ's single node does.
"""

from __future__ import annotations

from typing import Any

from pamqp import commands

from leveret.management.routes import Call, Route, json_response
from leveret.queues.message import Message

ALIVENESS_QUEUE = "aliveness-test"


def aliveness(call: Call, vhost: str) -> Any:
    """Declare the `aliveness-test` queue, publish to it and get the message back (RabbitMQ leaves the queue)."""
    target = call.as_client(vhost)

    def round_trip() -> bool:
        now = call.m.broker.now_ms()
        target.declare_queue(ALIVENESS_QUEUE, durable=False, auto_delete=False, arguments={}, now_ms=now)
        message = Message("", ALIVENESS_QUEUE, commands.Basic.Properties(), b"test_message")
        target.publish("", message, now)
        return target.get(ALIVENESS_QUEUE, no_ack=True, owner=None, now_ms=now).entry is not None

    if call.run(round_trip):
        return {"status": "ok"}
    return json_response(503, {"status": "failed", "reason": "aliveness test failed"})


def single_node(call: Call) -> dict[str, Any]:
    return {"status": "ok", "reason": "single node cluster"}


def certificate_expiration(call: Call, within: str, unit: str) -> Any:
    if unit not in ("days", "weeks", "months", "years") or not within.isdigit():
        return json_response(400, {"error": "bad_request",
                                   "reason": "Invalid unit or value. Use days, weeks, months or years"})
    return {"status": "ok"}  # leveret's TLS certificates are not inspected here


def port_listener(call: Call, port: str) -> Any:
    ports = [p for _, _, p in call.m.listeners]
    if port.isdigit() and int(port) in ports:
        return {"status": "ok", "port": int(port)}
    return json_response(503, {"status": "failed", "reason": "No active listener",
                               "missing": int(port) if port.isdigit() else port, "ports": ports})


def protocol_listener(call: Call, protocol: str) -> Any:
    protocols = list(dict.fromkeys(name for name, _, _ in call.m.listeners))
    if protocol in protocols:
        return {"status": "ok", "protocol": protocol}
    return json_response(503, {"status": "failed", "reason": "No active listener", "missing": protocol,
                               "protocols": protocols})


def virtual_hosts(call: Call) -> dict[str, Any]:
    return {"status": "ok"}  # every vhost of this node runs while the node does


ROUTES = (
    Route("GET", "aliveness-test/{vhost}", aliveness),
    Route("GET", "health/checks/virtual-hosts", virtual_hosts),
    Route("GET", "health/checks/node-is-mirror-sync-critical", single_node),
    Route("GET", "health/checks/node-is-quorum-critical", single_node),
    Route("GET", "health/checks/certificate-expiration/{within}/{unit}", certificate_expiration),
    Route("GET", "health/checks/port-listener/{port}", port_listener),
    Route("GET", "health/checks/protocol-listener/{protocol}", protocol_listener),
)
