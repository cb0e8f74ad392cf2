"""Runtime administration: users, vhosts, permissions, limits and parameters.

What `rabbitmqctl` and the management API change while the broker runs, with
RabbitMQ 3.10's refusals (`AdminError`, whose `reason` is the text or value
RabbitMQ answers). Every change is saved by the `AdminJournal` (with
--data-dir, leveret.store's AdminFile) before the call returns, so an
acknowledged change survives a crash.

Parameters: leveret acts on the `vhost-limits` component (set through the
vhost limits calls) and the `cluster_name` global parameter; every other
global parameter is stored and exported, not acted on. Per-vhost parameters
of other components need their plugins (federation, shovel), absent here as
on a RabbitMQ without them, so they are refused as RabbitMQ refuses them:
"component ... not found".
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any, Protocol

from leveret.broker.auth import (
    DEFAULT_HASHING,
    FULL_ACCESS,
    HASHES,
    AccessControl,
    User,
    hash_password,
)
from leveret.broker.limits import UserLimits, VhostLimits
from leveret.broker.vhost import VirtualHost

VHOST_LIMIT_KEYS = ("max-connections", "max-queues")
USER_LIMIT_KEYS = ("max-connections", "max-channels")
CLUSTER_NAME = "cluster_name"
CLUSTER_ID = "internal_cluster_id"


class AdminHost(Protocol):
    """What administration changes: the broker's vhosts and users."""

    vhosts: dict[str, VirtualHost]
    access: AccessControl

    def add_vhost(self, name: str) -> VirtualHost: ...


class AdminJournal(Protocol):
    def save(self, data: dict[str, Any]) -> None: ...


class AdminError(Exception):
    """A refused change; `missing` is RabbitMQ's 404, else a 400."""

    def __init__(self, reason: Any, *, missing: bool = False) -> None:
        super().__init__(str(reason))
        self.reason = reason
        self.missing = missing


def parse_tags(value: Any) -> tuple[str, ...]:
    """Tags as the API takes them: "a,b" or ["a", "b"]."""
    if isinstance(value, str):
        return tuple(tag.strip() for tag in value.split(",") if tag.strip())
    if isinstance(value, (list, tuple)):
        return tuple(str(tag).strip() for tag in value if str(tag).strip())
    return ()


def _regexp_error(expression: str, error: re.error) -> list[Any]:
    """RabbitMQ's reason for a bad expression: ["invalid_regexp", EXPR, [MESSAGE, POSITION]]."""
    return ["invalid_regexp", expression, [str(error.msg), error.pos or 0]]


def _check_limit(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AdminError(f"Validation failed\n\n{key} should be a number, actually was {json_term(value)}\n")
    return int(value)


def json_term(value: Any) -> str:
    """How RabbitMQ prints a JSON value in a validation message (binaries as <<"...">>)."""
    if isinstance(value, str):
        return f'<<"{value}">>'
    return str(value)


class Administration:
    def __init__(self, broker: AdminHost) -> None:
        self.broker = broker
        self.journal: AdminJournal | None = None
        self.parameters: dict[tuple[str, str, str], Any] = {}  # (vhost, component, name) -> value
        self.global_parameters: dict[str, Any] = {
            CLUSTER_ID: "rabbitmq-cluster-id-" + base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("="),
        }

    @property
    def access(self) -> AccessControl:
        return self.broker.access

    def saved(self) -> None:
        if self.journal is not None:
            self.journal.save(self.snapshot())

    # ------------------------------------------------------------ users
    def user(self, name: str) -> User:
        user = self.access.users.get(name)
        if user is None:
            raise AdminError(["no_such_user", name])
        return user

    def put_user(self, name: str, *, password: str | None = None, password_hash: str | None = None,
                 hashing_algorithm: str | None = None, tags: Iterable[str] = ()) -> bool:
        """Add or replace a user (the HTTP PUT): True when it is new. Without a
        password or hash an existing user keeps its password, a new one has none."""
        algorithm = hashing_algorithm or DEFAULT_HASHING
        if algorithm not in HASHES:
            raise AdminError(["unsupported_hashing_algorithm", algorithm])
        old = self.access.users.get(name)
        if password is not None:
            raw = base64.b64decode(hash_password(password, algorithm))
        elif password_hash is not None:
            try:
                raw = base64.b64decode(password_hash, validate=True)
            except (binascii.Error, ValueError):
                raise AdminError(["not_base64", password_hash]) from None
        elif old is not None:
            raw, algorithm = old.password_hash, old.hashing_algorithm
        else:
            raw = b""
        limits = old.limits if old is not None else UserLimits()
        self.access.users[name] = User(name, raw, algorithm, tuple(tags), limits)
        self.saved()
        return old is None

    def add_user(self, name: str, password: str, tags: Iterable[str] = ()) -> None:
        if name in self.access.users:
            raise AdminError(f"User \"{name}\" already exists")
        self.put_user(name, password=password, tags=tags)

    def delete_user(self, name: str) -> bool:
        if name not in self.access.users:
            return False
        self.access.delete_user(name)
        self.saved()
        return True

    def change_password(self, name: str, password: str) -> None:
        user = self.user(name)
        raw = base64.b64decode(hash_password(password, user.hashing_algorithm))
        self.access.users[name] = replace(user, password_hash=raw)
        self.saved()

    def clear_password(self, name: str) -> None:
        self.access.users[name] = replace(self.user(name), password_hash=b"")
        self.saved()

    def set_user_tags(self, name: str, tags: Iterable[str]) -> None:
        self.access.users[name] = replace(self.user(name), tags=tuple(tags))
        self.saved()

    # ------------------------------------------------------ permissions
    def _user_and_vhost(self, user: str, vhost: str) -> None:
        if user not in self.access.users or vhost not in self.broker.vhosts:
            raise AdminError("vhost_or_user_not_found")

    def set_permissions(self, user: str, vhost: str, configure: str = FULL_ACCESS, write: str = FULL_ACCESS,
                        read: str = FULL_ACCESS) -> None:
        self._user_and_vhost(user, vhost)
        for expression in (configure, write, read):
            try:
                re.compile(expression)
            except re.error as error:
                raise AdminError(_regexp_error(expression, error)) from None
        self.access.set_permissions(user, vhost, configure, write, read)
        self.saved()

    def clear_permissions(self, user: str, vhost: str) -> bool:
        if not self.access.clear_permissions(user, vhost):
            return False
        self.saved()
        return True

    def set_topic_permissions(self, user: str, vhost: str, exchange: str, write: str = FULL_ACCESS,
                              read: str = FULL_ACCESS) -> None:
        self._user_and_vhost(user, vhost)
        for expression in (write, read):
            try:
                re.compile(expression)
            except re.error as error:
                raise AdminError(_regexp_error(expression, error)) from None
        self.access.set_topic_permissions(user, vhost, exchange, write, read)
        self.saved()

    def clear_topic_permissions(self, user: str, vhost: str, exchange: str | None = None) -> bool:
        if not self.access.clear_topic_permissions(user, vhost, exchange):
            return False
        self.saved()
        return True

    # ----------------------------------------------------------- vhosts
    def add_vhost(self, name: str) -> bool:
        """True when it is new (an existing vhost is left as it is)."""
        if name in self.broker.vhosts:
            return False
        self.broker.add_vhost(name)
        self.saved()
        return True

    def delete_vhost(self, name: str) -> bool:
        """Delete the vhost with its queues (and their messages), exchanges,
        bindings, permissions and parameters. The caller closes its connections."""
        vhost = self.broker.vhosts.get(name)
        if vhost is None:
            return False
        _empty(vhost)
        del self.broker.vhosts[name]
        self.access.delete_vhost(name)
        for key in [key for key in self.parameters if key[0] == name]:
            del self.parameters[key]
        self.saved()
        return True

    # ----------------------------------------------------------- limits
    def set_vhost_limit(self, vhost_name: str, key: str, value: Any) -> None:
        vhost = self.broker.vhosts.get(vhost_name)
        if vhost is None:
            raise AdminError("vhost_not_found", missing=True)
        self.set_vhost_limits(vhost, {**vhost.limits.to_json(), key: value})

    def set_vhost_limits(self, vhost: VirtualHost, limits: Mapping[str, Any]) -> None:
        unknown = [(k, v) for k, v in limits.items() if k not in VHOST_LIMIT_KEYS]
        if unknown:
            terms = ",".join(f"{{{json_term(k)},{json_term(v)}}}" for k, v in unknown)
            raise AdminError(f"Validation failed\n\nUnrecognised terms [{terms}] in limits\n")
        values = {key: _check_limit(key, value) for key, value in limits.items()}
        vhost.limits = VhostLimits.from_json(values)
        self.saved()

    def clear_vhost_limit(self, vhost_name: str, key: str | None = None) -> None:
        vhost = self.broker.vhosts.get(vhost_name)
        if vhost is None:
            raise AdminError("vhost_not_found", missing=True)
        kept = {} if key is None else {k: v for k, v in vhost.limits.to_json().items() if k != key}
        vhost.limits = VhostLimits.from_json(kept)
        self.saved()

    def set_user_limits(self, name: str, limits: Mapping[str, Any]) -> None:
        user = self.user(name)
        unknown = [(k, v) for k, v in limits.items() if k not in USER_LIMIT_KEYS]
        if unknown:
            terms = ",".join(f"{{{json_term(k)},{json_term(v)}}}" for k, v in unknown)
            raise AdminError(f"Validation failed\n\nUnrecognised terms [{terms}] in limits\n")
        values = {**user.limits.to_json(), **{k: _check_limit(k, v) for k, v in limits.items()}}
        self.access.users[name] = replace(user, limits=UserLimits.from_json(values))
        self.saved()

    def clear_user_limit(self, name: str, key: str | None = None) -> None:
        user = self.user(name)
        kept = {} if key is None else {k: v for k, v in user.limits.to_json().items() if k != key}
        self.access.users[name] = replace(user, limits=UserLimits.from_json(kept))
        self.saved()

    # ------------------------------------------------------- parameters
    def set_parameter(self, component: str, vhost: str, name: str, value: Any) -> bool:
        if vhost not in self.broker.vhosts:
            raise AdminError("vhost_not_found", missing=True)
        if component == "vhost-limits":
            if not isinstance(value, Mapping):
                raise AdminError("Validation failed\n\nlimits should be a map\n")
            self.set_vhost_limits(self.broker.vhosts[vhost], value)
            return True
        raise AdminError(f"Validation failed\n\ncomponent {component} not found\n")

    def clear_parameter(self, component: str, vhost: str, name: str) -> bool:
        if component == "vhost-limits" and vhost in self.broker.vhosts:
            if not self.broker.vhosts[vhost].limits.to_json():
                return False
            self.clear_vhost_limit(vhost)
            return True
        if self.parameters.pop((vhost, component, name), None) is None:
            return False
        self.saved()
        return True

    def parameter_list(self, component: str | None = None, vhost: str | None = None) -> list[dict[str, Any]]:
        items = [
            {"value": v.limits.to_json(), "vhost": v.name, "component": "vhost-limits", "name": "limits"}
            for v in self.broker.vhosts.values() if v.limits.to_json()
        ]
        items += [  # operator policies are parameters to RabbitMQ (leveret.broker.policies)
            {"value": p.to_parameter_value(), "vhost": v.name, "component": "operator_policy", "name": p.name}
            for v in self.broker.vhosts.values() for p in v.policies.listed(operator=True)
        ]
        items += [{"value": value, "vhost": vh, "component": comp, "name": name}
                  for (vh, comp, name), value in sorted(self.parameters.items())]
        return [item for item in items
                if (component is None or item["component"] == component) and (vhost is None or item["vhost"] == vhost)]

    def set_global_parameter(self, name: str, value: Any) -> bool:
        """True when it is new."""
        new = name not in self.global_parameters
        self.global_parameters[name] = value
        self.saved()
        return new

    def clear_global_parameter(self, name: str) -> bool:
        if self.global_parameters.pop(name, None) is None:
            return False
        self.saved()
        return True

    def cluster_name(self, default: str) -> str:
        value = self.global_parameters.get(CLUSTER_NAME)
        return value if isinstance(value, str) else default

    # ---------------------------------------------------------- snapshot
    def snapshot(self) -> dict[str, Any]:
        """Users, vhosts, permissions, limits and parameters, as a definitions export has them."""
        return {
            **self.access.export(),
            "vhosts": [{"name": name, "limits": v.limits.to_json()} for name, v in sorted(self.broker.vhosts.items())],
            "parameters": self.parameter_list(),
            "global_parameters": [{"name": k, "value": v} for k, v in sorted(self.global_parameters.items())],
        }

    def restore(self, data: Mapping[str, Any]) -> list[str]:
        """Take back a snapshot (at boot, before topology recovery); the warnings it gave."""
        self.access.users.clear()
        self.access.permissions.clear()
        self.access.topic_permissions.clear()
        names = [str(item["name"]) for item in data.get("vhosts") or [] if isinstance(item, Mapping)]
        for name in list(self.broker.vhosts):
            if name not in names and not self.broker.vhosts[name].queues:
                del self.broker.vhosts[name]
        for name in names:
            self.broker.add_vhost(name)
        warnings = self.access.load_definitions(data).warnings
        self.load_parameters(data)
        return warnings

    def load_parameters(self, data: Mapping[str, Any]) -> None:
        """Limits and parameters of a definitions file or snapshot."""
        for item in data.get("vhosts") or []:
            found = self.broker.vhosts.get(str(item.get("name"))) if isinstance(item, Mapping) else None
            if found is not None and isinstance(item.get("limits"), Mapping) and item["limits"]:
                found.limits = VhostLimits.from_json(item["limits"])
        for item in data.get("parameters") or []:
            if not isinstance(item, Mapping):
                continue
            vhost, component, name = (str(item.get(k, "")) for k in ("vhost", "component", "name"))
            if component in ("vhost-limits", "operator_policy"):
                continue  # load_definitions applies those to the vhost
            # Kept for the round trip to RabbitMQ; their plugins are not here to act on them.
            self.parameters[(vhost, component, name)] = item.get("value")
        for item in data.get("global_parameters") or []:
            if isinstance(item, Mapping) and isinstance(item.get("name"), str):
                self.global_parameters[item["name"]] = item.get("value")


def _empty(vhost: VirtualHost) -> None:
    """Delete everything a vhost holds, journalling the durable parts."""
    for queue in list(vhost.queues.values()):
        vhost.queue_table.remove_queue(queue, "vhost_deleted")
    for exchange in list(vhost.exchanges.values()):
        if exchange.name and not exchange.name.startswith("amq."):
            vhost.topology.remove_exchange(exchange)
    for operator in (False, True):  # journalled too: a vhost made again starts without them
        for name in list(vhost.policies.table(operator)):
            vhost.clear_policy(name, 0, operator=operator)
