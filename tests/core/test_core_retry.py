"""The headline: retry with back-off, as RabbitMQ users build it, in-process on
a virtual clock, and the same steps against the reference RabbitMQ.

Two topologies, both common in the wild:

A. *Reject and wait* (fixed back-off). The consumer rejects a failing message
   from `work`; `work` dead-letters to `retry` (fanout) and its `wait` queue,
   whose TTL dead-letters it back to `work-x` with its original routing keys.
   The application counts `x-death` for (work, rejected); after three retries
   it publishes the message to `parking` and acks it. The message is
   published with CC (another key to `work`) and BCC (an `audit` queue), so
   every retry also reaches `audit`, and with an `expiration` that
   dead-lettering turns into `original-expiration`.

B. *Exponential back-off* (50, 100, 200 ms). The application acks the failing
   message and republishes it, headers and all (through the client's
   encoder, as real clients do), to `wait.N` for attempt N; each wait queue
   dead-letters back to `work` with a dead-letter routing key. After three
   waits it parks the message. Here RabbitMQ 3.10's x-death grouping shows:
   the third wait puts its entry first and the older two in reversed order.

Every delivery (work, parking, audit) is recorded with its exchange, routing
key, redelivered flag, body and property bytes (x-death `time` values
zeroed); the in-process run must equal the RabbitMQ run exactly. The
in-process run is also checked against literal expectations, so it is a
test of its own where no RabbitMQ is reachable.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import pytest
from leveret.amqp_wire.fieldtable import Field, TypedTable, to_plain
from leveret.amqp_wire.properties import RawProperties, encode_properties
from leveret.bindings.model import Destination

from tests.core.core_support import World, make_message
from tests.reference import HOST, PORT, reachable

pika = pytest.importorskip("pika")

RETRIES = 3


# ------------------------------------------------------------------- model
@dataclass(frozen=True)
class Delivery:
    queue: str
    exchange: str
    routing_key: str
    redelivered: bool
    body: bytes
    raw: bytes  # the content header's property flags and list
    token: Any = field(compare=False, repr=False)


class Broker(Protocol):
    def exchange(self, name: str, kind: str) -> None: ...
    def queue(self, name: str, arguments: dict[str, Any]) -> None: ...
    def bind(self, exchange: str, queue: str, key: str) -> None: ...
    def publish(self, exchange: str, routing_key: str, body: bytes, raw: bytes) -> None: ...
    def next(self, queue: str) -> Delivery: ...
    def drain(self, queue: str, count: int) -> list[Delivery]: ...
    def ack(self, delivery: Delivery) -> None: ...
    def reject(self, delivery: Delivery) -> None: ...
    def requeue(self, delivery: Delivery) -> None: ...


def client_encoded(properties: Any) -> bytes:
    """What pika puts on the wire for these BasicProperties."""
    return b"".join(properties.encode())


def client_roundtrip(raw: bytes) -> bytes:
    """A client copying a delivered message's properties into a new publish."""
    properties = pika.spec.BasicProperties()
    properties.decode(raw)
    return client_encoded(properties)


def deaths(delivery: Delivery) -> list[dict[str, Any]]:
    table = RawProperties.parse(delivery.raw).headers() or TypedTable()
    x_death = table.get("x-death")
    if x_death is None:
        return []
    return [to_plain(item) for item in x_death.value]


def without_times(raw: bytes) -> bytes:
    """The property bytes with every x-death `time` set to 0."""
    parts = RawProperties.parse(raw)
    table = parts.headers()
    if table is None or table.get("x-death") is None:
        return raw
    x_death = table.get("x-death")
    assert x_death is not None and x_death.tag == "A"
    items = tuple(
        Field("F", item.value.keystore("time", Field("T", 0))) if item.tag == "F" and item.value.get("time") else item
        for item in x_death.value
    )
    return parts.with_headers(table.keystore("x-death", Field("A", items))).to_bytes()


def observation(delivery: Delivery) -> tuple[Any, ...]:
    return (
        delivery.queue, delivery.exchange, delivery.routing_key, delivery.redelivered,
        delivery.body, without_times(delivery.raw),
    )


def readable(delivery: Delivery) -> dict[str, Any]:
    """For assertion messages: the observation decoded."""
    parts = RawProperties.parse(without_times(delivery.raw))
    headers = parts.headers()
    return {
        "queue": delivery.queue, "exchange": delivery.exchange, "routing_key": delivery.routing_key,
        "headers": [(name, value.tag, to_plain(value)) for name, value in (headers or TypedTable())],
        "expiration": parts.get("expiration"),
    }


# --------------------------------------------------------------- scenarios
@dataclass(frozen=True)
class Names:
    prefix: str

    def __getattr__(self, item: str) -> str:
        return f"{self.prefix}-{item.replace('_', '-')}"

    def wait_n(self, attempt: int) -> str:
        return f"{self.prefix}-wait.{attempt}"


@dataclass
class Run:
    work: list[Delivery] = field(default_factory=list)
    parked: list[Delivery] = field(default_factory=list)
    audit: list[Delivery] = field(default_factory=list)

    def observations(self) -> list[tuple[Any, ...]]:
        return [observation(d) for d in self.work + self.parked + self.audit]


def first_properties() -> Any:
    return pika.BasicProperties(
        content_type="text/plain",
        delivery_mode=2,
        message_id="order-17",
        expiration="60000",
        headers={"app": "shop", "CC": ["task-cc"], "BCC": ["task-bcc"]},
    )


def reject_and_wait(broker: Broker, n: Names, wait_ms: int) -> Run:
    """Topology A: DLX to a TTL queue and back; the app parks after three retries."""
    broker.exchange(n.work_x, "direct")
    broker.exchange(n.retry, "fanout")
    broker.queue(n.work, {"x-dead-letter-exchange": n.retry})
    broker.queue(n.wait, {"x-message-ttl": wait_ms, "x-dead-letter-exchange": n.work_x})
    broker.queue(n.parking, {})
    broker.queue(n.audit, {})
    broker.bind(n.work_x, n.work, "task")
    broker.bind(n.work_x, n.work, "task-cc")
    broker.bind(n.work_x, n.audit, "task-bcc")
    broker.bind(n.retry, n.wait, "")
    broker.publish(n.work_x, "task", b"order 17", client_encoded(first_properties()))
    run = Run()
    while True:
        delivery = broker.next(n.work)
        run.work.append(delivery)
        failures = sum(d["count"] for d in deaths(delivery) if (d["queue"], d["reason"]) == (n.work, "rejected"))
        if failures < RETRIES:
            broker.reject(delivery)
            continue
        broker.publish("", n.parking, delivery.body, client_roundtrip(delivery.raw))
        broker.ack(delivery)
        break
    run.parked.append(broker.next(n.parking))
    run.audit = broker.drain(n.audit, RETRIES + 1)
    return run


def exponential_back_off(broker: Broker, n: Names, base_ms: int) -> Run:
    """Topology B: the app republishes to wait.N (TTL base * 2^(N-1)) and parks after three."""
    broker.exchange(n.work_x, "direct")
    broker.exchange(n.retry, "direct")
    broker.queue(n.work, {})
    broker.queue(n.parking, {})
    broker.bind(n.work_x, n.work, "task")
    for attempt in range(1, RETRIES + 1):
        broker.queue(n.wait_n(attempt), {
            "x-message-ttl": base_ms * 2 ** (attempt - 1),
            "x-dead-letter-exchange": n.work_x,
            "x-dead-letter-routing-key": "task",
        })
        broker.bind(n.retry, n.wait_n(attempt), f"wait.{attempt}")
    properties = pika.BasicProperties(message_id="job-9", expiration="60000", headers={"app": "jobs"})
    broker.publish(n.work_x, "task", b"job 9", client_encoded(properties))
    run = Run()
    while True:
        delivery = broker.next(n.work)
        run.work.append(delivery)
        attempts = sum(d["count"] for d in deaths(delivery) if d["queue"].startswith(n.wait_n(0)[:-1]))
        if attempts < RETRIES:
            broker.publish(n.retry, f"wait.{attempts + 1}", delivery.body, client_roundtrip(delivery.raw))
        else:
            broker.publish("", n.parking, delivery.body, client_roundtrip(delivery.raw))
        broker.ack(delivery)
        if attempts >= RETRIES:
            break
    run.parked.append(broker.next(n.parking))
    return run


def delivery_limit(broker: Broker, n: Names, limit: int) -> Run:
    """A consumer that always nacks with requeue; the delivery limit dead-letters.

    RabbitMQ offers x-delivery-limit on quorum queues only (which also add an
    x-delivery-count header to deliveries; leveret does not), so only the
    number of deliveries and the dead-lettered message are compared."""
    broker.queue(n.dead, {})
    broker.queue(n.work, {
        "x-queue-type": "quorum", "x-delivery-limit": limit,
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": n.dead,
    })
    properties = pika.BasicProperties(message_id="poison", headers={"app": "v"}, expiration="60000")
    broker.publish("", n.work, b"poison", client_encoded(properties))
    run = Run()
    for _ in range(limit + 1):
        delivery = broker.next(n.work)
        run.work.append(delivery)
        broker.requeue(delivery)
    run.parked.append(broker.next(n.dead))
    return run


SCENARIOS: dict[str, tuple[Callable[[Broker, Names, int], Run], int]] = {
    "reject-and-wait": (reject_and_wait, 100),
    "exponential-back-off": (exponential_back_off, 50),
    "delivery-limit": (delivery_limit, 2),
}


# ------------------------------------------------------------- in-process
class InProcess:
    """The scenario's broker calls on a leveret vhost; waiting advances the virtual clock."""

    def __init__(self) -> None:
        self.world = World()
        self.vhost = self.world.vhost

    def exchange(self, name: str, kind: str) -> None:
        self.vhost.declare_exchange(name, kind)

    def queue(self, name: str, arguments: dict[str, Any]) -> None:
        durable = arguments.get("x-queue-type") == "quorum"
        self.vhost.declare_queue(name, durable=durable, arguments=arguments, now_ms=self.world.now)

    def bind(self, exchange: str, queue: str, key: str) -> None:
        self.vhost.bind(exchange, Destination.queue(queue), key)

    def publish(self, exchange: str, routing_key: str, body: bytes, raw: bytes) -> None:
        self.vhost.publish(exchange, make_message(exchange, routing_key, body, raw_properties=raw), self.world.now)

    def _get(self, queue: str) -> Delivery | None:
        entry = self.world.get(queue, no_ack=False)
        if entry is None:
            return None
        message = entry.message
        raw = message.raw_properties if message.raw_properties is not None else encode_properties(message.properties)
        return Delivery(queue, message.exchange, message.routing_key, entry.redelivered, message.body, raw, entry)

    def next(self, queue: str) -> Delivery:
        while (delivery := self._get(queue)) is None:
            deadline = self.vhost.next_deadline()
            assert deadline is not None, f"nothing will ever reach {queue}"
            self.world.advance(deadline - self.world.now)
        return delivery

    def drain(self, queue: str, count: int) -> list[Delivery]:
        got = []
        while (delivery := self._get(queue)) is not None:
            got.append(delivery)
        return got

    def ack(self, delivery: Delivery) -> None:
        self.vhost.ack(self.vhost.queues[delivery.queue], [delivery.token])

    def reject(self, delivery: Delivery) -> None:
        self.vhost.reject(self.vhost.queues[delivery.queue], [delivery.token], self.world.now)

    def requeue(self, delivery: Delivery) -> None:
        self.vhost.requeue(self.vhost.queues[delivery.queue], [delivery.token], self.world.now)


# ---------------------------------------------------------------- RabbitMQ
class RabbitMQ:
    """The same calls with pika against the reference broker, in real time."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.exchanges: list[str] = []
        self.queues: list[str] = []

    def exchange(self, name: str, kind: str) -> None:
        self.exchanges.append(name)
        self.channel.exchange_declare(name, kind)

    def queue(self, name: str, arguments: dict[str, Any]) -> None:
        self.queues.append(name)
        durable = arguments.get("x-queue-type") == "quorum"
        self.channel.queue_declare(name, durable=durable, arguments=arguments)

    def bind(self, exchange: str, queue: str, key: str) -> None:
        self.channel.queue_bind(queue, exchange, key)

    def publish(self, exchange: str, routing_key: str, body: bytes, raw: bytes) -> None:
        properties = pika.spec.BasicProperties()
        properties.decode(raw)
        self.channel.basic_publish(exchange, routing_key, body, properties)

    def _get(self, queue: str) -> Delivery | None:
        method, properties, body = self.channel.basic_get(queue, auto_ack=False)
        if method is None:
            return None
        return Delivery(
            queue, method.exchange, method.routing_key, method.redelivered, body,
            properties.leveret_raw, method.delivery_tag,
        )

    def next(self, queue: str, timeout: float = 10.0) -> Delivery:
        give_up = time.monotonic() + timeout
        while (delivery := self._get(queue)) is None:
            assert time.monotonic() < give_up, f"nothing reached {queue}"
            time.sleep(0.005)
        return delivery

    def drain(self, queue: str, count: int) -> list[Delivery]:
        return [self.next(queue) for _ in range(count)]

    def ack(self, delivery: Delivery) -> None:
        self.channel.basic_ack(delivery.token)

    def reject(self, delivery: Delivery) -> None:
        self.channel.basic_reject(delivery.token, requeue=False)

    def requeue(self, delivery: Delivery) -> None:
        self.channel.basic_nack(delivery.token, requeue=True)

    def cleanup(self) -> None:
        for name in self.queues:
            self.channel.queue_delete(name)
        for name in self.exchanges:
            self.channel.exchange_delete(name)


@pytest.fixture
def rabbitmq(monkeypatch: pytest.MonkeyPatch) -> Iterator[RabbitMQ]:
    if not reachable():
        pytest.skip(f"no reference RabbitMQ on {HOST}:{PORT}")
    original = pika.spec.BasicProperties.decode

    def keep_raw(self: Any, encoded: bytes, offset: int = 0) -> Any:
        self.leveret_raw = bytes(encoded[offset:])
        return original(self, encoded, offset)

    monkeypatch.setattr(pika.spec.BasicProperties, "decode", keep_raw)
    connection = pika.BlockingConnection(
        pika.ConnectionParameters(HOST, PORT, connection_attempts=1, socket_timeout=5)
    )
    broker = RabbitMQ(connection.channel())
    try:
        yield broker
    finally:
        try:
            broker.cleanup()
        finally:
            connection.close()


def unique_names() -> Names:
    return Names(f"leveret-retry-{uuid.uuid4().hex[:12]}")


# ------------------------------------------------------------------ tests
def test_reject_and_wait_in_process() -> None:
    n = Names("r")
    broker = InProcess()
    started = time.perf_counter()
    run = reject_and_wait(broker, n, 100)
    assert time.perf_counter() - started < 1.0
    assert broker.world.clock.now_ms() - 1_700_000_000_000 == 3 * 100  # virtual time only

    assert [(d.exchange, d.routing_key, d.redelivered) for d in run.work] == [
        (n.work_x, "task", False), *[(n.work_x, "task", False)] * RETRIES
    ]
    assert [deaths(d) for d in run.work[:1]] == [[]]
    times = {type(d.get("time")) for delivery in run.work for d in deaths(delivery)}
    assert len(times) == 1
    fourth = [{k: v for k, v in d.items() if k != "time"} for d in deaths(run.work[-1])]
    assert fourth == [
        {"count": 3, "exchange": n.retry, "queue": n.wait, "reason": "expired", "routing-keys": ["task", "task-cc"]},
        {"count": 3, "exchange": n.work_x, "original-expiration": "60000", "queue": n.work, "reason": "rejected",
         "routing-keys": ["task", "task-cc"]},
    ]
    headers = to_plain(RawProperties.parse(run.work[-1].raw).headers() or TypedTable())
    assert {k: v for k, v in headers.items() if k != "x-death"} == {
        "CC": ["task-cc"], "app": "shop",
        "x-first-death-exchange": n.work_x, "x-first-death-queue": n.work, "x-first-death-reason": "rejected",
    }
    assert RawProperties.parse(run.work[-1].raw).get("expiration") is None
    assert [d.body for d in run.parked] == [b"order 17"]
    assert len(run.audit) == RETRIES + 1  # BCC: the first publish, then every retry
    assert [len(deaths(d)) for d in run.audit] == [0, 2, 2, 2]


def test_exponential_back_off_in_process() -> None:
    n = Names("b")
    broker = InProcess()
    run = exponential_back_off(broker, n, 50)
    assert broker.world.clock.now_ms() - 1_700_000_000_000 == 50 + 100 + 200
    parked = [{k: v for k, v in d.items() if k != "time"} for d in deaths(run.parked[0])]
    # RabbitMQ 3.10: the newest entry first, the two older ones reversed by its grouping fold.
    assert [(d["queue"], d["reason"], d["count"]) for d in parked] == [
        (n.wait_n(3), "expired", 1), (n.wait_n(1), "expired", 1), (n.wait_n(2), "expired", 1),
    ]
    assert parked[1]["original-expiration"] == "60000"
    assert all("original-expiration" not in d for d in (parked[0], parked[2]))
    assert [d["routing-keys"] for d in parked] == [["wait.3"], ["wait.1"], ["wait.2"]]
    assert {d["exchange"] for d in parked} == {n.retry}


def test_delivery_limit_in_process() -> None:
    n = Names("d")
    run = delivery_limit(InProcess(), n, 2)
    assert [d.redelivered for d in run.work] == [False, True, True]
    (dead,) = run.parked
    assert [{k: v for k, v in d.items() if k != "time"} for d in deaths(dead)] == [
        {"count": 1, "reason": "delivery_limit", "queue": n.work, "exchange": "", "routing-keys": [n.work],
         "original-expiration": "60000"},
    ]


@pytest.mark.rabbitmq
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_x_death_equals_rabbitmq(rabbitmq: RabbitMQ, scenario: str) -> None:
    play, setting = SCENARIOS[scenario]
    names = unique_names()
    theirs = play(rabbitmq, names, setting)
    ours = play(InProcess(), names, setting)
    if scenario == "delivery-limit":  # quorum deliveries carry x-delivery-count
        assert len(ours.work) == len(theirs.work)
        ours.work, theirs.work = [], []
    assert [readable(d) for d in ours.work + ours.parked + ours.audit] == [
        readable(d) for d in theirs.work + theirs.parked + theirs.audit
    ]
    assert ours.observations() == theirs.observations()
