"""Per-vhost (max-connections, max-queues) and per-user (max-connections,
max-channels) limits over real sockets: one scenario, its answers as RabbitMQ
3.10.8 gives them, and the same scenario against the reference when its
management API is reachable."""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pamqp import commands

from leveret.broker.auth import AccessControl, hash_password
from leveret.broker.broker import Broker
from leveret.broker.definitions import export_definitions, load_definitions
from leveret.broker.limits import UserLimits, VhostLimits
from leveret.broker.vhost import VirtualHost
from leveret.server.shell import ServerThread
from tests import reference
from tests.hardening.permissions_golden import PASSWORD, outcome
from tests.hardening.rawclient import RawClient
from tests.hardening.test_permissions import RABBITMQ_AMQP, RabbitApi

C = commands
# Two users: "capped" has user limits, "free" has none; both share the vhost's.
VHOST_LIMITS = {"max-connections": 3, "max-queues": 2}
USER_LIMITS = {"max-connections": 2, "max-channels": 3}


def connection_limit(vhost_limit: bool, limit: int) -> tuple[Any, ...]:
    if vhost_limit:
        text = f"NOT_ALLOWED - access to vhost '{{vhost}}' refused for user '{{user}}': connection limit ({limit}) is reached"
    else:
        text = f"NOT_ALLOWED - connection refused for user '{{user}}': user connection limit ({limit}) is reached"
    return ("connection", 530, text, 10, 40)


EXPECTED: list[tuple[str, Any]] = [
    ("capped connection 1", "Connection.OpenOk"),
    ("capped connection 2", "Connection.OpenOk"),
    ("capped connection 3: the user's limit", connection_limit(False, 2)),
    ("free connection 1", "Connection.OpenOk"),
    ("free connection 2: the vhost's limit", connection_limit(True, 3)),
    ("capped channel 1 on connection 1", "Channel.OpenOk"),
    ("capped channel 2 on connection 1", "Channel.OpenOk"),
    ("capped channel 3 on connection 2", "Channel.OpenOk"),
    ("capped channel 4 on connection 2: the user's channels on all connections", (
        "connection", 530,
        "NOT_ALLOWED - number of channels opened for user '{user}' has reached the maximum allowed user limit of (3)",
        0, 0)),
    ("free: many channels", ["Channel.OpenOk"] * 5),
    ("queue 1", "Queue.DeclareOk"),
    ("queue 2", "Queue.DeclareOk"),
    ("queue 3: the vhost's queue limit", (
        "channel", 406, "PRECONDITION_FAILED - cannot declare queue 'q3': queue limit in vhost '{vhost}' (2) is reached",
        50, 10)),
    ("an existing queue is redeclared at the limit", "Queue.DeclareOk"),
    ("passive declare at the limit", "Queue.DeclareOk"),
    ("a server-named queue at the limit is named in the refusal", (
        "channel", 406, "PRECONDITION_FAILED - cannot declare queue 'amq.gen-*': queue limit in vhost '{vhost}' (2) is "
        "reached", 50, 10)),
    ("after capped connection 1 closes, capped may connect again", "Connection.OpenOk"),
]


def run_scenario(host: str, port: int, vhost: str, capped: str, free: str) -> list[tuple[str, Any]]:
    names = iter(name for name, _ in EXPECTED)
    seen: list[tuple[str, Any]] = []
    clients: list[RawClient] = []

    def record(result: Any, user: str) -> None:
        seen.append((next(names), outcome(result, vhost, user)))

    def connect(user: str) -> RawClient:
        client = RawClient(host, port)
        clients.append(client)
        record(client.handshake(user, PASSWORD, vhost), user)
        return client

    try:
        first, second = connect(capped), connect(capped)
        connect(capped)
        free_client = connect(free)
        connect(free)
        record(first.open_channel(1), capped)
        record(first.open_channel(2), capped)
        record(second.open_channel(1), capped)
        record(second.open_channel(2), capped)
        seen.append((next(names), [outcome(free_client.open_channel(n), vhost, free) for n in range(1, 6)]))
        for n in (1, 2, 3):
            record(free_client.call(C.Queue.Declare(queue=f"q{n}", auto_delete=True), 1), free)
        record(free_client.call(C.Queue.Declare(queue="q1", auto_delete=True), 2), free)
        record(free_client.call(C.Queue.Declare(queue="q2", passive=True), 2), free)
        record(free_client.call(C.Queue.Declare(queue="", exclusive=True), 2), free)
        first.close()
        connect(capped)
    finally:
        for client in clients:
            client.close()
    return seen


def definitions(vhost: str, capped: str, free: str) -> dict[str, Any]:
    def user(name: str, limits: dict[str, int]) -> dict[str, Any]:
        return {"name": name, "password_hash": hash_password(PASSWORD),
                "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": [], "limits": limits}

    return {
        "rabbit_version": "3.10.8",
        "users": [user(capped, USER_LIMITS), user(free, {})],
        "vhosts": [{"name": vhost}],
        "permissions": [{"user": name, "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"}
                        for name in (capped, free)],
        "parameters": [{"value": VHOST_LIMITS, "vhost": vhost, "component": "vhost-limits", "name": "limits"}],
    }


@pytest.fixture
def leveret() -> Iterator[ServerThread]:
    broker = Broker()
    data = definitions("shop", "capped", "free")
    loaded = broker.access.load_definitions(data)
    assert loaded.warnings == []
    for name in loaded.vhosts:
        assert load_definitions(broker.add_vhost(name), data).warnings == []
    server = ServerThread(broker).start()
    yield server
    server.stop()


def test_vhost_and_user_limits_answer_as_rabbitmq(leveret: ServerThread) -> None:
    assert run_scenario(leveret.host, leveret.port, "shop", "capped", "free") == EXPECTED


def test_counts_drop_to_nothing_when_everyone_leaves(leveret: ServerThread) -> None:
    run_scenario(leveret.host, leveret.port, "shop", "capped", "free")
    resources = leveret.broker.resources
    deadline = time.monotonic() + 5
    while resources.user_connections and time.monotonic() < deadline:
        time.sleep(0.02)  # the server sees the last closes after the client
    assert (resources.vhost_connections, resources.user_connections, resources.user_channels) == ({}, {}, {})


def test_limits_travel_through_definitions() -> None:
    data = definitions("shop", "capped", "free")
    access = AccessControl()
    access.load_definitions(data)
    assert access.users["capped"].limits == UserLimits(max_connections=2, max_channels=3)
    assert access.export()["users"][0]["limits"] == USER_LIMITS
    assert access.export()["users"][1]["limits"] == {}
    vhost = VirtualHost("shop")
    load_definitions(vhost, data)
    assert vhost.limits == VhostLimits(max_connections=3, max_queues=2)
    assert export_definitions(vhost)["parameters"] == data["parameters"]


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ({"max-connections": -1, "max-queues": 0}, VhostLimits(None, 0)),
        ({}, VhostLimits()),
    ],
)
def test_negative_is_no_limit_and_zero_allows_nothing(limits: dict[str, int], expected: VhostLimits) -> None:
    assert VhostLimits.from_json(limits) == expected


@pytest.mark.parametrize("limits", [{"max-queues": "5"}, {"max-bananas": 1}, {"max-connections": True}])
def test_bad_limits_are_warnings(limits: dict[str, Any]) -> None:
    vhost = VirtualHost("shop")
    data = {"parameters": [{"value": limits, "vhost": "shop", "component": "vhost-limits", "name": "limits"}]}
    result = load_definitions(vhost, data)
    assert len(result.warnings) == 1 and "vhost limits of 'shop'" in result.warnings[0]
    assert vhost.limits == VhostLimits()


@pytest.fixture
def rabbitmq_limited() -> Iterator[tuple[str, str, str]]:
    """A vhost and two users with VHOST_LIMITS and USER_LIMITS on the reference (deleted afterwards)."""
    api = RabbitApi()
    try:
        api("GET", "/overview")
    except (OSError, urllib.error.URLError) as error:
        pytest.skip(f"reference RabbitMQ management API unreachable: {error}")
    tag = uuid.uuid4().hex[:10]
    vhost, capped, free = f"lev-lvh-{tag}", f"lev-capped-{tag}", f"lev-free-{tag}"
    quoted = urllib.parse.quote(vhost, safe="")
    api("PUT", f"/vhosts/{quoted}")
    try:
        for user in (capped, free):
            api("PUT", f"/users/{user}", {"password": PASSWORD, "tags": ""})
            api("PUT", f"/permissions/{quoted}/{user}", {"configure": ".*", "write": ".*", "read": ".*"})
        for name, value in VHOST_LIMITS.items():
            api("PUT", f"/vhost-limits/{quoted}/{name}", {"value": value})
        for name, value in USER_LIMITS.items():
            api("PUT", f"/user-limits/{capped}/{name}", {"value": value})
        yield vhost, capped, free
    finally:
        for user in (capped, free):
            api("DELETE", f"/users/{user}")
        api("DELETE", f"/vhosts/{quoted}")


@pytest.mark.rabbitmq
@reference.needs_reference
def test_the_limits_scenario_is_what_rabbitmq_answers(rabbitmq_limited: tuple[str, str, str]) -> None:
    vhost, capped, free = rabbitmq_limited
    seen = run_scenario(*RABBITMQ_AMQP, vhost, capped, free)
    # outcome() names only one user per answer: map the other one's name too.
    normalised = [(name, _rename(value, free, capped)) for name, value in seen]
    assert normalised == EXPECTED


def _rename(value: Any, free: str, capped: str) -> Any:
    if isinstance(value, tuple):
        return tuple(v.replace(f"'{capped}'", "'{user}'").replace(f"'{free}'", "'{user}'")
                     if isinstance(v, str) else v for v in value)
    return value
