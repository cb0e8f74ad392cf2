"""GET /api/bindings[/VHOST], and the binding shapes queues and exchanges list too."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from leveret.bindings.model import Binding
from leveret.broker.definitions import json_value
from leveret.broker.vhost import VirtualHost
from leveret.management.routes import Call, Route


def properties_key(binding_key: str, arguments: Mapping[str, Any]) -> str:
    """An opaque id for a binding in URLs: the quoted key, then `~hash` when it has arguments."""
    key = quote(binding_key, safe="")
    if not arguments:
        return key
    digest = hashlib.sha1(json.dumps(json_value(arguments), sort_keys=True).encode()).digest()
    return key + "~" + base64.urlsafe_b64encode(digest[:4]).decode().rstrip("=")


def default_binding(vhost: VirtualHost, queue: str) -> dict[str, Any]:
    return {
        "source": "", "vhost": vhost.name, "destination": queue, "destination_type": "queue",
        "routing_key": queue, "arguments": {}, "properties_key": properties_key(queue, {}),
    }


def binding(vhost: VirtualHost, binding: Binding) -> dict[str, Any]:
    arguments = binding.arguments_dict
    return {
        "source": binding.source, "vhost": vhost.name, "destination": binding.destination.name,
        "destination_type": binding.destination.kind, "routing_key": binding.binding_key,
        "arguments": json_value(arguments), "properties_key": properties_key(binding.binding_key, arguments),
    }


def sorted_bindings(bindings: Iterable[Binding]) -> list[Binding]:
    return sorted(bindings, key=lambda b: (b.source, b.destination.kind, b.destination.name, b.binding_key,
                                           repr(b.arguments)))


def listed(vhosts: Iterable[VirtualHost]) -> list[dict[str, Any]]:
    """The default exchange's implicit bindings first, as RabbitMQ lists them."""
    out: list[dict[str, Any]] = []
    for v in vhosts:
        out.extend(default_binding(v, name) for name in sorted(v.queues))
        out.extend(binding(v, b) for b in sorted_bindings(v.bindings()))
    return out


def all_bindings(call: Call) -> list[dict[str, Any]]:
    return listed(call.m.vhosts())


def vhost_bindings(call: Call, vhost: str) -> list[dict[str, Any]]:
    return listed([call.vhost(vhost)])


ROUTES = (
    Route("GET", "bindings", all_bindings),
    Route("GET", "bindings/{vhost}", vhost_bindings),
)
