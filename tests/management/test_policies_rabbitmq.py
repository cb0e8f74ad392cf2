"""Differential: policies and operator policies on leveret and on the reference
RabbitMQ 3.10.8, through the management API and AMQP clients, field by field.

Skips when the reference's management API (127.0.0.1:15672) is not there.
Names are unique per run and everything made is deleted. RabbitMQ applies a
policy to its queues asynchronously and reports queue fields from statistics
it collects every 5 s, so its side is polled for with a deadline.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pika
import pytest

from leveret.broker.broker import Broker
from leveret.broker.definitions import load_definitions
from leveret.management import ManagementServer, attach, detach
from leveret.server.shell import ServerThread
from tests.management.conftest import Http

pytestmark = pytest.mark.rabbitmq

RABBITMQ_HTTP = "http://127.0.0.1:15672"
RABBITMQ_AMQP = "amqp://guest:guest@127.0.0.1:5672/"
SETTLE_SECONDS = 20.0


@pytest.fixture(scope="module")
def leveret() -> Iterator[ManagementServer]:
    with ServerThread() as thread:
        running = attach(thread)
        try:
            yield running
        finally:
            detach(thread, running)


class Side:
    """One broker: its HTTP API and an AMQP connection, and what the test made on it."""

    def __init__(self, http: Http, amqp_url: str) -> None:
        self.http = http
        self.connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        self.channel = self.connection.channel()
        self.made: list[tuple[str, str]] = []  # (path, kind) to delete at the end

    def put(self, path: str, body: Any = None, *, raw: bytes | None = None) -> tuple[int, Any]:
        if "/policies/" in path or "/operator-policies/" in path or "/vhosts/" in path or "/users/" in path:
            self.made.append((path, "http"))
        reply = self.http.request("PUT", path, body, raw=raw)
        return reply.status, (reply.json if reply.body else None)

    def call(self, method: str, path: str) -> tuple[int, Any]:
        reply = self.http.request(method, path)
        return reply.status, (reply.json if reply.body else None)

    def queue(self, name: str, **arguments: Any) -> None:
        self.channel.queue_declare(name, arguments=arguments or None)
        self.made.append((name, "queue"))

    def exchange(self, name: str, kind: str = "direct") -> None:
        self.channel.exchange_declare(name, kind)
        self.made.append((name, "exchange"))

    def count(self, queue: str) -> int:
        return self.channel.queue_declare(queue, passive=True).method.message_count

    def publish(self, exchange: str, key: str, body: bytes) -> None:
        self.channel.basic_publish(exchange, key, body)

    def queue_info(self, name: str) -> dict[str, Any]:
        reply = self.http.request("GET", f"/api/queues/%2F/{quote(name, safe='')}")
        return reply.json if reply.status == 200 else {}

    def close(self) -> None:
        for target, kind in reversed(self.made):
            if kind == "http":
                self.http.request("DELETE", target)
            elif kind == "queue":
                self.channel.queue_delete(target)
            else:
                self.channel.exchange_delete(target)
        self.connection.close()


@pytest.fixture
def sides(rabbitmq: Http, leveret: ManagementServer) -> Iterator[tuple[Side, Side]]:
    thread = leveret.broker_thread
    assert thread is not None
    theirs, ours = Side(rabbitmq, RABBITMQ_AMQP), Side(Http(leveret.url), thread.url)
    try:
        yield theirs, ours
    finally:
        theirs.close()
        ours.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def settle(side: Side, check: Callable[[], Any], want: Any) -> Any:
    """`check()` once it gives `want` (or what it gives at the deadline)."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        got = check()
        if got == want or time.monotonic() > deadline:
            return got
        side.connection.process_data_events(0.25)


def shown_fields(side: Side, queue: str, keys: dict[str, Any]) -> dict[str, Any]:
    got = side.queue_info(queue)
    return {k: got.get(k) for k in keys}


BAD_BODIES: list[dict[str, Any]] = [
    {"pattern": "(", "definition": {"message-ttl": 1}},
    {"pattern": "[a", "definition": {"message-ttl": 1}},
    {"pattern": ")", "definition": {"message-ttl": 1}},
    {"pattern": "a{2,1}", "definition": {"message-ttl": 1}},
    {"pattern": "x", "definition": {"max-priority": 10}},
    {"pattern": "x", "definition": {"max-priority": 10, "foo": "bar"}},
    {"pattern": "x", "definition": {"message-ttl": -1}},
    {"pattern": "x", "definition": {"message-ttl": "60"}},
    {"pattern": "x", "definition": {"message-ttl": 60000.0}},
    {"pattern": "x", "definition": {"message-ttl": {"a": 1}}},
    {"pattern": "x", "definition": {"expires": 0}},
    {"pattern": "x", "definition": {"dead-letter-exchange": 5}},
    {"pattern": "x", "definition": {"overflow": "nope"}},
    {"pattern": "x", "definition": {"queue-mode": "nope"}},
    {"pattern": "x", "definition": {"message-ttl": -1, "max-length": -2}},
    {"pattern": "x", "definition": {"ha-mode": "exactly"}},
    {"pattern": "x", "definition": {"ha-sync-mode": "bad"}},
    {"pattern": "x", "definition": {"queue-master-locator": "bogus"}},
    {"pattern": "x", "definition": {}},
    {"pattern": "x"},
    {"definition": {"message-ttl": 1}},
    {},
    {"pattern": 5, "definition": {"message-ttl": 1}},
    {"pattern": "x", "definition": {"message-ttl": 1}, "priority": "high"},
    # `streams` (like `classic_queues`, `quorum_queues`) is RabbitMQ 3.12's, which
    # leveret takes so newer exports load: a value no release knows is refused.
    {"pattern": "x", "definition": {"message-ttl": 1}, "apply-to": "stream"},
    {"pattern": "(", "definition": {"message-ttl": -1}, "priority": "a", "apply-to": "b"},
]


@pytest.mark.parametrize("operator", [False, True], ids=["policy", "operator-policy"])
def test_refusals_have_rabbitmqs_status_and_body(sides: tuple[Side, Side], operator: bool) -> None:
    kind = "operator-policies" if operator else "policies"
    bodies = BAD_BODIES + [  # keys only policies may set
        {"pattern": "x", "definition": {"dead-letter-exchange": "a"}},
        {"pattern": "x", "definition": {"ha-mode": "all"}}] * operator
    for body in bodies:
        name = unique("pol-bad")
        answers = [side.put(f"/api/{kind}/%2F/{name}", body) for side in sides]
        assert answers[0] == answers[1], body
        assert answers[0][0] >= 400, body  # nothing was made: nothing to compare later
    name = unique("pol-bad")
    raw = [side.put(f"/api/{kind}/%2F/{name}", raw=b"{not json") for side in sides]
    assert raw[0] == raw[1] == (400, {"error": "bad_request", "reason": "not_json"})
    missing_vhost = [side.put(f"/api/{kind}/{unique('novhost')}/{name}", {"pattern": "x", "definition": {"max-length": 1}})
                     for side in sides]
    assert missing_vhost[0] == missing_vhost[1] == (404, {"error": "not_found", "reason": "vhost_not_found"})
    for method, path in (("GET", f"/api/{kind}/%2F/{name}"), ("DELETE", f"/api/{kind}/%2F/{name}"),
                         ("GET", f"/api/{kind}/{unique('novhost')}"),
                         ("DELETE", f"/api/{kind}/{unique('novhost')}/{name}")):
        replies = [side.call(method, path) for side in sides]
        assert replies[0] == replies[1] == (404, {"error": "Object Not Found", "reason": "Not Found"}), (method, path)
    for side in sides:
        assert side.call("GET", f"/api/{kind}/%2F/{name}")[0] == 404


@pytest.mark.parametrize("operator", [False, True], ids=["policy", "operator-policy"])
def test_set_show_replace_and_clear_like_rabbitmq(sides: tuple[Side, Side], operator: bool) -> None:
    kind = "operator-policies" if operator else "policies"
    name = unique("pol")
    path = f"/api/{kind}/%2F/{name}"
    first = {"pattern": f"^{name}\\.", "definition": {"max-length": 7, "message-ttl": 60000},
             "priority": 3, "apply-to": "queues"}
    second = {"pattern": f"^{name}\\.", "definition": {"max-length": 5}}
    steps = []
    for side in sides:
        steps.append([
            side.put(path, first), side.call("GET", path), side.put(path, first), side.put(path, second),
            side.call("GET", path),
            [p for p in side.call("GET", f"/api/{kind}/%2F")[1] if p["name"] == name],
            [p for p in side.call("GET", f"/api/{kind}")[1] if p["name"] == name],
            side.call("DELETE", path), side.call("DELETE", path),
        ])
    assert steps[0] == steps[1]
    assert steps[1][0] == (201, None) and steps[1][3] == (204, None)
    assert steps[1][4] == (200, {"vhost": "/", "name": name, "pattern": f"^{name}\\.", "apply-to": "all",
                                 "definition": {"max-length": 5}, "priority": 0})


def test_precedence_and_live_changes_match_rabbitmq(sides: tuple[Side, Side]) -> None:
    """A policy's max-length below the queue's own trims at once (drop-head, dead-lettered
    to the queue's own DLX, which beats the policy's); an operator policy caps lower;
    clearing restores the queue's own limit; what the queue reports follows."""
    base = unique("prec")
    queue, own_dlx, policy_dlx = f"{base}.q", f"{base}.own-dlx", f"{base}.policy-dlx"
    results = []
    for side in sides:
        for exchange in (own_dlx, policy_dlx):
            side.exchange(exchange, "fanout")
            side.queue(f"{exchange}.dead")
            side.channel.queue_bind(f"{exchange}.dead", exchange)
        side.queue(queue, **{"x-max-length": 10, "x-dead-letter-exchange": own_dlx})
        for number in range(8):
            side.publish("", queue, str(number).encode())
        side.put(f"/api/policies/%2F/{base}", {"pattern": f"^{base}\\.q$", "priority": 1, "definition": {
            "max-length": 5, "dead-letter-exchange": policy_dlx, "message-ttl": 600000}})
        after_policy = settle(side, lambda s=side: s.count(queue), 5)
        side.put(f"/api/operator-policies/%2F/{base}", {"pattern": f"^{base}\\.q$", "apply-to": "queues",
                                                        "definition": {"max-length": 3, "expires": 3600000}})
        after_operator = settle(side, lambda s=side: s.count(queue), 3)
        want_info = {"policy": base, "operator_policy": base, "effective_policy_definition": {
            "dead-letter-exchange": policy_dlx, "expires": 3600000, "max-length": 3, "message-ttl": 600000}}

        def info(s: Side = side, keys: dict[str, Any] = want_info) -> dict[str, Any]:
            return shown_fields(s, queue, keys)

        shown = settle(side, info, want_info)
        dead = (side.count(f"{own_dlx}.dead"), side.count(f"{policy_dlx}.dead"))
        side.call("DELETE", f"/api/operator-policies/%2F/{base}")
        side.call("DELETE", f"/api/policies/%2F/{base}")
        cleared_want = {"policy": None, "operator_policy": None, "effective_policy_definition": {}}
        cleared = settle(side, info, cleared_want)
        for number in range(8):
            side.publish("", queue, str(number).encode())
        refilled = settle(side, lambda s=side: s.count(queue), 10)
        results.append((after_policy, after_operator, shown, dead, cleared, refilled))
    assert results[0] == results[1]
    assert results[1][:2] == (5, 3) and results[1][3] == (5, 0) and results[1][5] == 10


def test_a_policy_key_the_queue_type_lacks_leaves_the_next_policy_in_force(sides: tuple[Side, Side]) -> None:
    base = unique("skip")
    results = []
    for side in sides:
        side.queue(f"{base}.q")
        side.put(f"/api/policies/%2F/{base}-high", {"pattern": f"^{base}\\.", "priority": 5,
                                                    "definition": {"delivery-limit": 2}})
        side.put(f"/api/policies/%2F/{base}-low", {"pattern": f"^{base}\\.", "priority": 1,
                                                   "definition": {"max-length": 4}})
        want = {"policy": f"{base}-low", "effective_policy_definition": {"max-length": 4}}

        def info(s: Side = side, keys: dict[str, Any] = want) -> dict[str, Any]:
            return shown_fields(s, f"{base}.q", keys)

        results.append(settle(side, info, want))
    assert results[0] == results[1] == {"policy": f"{base}-low", "effective_policy_definition": {"max-length": 4}}


def test_alternate_exchange_from_a_policy_and_exchange_reports_it(sides: tuple[Side, Side]) -> None:
    base = unique("ae")
    results = []
    for side in sides:
        side.exchange(f"{base}.ae", "fanout")
        side.queue(f"{base}.unrouted")
        side.channel.queue_bind(f"{base}.unrouted", f"{base}.ae")
        side.exchange(f"{base}.x", "direct")
        before = side.http.request("GET", f"/api/exchanges/%2F/{quote(base)}.x").json.get("policy")
        side.put(f"/api/policies/%2F/{base}", {"pattern": f"^{base}\\.x$", "apply-to": "exchanges",
                                               "definition": {"alternate-exchange": f"{base}.ae"}})
        side.publish(f"{base}.x", "nowhere", b"lost")
        routed = settle(side, lambda s=side: s.count(f"{base}.unrouted"), 1)
        shown = side.http.request("GET", f"/api/exchanges/%2F/{quote(base)}.x").json.get("policy")
        side.call("DELETE", f"/api/policies/%2F/{base}")
        side.publish(f"{base}.x", "nowhere", b"dropped")
        side.connection.process_data_events(0.3)
        results.append((before, routed, shown, side.count(f"{base}.unrouted")))
    assert results[0] == results[1] == (None, 1, f"{base}", 1)


def boot_with_definitions(data: dict[str, Any]) -> Broker:
    """A broker as `leveret serve --definitions FILE` makes it (leveret.cli)."""
    broker = Broker()
    access = broker.access.load_definitions(data)
    for name in access.vhosts:
        broker.add_vhost(name)
    for vhost in broker.vhosts.values():
        assert load_definitions(vhost, data, now_ms=broker.now_ms()).warnings == []
    return broker


def test_definitions_with_a_bob_policy_plain_redeclare_and_round_trip(rabbitmq: Http) -> None:
    """The issue's scenario: a RabbitMQ export with a user, a vhost, permissions and the
    `^bob\\.` message-ttl policy; the application's plain re-declare succeeds, the queue
    reports the policy as on RabbitMQ, and RabbitMQ -> leveret -> RabbitMQ keeps every policy."""
    theirs = Side(rabbitmq, RABBITMQ_AMQP)
    vhost, back, user = unique("orders"), unique("orders-back"), unique("bob-user")
    try:
        theirs.put(f"/api/vhosts/{vhost}")
        theirs.put(f"/api/vhosts/{back}")
        theirs.put(f"/api/users/{user}", {"password": "s3cret", "tags": "management"})
        theirs.put(f"/api/permissions/{vhost}/{user}", {"configure": ".*", "write": ".*", "read": ".*"})
        theirs.put(f"/api/policies/{vhost}/ttl", {"pattern": "^bob\\.", "definition": {"message-ttl": 60000}})
        theirs.put(f"/api/operator-policies/{vhost}/cap", {"pattern": ".*", "apply-to": "queues",
                                                           "definition": {"max-length": 1000}})
        full = theirs.http.get("/api/definitions")
        export = {
            **full, "vhosts": [v for v in full["vhosts"] if v["name"] == vhost],
            "users": [u for u in full["users"] if u["name"] in (user, "guest")],  # guest: the admin
            "permissions": [p for p in full["permissions"] if p["vhost"] == vhost],
            **{key: [i for i in full[key] if i.get("vhost") == vhost]
               for key in ("policies", "parameters", "exchanges", "bindings")},
            "queues": [{"name": "bob.q", "vhost": vhost, "durable": True, "auto_delete": False, "arguments": {}}],
        }
        assert [p["name"] for p in export["policies"]] == ["ttl"]

        # the same on both: the application's own re-declare, no arguments, twice
        infos = []
        with ServerThread(boot_with_definitions(export)) as thread:
            running = attach(thread)
            try:
                for amqp_port, http in ((5672, rabbitmq), (thread.port, Http(running.url))):
                    params = pika.ConnectionParameters("127.0.0.1", amqp_port, vhost,
                                                       pika.PlainCredentials(user, "s3cret"))
                    with pika.BlockingConnection(params) as app:
                        channel = app.channel()
                        channel.queue_declare("bob.q", durable=True)
                        channel.queue_declare("bob.q", durable=True)
                        want = {"arguments": {}, "policy": "ttl", "operator_policy": "cap",
                                "effective_policy_definition": {"max-length": 1000, "message-ttl": 60000}}
                        deadline = time.monotonic() + SETTLE_SECONDS
                        while True:
                            got = http.request("GET", f"/api/queues/{vhost}/bob.q")
                            shown = {k: got.json.get(k) for k in want} if got.status == 200 else {}
                            if shown == want or time.monotonic() > deadline:
                                break
                            app.process_data_events(0.25)
                        infos.append(shown)
                again = Http(running.url).get("/api/definitions")
            finally:
                detach(thread, running)
        assert infos[0] == infos[1] == want
        mine = {key: [i for i in again[key] if i.get("vhost") == vhost] for key in ("policies", "parameters")}
        assert mine["policies"] == export["policies"]
        assert [p for p in mine["parameters"] if p["component"] == "operator_policy"] == [
            p for p in export["parameters"] if p["component"] == "operator_policy"]

        # back to RabbitMQ, into a fresh vhost: the same policies arrive
        relabel = json.loads(json.dumps(mine).replace(json.dumps(vhost), json.dumps(back)))
        reply = rabbitmq.request("POST", "/api/definitions", {"policies": relabel["policies"],
                                                              "parameters": relabel["parameters"]})
        assert reply.status in (200, 201, 204), reply.body
        assert rabbitmq.get(f"/api/policies/{back}") == relabel["policies"]
        assert rabbitmq.get(f"/api/operator-policies/{back}") == [
            {"vhost": back, "name": p["name"], **{k: p["value"][k] for k in ("pattern", "apply-to", "definition",
                                                                           "priority")}}
            for p in relabel["parameters"] if p["component"] == "operator_policy"]
    finally:
        theirs.close()


def test_tag_rules_for_policies_as_rabbitmq_enforces_them(rabbitmq: Http, leveret: ManagementServer) -> None:
    """management, policymaker (with and without access to the vhost) and a tag-less
    user, each asking for every policy endpoint: the same status and body on both."""
    thread = leveret.broker_thread
    assert thread is not None
    base = unique("tags")
    users = {f"{base}-mgmt": "management", f"{base}-pm": "policymaker", f"{base}-none": "",
             f"{base}-pm-noperm": "policymaker"}
    ours = Http(leveret.url)
    policy = f"{base}-p"

    def add_ours() -> None:
        for name, tags in users.items():
            thread.broker.access.add_user(name, "pw", tags=[t for t in tags.split(",") if t])
            if not name.endswith("noperm"):
                thread.broker.access.set_permissions(name, "/")

    thread.call(lambda _: add_ours())
    made = []
    try:
        for name, tags in users.items():
            made.append(f"/api/users/{name}")
            rabbitmq.request("PUT", f"/api/users/{name}", {"password": "pw", "tags": tags})
            if not name.endswith("noperm"):
                rabbitmq.request("PUT", f"/api/permissions/%2F/{name}", {"configure": ".*", "write": ".*", "read": ".*"})
        body = {"pattern": f"^{base}", "definition": {"max-length": 1}}
        for http in (rabbitmq, ours):
            assert http.request("PUT", f"/api/policies/%2F/{policy}", body).status == 201
        made.append(f"/api/policies/%2F/{policy}")
        requests = [("GET", "/api/policies/%2F", None), ("GET", f"/api/policies/%2F/{policy}", None),
                    ("PUT", f"/api/policies/%2F/{base}-new", body), ("DELETE", f"/api/policies/%2F/{base}-new", None),
                    ("GET", "/api/operator-policies/%2F", None),
                    ("PUT", f"/api/operator-policies/%2F/{base}-op", body),
                    ("GET", f"/api/operator-policies/%2F/{base}-op", None)]
        answers: list[list[Any]] = [[], []]
        for side, http in enumerate((rabbitmq, ours)):
            for user in users:
                for method, path, payload in requests:
                    reply = http.request(method, path, payload, user=user, password="pw")
                    listed = reply.json if reply.body else None
                    if method == "GET" and path.endswith("%2F") and reply.status == 200:
                        listed = [p["name"] for p in listed if p["name"].startswith(base)]
                    answers[side].append((user, method, path, reply.status, listed))
            http.request("DELETE", f"/api/policies/%2F/{base}-new")
            http.request("DELETE", f"/api/operator-policies/%2F/{base}-op")
        assert answers[0] == answers[1]
        assert (f"{base}-pm", "PUT", f"/api/policies/%2F/{base}-new", 201, None) in answers[1]
    finally:
        for path in reversed(made):
            rabbitmq.request("DELETE", path)
        ours.request("DELETE", f"/api/policies/%2F/{policy}")


def test_overflow_from_a_policy_wins_on_quorum_queues_only(sides: tuple[Side, Side]) -> None:
    """rabbit_quorum_queue takes overflow from the policy over the argument;
    rabbit_amqqueue_process keeps the argument."""
    base = unique("overflow")
    results = []
    for side in sides:
        queues = {"quorum": f"{base}.quorum", "classic": f"{base}.classic"}
        for kind, name in queues.items():
            side.channel.queue_declare(name, durable=True, arguments={
                "x-queue-type": kind, "x-max-length": 2, "x-overflow": "drop-head"})
            side.made.append((name, "queue"))
        side.put(f"/api/policies/%2F/{base}", {"pattern": f"^{base}\\.", "definition": {"overflow": "reject-publish"}})
        for name in queues.values():
            settle(side, lambda s=side, n=name: s.queue_info(n).get("policy"), base)
        confirming = side.connection.channel()
        confirming.confirm_delivery()
        outcome = {}
        for kind, name in queues.items():
            answers = []
            for number in range(4):
                try:
                    confirming.basic_publish("", name, str(number).encode())
                    answers.append("ack")
                except pika.exceptions.NackError:
                    answers.append("nack")
            outcome[kind] = (answers, side.count(name))
        confirming.close()
        results.append(outcome)
    assert results[0] == results[1]
    assert results[1]["classic"] == (["ack"] * 4, 2)


def test_a_changed_dead_letter_exchange_takes_the_next_dead_letter(sides: tuple[Side, Side]) -> None:
    base = unique("dlx")
    results = []
    for side in sides:
        for target in ("first", "second"):
            side.exchange(f"{base}.{target}", "fanout")
            side.queue(f"{base}.{target}.dead")
            side.channel.queue_bind(f"{base}.{target}.dead", f"{base}.{target}")
        queue = f"{base}.work"
        side.queue(queue)
        policy = f"/api/policies/%2F/{base}"
        counts = []
        for target in ("first", "second", None):
            if target is None:
                side.call("DELETE", policy)
                settle(side, lambda s=side, q=queue: s.queue_info(q).get("policy"), None)
            else:
                side.put(policy, {"pattern": f"^{base}\\.work$", "definition": {
                    "dead-letter-exchange": f"{base}.{target}"}})
                settle(side, lambda s=side, q=queue: s.queue_info(q).get("effective_policy_definition"),
                       {"dead-letter-exchange": f"{base}.{target}"})
            side.publish("", queue, b"m")
            method, _, _ = side.channel.basic_get(queue)
            side.channel.basic_reject(method.delivery_tag, requeue=False)
            counts.append(settle(side, lambda s=side: (s.count(f"{base}.first.dead"), s.count(f"{base}.second.dead")),
                                 {"first": (1, 0), "second": (1, 1)}.get(target or "", (1, 1))))
        results.append(counts)
    assert results[0] == results[1] == [(1, 0), (1, 1), (1, 1)]
