"""GET /api/definitions[/VHOST] (export), POST /api/definitions[/VHOST] (import)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from leveret.broker.definitions import LoadResult, export_definitions, load_definitions
from leveret.broker.vhost import VirtualHost
from leveret.management.http import Response
from leveret.management.routes import Call, Route, bad_request
from leveret.version import RABBITMQ_VERSION, __version__


def export_all(call: Call) -> dict[str, Any]:
    vhosts = call.m.vhosts()
    exports = [export_definitions(v) for v in vhosts]
    merged: dict[str, Any] = {
        "rabbit_version": RABBITMQ_VERSION, "rabbitmq_version": RABBITMQ_VERSION,
        "product_name": "leveret", "product_version": __version__,
        **call.m.broker.access.export(),
        "vhosts": [{"name": v.name} for v in vhosts],
        "global_parameters": [{"name": k, "value": v}
                              for k, v in sorted(call.m.broker.admin.global_parameters.items())],
    }
    for key in ("parameters", "policies", "queues", "exchanges", "bindings"):
        merged[key] = [item for export in exports for item in export[key]]
    merged["parameters"] = call.m.broker.admin.parameter_list()  # limits and the kept ones
    return merged


def export_vhost(call: Call, vhost: str) -> dict[str, Any]:
    single = export_definitions(call.vhost(vhost))
    # A one-vhost export (as RabbitMQ's) has no users and no vhost fields.
    for key in ("queues", "exchanges", "bindings"):
        for item in single[key]:
            item.pop("vhost", None)
    # Nor the whole-broker export's product fields: RabbitMQ's top-level keys only.
    return {"rabbit_version": single["rabbit_version"],
            **{k: single[k] for k in ("parameters", "policies", "queues", "exchanges", "bindings")}}


def _load(call: Call, vhost: VirtualHost, data: Mapping[str, Any], now: int) -> list[str]:
    result: LoadResult = call.run(lambda: load_definitions(vhost, data, now_ms=now))
    return result.warnings


def import_all(call: Call) -> Response:
    data = call.body()
    now = call.m.broker.now_ms()
    warnings: list[str] = call.run(lambda: _load_access(call, data))
    for name, part in sorted(_by_vhost(data).items()):
        target = call.m.broker.vhosts.get(name)
        if target is None:
            warnings.append(f"vhost {name!r} does not exist")
            continue
        warnings.extend(_load(call, target, part, now))
    call.m.broker.admin.saved()  # the vhost limits it set
    return _loaded(warnings)


def _load_access(call: Call, data: Mapping[str, Any]) -> list[str]:
    """Users, vhosts, permissions and parameters, added to (not replacing) what is there; saved."""
    broker = call.m.broker
    loaded = broker.access.load_definitions(data, replace=False)
    for name in loaded.vhosts:
        broker.add_vhost(name)
    broker.admin.load_parameters(data)
    return loaded.warnings


def import_vhost(call: Call, vhost: str) -> Response:
    target = call.vhost(vhost)
    warnings = _load(call, target, call.body(), call.m.broker.now_ms())
    call.m.broker.admin.saved()
    return _loaded(warnings)


def _loaded(warnings: list[str]) -> Response:
    if warnings:
        raise bad_request("; ".join(warnings))
    return Response(204)


def _by_vhost(data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A full export's items per vhost; items without one belong to "/"."""
    grouped: dict[str, dict[str, Any]] = {}
    for key in ("parameters", "queues", "exchanges", "bindings", "policies"):
        for item in data.get(key) or []:
            if not isinstance(item, Mapping):
                continue
            vhost = str(item.get("vhost", "/"))
            grouped.setdefault(vhost, {}).setdefault(key, []).append({**item, "vhost": vhost})
    return grouped


ROUTES = (
    Route("GET", "definitions", export_all, "administrator"),
    Route("GET", "definitions/{vhost}", export_vhost, "administrator"),
    Route("POST", "definitions", import_all, "administrator"),
    Route("POST", "definitions/{vhost}", import_vhost, "administrator"),
)
