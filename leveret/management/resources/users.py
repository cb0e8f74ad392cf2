"""/api/users, /api/permissions, /api/topic-permissions: who may log in and what they may do.

Administrator endpoints, as in RabbitMQ. Deleting a user closes its
connections (320 CONNECTION_FORCED, "user 'U' is deleted"); changing or
clearing permissions applies to open connections as RabbitMQ applies it
(see `AccessControl.clear_permissions`).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from pamqp import exceptions

from leveret.broker.admin import parse_tags
from leveret.broker.auth import PERMISSIONS, User
from leveret.management.http import Response
from leveret.management.routes import Call, HttpError, Route, bad_request, not_found


def user_info(user: User) -> dict[str, Any]:
    return {"name": user.name, "password_hash": user.encoded_hash, "hashing_algorithm": user.hashing_algorithm,
            "tags": list(user.tags), "limits": user.limits.to_json()}


def users(call: Call) -> list[dict[str, Any]]:
    return [user_info(u) for u in sorted(call.m.broker.access.users.values(), key=lambda u: u.name)]


def users_without_permissions(call: Call) -> list[dict[str, Any]]:
    access = call.m.broker.access
    having = {user for user, _ in access.permissions}
    return [user_info(u) for u in sorted(access.users.values(), key=lambda u: u.name) if u.name not in having]


def user(call: Call, name: str) -> dict[str, Any]:
    found = call.m.broker.access.users.get(name)
    if found is None:
        raise not_found()
    return user_info(found)


def put_user(call: Call, name: str) -> Response:
    body = call.body()
    if "tags" not in body:
        raise bad_request("tags_not_present")
    password = body.get("password")
    password_hash = body.get("password_hash")
    new = call.m.broker.admin.put_user(
        name, password=None if password is None else str(password),
        password_hash=None if password_hash is None else str(password_hash),
        hashing_algorithm=body.get("hashing_algorithm"), tags=parse_tags(body["tags"]),
    )
    return Response(201 if new else 204)


def close_user_connections(call: Call, name: str) -> None:
    for live in call.m.connections():
        if live.connection.user == name:
            live.connection.close_with(exceptions.AMQPConnectionForced(f"user '{name}' is deleted"))


def _delete_user(call: Call, name: str) -> bool:
    if not call.m.broker.admin.delete_user(name):
        return False
    close_user_connections(call, name)
    return True


def delete_user(call: Call, name: str) -> Response:
    if not call.run(lambda: _delete_user(call, name)):
        raise not_found()
    return Response(204)


def bulk_delete(call: Call) -> Response:
    body = call.body()
    names = body.get("users")
    if not isinstance(names, list):
        raise bad_request("[{key_missing,users}]")
    for name in map(str, names):
        if not call.run(partial(_delete_user, call, name)):
            raise HttpError(400, "bad_request", ["no_such_user", name])
    return Response(204)


# ------------------------------------------------------------- permissions
def permission_info(user: str, vhost: str, p: Any) -> dict[str, Any]:
    return {"user": user, "vhost": vhost, "configure": p.configure, "write": p.write, "read": p.read}


def _permissions(call: Call, keep: Any) -> list[dict[str, Any]]:
    return [permission_info(u, v, p) for (u, v), p in sorted(call.m.broker.access.permissions.items())
            if keep(u, v)]


def permissions(call: Call) -> list[dict[str, Any]]:
    return _permissions(call, lambda u, v: True)


def user_permissions(call: Call, name: str) -> list[dict[str, Any]]:
    if name not in call.m.broker.access.users:
        raise not_found()
    return _permissions(call, lambda u, v: u == name)


def vhost_permissions(call: Call, vhost: str) -> list[dict[str, Any]]:
    call.vhost(vhost)
    return [{"vhost": i["vhost"], "user": i["user"], **{k: i[k] for k in PERMISSIONS}}
            for i in _permissions(call, lambda u, v: v == vhost)]


def permission(call: Call, vhost: str, name: str) -> dict[str, Any]:
    found = call.m.broker.access.permissions.get((name, vhost))
    if found is None:
        raise not_found()
    return permission_info(name, vhost, found)


def set_permission(call: Call, vhost: str, name: str) -> Response:
    body = call.body()
    call.required(body, *PERMISSIONS)
    existed = (name, vhost) in call.m.broker.access.permissions
    call.run(lambda: call.m.broker.admin.set_permissions(name, vhost, *(str(body[k]) for k in PERMISSIONS)))
    return Response(204 if existed else 201)


def clear_permission(call: Call, vhost: str, name: str) -> Response:
    if not call.run(lambda: call.m.broker.admin.clear_permissions(name, vhost)):
        raise not_found()
    return Response(204)


# ------------------------------------------------------- topic permissions
def _topic_permissions(call: Call, keep: Any) -> list[dict[str, Any]]:
    return [
        {"user": u, "vhost": v, "exchange": t.exchange, "write": t.write, "read": t.read}
        for (u, v), topics in sorted(call.m.broker.access.topic_permissions.items()) if keep(u, v)
        for t in sorted(topics.values(), key=lambda t: t.exchange)
    ]


def topic_permissions(call: Call) -> list[dict[str, Any]]:
    return _topic_permissions(call, lambda u, v: True)


def user_topic_permissions(call: Call, name: str) -> list[dict[str, Any]]:
    if name not in call.m.broker.access.users:
        raise not_found()
    return _topic_permissions(call, lambda u, v: u == name)


def vhost_topic_permissions(call: Call, vhost: str) -> list[dict[str, Any]]:
    call.vhost(vhost)
    return _topic_permissions(call, lambda u, v: v == vhost)


def topic_permission(call: Call, vhost: str, name: str) -> list[dict[str, Any]]:
    found = _topic_permissions(call, lambda u, v: (u, v) == (name, vhost))
    if not found:
        raise not_found()
    return found


def set_topic_permission(call: Call, vhost: str, name: str) -> Response:
    body = call.body()
    call.required(body, "exchange", "write", "read")
    existed = (name, vhost) in call.m.broker.access.topic_permissions
    call.run(lambda: call.m.broker.admin.set_topic_permissions(
        name, vhost, str(body["exchange"]), str(body["write"]), str(body["read"])))
    return Response(204 if existed else 201)


def clear_topic_permission(call: Call, vhost: str, name: str) -> Response:
    if not call.run(lambda: call.m.broker.admin.clear_topic_permissions(name, vhost)):
        raise not_found()
    return Response(204)


ROUTES = (
    Route("GET", "users", users, "administrator"),
    Route("GET", "users/without-permissions", users_without_permissions, "administrator"),
    Route("POST", "users/bulk-delete", bulk_delete, "administrator"),
    Route("GET", "users/{user}", user, "administrator"),
    Route("PUT", "users/{user}", put_user, "administrator"),
    Route("DELETE", "users/{user}", delete_user, "administrator"),
    Route("GET", "users/{user}/permissions", user_permissions, "administrator"),
    Route("GET", "users/{user}/topic-permissions", user_topic_permissions, "administrator"),
    Route("GET", "permissions", permissions, "administrator"),
    Route("GET", "permissions/{vhost}/{user}", permission, "administrator"),
    Route("PUT", "permissions/{vhost}/{user}", set_permission, "administrator"),
    Route("DELETE", "permissions/{vhost}/{user}", clear_permission, "administrator"),
    Route("GET", "topic-permissions", topic_permissions, "administrator"),
    Route("GET", "topic-permissions/{vhost}/{user}", topic_permission, "administrator"),
    Route("PUT", "topic-permissions/{vhost}/{user}", set_topic_permission, "administrator"),
    Route("DELETE", "topic-permissions/{vhost}/{user}", clear_topic_permission, "administrator"),
    Route("GET", "vhosts/{vhost}/permissions", vhost_permissions, "administrator"),
    Route("GET", "vhosts/{vhost}/topic-permissions", vhost_topic_permissions, "administrator"),
)
