"""The golden tables of tests/core replayed on the reference RabbitMQ with pika.

The tables state RabbitMQ 3.10.8's replies as a pamqp client (aio-pika) sees
them; pika encodes every integer as a signed 32-bit 'signedint' (or 'long'),
so those type names are adjusted here, and rows that depend on how pamqp
decodes (bytes) or on leveret's own extensions are left out. Each row runs on
a fresh connection with unique names, deleted afterwards. Skips when no
RabbitMQ listens on 127.0.0.1:5672.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.core.test_core_exchanges import DECLARE_ERRORS
from tests.core.test_core_exchanges import REDECLARE as EXCHANGE_REDECLARE
from tests.core.test_core_queues import ACCEPTED, ARGUMENT_ERRORS, QUORUM_PROPERTIES
from tests.core.test_core_queues import REDECLARE as QUEUE_REDECLARE
from tests.core.test_core_time import EXPIRATION_ERRORS
from tests.reference import HOST, PORT, reachable, type_error_answers

pika = pytest.importorskip("pika")

pytestmark = pytest.mark.rabbitmq



class Session:
    """One connection; names used are made unique and deleted at the end."""

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:10]
        self.connection = pika.BlockingConnection(
            pika.ConnectionParameters(HOST, PORT, connection_attempts=1, socket_timeout=5)
        )
        self.channel = self.connection.channel()
        self.queues: set[str] = set()
        self.exchanges: set[str] = set()

    def queue(self, name: str) -> str:
        unique = f"leveret-core-{self.tag}-{name}"
        self.queues.add(unique)
        return unique

    def exchange(self, name: str) -> str:
        unique = f"leveret-core-{self.tag}-{name}"
        self.exchanges.add(unique)
        return unique

    def outcome(self, call: Callable[[Any], Any]) -> tuple[int, str] | None:
        try:
            call(self.channel)
        except (pika.exceptions.ChannelClosedByBroker, pika.exceptions.ConnectionClosedByBroker) as error:
            return error.reply_code, error.reply_text
        return None

    def close(self) -> None:
        if not self.connection.is_open:
            self.connection = pika.BlockingConnection(pika.ConnectionParameters(HOST, PORT))
        channel = self.connection.channel()
        for name in self.queues:
            channel.queue_delete(name)
        for name in self.exchanges:
            channel.exchange_delete(name)
        self.connection.close()


@pytest.fixture
def session() -> Iterator[Session]:
    if not reachable():
        pytest.skip(f"no reference RabbitMQ on {HOST}:{PORT}")
    opened = Session()
    try:
        yield opened
    finally:
        opened.close()


NAMES = {406: "PRECONDITION_FAILED", 403: "ACCESS_REFUSED", 404: "NOT_FOUND", 405: "RESOURCE_LOCKED", 503: "COMMAND_INVALID"}


def as_pika_sees(code: int, text: str, renames: dict[str, str]) -> tuple[int, str]:
    for old, new in renames.items():
        text = text.replace(f"'{old}'", f"'{new}'")
    text = re.sub(r"\b(byte|short)\b", "signedint", text)
    return code, f"{NAMES[code]} - {text}"


def plain(value: Any) -> bool:
    """Rows pika can send as leveret's table means them."""
    if isinstance(value, dict):
        return all(plain(v) for v in value.values())
    return not isinstance(value, (bytes, float))


@pytest.mark.parametrize(("name", "kind", "options", "code", "text"), DECLARE_ERRORS)
def test_exchange_declare_errors_on_rabbitmq(session: Session, name: str, kind: str, options: dict[str, Any], code: int, text: str) -> None:
    actual = name if name in ("", "amq.foo", "amq.gen-x", "amq.direct", "amq.match", "amq.default") else session.exchange(name)
    kind, texts = type_error_answers(kind, text)  # only what does not depend on the node's history
    got = session.outcome(lambda ch: ch.exchange_declare(actual, kind, **options))
    assert got in [as_pika_sees(code, text, {name: actual}) for text in texts]


@pytest.mark.parametrize(("first", "second", "text"), [r for r in EXCHANGE_REDECLARE if plain(r[0]) and plain(r[1])])
def test_exchange_redeclare_on_rabbitmq(session: Session, first: dict[str, Any], second: dict[str, Any], text: str | None) -> None:
    first, second = dict(first), dict(second)
    name = session.exchange("x")
    session.channel.exchange_declare(name, first.pop("exchange_type", "direct"), **first)
    kind = second.pop("exchange_type", "direct")
    got = session.outcome(lambda ch: ch.exchange_declare(name, kind, **second))
    assert got == (None if text is None else as_pika_sees(406, text, {"x": name}))


def split(options: dict[str, Any]) -> dict[str, Any]:
    flags = {k: v for k, v in options.items() if not k.startswith("x-")}
    return {**flags, "arguments": {k: v for k, v in options.items() if k.startswith("x-")}}


# x-delivery-limit on classic queues is leveret's own; RabbitMQ refuses it there.
OURS = "x-delivery-limit"


@pytest.mark.parametrize(
    ("first", "second", "text"),
    [r for r in QUEUE_REDECLARE if plain(r[0]) and plain(r[1]) and OURS not in r[0]],
)
def test_queue_redeclare_on_rabbitmq(session: Session, first: dict[str, Any], second: dict[str, Any], text: str | None) -> None:
    name = session.queue("q")
    session.channel.queue_declare(name, **split(first))
    got = session.outcome(lambda ch: ch.queue_declare(name, **split(second)))
    assert got == (None if text is None else as_pika_sees(406, text, {"q": name}))


@pytest.mark.parametrize(("arguments", "text"), [r for r in ARGUMENT_ERRORS if plain(r[0]) and OURS not in r[0]])
def test_argument_errors_on_rabbitmq(session: Session, arguments: dict[str, Any], text: str) -> None:
    name = session.queue("q")
    got = session.outcome(lambda ch: ch.queue_declare(name, durable=True, arguments=arguments))
    assert got == as_pika_sees(406, text, {"q": name})


@pytest.mark.parametrize("arguments", [a for a in ACCEPTED if plain(a) and not (OURS in a and "x-queue-type" not in a)])
def test_accepted_arguments_on_rabbitmq(session: Session, arguments: dict[str, Any]) -> None:
    name = session.queue("q")
    assert session.outcome(lambda ch: ch.queue_declare(name, durable=True, arguments=arguments)) is None


@pytest.mark.parametrize(("flags", "prop"), QUORUM_PROPERTIES)
def test_quorum_properties_on_rabbitmq(session: Session, flags: dict[str, Any], prop: str) -> None:
    name = session.queue("q")
    got = session.outcome(lambda ch: ch.queue_declare(name, arguments={"x-queue-type": "quorum"}, **flags))
    assert got == (406, f"PRECONDITION_FAILED - invalid property '{prop}' for queue '{name}' in vhost '/'")


@pytest.mark.parametrize(("expiration", "text"), EXPIRATION_ERRORS)
def test_invalid_expiration_texts_on_rabbitmq(session: Session, expiration: str, text: str) -> None:
    def publish(channel: Any) -> None:
        channel.basic_publish("", "leveret-core-unrouted", b"m", pika.BasicProperties(expiration=expiration))
        channel.exchange_declare("amq.direct", "direct", passive=True)  # a round trip: the close arrives

    assert session.outcome(publish) == (406, f"PRECONDITION_FAILED - {text}")
