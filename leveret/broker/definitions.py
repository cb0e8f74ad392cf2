"""RabbitMQ definitions (the JSON `rabbitmqctl export_definitions` and the
management UI write): load exchanges, queues and bindings into a VirtualHost,
and export a vhost's topology in the same format.

Topology is read, and a vhost's limits (the "vhost-limits" parameter, applied
first, as RabbitMQ's import does); users and permissions are leveret.broker.auth's
business, other parameters are ignored. Policies
are applied the way RabbitMQ would see them for routing and dead-lettering:
the one matching policy with the highest priority, its keys turned into the
queue or exchange arguments they stand for. A queue's own argument wins, except
for limits and TTLs, where the smaller value does (RabbitMQ's rule for those).
"""

from __future__ import annotations

import datetime
import decimal
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pamqp import exceptions

from leveret.bindings.model import Destination
from leveret.broker.limits import VhostLimits
from leveret.broker.vhost import VirtualHost
from leveret.version import RABBITMQ_VERSION

# policy key -> (argument it stands for, whether the smaller value wins)
_QUEUE_POLICY_KEYS: dict[str, tuple[str, bool]] = {
    "message-ttl": ("x-message-ttl", True),
    "expires": ("x-expires", True),
    "max-length": ("x-max-length", True),
    "max-length-bytes": ("x-max-length-bytes", True),
    "delivery-limit": ("x-delivery-limit", True),
    "overflow": ("x-overflow", False),
    "dead-letter-exchange": ("x-dead-letter-exchange", False),
    "dead-letter-routing-key": ("x-dead-letter-routing-key", False),
}
_EXCHANGE_POLICY_KEYS = {"alternate-exchange": "alternate-exchange"}


@dataclass(slots=True)
class LoadResult:
    exchanges: int = 0
    queues: int = 0
    bindings: int = 0
    warnings: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = ", ".join(_plural(n, noun) for n, noun in (
            (self.exchanges, "exchange"), (self.queues, "queue"), (self.bindings, "binding")))
        if self.warnings:
            text += f" ({_plural(len(self.warnings), 'warning')})"
        return text


def _plural(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


@dataclass(frozen=True, slots=True)
class _Policy:
    name: str
    pattern: re.Pattern[str]
    apply_to: str
    priority: int
    definition: Mapping[str, Any]

    def applies(self, name: str, kind: str) -> bool:
        if self.apply_to not in ("all", kind, f"classic_{kind}", f"quorum_{kind}"):
            return False
        return self.pattern.search(name) is not None


def _in_vhost(item: Mapping[str, Any], vhost: str) -> bool:
    # Exports of a single vhost leave the field out.
    return item.get("vhost", vhost) == vhost


_KINDS = (("exchanges", "exchange"), ("queues", "queue"), ("bindings", "binding"),
          ("policies", "policy"), ("parameters", "parameter"), ("permissions", "permissions"),
          ("topic_permissions", "topic permissions"))


def outside_vhosts(data: Mapping[str, Any], vhosts: set[str]) -> list[str]:
    """What in `data` names a vhost not in `vhosts` (those the file and the broker
    have), one line each: loading would leave it out, so it cannot be applied."""
    found: list[str] = []
    for key, kind in _KINDS:
        for item in data.get(key) or ():
            if isinstance(item, Mapping) and "vhost" in item and item["vhost"] not in vhosts:
                what = (f"binding of {item.get('source', '')!r} to {item.get('destination', '')!r}"
                        if key == "bindings" else
                        f"{kind} of user {item.get('user')!r}" if "permissions" in key else
                        f"{kind} {item.get('name')!r}")
                found.append(f"{what} is in vhost {item['vhost']!r}, which the file does not declare")
    return found


def _policies(data: Mapping[str, Any], vhost: str, result: LoadResult) -> list[_Policy]:
    policies: list[_Policy] = []
    for item in data.get("policies") or []:
        if not isinstance(item, Mapping) or not _in_vhost(item, vhost):
            continue
        try:
            pattern = re.compile(str(item.get("pattern", "")))
        except re.error as error:
            result.warnings.append(f"policy {item.get('name')!r}: bad pattern ({error})")
            continue
        policies.append(_Policy(
            name=str(item.get("name", "")),
            pattern=pattern,
            apply_to=str(item.get("apply-to", "all")),
            priority=int(item.get("priority", 0) or 0),
            definition=item.get("definition") or {},
        ))
    # Highest priority first; RabbitMQ breaks ties by name.
    policies.sort(key=lambda p: (-p.priority, p.name))
    return policies


def _policy_for(policies: list[_Policy], name: str, kind: str) -> _Policy | None:
    return next((p for p in policies if p.applies(name, kind)), None)


def _queue_arguments(arguments: dict[str, Any], policy: _Policy | None) -> dict[str, Any]:
    if policy is None:
        return arguments
    merged = dict(arguments)
    for key, (argument, smaller_wins) in _QUEUE_POLICY_KEYS.items():
        if key not in policy.definition:
            continue
        value = policy.definition[key]
        if argument not in merged:
            merged[argument] = value
        elif smaller_wins and isinstance(value, int) and isinstance(merged[argument], int):
            merged[argument] = min(value, merged[argument])
    return merged


def load_definitions(
    vhost: VirtualHost, data: Mapping[str, Any], *, now_ms: int = 0, vhost_name: str | None = None
) -> LoadResult:
    """Declare what `data` holds for `vhost_name` (default: the vhost's own name).

    A declaration the broker refuses becomes a warning, so one bad entry does
    not hide the rest of a large export.
    """
    name_filter = vhost_name or vhost.name
    result = LoadResult()
    for item in data.get("parameters") or []:
        if not isinstance(item, Mapping) or not _in_vhost(item, name_filter):
            continue
        if item.get("component") == "vhost-limits":
            value = item.get("value")
            try:
                if not isinstance(value, Mapping):
                    raise ValueError(f"not an object: {value!r}")
                vhost.limits = VhostLimits.from_json(value)
            except ValueError as error:
                result.warnings.append(f"vhost limits of {name_filter!r}: {error}")
    policies = _policies(data, name_filter, result)
    for item in data.get("exchanges") or []:
        if not isinstance(item, Mapping) or not _in_vhost(item, name_filter):
            continue
        name = str(item.get("name", ""))
        if not name or name.startswith("amq."):
            continue  # predeclared
        arguments = dict(item.get("arguments") or {})
        policy = _policy_for(policies, name, "exchanges")
        if policy is not None:
            for key, argument in _EXCHANGE_POLICY_KEYS.items():
                if key in policy.definition and argument not in arguments:
                    arguments[argument] = policy.definition[key]
        try:
            vhost.declare_exchange(
                name, str(item.get("type", "direct")),
                durable=bool(item.get("durable", True)),
                auto_delete=bool(item.get("auto_delete", False)),
                internal=bool(item.get("internal", False)),
                arguments=arguments,
            )
            result.exchanges += 1
        except exceptions.AMQPError as error:
            result.warnings.append(f"exchange {name!r}: {error}")
    for item in data.get("queues") or []:
        if not isinstance(item, Mapping) or not _in_vhost(item, name_filter):
            continue
        name = str(item.get("name", ""))
        arguments = _queue_arguments(dict(item.get("arguments") or {}),
                                     _policy_for(policies, name, "queues"))
        try:
            vhost.declare_queue(
                name, durable=bool(item.get("durable", True)),
                auto_delete=bool(item.get("auto_delete", False)),
                arguments=arguments, now_ms=now_ms,
            )
            result.queues += 1
        except exceptions.AMQPError as error:
            result.warnings.append(f"queue {name!r}: {error}")
    for item in data.get("bindings") or []:
        if not isinstance(item, Mapping) or not _in_vhost(item, name_filter):
            continue
        name = str(item.get("destination", ""))
        is_exchange = item.get("destination_type") == "exchange"
        destination = Destination.exchange(name) if is_exchange else Destination.queue(name)
        try:
            vhost.bind(str(item.get("source", "")), destination, str(item.get("routing_key", "")),
                       dict(item.get("arguments") or {}))
            result.bindings += 1
        except exceptions.AMQPError as error:
            result.warnings.append(f"binding {item.get('source')!r} -> {destination}: {error}")
    return result


def json_value(value: Any) -> Any:
    """A field value as RabbitMQ's JSON (exports, management API) writes it."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, datetime.datetime):
        return int(value.timestamp())
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    return value


def export_definitions(vhost: VirtualHost) -> dict[str, Any]:
    """The vhost's topology in RabbitMQ's definitions format (exclusive queues,
    the default exchange and the amq.* exchanges are left out, as RabbitMQ does)."""
    exchanges = [
        {
            "name": exchange.name,
            "vhost": vhost.name,
            "type": exchange.type_name,
            "durable": exchange.durable,
            "auto_delete": exchange.auto_delete,
            "internal": exchange.internal,
            "arguments": json_value(exchange.arguments),
        }
        for exchange in sorted(vhost.exchanges.values(), key=lambda x: x.name)
        if exchange.name and not exchange.name.startswith("amq.")
    ]
    queues = [
        {
            "name": queue.name,
            "vhost": vhost.name,
            "durable": queue.durable,
            "auto_delete": queue.auto_delete,
            "arguments": json_value(queue.arguments),
        }
        for queue in sorted(vhost.queues.values(), key=lambda q: q.name)
        if not queue.is_exclusive
    ]
    exported_queues = {q["name"] for q in queues}
    bindings = [
        {
            "source": binding.source,
            "vhost": vhost.name,
            "destination": binding.destination.name,
            "destination_type": binding.destination.kind,
            "routing_key": binding.binding_key,
            "arguments": json_value(binding.arguments_dict),
        }
        for binding in sorted(
            vhost.bindings(),
            key=lambda b: (b.source, b.destination.kind, b.destination.name, b.binding_key, repr(b.arguments)),
        )
        if binding.destination.kind == "exchange" or binding.destination.name in exported_queues
    ]
    return {
        "rabbit_version": RABBITMQ_VERSION,
        "rabbitmq_version": RABBITMQ_VERSION,
        "users": [],
        "vhosts": [{"name": vhost.name}],
        "permissions": [],
        "topic_permissions": [],
        "parameters": [
            {"value": limits, "vhost": vhost.name, "component": "vhost-limits", "name": "limits"}
            for limits in (vhost.limits.to_json(),)
            if limits
        ],
        "global_parameters": [],
        "policies": [],
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    }
