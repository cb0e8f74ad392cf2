"""What a user with configure '^cfg', write '^w', read '^r' may do, as RabbitMQ 3.10 answers.

Each row: a name, what the client does on a fresh channel, and what the server
answers: the reply method's name, or (scope, code, text, class_id, method_id)
of the close. `{vhost}` and `{user}` stand for the names in use; a server-named
queue shows as `amq.gen-*`. Observed on RabbitMQ 3.10.8 (test_permissions.py
checks the table against it whenever it is reachable).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pamqp import commands

from tests.hardening.rawclient import Closed, RawClient
from tests.reference import unseen_name

C = commands
PERMISSIONS = {"configure": "^cfg", "write": "^w", "read": "^r"}
PASSWORD = "s3cret"
UNSEEN_TYPE = unseen_name("nope")


def refused(kind: str, name: str, class_id: int, method_id: int) -> tuple[Any, ...]:
    text = f"ACCESS_REFUSED - access to {kind} '{name}' in vhost '{{vhost}}' refused for user '{{user}}'"
    return ("channel", 403, text, class_id, method_id)


def _call(method: Any) -> Callable[[RawClient], Any]:
    return lambda client: client.call(method)


def _publish(exchange: str) -> Callable[[RawClient], Any]:
    def run(client: RawClient) -> Any:
        client.publish(1, exchange, "k")
        return client.expect(C.Channel.Close, 3.0)
    return run


DLX = {"x-dead-letter-exchange": "zz"}
AE = {"alternate-exchange": "zz"}

GOLDEN: list[tuple[str, Callable[[RawClient], Any], Any]] = [
    ("queue.declare needs configure", _call(C.Queue.Declare(queue="x-q")), refused("queue", "x-q", 50, 10)),
    ("queue.declare with configure", _call(C.Queue.Declare(queue="cfg-q", exclusive=True)), "Queue.DeclareOk"),
    ("passive queue.declare needs nothing", _call(C.Queue.Declare(queue="x-q", passive=True)),
     ("channel", 404, "NOT_FOUND - no queue 'x-q' in vhost '{vhost}'", 50, 10)),
    ("server-named queue is checked by its name", _call(C.Queue.Declare(queue="")),
     refused("queue", "amq.gen-*", 50, 10)),
    ("reserved prefix comes first", _call(C.Queue.Declare(queue="amq.foo")),
     ("channel", 403, "ACCESS_REFUSED - queue name 'amq.foo' contains reserved prefix 'amq.*'", 50, 10)),
    ("a new queue with a DLX needs read on itself", _call(C.Queue.Declare(queue="cfg-d", arguments=DLX)),
     refused("queue", "cfg-d", 50, 10)),
    ("exchange.declare needs configure", _call(C.Exchange.Declare(exchange="x-x", exchange_type="direct")),
     refused("exchange", "x-x", 40, 10)),
    # (a type name never seen before: "unknown" on every node, whatever its history)
    ("an unknown exchange type comes first", _call(C.Exchange.Declare(exchange="x-x", exchange_type=UNSEEN_TYPE)),
     ("connection", 503, f"COMMAND_INVALID - unknown exchange type '{UNSEEN_TYPE}'", 40, 10)),
    ("a new exchange with an AE needs read on itself",
     _call(C.Exchange.Declare(exchange="cfg-x", exchange_type="direct", arguments=AE)),
     refused("exchange", "cfg-x", 40, 10)),
    ("passive exchange.declare needs nothing", _call(C.Exchange.Declare(exchange="amq.topic", passive=True)),
     "Exchange.DeclareOk"),
    ("exchange.delete needs configure", _call(C.Exchange.Delete(exchange="x-x")),
     refused("exchange", "x-x", 40, 20)),
    ("queue.delete needs configure", _call(C.Queue.Delete(queue="x-q")), refused("queue", "x-q", 50, 40)),
    ("queue.purge needs read", _call(C.Queue.Purge(queue="x-q")), refused("queue", "x-q", 50, 30)),
    ("basic.get needs read", _call(C.Basic.Get(queue="x-q")), refused("queue", "x-q", 60, 70)),
    ("basic.consume needs read", _call(C.Basic.Consume(queue="x-q")), refused("queue", "x-q", 60, 20)),
    ("queue.bind needs write on the queue", _call(C.Queue.Bind(queue="x-q", exchange="amq.direct", routing_key="k")),
     refused("queue", "x-q", 50, 20)),
    ("queue.bind needs read on the exchange",
     _call(C.Queue.Bind(queue="w-q", exchange="amq.direct", routing_key="k")),
     refused("exchange", "amq.direct", 50, 20)),
    ("the default exchange refusal comes before read",
     _call(C.Queue.Bind(queue="w-q", exchange="", routing_key="k")),
     ("channel", 403, "ACCESS_REFUSED - operation not permitted on the default exchange", 50, 20)),
    ("queue.unbind needs read on the exchange",
     _call(C.Queue.Unbind(queue="w-q", exchange="amq.direct", routing_key="k")),
     refused("exchange", "amq.direct", 50, 50)),
    ("exchange.bind needs write on the destination",
     _call(C.Exchange.Bind(destination="x-d", source="x-s", routing_key="k")), refused("exchange", "x-d", 40, 30)),
    ("exchange.bind needs read on the source",
     _call(C.Exchange.Bind(destination="w-d", source="x-s", routing_key="k")), refused("exchange", "x-s", 40, 30)),
    ("exchange.bind with rights reaches the lookup",
     _call(C.Exchange.Bind(destination="w-d", source="r-s", routing_key="k")),
     ("channel", 404, "NOT_FOUND - no exchange 'r-s' in vhost '{vhost}'", 40, 30)),
    ("publish to the default exchange is write on amq.default", _publish(""),
     refused("exchange", "amq.default", 60, 40)),
    ("publish is checked before the exchange is looked up", _publish("nope"),
     refused("exchange", "nope", 60, 40)),
    ("publish to amq.direct", _publish("amq.direct"), refused("exchange", "amq.direct", 60, 40)),
    ("publish with write reaches the lookup", _publish("w-x"),
     ("channel", 404, "NOT_FOUND - no exchange 'w-x' in vhost '{vhost}'", 60, 40)),
]

_SERVER_NAMED = re.compile(r"amq\.gen-[A-Za-z0-9_\-]{22}")


def outcome(result: Any, vhost: str, user: str) -> Any:
    """A reply or a close, in the table's terms."""
    if isinstance(result, Closed):
        text = _SERVER_NAMED.sub("amq.gen-*", result.text)
        text = text.replace(f"'{vhost}'", "'{vhost}'").replace(f"'{user}'", "'{user}'")
        return (result.scope, result.code, text, result.class_id, result.method_id)
    if result is None:
        return None
    name: str = result.name
    return name


def run_table(host: str, port: int, vhost: str, user: str) -> dict[str, Any]:
    """Every row on a fresh connection of `user` to `vhost`: name -> outcome."""
    seen: dict[str, Any] = {}
    for name, action, _ in GOLDEN:
        client = RawClient(host, port)
        try:
            opened = client.handshake(user, PASSWORD, vhost)
            assert isinstance(opened, C.Connection.OpenOk), opened
            client.open_channel(1)
            seen[name] = outcome(action(client), vhost, user)
        finally:
            client.close()
    return seen
