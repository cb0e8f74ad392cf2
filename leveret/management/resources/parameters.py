"""/api/vhost-limits, /api/user-limits, /api/parameters, /api/global-parameters, /api/cluster-name.

What leveret acts on and what it only keeps: see leveret.broker.admin.
"""

from __future__ import annotations

from typing import Any

from leveret.management.http import Response
from leveret.management.routes import Call, Route, bad_request, not_found, sees_all_vhosts


# ------------------------------------------------------------ vhost limits
def vhost_limits(call: Call) -> list[dict[str, Any]]:
    return [{"vhost": v.name, "value": v.limits.to_json()} for v in call.vhosts() if v.limits.to_json()]


def vhost_limits_of(call: Call, vhost: str) -> list[dict[str, Any]]:
    found = call.vhost(vhost)
    limits = found.limits.to_json()
    return [{"vhost": found.name, "value": limits}] if limits else []


def set_vhost_limit(call: Call, vhost: str, name: str) -> Response:
    body = call.body()
    call.required(body, "value")
    call.run(lambda: call.m.broker.admin.set_vhost_limit(vhost, name, body["value"]))
    return Response(204)


def clear_vhost_limit(call: Call, vhost: str, name: str) -> Response:
    call.run(lambda: call.m.broker.admin.clear_vhost_limit(vhost, name))
    return Response(204)


# ------------------------------------------------------------- user limits
def user_limits(call: Call) -> list[dict[str, Any]]:
    users = sorted(call.m.broker.access.users.values(), key=lambda u: u.name)
    if not sees_all_vhosts(call.user.tags):
        users = [u for u in users if u.name == call.user.name]  # a management user sees its own
    return [{"user": u.name, "value": u.limits.to_json()} for u in users if u.limits.to_json()]


def user_limits_of(call: Call, user: str) -> list[dict[str, Any]]:
    found = call.m.broker.access.users.get(user)
    if found is None:
        raise not_found()
    limits = found.limits.to_json()
    return [{"user": found.name, "value": limits}] if limits else []


def set_user_limit(call: Call, user: str, name: str) -> Response:
    body = call.body()
    call.required(body, "value")
    call.run(lambda: call.m.broker.admin.set_user_limits(user, {name: body["value"]}))
    return Response(204)


def clear_user_limit(call: Call, user: str, name: str) -> Response:
    call.run(lambda: call.m.broker.admin.clear_user_limit(user, name))
    return Response(204)


# -------------------------------------------------------------- parameters
def parameters(call: Call) -> list[dict[str, Any]]:
    return call.m.broker.admin.parameter_list()


def component_parameters(call: Call, component: str) -> list[dict[str, Any]]:
    return call.m.broker.admin.parameter_list(component)


def vhost_component_parameters(call: Call, component: str, vhost: str) -> list[dict[str, Any]]:
    call.vhost(vhost)
    return call.m.broker.admin.parameter_list(component, vhost)


def parameter(call: Call, component: str, vhost: str, name: str) -> dict[str, Any]:
    call.vhost(vhost)
    for item in call.m.broker.admin.parameter_list(component, vhost):
        if item["name"] == name:
            return item
    raise not_found()


def set_parameter(call: Call, component: str, vhost: str, name: str) -> Response:
    body = call.body()
    call.required(body, "value")
    call.run(lambda: call.m.broker.admin.set_parameter(component, vhost, name, body["value"]))
    return Response(201)


def clear_parameter(call: Call, component: str, vhost: str, name: str) -> Response:
    if not call.run(lambda: call.m.broker.admin.clear_parameter(component, vhost, name)):
        raise not_found()
    return Response(204)


# ------------------------------------------------------- global parameters
def global_parameters(call: Call) -> list[dict[str, Any]]:
    return [{"name": k, "value": v} for k, v in sorted(call.m.broker.admin.global_parameters.items())]


def global_parameter(call: Call, name: str) -> dict[str, Any]:
    found = call.m.broker.admin.global_parameters
    if name not in found:
        raise not_found()
    return {"value": found[name], "name": name}


def set_global_parameter(call: Call, name: str) -> Response:
    body = call.body()
    call.required(body, "value")
    new = call.run(lambda: call.m.broker.admin.set_global_parameter(name, body["value"]))
    return Response(201 if new else 204)


def clear_global_parameter(call: Call, name: str) -> Response:
    if not call.run(lambda: call.m.broker.admin.clear_global_parameter(name)):
        raise not_found()
    return Response(204)


# ------------------------------------------------------------ cluster name
def cluster_name(call: Call) -> dict[str, Any]:
    return {"name": call.m.broker.admin.cluster_name(call.m.node)}


def set_cluster_name(call: Call) -> Response:
    body = call.body()
    call.required(body, "name")
    if not isinstance(body["name"], str):
        raise bad_request("cluster name must be a string")
    call.run(lambda: call.m.broker.admin.set_global_parameter("cluster_name", body["name"]))
    return Response(204)


ROUTES = (
    Route("GET", "vhost-limits", vhost_limits),
    Route("GET", "vhost-limits/{vhost}", vhost_limits_of),
    Route("PUT", "vhost-limits/{vhost}/{name}", set_vhost_limit, "administrator"),
    Route("DELETE", "vhost-limits/{vhost}/{name}", clear_vhost_limit, "administrator"),
    Route("GET", "user-limits", user_limits),
    Route("GET", "user-limits/{user}", user_limits_of, "monitoring"),
    Route("PUT", "user-limits/{user}/{name}", set_user_limit, "administrator"),
    Route("DELETE", "user-limits/{user}/{name}", clear_user_limit, "administrator"),
    Route("GET", "parameters", parameters, "policymaker"),
    Route("GET", "parameters/{component}", component_parameters, "policymaker"),
    Route("GET", "parameters/{component}/{vhost}", vhost_component_parameters, "policymaker"),
    Route("GET", "parameters/{component}/{vhost}/{name}", parameter, "policymaker"),
    Route("PUT", "parameters/{component}/{vhost}/{name}", set_parameter, "policymaker"),
    Route("DELETE", "parameters/{component}/{vhost}/{name}", clear_parameter, "policymaker"),
    Route("GET", "global-parameters", global_parameters, "policymaker"),
    Route("GET", "global-parameters/{name}", global_parameter, "policymaker"),
    Route("PUT", "global-parameters/{name}", set_global_parameter, "administrator"),
    Route("DELETE", "global-parameters/{name}", clear_global_parameter, "administrator"),
    Route("GET", "cluster-name", cluster_name),
    Route("PUT", "cluster-name", set_cluster_name, "administrator"),
)
