"""Topic permissions (write/read expressions on routing keys) over real sockets,
against a golden table observed on RabbitMQ 3.10.8, and against the reference
itself when its management API is reachable."""

from __future__ import annotations

import urllib.error
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pamqp import body as pamqp_body
from pamqp import commands, header

from leveret.broker.auth import AccessControl, hash_password
from leveret.broker.broker import Broker
from leveret.server.shell import ServerThread
from tests import reference
from tests.hardening.permissions_golden import PASSWORD, outcome
from tests.hardening.rawclient import RawClient
from tests.hardening.test_permissions import RABBITMQ_AMQP, RabbitApi

C = commands
# amq.direct's rules never apply: topic permissions are for topic exchanges.
TOPIC_PERMISSIONS = [
    {"exchange": "amq.topic", "write": r"^{username}\.|^pub\.", "read": r"^sub\."},
    {"exchange": "amq.direct", "write": "^nothing$", "read": "^nothing$"},
    {"exchange": "t-vhost", "write": r"^{vhost}$", "read": ""},
    {"exchange": "t-internal", "write": "^nothing$", "read": ".*"},
    {"exchange": "t-missing", "write": "^nothing$", "read": "^nothing$"},
]


def refused(key: str, exchange: str, class_id: int, method_id: int) -> tuple[Any, ...]:
    text = (
        f"ACCESS_REFUSED - access to topic '{key}' in exchange '{exchange}' in vhost "
        "'{vhost}' refused for user '{user}'"
    )
    return ("channel", 403, text, class_id, method_id)


Action = Callable[[RawClient, str, str], Any]


def publish(exchange: str, key: str, headers: dict[str, Any] | None = None) -> Action:
    """Publish, then a passive declare of amq.topic: its DeclareOk means the
    publish was let through (a refusal closes the channel first)."""

    def run(client: RawClient, vhost: str, user: str) -> Any:
        routing_key = key.format(vhost=vhost, user=user)
        client.send(C.Basic.Publish(exchange=exchange, routing_key=routing_key), 1)
        client.send(header.ContentHeader(0, 1, C.Basic.Properties(headers=headers)), 1)
        client.send(pamqp_body.ContentBody(b"x"), 1)
        return client.call(C.Exchange.Declare(exchange="amq.topic", exchange_type="topic", passive=True))

    return run


def declare_then(exchange: str, internal: bool, then: Action) -> Action:
    """Declare a topic exchange (it stays: the vhost goes at the end), then act."""

    def run(client: RawClient, vhost: str, user: str) -> Any:
        client.call(C.Exchange.Declare(exchange=exchange, exchange_type="topic", internal=internal))
        return then(client, vhost, user)

    return run


def bind(exchange: str, key: str, unbind: bool = False) -> Action:
    def run(client: RawClient, vhost: str, user: str) -> Any:
        client.call(C.Queue.Declare(queue="", exclusive=True))
        method = C.Queue.Unbind if unbind else C.Queue.Bind
        return client.call(method(queue="", exchange=exchange, routing_key=key))

    return run


def exchange_bind(source: str, key: str) -> Action:
    def run(client: RawClient, vhost: str, user: str) -> Any:
        client.call(C.Exchange.Declare(exchange="t-dest", exchange_type="fanout", auto_delete=True))
        return client.call(C.Exchange.Bind(destination="t-dest", source=source, routing_key=key))

    return run


GOLDEN: list[tuple[str, Action, Any]] = [
    ("publish with a key the write expression admits", publish("amq.topic", "pub.a"), "Exchange.DeclareOk"),
    ("publish with any other key is refused", publish("amq.topic", "other.a"), refused("other.a", "amq.topic", 60, 40)),
    ("{username} is the user's name", publish("amq.topic", "{user}.a"), "Exchange.DeclareOk"),
    ("the empty key too is checked", publish("amq.topic", ""), refused("", "amq.topic", 60, 40)),
    ("CC and BCC keys are not checked",
     publish("amq.topic", "pub.a", {"CC": ["other.b"], "BCC": ["other.c"]}), "Exchange.DeclareOk"),
    ("not for other exchange types", publish("amq.direct", "anything"), "Exchange.DeclareOk"),
    ("none on a topic exchange means any key", publish("amq.match", "x"), "Exchange.DeclareOk"),
    ("{vhost} is the vhost's name",
     declare_then("t-vhost", False, publish("t-vhost", "{vhost}")), "Exchange.DeclareOk"),
    ("{vhost} admits only the vhost's name",
     declare_then("t-vhost", False, publish("t-vhost", "x")), refused("x", "t-vhost", 60, 40)),
    ("a missing exchange is a 404 first", publish("t-missing", "x"),
     ("channel", 404, "NOT_FOUND - no exchange 't-missing' in vhost '{vhost}'", 60, 40)),
    ("a missing exchange is a 404 first on bind too", bind("t-missing", "x"),
     ("channel", 404, "NOT_FOUND - no exchange 't-missing' in vhost '{vhost}'", 50, 20)),
    ("an internal exchange is a 403 of its own first",
     declare_then("t-internal", True, publish("t-internal", "x")),
     ("channel", 403, "ACCESS_REFUSED - cannot publish to internal exchange 't-internal' in vhost '{vhost}'",
      60, 40)),
    ("queue.bind with a key the read expression admits", bind("amq.topic", "sub.x"), "Queue.BindOk"),
    ("queue.bind with any other key is refused", bind("amq.topic", "pub.x"), refused("pub.x", "amq.topic", 50, 20)),
    ("queue.unbind is checked as bind", bind("amq.topic", "pub.x", unbind=True),
     refused("pub.x", "amq.topic", 50, 50)),
    ("exchange.bind checks the source's read expression", exchange_bind("amq.topic", "pub.x"),
     refused("pub.x", "amq.topic", 40, 30)),
    ("bind on other exchange types is not checked", bind("amq.direct", "anything"), "Queue.BindOk"),
    ("an empty read expression admits only the empty key",
     declare_then("t-vhost", False, bind("t-vhost", "x")), refused("x", "t-vhost", 50, 20)),
]


def run_table(host: str, port: int, vhost: str, user: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for name, action, _ in GOLDEN:
        client = RawClient(host, port)
        try:
            opened = client.handshake(user, PASSWORD, vhost)
            assert isinstance(opened, C.Connection.OpenOk), opened
            client.open_channel(1)
            seen[name] = outcome(action(client, vhost, user), vhost, user)
        finally:
            client.close()
    return seen


def definitions(user: str, vhost: str) -> dict[str, Any]:
    return {
        "rabbit_version": "3.10.8",
        "users": [{"name": user, "password_hash": hash_password(PASSWORD),
                   "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": [], "limits": {}}],
        "vhosts": [{"name": vhost}],
        "permissions": [{"user": user, "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"}],
        "topic_permissions": [{"user": user, "vhost": vhost, **rule} for rule in TOPIC_PERMISSIONS],
    }


@pytest.fixture
def leveret() -> Iterator[ServerThread]:
    broker = Broker()
    loaded = broker.access.load_definitions(definitions("tom", "shop"))
    assert (loaded.topic_permissions, loaded.warnings) == (len(TOPIC_PERMISSIONS), [])
    for name in loaded.vhosts:
        broker.add_vhost(name)
    server = ServerThread(broker).start()
    yield server
    server.stop()


def test_each_topic_operation_gets_rabbitmqs_answer(leveret: ServerThread) -> None:
    seen = run_table(leveret.host, leveret.port, "shop", "tom")
    assert seen == {name: want for name, _, want in GOLDEN}


def test_topic_permissions_export_and_reload() -> None:
    access = AccessControl()
    data = definitions("tom", "shop")
    access.load_definitions(data)
    exported = access.export()["topic_permissions"]
    assert exported == sorted(data["topic_permissions"], key=lambda rule: rule["exchange"])
    again = AccessControl()
    assert again.load_definitions({**data, "topic_permissions": exported}).topic_permissions == len(TOPIC_PERMISSIONS)


def test_bad_topic_permissions_are_warnings_and_the_rest_loads() -> None:
    data = definitions("tom", "shop")
    data["topic_permissions"] += [
        {"user": "nobody", "vhost": "shop", "exchange": "amq.topic", "write": ".*", "read": ".*"},
        {"user": "tom", "vhost": "shop", "exchange": "bad", "write": "(", "read": ".*"},
    ]
    loaded = AccessControl().load_definitions(data)
    assert loaded.topic_permissions == len(TOPIC_PERMISSIONS)
    assert len(loaded.warnings) == 2
    assert "unknown user 'nobody'" in loaded.warnings[0]
    assert "bad expression" in loaded.warnings[1]


def test_deleting_a_user_drops_its_topic_permissions() -> None:
    access = AccessControl()
    access.load_definitions(definitions("tom", "shop"))
    access.delete_user("tom")
    assert access.export()["topic_permissions"] == []


@pytest.fixture
def rabbitmq_topic_user() -> Iterator[tuple[str, str]]:
    """A fresh vhost and user with TOPIC_PERMISSIONS on the reference (deleted afterwards)."""
    api = RabbitApi()
    try:
        api("GET", "/overview")
    except (OSError, urllib.error.URLError) as error:
        pytest.skip(f"reference RabbitMQ management API unreachable: {error}")
    tag = uuid.uuid4().hex[:10]
    vhost, user = f"lev-tvh-{tag}", f"lev-tu-{tag}"
    quoted = urllib.parse.quote(vhost, safe="")
    api("PUT", f"/vhosts/{quoted}")
    try:
        api("PUT", f"/users/{user}", {"password": PASSWORD, "tags": ""})
        api("PUT", f"/permissions/{quoted}/{user}", {"configure": ".*", "write": ".*", "read": ".*"})
        for rule in TOPIC_PERMISSIONS:
            api("PUT", f"/topic-permissions/{quoted}/{user}", rule)
        yield vhost, user
    finally:
        api("DELETE", f"/users/{user}")
        api("DELETE", f"/vhosts/{quoted}")


@pytest.mark.rabbitmq
@reference.needs_reference
def test_the_topic_golden_table_is_what_rabbitmq_answers(rabbitmq_topic_user: tuple[str, str]) -> None:
    vhost, user = rabbitmq_topic_user
    seen = run_table(*RABBITMQ_AMQP, vhost, user)
    assert seen == {name: want for name, _, want in GOLDEN}
