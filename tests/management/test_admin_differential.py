"""Differential: runtime administration over HTTP, the same answers as the reference RabbitMQ.

Each scenario is a list of requests run in order against leveret and against
the reference's management API (skipped when it is unreachable), with unique
user and vhost names; every answer's status and JSON body must be equal
(password hashes, salted at random, compared by shape). What a scenario
creates is deleted afterwards on both sides.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from leveret.management import ManagementServer
from tests.management.conftest import Http

pytestmark = pytest.mark.rabbitmq

RABBITMQ_HTTP = "http://127.0.0.1:15672"

Step = tuple[str, str, Any]  # method, path ({u} user, {v} vhost, {q} queue), body (None: no body)

SCENARIOS: dict[str, list[Step]] = {
    "users": [
        ("GET", "/api/users/{u}", None),
        ("PUT", "/api/users/{u}", {"password": "pw", "tags": "monitoring"}),
        ("PUT", "/api/users/{u}", {"password": "pw", "tags": "monitoring"}),
        ("GET", "/api/users/{u}", None),
        ("PUT", "/api/users/{u}", {"password": "pw", "tags": ["management", "custom"]}),
        ("GET", "/api/users/{u}", None),
        ("PUT", "/api/users/{u}", {"password": "pw"}),
        ("PUT", "/api/users/{u}", {"password_hash": "abc", "tags": ""}),
        ("PUT", "/api/users/{u}", {"password_hash": "", "tags": "administrator"}),
        ("GET", "/api/users/{u}", None),
        ("PUT", "/api/users/{u}", b"{bad"),
        ("PUT", "/api/users/{u}", b"[1]"),
        ("DELETE", "/api/users/{u}", None),
        ("DELETE", "/api/users/{u}", None),
        ("GET", "/api/users/{u}/permissions", None),
    ],
    "permissions": [
        ("PUT", "/api/users/{u}", {"password": "pw", "tags": ""}),
        ("PUT", "/api/permissions/{v}/{u}", {"configure": ".*", "write": ".*", "read": ".*"}),
        ("PUT", "/api/vhosts/{v}", None),
        ("PUT", "/api/vhosts/{v}", None),
        ("PUT", "/api/permissions/{v}/nosuchuser-{u}", {"configure": ".*", "write": ".*", "read": ".*"}),
        ("PUT", "/api/permissions/{v}/{u}", {"configure": ".*"}),
        ("PUT", "/api/permissions/{v}/{u}", {"configure": "^a", "write": "^b", "read": ""}),
        ("PUT", "/api/permissions/{v}/{u}", {"configure": "^a", "write": "^b", "read": ""}),
        ("GET", "/api/permissions/{v}/{u}", None),
        ("GET", "/api/users/{u}/permissions", None),
        ("GET", "/api/vhosts/{v}/permissions", None),
        ("PUT", "/api/topic-permissions/{v}/{u}", {"write": ".*", "read": ".*"}),
        ("PUT", "/api/topic-permissions/{v}/{u}", {"exchange": "amq.topic", "write": "^a", "read": ".*"}),
        ("GET", "/api/topic-permissions/{v}/{u}", None),
        ("GET", "/api/vhosts/{v}/topic-permissions", None),
        ("DELETE", "/api/topic-permissions/{v}/{u}", None),
        ("DELETE", "/api/topic-permissions/{v}/{u}", None),
        ("DELETE", "/api/permissions/{v}/{u}", None),
        ("DELETE", "/api/permissions/{v}/{u}", None),
        ("GET", "/api/permissions/{v}/{u}", None),
        ("DELETE", "/api/vhosts/{v}", None),
        ("DELETE", "/api/vhosts/{v}", None),
        ("GET", "/api/vhosts/{v}", None),
    ],
    "limits": [
        ("PUT", "/api/users/{u}", {"password": "pw", "tags": ""}),
        ("PUT", "/api/vhosts/{v}", None),
        ("PUT", "/api/vhost-limits/{v}/max-connections", {"value": 10}),
        ("PUT", "/api/vhost-limits/{v}/max-queues", {"value": 5}),
        ("GET", "/api/vhost-limits/{v}", None),
        ("PUT", "/api/vhost-limits/{v}/max-connections", {"value": "x"}),
        ("PUT", "/api/vhost-limits/{v}/bogus", {"value": 10}),
        ("PUT", "/api/vhost-limits/nosuch-{v}/max-queues", {"value": 10}),
        ("DELETE", "/api/vhost-limits/{v}/max-connections", None),
        ("DELETE", "/api/vhost-limits/{v}/max-connections", None),
        ("GET", "/api/vhost-limits/{v}", None),
        ("GET", "/api/parameters/vhost-limits/{v}", None),
        ("PUT", "/api/user-limits/{u}/max-channels", {"value": 10}),
        ("GET", "/api/user-limits/{u}", None),
        ("PUT", "/api/user-limits/nosuch-{u}/max-channels", {"value": 10}),
        ("DELETE", "/api/user-limits/{u}/max-channels", None),
        ("GET", "/api/user-limits/{u}", None),
        ("DELETE", "/api/vhosts/{v}", None),
    ],
    "parameters": [
        ("PUT", "/api/parameters/federation-upstream/%2F/{u}", {"value": {"uri": "amqp://x"}}),
        ("PUT", "/api/global-parameters/{u}", {"value": {"a": 1}}),
        ("PUT", "/api/global-parameters/{u}", {"value": "x"}),
        ("GET", "/api/global-parameters/{u}", None),
        ("DELETE", "/api/global-parameters/{u}", None),
        ("DELETE", "/api/global-parameters/{u}", None),
        ("GET", "/api/global-parameters/{u}", None),
        ("GET", "/api/aliveness-test/nosuch-{v}", None),
        ("GET", "/api/health/checks/virtual-hosts", None),
        ("GET", "/api/health/checks/node-is-quorum-critical", None),
        ("GET", "/api/health/checks/node-is-mirror-sync-critical", None),
        ("GET", "/api/health/checks/certificate-expiration/1/months", None),
        ("GET", "/api/health/checks/protocol-listener/amqp", None),
    ],
    "messages": [
        ("PUT", "/api/queues/%2F/{q}", {"durable": False}),
        ("POST", "/api/exchanges/%2F/amq.default/publish",
         {"properties": {}, "routing_key": "{q}", "payload": "hello", "payload_encoding": "string"}),
        ("POST", "/api/exchanges/%2F/amq.default/publish",
         {"properties": {}, "routing_key": "nowhere-{q}", "payload": "hello", "payload_encoding": "string"}),
        ("POST", "/api/exchanges/%2F/amq.default/publish",
         {"properties": {"headers": {"a": 1}, "delivery_mode": 2, "content_type": "text/plain"},
          "routing_key": "{q}", "payload": "/w==", "payload_encoding": "base64"}),
        ("POST", "/api/exchanges/%2F/amq.default/publish", {"properties": {}, "routing_key": "{q}", "payload": "x"}),
        ("POST", "/api/exchanges/%2F/amq.default/publish", {"routing_key": "{q}", "payload": "x",
                                                            "payload_encoding": "string"}),
        ("POST", "/api/exchanges/%2F/nosuch-{q}/publish",
         {"properties": {}, "routing_key": "{q}", "payload": "x", "payload_encoding": "string"}),
        ("POST", "/api/queues/%2F/{q}/get", {"count": 5, "ackmode": "ack_requeue_true", "encoding": "auto",
                                             "truncate": 3}),
        ("POST", "/api/queues/%2F/{q}/get", {"count": 1, "ackmode": "reject_requeue_false", "encoding": "base64"}),
        ("POST", "/api/queues/%2F/{q}/get", {"count": 1, "ackmode": "ack_requeue_false", "encoding": "bogus"}),
        ("POST", "/api/queues/%2F/{q}/get", {"ackmode": "ack_requeue_false", "encoding": "auto"}),
        ("POST", "/api/queues/%2F/{q}/get", {"count": 3, "ackmode": "ack_requeue_false", "encoding": "auto"}),
        ("POST", "/api/queues/%2F/{q}/get", {"count": 3, "ackmode": "ack_requeue_false", "encoding": "auto"}),
        ("POST", "/api/queues/%2F/nosuch-{q}/get", {"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"}),
        ("DELETE", "/api/queues/%2F/{q}", None),
    ],
    "bindings": [
        ("PUT", "/api/queues/%2F/{q}", {"durable": False}),
        ("POST", "/api/bindings/%2F/e/amq.direct/q/{q}", {"routing_key": "k1", "arguments": {"x": 1}}),
        ("POST", "/api/bindings/%2F/e/amq.direct/q/{q}", {"routing_key": "k1", "arguments": {"x": 1}}),
        ("POST", "/api/bindings/%2F/e/amq.direct/q/{q}", {"routing_key": "k 2/x"}),
        ("GET", "/api/bindings/%2F/e/amq.direct/q/{q}", None),
        ("GET", "/api/bindings/%2F/e/amq.direct/q/{q}/k%202%2Fx", None),
        ("POST", "/api/bindings/%2F/e/amq.direct/q/nosuch-{q}", {"routing_key": "k1"}),
        ("POST", "/api/bindings/%2F/e/nosuch-{q}/q/{q}", {"routing_key": "k1"}),
        ("DELETE", "/api/bindings/%2F/e/amq.direct/q/{q}/k%202%2Fx", None),
        ("DELETE", "/api/bindings/%2F/e/amq.direct/q/{q}/k%202%2Fx", None),
        ("GET", "/api/bindings/%2F/e/amq.direct/q/{q}", None),
        ("DELETE", "/api/queues/%2F/{q}", None),
    ],
}


def _fill(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    return value


def _comparable(reply: Any) -> tuple[int, Any]:
    try:
        body = reply.json if reply.body else None
    except ValueError:
        body = reply.body
    return reply.status, _without_salt(body)


def _without_salt(body: Any) -> Any:
    """A salted hash becomes its decoded length (equal hashes of one algorithm, different salts); a
    binding's argument hash (RabbitMQ's is erlang:phash2, not reproduced) becomes whether it is there."""
    if isinstance(body, dict):
        return {k: (len(base64.b64decode(v)) if k == "password_hash" else
                    v.partition("~")[0] + ("~" if "~" in v else "") if k == "properties_key" else
                    _without_salt(v)) for k, v in body.items()}
    if isinstance(body, list):
        return [_without_salt(v) for v in body]
    return body


def run(http: Http, steps: list[Step], names: dict[str, str]) -> list[tuple[str, int, Any]]:
    answers = []
    for method, path, body in steps:
        path = _fill(path, names)
        if isinstance(body, bytes):
            reply = http.request(method, path, raw=body)
        else:
            reply = http.request(method, path, _fill(body, names))
        answers.append((f"{method} {path}", *_comparable(reply)))
    return answers


def cleanup(http: Http, names: dict[str, str]) -> None:
    http.request("DELETE", f"/api/users/{names['u']}")
    http.request("DELETE", f"/api/vhosts/{names['v']}")
    http.request("DELETE", f"/api/queues/%2F/{names['q']}")
    http.request("DELETE", f"/api/global-parameters/{names['u']}")


@pytest.fixture
def names(rabbitmq: Http, http: Http) -> Iterator[dict[str, str]]:
    suffix = uuid.uuid4().hex[:10]
    chosen = {"u": f"admin-test-user-{suffix}", "v": f"admin-test-vhost-{suffix}", "q": f"admin-test-q-{suffix}"}
    yield chosen
    cleanup(rabbitmq, chosen)
    cleanup(http, chosen)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_same_answers_as_rabbitmq(scenario: str, rabbitmq: Http, http: Http, names: dict[str, str]) -> None:
    theirs = run(rabbitmq, SCENARIOS[scenario], names)
    ours = run(http, SCENARIOS[scenario], names)

    for their, our in zip(theirs, ours, strict=True):
        assert our == their


def test_http_acts_with_the_users_own_permissions(rabbitmq: Http, http: Http, names: dict[str, str]) -> None:
    """A management user acts over HTTP as its AMQP permissions let it (here: names starting with 'a')."""
    user, queue = names["u"], names["q"]
    steps: list[Step] = [
        ("PUT", "/api/queues/%2F/a{q}", {"durable": False}),
        ("PUT", "/api/queues/%2F/{q}", {"durable": False}),
        ("PUT", "/api/exchanges/%2F/{q}", {"type": "direct"}),
        ("POST", "/api/exchanges/%2F/amq.direct/publish",
         {"properties": {}, "routing_key": "a{q}", "payload": "x", "payload_encoding": "string"}),
        ("POST", "/api/queues/%2F/a{q}/get", {"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"}),
        ("DELETE", "/api/queues/%2F/a{q}/contents", None),
        ("DELETE", "/api/queues/%2F/a{q}", None),
        ("POST", "/api/queues/%2F/{q}/get", {"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"}),
        ("DELETE", "/api/queues/%2F/{q}/contents", None),
        ("DELETE", "/api/queues/%2F/{q}", None),
    ]
    answers = []
    for admin in (rabbitmq, http):
        assert admin.request("PUT", f"/api/users/{user}", {"password": "pw", "tags": "management"}).status == 201
        assert admin.request("PUT", f"/api/permissions/%2F/{user}",
                             {"configure": "^a", "write": "^a", "read": "^a"}).status == 201
        assert admin.request("PUT", f"/api/queues/%2F/{queue}", {"durable": False}).status == 201
        as_user = Http(admin.url, user, "pw")
        try:
            answers.append(run(as_user, steps, names))
        finally:
            admin.request("DELETE", f"/api/queues/%2F/a{queue}")

    assert answers[1] == answers[0]


def test_tags_are_enforced_as_rabbitmq_does(rabbitmq: Http, leveret_management: ManagementServer) -> None:
    ours_admin = Http(leveret_management.url)
    suffix = uuid.uuid4().hex[:10]
    users = {tag: f"admin-test-{tag or 'none'}-{suffix}" for tag in
             ("", "management", "monitoring", "policymaker", "administrator")}
    paths = ["/api/overview", "/api/whoami", "/api/nodes", "/api/users", "/api/permissions", "/api/queues/%2F",
             "/api/vhosts", "/api/exchanges", "/api/definitions", "/api/parameters", "/api/vhost-limits",
             "/api/global-parameters", "/api/aliveness-test/%2F", "/api/user-limits", "/api/topic-permissions",
             "/api/health/checks/virtual-hosts", "/api/cluster-name"]
    try:
        for admin in (rabbitmq, ours_admin):
            for tag, name in users.items():
                assert admin.request("PUT", f"/api/users/{name}", {"password": "pw", "tags": tag}).status == 201
        for path in paths:
            for name in users.values():
                theirs = rabbitmq.request("GET", path, user=name, password="pw")
                ours = ours_admin.request("GET", path, user=name, password="pw")
                assert ours.status == theirs.status, (path, name)
                if theirs.status == 401:
                    assert ours.json == theirs.json, (path, name)
                else:
                    assert ours.status == 200
        wrong = (rabbitmq.request("GET", "/api/overview", user=users[""], password="wrong"),
                 ours_admin.request("GET", "/api/overview", user=users[""], password="wrong"))
        assert wrong[1].status == wrong[0].status == 401
        assert wrong[1].json == wrong[0].json
    finally:
        for admin in (rabbitmq, ours_admin):
            for name in users.values():
                admin.request("DELETE", f"/api/users/{name}")
        rabbitmq.request("DELETE", "/api/queues/%2F/aliveness-test")
