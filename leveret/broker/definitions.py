"""RabbitMQ definitions (the JSON `rabbitmqctl export_definitions` and the
management UI write): load exchanges, queues and bindings into a VirtualHost,
and export a vhost's topology in the same format.

Topology is read, and a vhost's limits (the "vhost-limits" parameter, applied
first, as RabbitMQ's import does), its policies and operator policies (the
"operator_policy" parameters); users and permissions are leveret.broker.auth's
business, other parameters are ignored. Policies stay objects of their own
(leveret.broker.policies), never folded into queue arguments, so an
application's plain re-declare of a queue a policy governs stays equivalent.
"""

from __future__ import annotations

import datetime
import decimal
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pamqp import exceptions

from leveret.bindings.model import Destination
from leveret.broker.limits import VhostLimits
from leveret.broker.policies import PolicyError, parse_policy
from leveret.broker.vhost import VirtualHost
from leveret.version import RABBITMQ_VERSION


@dataclass(slots=True)
class LoadResult:
    exchanges: int = 0
    queues: int = 0
    bindings: int = 0
    policies: int = 0
    warnings: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = ", ".join(_plural(n, noun) for n, noun in (
            (self.exchanges, "exchange"), (self.queues, "queue"), (self.bindings, "binding"))
            + ((self.policies, "policy"),) * bool(self.policies))
        if self.warnings:
            text += f" ({_plural(len(self.warnings), 'warning')})"
        return text


def _plural(number: int, noun: str) -> str:
    if number == 1:
        return f"{number} {noun}"
    return f"{number} {noun[:-1]}ies" if noun.endswith("y") else f"{number} {noun}s"


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


def _load_policies(vhost: VirtualHost, data: Mapping[str, Any], name_filter: str,
                   now_ms: int, result: LoadResult) -> None:
    """Policies (the `policies` list) and operator policies (parameters of component
    operator_policy, as RabbitMQ exports them), validated as the HTTP API does."""
    found: list[tuple[Mapping[str, Any], Mapping[str, Any], bool]] = []
    for item in data.get("policies") or []:
        if isinstance(item, Mapping) and _in_vhost(item, name_filter):
            found.append((item, item, False))
    for item in data.get("parameters") or []:
        if (isinstance(item, Mapping) and _in_vhost(item, name_filter)
                and item.get("component") == "operator_policy" and isinstance(item.get("value"), Mapping)):
            found.append((item, item["value"], True))
    for item, body, operator in found:
        name = str(item.get("name", ""))
        try:
            policy = parse_policy(vhost.name, name, body, operator=operator)
        except PolicyError as error:
            kind = "operator policy" if operator else "policy"
            result.warnings.append(f"{kind} {name!r}: {error.reason.strip()}")
            continue
        vhost.set_policy(policy, now_ms, operator=operator)
        result.policies += 1


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
    _load_policies(vhost, data, name_filter, now_ms, result)
    for item in data.get("exchanges") or []:
        if not isinstance(item, Mapping) or not _in_vhost(item, name_filter):
            continue
        name = str(item.get("name", ""))
        if not name or name.startswith("amq."):
            continue  # predeclared
        arguments = dict(item.get("arguments") or {})
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
        arguments = dict(item.get("arguments") or {})
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
        ] + [
            {"value": policy.to_parameter_value(), "vhost": vhost.name,
             "component": "operator_policy", "name": policy.name}
            for policy in vhost.policies.listed(operator=True)
        ],
        "global_parameters": [],
        "policies": [policy.to_json() for policy in vhost.policies.listed()],
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    }
