"""POST /api/exchanges/V/X/publish and POST /api/queues/V/Q/get: messages over HTTP.

As RabbitMQ's management plugin does them: publish answers `{"routed": bool}`
once the message is where it was routed (on disk, for a persistent one in a
durable queue: its publish uses confirms); get takes up to `count` messages
and acks, requeues or rejects them as `ackmode` says, answering each with its
payload as a string when it is valid UTF-8 (`encoding: auto`) or else base64,
cut to `truncate` bytes.
"""

from __future__ import annotations

import base64
import binascii
import datetime
from typing import Any

from pamqp import commands
from pamqp import exceptions as pamqp_exceptions

from leveret.amqp_wire.properties import encode_properties
from leveret.broker.definitions import json_value
from leveret.management.resources.exchanges import real_name
from leveret.management.resources.queues import find_queue
from leveret.management.routes import Call, HttpError, Route, bad_request
from leveret.queues.message import Message

PROPERTY_NAMES = ("content_type", "content_encoding", "headers", "delivery_mode", "priority", "correlation_id",
                  "reply_to", "expiration", "message_id", "timestamp", "type", "user_id", "app_id", "cluster_id")
ACKMODES = {"ack_requeue_true": "requeue", "ack_requeue_false": "ack",
            "reject_requeue_true": "requeue", "reject_requeue_false": "reject"}


def publish(call: Call, vhost: str, name: str) -> dict[str, Any]:
    target = call.as_client(vhost)
    body = call.body()
    call.required(body, "routing_key", "properties", "payload", "payload_encoding")
    payload = _payload(body["payload"], body["payload_encoding"])
    limit = call.m.broker.settings.max_message_size
    if len(payload) > limit:
        # The same rule as an AMQP publish (the management plugin publishes on a channel).
        raise bad_request(f"406 PRECONDITION_FAILED - message size {len(payload)} "
                          f"is larger than configured max size {limit}")
    raw = body["properties"]
    if not isinstance(raw, dict):
        raw = {}  # RabbitMQ's UI sends [] for no properties
    given = {k: raw[k] for k in PROPERTY_NAMES if k in raw}
    if isinstance(given.get("timestamp"), int):
        given["timestamp"] = datetime.datetime.fromtimestamp(given["timestamp"], datetime.UTC)
    try:
        properties = commands.Basic.Properties(**given)
        encoded = encode_properties(properties)
    except (TypeError, ValueError, pamqp_exceptions.PAMQPException) as error:
        raise bad_request(f"bad properties: {error}") from None
    exchange = real_name(name)
    if exchange not in target.exchanges:
        raise bad_request(f"404 NOT_FOUND - no exchange '{exchange}' in vhost '{vhost}'")
    routing_key = str(body["routing_key"])
    if not call.may(vhost, "write", name):
        return {"routed": False}  # RabbitMQ's channel is refused; its answer says only this
    message = Message(exchange, routing_key, properties, payload, encoded)
    outcome = call.run(lambda: target.publish(exchange, message, call.m.broker.now_ms()))
    store = call.m.broker.store
    if store is not None and outcome.routed and message.persistent:
        store.sync()  # what a confirm would wait for
    return {"routed": outcome.routed}


def _payload(payload: Any, encoding: Any) -> bytes:
    text = str(payload)
    if encoding == "base64":
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise bad_request("not_base64") from None
    if encoding != "string":
        raise bad_request(f"unsupported payload_encoding {encoding}")
    return text.encode("utf-8")


def get(call: Call, vhost: str, name: str) -> list[dict[str, Any]]:
    body = call.body()
    call.required(body, "count", "ackmode", "encoding")
    encoding = body["encoding"]
    if encoding not in ("auto", "base64"):
        raise bad_request("Unsupported encoding. Please use auto or base64.")
    settle = ACKMODES.get(str(body["ackmode"]))
    if settle is None:
        raise HttpError(500, "internal_error", f"unknown ackmode {body['ackmode']}")
    truncate = body.get("truncate")
    try:
        vhost_object = call.vhost(vhost)
        find_queue(call, vhost, name)
    except HttpError:
        raise HttpError(404, "not_found", f"NOT_FOUND - no queue '{name}' in vhost '{vhost}'") from None
    call.as_client(vhost, "read", name)
    count = max(int(body["count"]), 0)

    def take() -> list[dict[str, Any]]:
        now = call.m.broker.now_ms()
        taken = []
        for _ in range(count):
            outcome = vhost_object.get(name, no_ack=settle == "ack", owner=None, now_ms=now)
            if outcome.entry is None:
                break
            taken.append((outcome.entry, outcome.message_count))
        queue = vhost_object.queues[name]
        entries = [entry for entry, _ in taken]
        answers = [_message(entry, left, encoding, truncate) for entry, left in taken]
        if settle == "requeue" and entries:
            vhost_object.requeue(queue, entries, now)
        elif settle == "reject" and entries:
            vhost_object.reject(queue, entries, now)
        return answers

    return list(call.run(take))


def _message(entry: Any, left: int, encoding: str, truncate: Any) -> dict[str, Any]:
    message = entry.message
    body = message.body
    if isinstance(truncate, int) and not isinstance(truncate, bool) and truncate >= 0:
        body = body[:truncate]
    text: str | None = None
    if encoding == "auto":
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    properties = _properties(message.properties)
    return {
        "payload_bytes": len(message.body), "redelivered": entry.redelivered, "exchange": message.exchange,
        "routing_key": message.routing_key, "message_count": left,
        "properties": properties if properties else [],
        "payload": text if text is not None else base64.b64encode(body).decode("ascii"),
        "payload_encoding": "string" if text is not None else "base64",
    }


def _properties(properties: commands.Basic.Properties) -> dict[str, Any]:
    out = {}
    for key in PROPERTY_NAMES:
        value = getattr(properties, key, None)
        if value is not None and not (key == "cluster_id" and value == ""):  # pamqp's default
            out[key] = json_value(value)
    return dict(sorted(out.items()))


ROUTES = (
    Route("POST", "exchanges/{vhost}/{name}/publish", publish),
    Route("POST", "queues/{vhost}/{name}/get", get),
)
