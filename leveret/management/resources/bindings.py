"""/api/bindings: list, and create (POST), show and delete (DELETE) one by its
`properties_key`, between an exchange and a queue (`e/X/q/Q`) or two
exchanges (`e/X/e/Y`); and the binding shapes queues and exchanges list too."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote_plus

from pamqp import exceptions

from leveret.bindings.model import Binding, Destination
from leveret.broker.definitions import json_value
from leveret.broker.vhost import VirtualHost
from leveret.management.http import Response
from leveret.management.routes import Call, HttpError, Route, bad_request, not_found


def properties_key(binding_key: str, arguments: Mapping[str, Any]) -> str:
    """An opaque id for a binding in URLs: the key quoted as RabbitMQ quotes it
    (quote_plus), then `~hash` when it has arguments. RabbitMQ's hash is
    erlang:phash2 of the argument table; leveret's is its own (ids are opaque)."""
    key = quote_plus(binding_key, safe="")
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
    return listed(call.vhosts())


def vhost_bindings(call: Call, vhost: str) -> list[dict[str, Any]]:
    return listed([call.vhost(vhost)])


_KINDS = {"q": "queue", "e": "exchange"}


def _between(call: Call, vhost: str, source: str, kind: str, destination: str) -> tuple[VirtualHost, Destination]:
    target = call.vhost(vhost)
    source = "" if source == "amq.default" else source
    if source not in target.exchanges:
        raise not_found()
    to = Destination(_KINDS[kind], destination)  # type: ignore[arg-type]
    if (kind == "q" and destination not in target.queues) or (kind == "e" and destination not in target.exchanges):
        raise not_found()
    return target, to


def _listed_between(call: Call, vhost: str, source: str, kind: str, destination: str) -> list[dict[str, Any]]:
    target, to = _between(call, vhost, source, kind, destination)
    return [binding(target, b) for b in sorted_bindings(target.exchanges[source].bindings) if b.destination == to]


def exchange_queue(call: Call, vhost: str, source: str, destination: str) -> list[dict[str, Any]]:
    return _listed_between(call, vhost, source, "q", destination)


def exchange_exchange(call: Call, vhost: str, source: str, destination: str) -> list[dict[str, Any]]:
    return _listed_between(call, vhost, source, "e", destination)


def _create(call: Call, vhost: str, source: str, kind: str, destination: str) -> Response:
    target = call.as_client(vhost)
    body = call.body()
    routing_key = str(body.get("routing_key", ""))
    arguments = body.get("arguments") or {}
    if not isinstance(arguments, dict):
        raise bad_request("arguments must be an object")
    to = Destination(_KINDS[kind], destination)  # type: ignore[arg-type]
    try:
        call.run(lambda: target.bind(source, to, routing_key, arguments))
    except exceptions.AMQPNotFound as error:
        reason = str(error.args[0]) if error.args else str(error)
        raise HttpError(404, "not_found", reason.removeprefix("NOT_FOUND - ")) from None
    location = quote_plus(destination, safe="") + "/" + properties_key(routing_key, arguments)
    return Response(201, headers=(("location", location),))


def bind_queue(call: Call, vhost: str, source: str, destination: str) -> Response:
    return _create(call, vhost, source, "q", destination)


def bind_exchange(call: Call, vhost: str, source: str, destination: str) -> Response:
    return _create(call, vhost, source, "e", destination)


def _one(call: Call, vhost: str, source: str, kind: str, destination: str, props: str) -> tuple[VirtualHost, Binding]:
    target, to = _between(call, vhost, source, kind, destination)
    key, _, digest = props.partition("~")
    keys = {key, key.replace("+", " ")}  # the segment arrives percent-decoded; '+' was a space
    for found in target.exchanges[source].bindings:
        if found.destination != to or found.binding_key not in keys:
            continue
        if properties_key(found.binding_key, found.arguments_dict).partition("~")[2] == digest:
            return target, found
    raise not_found()


def show_queue_binding(call: Call, vhost: str, source: str, destination: str, props: str) -> dict[str, Any]:
    return binding(*_one(call, vhost, source, "q", destination, props))


def show_exchange_binding(call: Call, vhost: str, source: str, destination: str, props: str) -> dict[str, Any]:
    return binding(*_one(call, vhost, source, "e", destination, props))


def _delete(call: Call, vhost: str, source: str, kind: str, destination: str, props: str) -> Response:
    target, found = _one(call, vhost, source, kind, destination, props)
    call.as_client(vhost)
    call.run(lambda: target.unbind(found.source, found.destination, found.binding_key, found.arguments_dict))
    return Response(204)


def unbind_queue(call: Call, vhost: str, source: str, destination: str, props: str) -> Response:
    return _delete(call, vhost, source, "q", destination, props)


def unbind_exchange(call: Call, vhost: str, source: str, destination: str, props: str) -> Response:
    return _delete(call, vhost, source, "e", destination, props)


ROUTES = (
    Route("GET", "bindings", all_bindings),
    Route("GET", "bindings/{vhost}", vhost_bindings),
    Route("GET", "bindings/{vhost}/e/{source}/q/{destination}", exchange_queue),
    Route("POST", "bindings/{vhost}/e/{source}/q/{destination}", bind_queue),
    Route("GET", "bindings/{vhost}/e/{source}/q/{destination}/{props}", show_queue_binding),
    Route("DELETE", "bindings/{vhost}/e/{source}/q/{destination}/{props}", unbind_queue),
    Route("GET", "bindings/{vhost}/e/{source}/e/{destination}", exchange_exchange),
    Route("POST", "bindings/{vhost}/e/{source}/e/{destination}", bind_exchange),
    Route("GET", "bindings/{vhost}/e/{source}/e/{destination}/{props}", show_exchange_binding),
    Route("DELETE", "bindings/{vhost}/e/{source}/e/{destination}/{props}", unbind_exchange),
)
