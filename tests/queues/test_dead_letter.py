"""Dead-lettering: RabbitMQ 3.10's x-death rewrite and cycle rule, golden cases and a
differential test against the reference broker."""

from __future__ import annotations

import socket
import struct
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import TypeVar

import pytest
from leveret.amqp_wire.fieldtable import Field, TypedTable
from leveret.amqp_wire.properties import RawProperties, decode_properties
from leveret.queues.dead_letter import cycle_free_queues, make_dead_letter
from leveret.queues.message import Message
from pamqp import commands
from pamqp import frame as pamqp_frame
from pamqp.base import Frame

T0 = 1_700_000_000  # seconds
M = TypeVar("M", bound=Frame)
NOW_MS = T0 * 1000 + 999


def S(text: str) -> Field:
    return Field("S", text.encode())


def keys(*names: str) -> Field:
    return Field("A", tuple(S(name) for name in names))


def entry(*fields: tuple[str, Field]) -> Field:
    return Field("F", TypedTable(fields))


def published(
    headers: TypedTable | None = None,
    *,
    exchange: str = "ex",
    routing_key: str = "rk",
    cc: tuple[str, ...] = (),
    bcc: tuple[str, ...] = (),
    expiration: str | None = None,
) -> Message:
    """A message as the router stores it (BCC still in the headers: make_dead_letter
    must not depend on the router having stripped it)."""
    table = headers or TypedTable()
    if cc:
        table = table.keystore("CC", keys(*cc))
    if bcc:
        table = table.keystore("BCC", keys(*bcc))
    parts = RawProperties((None,) * 14).replace(
        content_type=b"\x0atext/plain", message_id=b"\x02m1"
    )
    if len(table) or headers is not None:
        parts = parts.with_headers(table)
    if expiration is not None:
        parts = parts.replace(expiration=bytes((len(expiration),)) + expiration.encode())
    raw = parts.to_bytes()
    return Message(
        exchange=exchange,
        routing_key=routing_key,
        properties=decode_properties(raw),
        body=b"body",
        raw_properties=raw,
        routing_keys=(routing_key, *cc, *bcc),
    )


def dead(
    message: Message, reason: str, queue: str, dlx: str = "dlx", dlrk: str | None = None
) -> Message:
    return make_dead_letter(
        message,
        reason=reason,
        queue=queue,
        dead_letter_exchange=dlx,
        dead_letter_routing_key=dlrk,
        now_ms=NOW_MS,
    )


def headers_of(message: Message) -> TypedTable:
    assert message.raw_properties is not None
    table = RawProperties.parse(message.raw_properties).headers()
    assert table is not None
    assert message.properties == decode_properties(message.raw_properties)
    return table


def x_death(message: Message) -> tuple[Field, ...]:
    field = headers_of(message).get("x-death")
    assert field is not None and field.tag == "A"
    return tuple(field.value)


# The first entry RabbitMQ writes is NOT sorted: count, then info in make_msg's order.
FIRST_Q1_EXPIRED = entry(
    ("count", Field("l", 1)),
    ("reason", S("expired")),
    ("queue", S("q1")),
    ("time", Field("T", T0)),
    ("exchange", S("ex")),
    ("routing-keys", keys("rk", "cc1")),
    ("original-expiration", S("5000")),
)


def test_first_death_golden() -> None:
    message = published(
        TypedTable((("app", S("v")),)), cc=("cc1",), bcc=("bcc1",), expiration="5000"
    )
    result = dead(message, "expired", "q1")
    assert headers_of(result) == TypedTable(
        (
            ("CC", keys("cc1")),
            ("app", S("v")),
            ("x-death", Field("A", (FIRST_Q1_EXPIRED,))),
            ("x-first-death-exchange", S("ex")),
            ("x-first-death-queue", S("q1")),
            ("x-first-death-reason", S("expired")),
        )
    )
    assert (result.exchange, result.routing_key) == ("dlx", "rk")
    assert result.routing_keys == ("rk", "cc1", "bcc1")  # re-routed with every key, BCC too
    assert result.properties.expiration is None
    assert RawProperties.parse(result.raw_properties or b"").get("expiration") is None
    assert result.body == b"body"
    assert result.properties.content_type == "text/plain"
    assert result.properties.message_id == "m1"


def test_same_queue_and_reason_counts_and_moves_to_front() -> None:
    first = dead(published(cc=("cc1",), expiration="5000"), "expired", "q1", dlx="dlx1")
    second = dead(first, "rejected", "q2", dlx="dlx2")
    third = make_dead_letter(
        second,
        reason="expired",
        queue="q1",
        dead_letter_exchange="dlx3",
        dead_letter_routing_key=None,
        now_ms=NOW_MS + 60_000,
    )
    q2_rejected = entry(  # later entries are sorted by field name
        ("count", Field("l", 1)),
        ("exchange", S("dlx1")),
        ("queue", S("q2")),
        ("reason", S("rejected")),
        ("routing-keys", keys("rk", "cc1")),
        ("time", Field("T", T0)),
    )
    assert x_death(second) == (q2_rejected, FIRST_Q1_EXPIRED)
    # count 2, sorted, and time/exchange/routing-keys still those of the first death
    assert x_death(third) == (
        entry(
            ("count", Field("l", 2)),
            ("exchange", S("ex")),
            ("original-expiration", S("5000")),
            ("queue", S("q1")),
            ("reason", S("expired")),
            ("routing-keys", keys("rk", "cc1")),
            ("time", Field("T", T0)),
        ),
        q2_rejected,
    )
    assert headers_of(third).get("x-first-death-queue") == S("q1")
    assert headers_of(third).get("x-first-death-exchange") == S("ex")


def test_same_queue_other_reason_is_a_new_entry() -> None:
    first = dead(published(), "expired", "q1")
    second = dead(first, "rejected", "q1")
    deaths = x_death(second)
    assert [
        (d.value.get("queue"), d.value.get("reason"), d.value.get("count")) for d in deaths
    ] == [
        (S("q1"), S("rejected"), Field("l", 1)),
        (S("q1"), S("expired"), Field("l", 1)),
    ]
    assert deaths[0].value.get("exchange") == S("dlx")  # where the message was last published
    assert headers_of(second).get("x-first-death-reason") == S("expired")


def test_other_entries_come_out_reversed_as_in_rabbitmq_3_10() -> None:
    # group_by_queue_and_reason folds by prepending: with two or more existing
    # entries their order flips on every dead-lettering (checked against 3.10).
    m = dead(published(), "expired", "a")
    m = dead(m, "rejected", "b")
    m = dead(m, "rejected", "c")
    assert [d.value.get("queue") for d in x_death(m)] == [S("c"), S("a"), S("b")]
    m = dead(m, "rejected", "b")
    assert [(d.value.get("queue"), d.value.get("count")) for d in x_death(m)] == [
        (S("b"), Field("l", 2)),
        (S("a"), Field("l", 1)),
        (S("c"), Field("l", 1)),
    ]


def test_cc_and_bcc() -> None:
    message = published(cc=("cc1", "cc2"), bcc=("bcc1",))
    result = dead(message, "rejected", "q")
    (death,) = x_death(result)
    assert death.value.get("routing-keys") == keys("rk", "cc1", "cc2")
    assert headers_of(result).get("CC") == keys("cc1", "cc2")
    assert headers_of(result).get("BCC") is None  # a BCC header never leaves the broker
    assert result.routing_keys == ("rk", "cc1", "cc2", "bcc1")


def test_only_longstr_cc_keys_are_recorded() -> None:
    cc = Field("A", (S("cc1"), Field("l", 5), Field("x", b"cc2")))
    result = dead(published(TypedTable((("CC", cc),))), "rejected", "q")
    (death,) = x_death(result)
    assert death.value.get("routing-keys") == keys("rk", "cc1")


def test_dead_letter_routing_key_drops_cc_but_records_it() -> None:
    message = published(cc=("cc1",), bcc=("bcc1",))
    result = dead(message, "rejected", "q", dlrk="dl-key")
    (death,) = x_death(result)
    assert death.value.get("routing-keys") == keys("rk", "cc1")
    assert headers_of(result).get("CC") is None
    assert (result.routing_key, result.routing_keys) == ("dl-key", ("dl-key",))
    # Next time round the first routing key is the dead-letter one.
    again = dead(result, "rejected", "q2")
    assert x_death(again)[0].value.get("routing-keys") == keys("dl-key")


def test_without_expiration_there_is_no_original_expiration() -> None:
    (death,) = x_death(dead(published(), "maxlen", "q"))
    assert death.value.get("original-expiration") is None
    assert death.value.get("reason") == S("maxlen")


def test_untouched_header_entries_keep_their_bytes() -> None:
    odd = [
        b"\x06long-L" + b"L" + struct.pack(">q", 3),  # RabbitMQ itself would write these
        b"\x05bool2" + b"t\x02",  # two as `l` and t\x01 (see the module notes)
        b"\x03dbl" + b"d" + struct.pack(">d", 0.1),
        b"\x06latin1" + b"S\x00\x00\x00\x04caf\xe9",
    ]
    raw_table = struct.pack(">I", sum(map(len, odd))) + b"".join(odd)
    raw = RawProperties((None,) * 14).replace(headers=raw_table).to_bytes()
    message = Message("ex", "rk", decode_properties(raw), b"", raw_properties=raw)
    result = dead(message, "delivery_limit", "q")
    new_headers = RawProperties.parse(result.raw_properties or b"").get("headers") or b""
    for chunk in odd:
        assert chunk in new_headers
    assert headers_of(result).get("long-L") == Field("L", 3)


def test_message_without_publisher_bytes_is_encoded_first() -> None:
    message = published(cc=("cc1",), expiration="10")
    bare = Message(
        message.exchange,
        message.routing_key,
        message.properties,
        message.body,
        routing_keys=message.routing_keys,
    )
    assert dead(bare, "expired", "q1").properties == dead(message, "expired", "q1").properties


def test_first_death_overwrites_client_set_first_death_headers() -> None:
    forged = TypedTable((("x-first-death-queue", S("forged")),))
    assert headers_of(dead(published(forged), "rejected", "q")).get("x-first-death-queue") == S("q")


def test_x_death_of_another_type_is_reset() -> None:
    result = dead(published(TypedTable((("x-death", S("mangled by a client")),))), "rejected", "q")
    (death,) = x_death(result)
    assert [name for name, _ in death.value] == [
        "count",
        "reason",
        "queue",
        "time",
        "exchange",
        "routing-keys",
    ]
    assert headers_of(result).get("x-first-death-reason") is None


def test_unknown_reason_is_refused() -> None:
    with pytest.raises(ValueError) as info:
        dead(published(), "bored", "q")
    assert "bored" in str(info.value)


# ------------------------------------------------------------ cycles


def test_expired_loop_to_itself_is_dropped() -> None:
    message = dead(published(), "expired", "q1", dlx="")
    assert cycle_free_queues(message, "expired", ["q1", "other"]) == (["other"], ["q1"])


def test_retry_loop_through_a_reject_is_kept() -> None:
    # work --rejected--> wait --expired--> work: a consumer is in the loop.
    m = dead(published(), "rejected", "work")
    assert cycle_free_queues(m, "rejected", ["wait"]) == (["wait"], [])
    m = dead(m, "expired", "wait")
    assert cycle_free_queues(m, "expired", ["work"]) == (["work"], [])
    m = dead(m, "rejected", "work")
    m = dead(m, "expired", "wait")
    assert cycle_free_queues(m, "expired", ["work"]) == (["work"], [])


def test_expired_ttl_ping_pong_is_dropped() -> None:
    m = dead(published(), "expired", "a")
    assert cycle_free_queues(m, "expired", ["b"]) == (["b"], [])
    m = dead(m, "expired", "b")
    assert cycle_free_queues(m, "expired", ["a", "b"]) == ([], ["a", "b"])


def test_a_reject_never_drops() -> None:
    m = dead(published(), "rejected", "q1")
    assert cycle_free_queues(m, "rejected", ["q1"]) == (["q1"], [])


def test_maxlen_loop_is_dropped_and_unknown_queues_kept() -> None:
    m = dead(published(), "maxlen", "q1")
    assert cycle_free_queues(m, "maxlen", ["fresh", "q1"]) == (["fresh"], ["q1"])


def test_a_foreign_item_in_the_loop_means_no_cycle() -> None:
    deaths = Field("A", (S("client junk"), entry(("queue", S("q1")), ("reason", S("expired")))))
    raw = RawProperties((None,) * 14).with_headers(TypedTable((("x-death", deaths),))).to_bytes()
    message = Message("dlx", "rk", decode_properties(raw), b"", raw_properties=raw)
    assert cycle_free_queues(message, "expired", ["q1"]) == (["q1"], [])


def test_cycles_read_plain_headers_when_there_are_no_bytes() -> None:
    m = dead(published(), "expired", "q1")
    bare = Message(m.exchange, m.routing_key, m.properties, m.body)
    assert cycle_free_queues(bare, "expired", ["q1"]) == ([], ["q1"])


# ------------------------------------------------------------ against RabbitMQ 3.10


class RawClient:
    """Just enough AMQP 0-9-1 to publish and fetch content-header bytes unchanged."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        self.expect(commands.Connection.Start)
        self.send(
            commands.Connection.StartOk(
                client_properties={}, mechanism="PLAIN", response="\0guest\0guest", locale="en_US"
            ),
            channel=0,
        )
        tune = self.expect(commands.Connection.Tune)
        self.send(
            commands.Connection.TuneOk(
                channel_max=tune.channel_max, frame_max=tune.frame_max, heartbeat=0
            ),
            channel=0,
        )
        self.call(commands.Connection.Open(virtual_host="/"), commands.Connection.OpenOk, channel=0)
        self.call(commands.Channel.Open(), commands.Channel.OpenOk)

    def send(self, method: Frame, channel: int = 1) -> None:
        self.sock.sendall(pamqp_frame.marshal(method, channel))

    def call(self, method: Frame, reply: type[M], channel: int = 1) -> M:
        self.send(method, channel)
        return self.expect(reply)

    def frame(self) -> tuple[int, bytes]:
        while True:
            if len(self.buffer) >= 7:
                kind, _, size = struct.unpack(">BHI", self.buffer[:7])
                if len(self.buffer) >= size + 8:
                    payload, self.buffer = self.buffer[7 : 7 + size], self.buffer[size + 8 :]
                    return kind, payload
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("broker closed the connection")
            self.buffer += data

    def method(self) -> Frame:
        kind, payload = self.frame()
        assert kind == 1, kind
        framed = struct.pack(">BHI", 1, 1, len(payload)) + payload + b"\xce"
        return pamqp_frame.unmarshal(framed)[2]  # type: ignore[return-value]

    def expect(self, reply: type[M]) -> M:
        method = self.method()
        assert isinstance(method, reply), method
        return method

    def publish(self, exchange: str, routing_key: str, raw_properties: bytes, body: bytes) -> None:
        self.send(commands.Basic.Publish(exchange=exchange, routing_key=routing_key))
        header = struct.pack(">HHQ", 60, 0, len(body)) + raw_properties
        for kind, payload in ((2, header), (3, body)):
            self.sock.sendall(struct.pack(">BHI", kind, 1, len(payload)) + payload + b"\xce")

    def get(self, queue: str, timeout: float = 5.0) -> tuple[int, bytes] | None:
        """(delivery tag, raw property bytes) of the next message, unacked."""
        deadline = time.monotonic() + timeout
        while True:
            self.send(commands.Basic.Get(queue=queue))
            method = self.method()
            if isinstance(method, commands.Basic.GetOk):
                kind, header = self.frame()
                assert kind == 2
                if struct.unpack(">Q", header[4:12])[0]:
                    self.frame()
                assert method.delivery_tag is not None
                return method.delivery_tag, header[12:]
            assert isinstance(method, commands.Basic.GetEmpty), method
            if time.monotonic() > deadline:
                return None
            time.sleep(0.02)


@pytest.fixture
def rabbit() -> Iterator[RawClient]:
    try:
        sock = socket.create_connection(("127.0.0.1", 5672), timeout=5)
    except OSError as err:
        pytest.skip(f"reference RabbitMQ not reachable on 127.0.0.1:5672 ({err})")
    try:
        yield RawClient(sock)
    finally:
        sock.close()


class Names:
    """Unique names, deleted afterwards."""

    def __init__(self, client: RawClient) -> None:
        self.client = client
        self.tag = uuid.uuid4().hex[:10]
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def exchange(self, role: str, kind: str) -> str:
        name = f"leveret-test-{role}-{self.tag}"
        self.client.call(
            commands.Exchange.Declare(exchange=name, exchange_type=kind),
            commands.Exchange.DeclareOk,
        )
        self.exchanges.append(name)
        return name

    def queue(self, role: str, arguments: dict[str, object]) -> str:
        name = f"leveret-test-{role}-{self.tag}"
        self.client.call(
            commands.Queue.Declare(queue=name, arguments=arguments),  # type: ignore[arg-type]
            commands.Queue.DeclareOk,
        )
        self.queues.append(name)
        return name

    def bind(self, queue: str, exchange: str, routing_key: str) -> None:
        self.client.call(
            commands.Queue.Bind(queue=queue, exchange=exchange, routing_key=routing_key),
            commands.Queue.BindOk,
        )

    def delete(self) -> None:
        for queue in self.queues:
            self.client.call(commands.Queue.Delete(queue=queue), commands.Queue.DeleteOk)
        for exchange in self.exchanges:
            self.client.call(
                commands.Exchange.Delete(exchange=exchange), commands.Exchange.DeleteOk
            )


def rabbit_normal(table: TypedTable) -> TypedTable:
    """What RabbitMQ's re-encoding does to values we keep byte-exact (L -> l, t octet
    -> 0/1), and every x-death `time` zeroed (clocks differ)."""
    return TypedTable(
        tuple(
            (name, Field("T", 0) if name == "time" else _rabbit_normal_field(field))
            for name, field in table
        )
    )


def _rabbit_normal_field(field: Field) -> Field:
    if field.tag == "L":
        return Field("l", field.value)
    if field.tag == "t":
        return Field("t", bool(field.value))
    if field.tag == "F":
        return Field("F", rabbit_normal(field.value))
    if field.tag == "A":
        return Field("A", tuple(map(_rabbit_normal_field, field.value)))
    return field


def comparable(raw: bytes) -> bytes:
    parts = RawProperties.parse(raw)
    headers = parts.headers()
    assert headers is not None
    return parts.with_headers(rabbit_normal(headers)).to_bytes()


CUSTOM_HEADERS = TypedTable(
    (
        ("zeta", S("last")),
        ("alpha", Field("I", -5)),
        ("byte", Field("b", 7)),
        ("u8", Field("B", 200)),
        ("u16", Field("u", 65535)),
        ("s16", Field("s", -2)),
        ("u32", Field("i", 4_000_000_000)),
        ("big", Field("L", 9)),
        ("flag", Field("t", 2)),
        ("dbl", Field("d", 1.5)),
        ("flt", Field("f", 0.25)),
        ("dec", Field("D", Decimal("3.14"))),
        ("when", Field("T", 1_600_000_000)),
        ("bin", Field("x", b"\x00\xff")),
        ("latin1", Field("S", b"caf\xe9")),
        ("void", Field("V", None)),
        ("nested", entry(("k", Field("s", 3)), ("list", Field("A", (Field("l", 1), S("two")))))),
        ("dup", S("first")),
        ("dup", S("second")),
    )
)


@pytest.mark.rabbitmq
def test_x_death_matches_rabbitmq_byte_for_byte(rabbit: RawClient) -> None:
    """publish (CC, BCC, expiration, many header types) -> TTL queue a expires ->
    b, rejected -> c (dead-letter routing key), rejected -> b, rejected -> c."""
    names = Names(rabbit)
    try:
        source = names.exchange("src", "direct")
        dlx1 = names.exchange("dlx1", "fanout")
        dlx2 = names.exchange("dlx2", "direct")
        a = names.queue("a", {"x-message-ttl": 20, "x-dead-letter-exchange": dlx1})
        b = names.queue(
            "b", {"x-dead-letter-exchange": dlx2, "x-dead-letter-routing-key": "dl-key"}
        )
        c = names.queue("c", {"x-dead-letter-exchange": dlx1})
        names.bind(a, source, "rk")
        names.bind(b, dlx1, "")
        names.bind(c, dlx2, "dl-key")

        message = published(
            CUSTOM_HEADERS, exchange=source, cc=("cc1", "cc2"), bcc=("bcc1",), expiration="60000"
        )
        assert message.raw_properties is not None
        rabbit.publish(source, "rk", message.raw_properties, message.body)

        steps = [
            ("expired", a, dlx1, None, b),
            ("rejected", b, dlx2, "dl-key", c),
            ("rejected", c, dlx1, None, b),
            ("rejected", b, dlx2, "dl-key", c),
        ]
        for reason, queue, dlx, dlrk, lands_in in steps:
            got = rabbit.get(lands_in)
            assert got is not None, f"nothing dead-lettered into {lands_in}"
            delivery_tag, theirs = got
            message = dead(message, reason, queue, dlx, dlrk)
            assert message.raw_properties is not None
            assert comparable(message.raw_properties) == comparable(theirs), (reason, queue)
            rabbit.send(commands.Basic.Reject(delivery_tag=delivery_tag, requeue=False))
        # The last reject went to b via dlx1 again: consume it so nothing is left behind.
        assert rabbit.get(b) is not None
    finally:
        names.delete()


@pytest.mark.rabbitmq
def test_cycle_rule_matches_rabbitmq(rabbit: RawClient) -> None:
    names = Names(rabbit)
    try:
        loop = f"leveret-test-loop-{names.tag}"
        names.queue(
            "loop",
            {
                "x-message-ttl": 10,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": loop,
            },
        )
        work = f"leveret-test-work-{names.tag}"
        wait = f"leveret-test-wait-{names.tag}"
        names.queue("work", {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": wait})
        names.queue(
            "wait",
            {"x-message-ttl": 10, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": work},
        )

        plain = published(exchange="", routing_key=loop)
        assert plain.raw_properties is not None
        rabbit.publish("", loop, plain.raw_properties, b"body")
        ours = dead(plain, "expired", loop, dlx="", dlrk=loop)
        assert cycle_free_queues(ours, "expired", [loop]) == ([], [loop])
        time.sleep(0.2)  # past the TTL: expired, dead-lettered to itself, dropped
        assert rabbit.get(loop, timeout=0.3) is None

        retry = published(exchange="", routing_key=work)
        assert retry.raw_properties is not None
        rabbit.publish("", work, retry.raw_properties, b"body")
        for _ in range(2):
            got = rabbit.get(work)
            assert got is not None
            rabbit.send(commands.Basic.Reject(delivery_tag=got[0], requeue=False))
            retry = dead(retry, "rejected", work, dlx="", dlrk=wait)
            retry = dead(retry, "expired", wait, dlx="", dlrk=work)
            assert cycle_free_queues(retry, "expired", [work]) == ([work], [])
        got = rabbit.get(work)
        assert got is not None  # RabbitMQ kept it going round too
        assert retry.raw_properties is not None
        assert comparable(retry.raw_properties) == comparable(got[1])
    finally:
        names.delete()
