"""Users and per-vhost permissions over real sockets, against the golden table and RabbitMQ."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pamqp import commands

from leveret.broker.auth import hash_password
from leveret.broker.broker import Broker, BrokerSettings
from leveret.server.shell import ServerThread
from tests import reference
from tests.hardening.permissions_golden import GOLDEN, PASSWORD, PERMISSIONS, outcome, run_table
from tests.hardening.rawclient import Closed, RawClient

RABBITMQ_API = f"http://{reference.HOST}:15672/api"  # its management API creates the test user
RABBITMQ_AMQP = (reference.HOST, reference.PORT)


def definitions(user: str, vhost: str, password_hash: str | None = None) -> dict[str, Any]:
    return {
        "rabbit_version": "3.10.8",
        "users": [
            {"name": "guest", "password_hash": hash_password("guest"),
             "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["administrator"], "limits": {}},
            {"name": user, "password_hash": password_hash or hash_password(PASSWORD),
             "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": [], "limits": {}},
        ],
        "vhosts": [{"name": "/"}, {"name": vhost}, {"name": vhost + "-other"}],
        "permissions": [
            {"user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"},
            {"user": user, "vhost": vhost, **PERMISSIONS},
        ],
    }


def serve(data: dict[str, Any], settings: BrokerSettings | None = None) -> ServerThread:
    broker = Broker(settings=settings)
    loaded = broker.access.load_definitions(data)
    for name in loaded.vhosts:
        broker.add_vhost(name)
    return ServerThread(broker).start()


@pytest.fixture
def leveret() -> Iterator[ServerThread]:
    server = serve(definitions("bob", "orders"))
    yield server
    server.stop()


def open_as(host: str, port: int, user: str, vhost: str, password: str = PASSWORD) -> Any:
    client = RawClient(host, port)
    try:
        return client.handshake(user, password, vhost)
    finally:
        client.close()


def as_tuple(closed: Any) -> Any:
    return (closed.scope, closed.code, closed.text, closed.class_id, closed.method_id) if isinstance(
        closed, Closed) else closed


def test_each_operation_needs_rabbitmqs_permission(leveret: ServerThread) -> None:
    seen = run_table(leveret.host, leveret.port, "orders", "bob")
    expected = {name: want for name, _, want in GOLDEN}
    print(f"permission table: {len(seen)} operations, "
          f"{sum(seen[n] == expected[n] for n in seen)} as RabbitMQ answers")
    assert seen == expected


def test_a_vhost_without_permissions_is_refused_at_connection_open(leveret: ServerThread) -> None:
    refused = open_as(leveret.host, leveret.port, "bob", "orders-other")
    missing = open_as(leveret.host, leveret.port, "bob", "nope")
    wrong_password = open_as(leveret.host, leveret.port, "bob", "orders", password="wrong")
    assert as_tuple(refused) == (
        "connection", 530, "NOT_ALLOWED - access to vhost 'orders-other' refused for user 'bob'", 10, 40)
    assert as_tuple(missing) == ("connection", 530, "NOT_ALLOWED - vhost nope not found", 10, 40)
    assert as_tuple(wrong_password) == (
        "connection", 403,
        "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile.",
        0, 0)


def test_the_connection_limit_refuses_connection_open_with_rabbitmqs_text() -> None:
    server = serve(definitions("bob", "orders"), BrokerSettings(connection_max=3))
    clients = [RawClient(server.host, server.port) for _ in range(4)]
    try:
        opened = [client.handshake("guest", "guest", "/") for client in clients]
        clients[0].close()
        late = RawClient(server.host, server.port)
        try:
            after_one_left = late.handshake("guest", "guest", "/")
        finally:
            late.close()
    finally:
        for client in clients:
            client.close()
        server.stop()
    print(f"connection_max=3: {sum(isinstance(o, commands.Connection.OpenOk) for o in opened)} opened, "
          f"1 refused, 1 more after one left")
    assert [isinstance(o, commands.Connection.OpenOk) for o in opened] == [True, True, True, False]
    assert as_tuple(opened[3]) == (
        "connection", 530, "NOT_ALLOWED - connection refused: node connection limit (3) is reached", 10, 40)
    assert isinstance(after_one_left, commands.Connection.OpenOk)


# ------------------------------------------------------------------ RabbitMQ
class RabbitApi:
    def __init__(self) -> None:
        self.auth = "Basic " + base64.b64encode(b"guest:guest").decode()

    def __call__(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(
            RABBITMQ_API + path, method=method, data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": self.auth, "content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            data = response.read()
        return json.loads(data) if data else None


@pytest.fixture
def rabbitmq_user() -> Iterator[tuple[str, str, RabbitApi]]:
    """A fresh vhost and user on the reference RabbitMQ (deleted afterwards)."""
    api = RabbitApi()
    try:
        api("GET", "/overview")
    except (OSError, urllib.error.URLError) as error:
        pytest.skip(f"reference RabbitMQ management API unreachable: {error}")
    tag = uuid.uuid4().hex[:10]
    vhost, user = f"lev-vh-{tag}", f"lev-u-{tag}"
    quoted = urllib.parse.quote(vhost, safe="")
    api("PUT", f"/vhosts/{quoted}")
    api("PUT", f"/vhosts/{urllib.parse.quote(vhost + '-other', safe='')}")
    try:
        api("PUT", f"/users/{user}", {"password": PASSWORD, "tags": ""})
        api("PUT", f"/permissions/{quoted}/{user}", PERMISSIONS)
        yield vhost, user, api
    finally:
        api("DELETE", f"/users/{user}")
        api("DELETE", f"/vhosts/{quoted}")
        api("DELETE", f"/vhosts/{urllib.parse.quote(vhost + '-other', safe='')}")


@pytest.mark.rabbitmq
@reference.needs_reference
def test_the_golden_table_is_what_rabbitmq_answers(rabbitmq_user: tuple[str, str, RabbitApi]) -> None:
    vhost, user, _ = rabbitmq_user
    seen = run_table(*RABBITMQ_AMQP, vhost, user)
    assert seen == {name: want for name, _, want in GOLDEN}


@pytest.mark.rabbitmq
@reference.needs_reference
def test_rabbitmqs_export_moves_over_as_it_is(rabbitmq_user: tuple[str, str, RabbitApi]) -> None:
    """The user's password hash and permissions, exported by RabbitMQ, work on leveret
    unchanged: the same password logs in, and each operation gets the same answer."""
    vhost, user, api = rabbitmq_user
    export = api("GET", "/definitions")
    data = {
        "rabbit_version": export["rabbit_version"],
        "users": [u for u in export["users"] if u["name"] == user],
        "vhosts": [v for v in export["vhosts"] if v["name"].startswith(vhost)],
        "permissions": [p for p in export["permissions"] if p["user"] == user],
    }
    server = serve(data)
    try:
        on_leveret = run_table(server.host, server.port, vhost, user)
        refused_vhost = open_as(server.host, server.port, user, vhost + "-other")
    finally:
        server.stop()
    on_rabbitmq = run_table(*RABBITMQ_AMQP, vhost, user)
    refused_on_rabbitmq = open_as(*RABBITMQ_AMQP, user, vhost + "-other")
    differing = [name for name in on_rabbitmq if on_rabbitmq[name] != on_leveret[name]]
    print(f"RabbitMQ export of {user}: {len(on_rabbitmq)} operations compared, {len(differing)} differ")
    assert differing == []
    assert outcome(refused_vhost, vhost, user) == outcome(refused_on_rabbitmq, vhost, user)


def test_the_management_api_logs_in_the_same_users_as_amqp() -> None:
    from leveret.management.auth import Refused, User, authenticate

    broker = Broker()
    data = definitions("bob", "orders")
    data["users"] = [u for u in data["users"] if u["name"] != "guest"]  # a setup without guest
    broker.access.load_definitions(data)

    def login(user: str, password: str) -> Any:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return authenticate(broker, f"Basic {token}", "127.0.0.1")

    assert isinstance(login("guest", "guest"), Refused)
    assert login("bob", PASSWORD) == User("bob", ())
    assert isinstance(login("bob", "wrong"), Refused)
