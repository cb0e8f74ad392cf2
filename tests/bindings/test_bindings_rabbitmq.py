"""Differential tests: the golden tables replayed over the wire, on the
reference RabbitMQ and on a leveret server, and in-process on leveret's indexes.

Every binding and message goes to the broker as the exact field bytes of the
table (pika's encoder is taught `Field`); the in-process checks see the
frontend decoder's reading of the same bytes. A row must route on each broker
as recorded for RabbitMQ, and leveret's indexes must agree except on rows that
record a known difference. The RabbitMQ half skips when nothing listens on
127.0.0.1:5672; the leveret half needs no reference.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from leveret.bindings.headers import HeadersIndex
from leveret.bindings.model import Binding, Destination
from leveret.bindings.topic import TopicTrie
from pamqp import exceptions

from tests.bindings.bindings_fields import Field, decoded, decoded_value, label
from tests.bindings.bindings_golden import HEADERS, TOPIC, X_MATCH_ERRORS, HeadersCase, XMatchCase
from tests.reference import HOST, PORT, reachable

pika = pytest.importorskip("pika")
pika_data = pytest.importorskip("pika.data")

pytestmark = pytest.mark.rabbitmq



class Probe:
    """One connection, one exclusive queue; each check uses a fresh exchange."""

    def __init__(self, host: str, port: int) -> None:
        self.connection = pika.BlockingConnection(
            pika.ConnectionParameters(host, port, connection_attempts=1, socket_timeout=5)
        )
        self.channel = self._open_channel()
        self.queue = f"leveret-test-{uuid.uuid4().hex}"
        self.channel.queue_declare(self.queue, exclusive=True)

    def _open_channel(self) -> Any:
        channel = self.connection.channel()
        channel.confirm_delivery()
        return channel

    def routed(
        self,
        kind: str,
        binding_key: str,
        arguments: dict[str, Field] | None,
        routing_key: str,
        headers: dict[str, Field] | None,
    ) -> bool:
        """Whether a mandatory publish reached the queue through one binding.

        Raises pika's ChannelClosedByBroker when the broker refuses the binding.
        """
        exchange = f"leveret-test-{uuid.uuid4().hex}"
        self.channel.exchange_declare(exchange, kind)
        try:
            try:
                self.channel.queue_bind(self.queue, exchange, binding_key, arguments=arguments)
            except pika.exceptions.ChannelClosedByBroker:
                self.channel = self._open_channel()
                raise
            properties = pika.BasicProperties(headers=headers)
            try:
                self.channel.basic_publish(exchange, routing_key, b"", properties, mandatory=True)
            except pika.exceptions.UnroutableError:
                return False
            return True
        finally:
            self.channel.exchange_delete(exchange)
            self.channel.queue_purge(self.queue)

    def close(self) -> None:
        self.channel.queue_delete(self.queue)
        self.connection.close()


@pytest.fixture(scope="module", params=["rabbitmq", "leveret"])
def broker(request: pytest.FixtureRequest) -> Iterator[Probe]:
    """A probe on the reference RabbitMQ, then on a leveret on a free port."""
    if request.param == "rabbitmq":
        if not reachable():
            pytest.skip(f"reference RabbitMQ not reachable on {HOST}:{PORT}")
        with _typed_pika():
            probe = Probe(HOST, PORT)
            try:
                yield probe
            finally:
                probe.close()
        return
    from leveret.server.shell import ServerThread

    with ServerThread() as server, _typed_pika():
        probe = Probe(server.host, server.port)
        try:
            yield probe
        finally:
            probe.close()


@contextlib.contextmanager
def _typed_pika() -> Iterator[None]:
    """pika's encoder, taught to send a Field's exact bytes."""
    original = pika_data.encode_value

    def encode_value(pieces: list[bytes], value: Any) -> int:
        if isinstance(value, Field):
            pieces.append(value.wire)
            return len(value.wire)
        return int(original(pieces, value))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pika_data, "encode_value", encode_value)
        yield


QUEUE = Destination.queue("q")


@pytest.mark.parametrize(("pattern", "key", "matched"), TOPIC)
def test_topic_over_the_wire(broker: Probe, pattern: str, key: str, matched: bool) -> None:
    observed = broker.routed("topic", pattern, None, key, None)
    trie = TopicTrie()
    trie.add(Binding.make("x", QUEUE, pattern))
    assert observed is matched
    assert bool(trie.match(key, None)) is observed


@pytest.mark.parametrize(
    "case", HEADERS, ids=[f"{label(c.arguments)}~{label(c.headers)}" for c in HEADERS]
)
def test_headers_over_the_wire(broker: Probe, case: HeadersCase) -> None:
    observed = broker.routed("headers", "", case.arguments, "", case.headers)
    index = HeadersIndex()
    index.add(Binding.make("x", QUEUE, "", decoded(case.arguments)))
    ours = index.match("", decoded(case.headers)) == [QUEUE]
    assert observed is case.rabbitmq
    if case.leveret is None:
        assert ours is observed
    else:
        assert ours is case.leveret, case.why


@pytest.mark.parametrize("case", X_MATCH_ERRORS, ids=[repr(c.value) for c in X_MATCH_ERRORS])
def test_x_match_refusal_over_the_wire(broker: Probe, case: XMatchCase) -> None:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        broker.routed("headers", "", {"x-match": case.value}, "", None)
    index = HeadersIndex()
    with pytest.raises(exceptions.AMQPPreconditionFailed) as ours:
        index.add(Binding.make("x", QUEUE, "", {"x-match": decoded_value(case.value)}))
    assert refused.value.reply_code == 406
    assert refused.value.reply_text == f"PRECONDITION_FAILED - {case.rabbitmq}"
    if case.leveret is None:
        assert str(ours.value) == case.rabbitmq
    else:
        assert str(ours.value) == case.leveret, case.why
