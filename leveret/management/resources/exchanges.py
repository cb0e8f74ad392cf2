"""/api/exchanges: list, show, declare (PUT), delete, bindings as source and destination.

`amq.default` names the default exchange (whose name is "").
"""

from __future__ import annotations

from typing import Any

from leveret.bindings.model import Destination
from leveret.broker.definitions import json_value
from leveret.broker.vhost import VirtualHost
from leveret.exchanges.base import Exchange
from leveret.management.http import Response
from leveret.management.resources.bindings import binding, default_binding, sorted_bindings
from leveret.management.routes import Call, Route, bad_request, flag, not_found, truthy

DEFAULT_EXCHANGE_ALIAS = "amq.default"


def real_name(name: str) -> str:
    return "" if name == DEFAULT_EXCHANGE_ALIAS else name


def find_exchange(call: Call, vhost_name: str, name: str) -> tuple[VirtualHost, Exchange]:
    vhost = call.vhost(vhost_name)
    exchange = vhost.exchanges.get(real_name(name))
    if exchange is None:
        raise not_found()
    return vhost, exchange


def exchange_info(vhost: VirtualHost, exchange: Exchange) -> dict[str, Any]:
    info = {
        "arguments": json_value(exchange.arguments),
        "auto_delete": exchange.auto_delete,
        "durable": exchange.durable,
        "internal": exchange.internal,
        "name": exchange.name,
        "type": exchange.type_name,
        "vhost": vhost.name,
    }
    if exchange.policy is not None:
        info["policy"] = exchange.policy  # RabbitMQ shows the field only when one applies
    if exchange.name == "" or exchange.name.startswith("amq."):
        info["user_who_performed_action"] = "rmq-internal"
    return info


def listed(vhosts: list[VirtualHost]) -> list[dict[str, Any]]:
    return [exchange_info(v, e) for v in vhosts for e in sorted(v.exchanges.values(), key=lambda e: e.name)]


def exchanges(call: Call) -> list[dict[str, Any]]:
    return listed(call.vhosts())


def vhost_exchanges(call: Call, vhost: str) -> list[dict[str, Any]]:
    return listed([call.vhost(vhost)])


def exchange(call: Call, vhost: str, name: str) -> dict[str, Any]:
    info = exchange_info(*find_exchange(call, vhost, name))
    info["incoming"] = []
    info["outgoing"] = []
    return info


def declare_exchange(call: Call, vhost: str, name: str) -> Response:
    target = call.as_client(vhost, "configure", name)
    body = call.body()
    if "type" not in body:
        raise bad_request("[{key_missing,type}]")
    existed = name in target.exchanges
    call.run(lambda: target.declare_exchange(
        real_name(name), str(body["type"]),
        durable=flag(body, "durable", True), auto_delete=flag(body, "auto_delete", False),
        internal=flag(body, "internal", False), arguments=body.get("arguments") or {},
    ))
    return Response(204 if existed else 201)


def delete_exchange(call: Call, vhost: str, name: str) -> Response:
    target, found = find_exchange(call, vhost, name)
    call.as_client(vhost, "configure", name)
    call.run(lambda: target.delete_exchange(found.name, if_unused=truthy(call.query.get("if-unused"))))
    return Response(204)


def bindings_source(call: Call, vhost: str, name: str) -> list[dict[str, Any]]:
    target, found = find_exchange(call, vhost, name)
    if found.name == "":
        return [default_binding(target, q) for q in sorted(target.queues)]
    return [binding(target, b) for b in sorted_bindings(found.bindings)]


def bindings_destination(call: Call, vhost: str, name: str) -> list[dict[str, Any]]:
    target, found = find_exchange(call, vhost, name)
    destination = Destination.exchange(found.name)
    return [binding(target, b) for b in sorted_bindings(target.bindings()) if b.destination == destination]


ROUTES = (
    Route("GET", "exchanges", exchanges),
    Route("GET", "exchanges/{vhost}", vhost_exchanges),
    Route("GET", "exchanges/{vhost}/{name}", exchange),
    Route("PUT", "exchanges/{vhost}/{name}", declare_exchange),
    Route("DELETE", "exchanges/{vhost}/{name}", delete_exchange),
    Route("GET", "exchanges/{vhost}/{name}/bindings/source", bindings_source),
    Route("GET", "exchanges/{vhost}/{name}/bindings/destination", bindings_destination),
)
