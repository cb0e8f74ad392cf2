"""Back-pressure and timeouts on the sans-IO Connection: no sockets, time is advanced by hand.

- the memory alarm blocks a connection when it publishes (connection.blocked only
  to clients with the capability), consumers keep getting deliveries;
- a connection whose socket does not drain stops being a delivery target;
- the delivery acknowledgement timeout closes the channel with RabbitMQ's 406;
- handshake and closing timeouts drop silent peers.
"""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest
from pamqp import commands, frame

from leveret.broker.broker import Broker
from leveret.clock import VirtualClock
from leveret.server.connection_state import OUTPUT_LIMIT
from tests.wire.conftest import WireClient

BLOCKED_CAPABILITY = {"connection.blocked": True}


@pytest.fixture
def broker() -> Broker:
    return Broker(clock=VirtualClock())


def methods(frames: list[tuple[int, Any]]) -> list[str]:
    return [frame.name for _, frame in frames if hasattr(frame, "name")]


def client(broker: Broker, capabilities: dict[str, Any] | None = None) -> WireClient:
    wire = WireClient(broker)
    out = wire.handshake(capabilities=capabilities)
    assert isinstance(out[-1][1], commands.Connection.OpenOk)
    wire.open_channel(1)
    return wire


def declare(wire: WireClient, queue: str) -> None:
    wire.send(1, commands.Queue.Declare(queue=queue))


# ------------------------------------------------------------- memory alarm
def test_a_publisher_is_blocked_past_the_watermark_and_a_consumer_keeps_draining(broker: Broker) -> None:
    publisher = client(broker, BLOCKED_CAPABILITY)
    consumer = client(broker, BLOCKED_CAPABILITY)
    declare(publisher, "q")
    for i in range(3):
        publisher.publish(1, "", "q", b"m%d" % i)
    consumer.send(1, commands.Basic.Qos(prefetch_count=1))
    first = deliveries(consumer.send(1, commands.Basic.Consume(queue="q", consumer_tag="c")))
    broker.resources.update_memory(used=2000, limit=1000)  # the monitor's measurement
    got = publisher.publish(1, "", "q", b"during the alarm")
    blocked = [frame.reason for _, frame in got if isinstance(frame, commands.Connection.Blocked)]
    drained = first[:]
    while len(drained) < 4:  # consumers are never blocked: their acks keep the queue moving
        more = deliveries(consumer.send(1, commands.Basic.Ack(delivery_tag=drained[-1].delivery_tag)))
        if not more:
            break
        drained += more
    assert blocked == ["low on memory"]
    assert publisher.connection.reading_paused
    assert not consumer.connection.reading_paused
    assert len(drained) == 3  # what was queued; the publish that met the alarm waits (as in RabbitMQ)
    broker.resources.update_memory(used=500, limit=1000)
    assert methods(publisher.received()) == ["Connection.Unblocked"]
    assert not publisher.connection.reading_paused
    late = deliveries(consumer.send(1, commands.Basic.Ack(delivery_tag=drained[-1].delivery_tag)))
    assert len(late) == 1  # the held publish went through once the alarm cleared


def deliveries(frames: list[tuple[int, Any]]) -> list[Any]:
    return [frame for _, frame in frames if isinstance(frame, commands.Basic.Deliver)]


def test_connection_blocked_goes_only_to_clients_with_the_capability(broker: Broker) -> None:
    publisher = client(broker, capabilities={})
    declare(publisher, "q")
    broker.resources.update_memory(used=2, limit=1)
    got = publisher.publish(1, "", "q", b"x")
    assert "Connection.Blocked" not in methods(got)
    assert publisher.connection.reading_paused  # blocked all the same
    broker.resources.update_memory(used=0, limit=1)
    assert methods(publisher.received()) == []
    assert not publisher.connection.reading_paused


def test_a_blocked_connection_still_reads_the_close_ok_to_a_shutdown(broker: Broker) -> None:
    wire = client(broker, BLOCKED_CAPABILITY)
    declare(wire, "q")
    broker.resources.update_memory(used=2, limit=1)
    wire.publish(1, "", "q", b"x")
    blocked = wire.connection.reading_paused
    wire.connection.server_shutdown()
    closes = [f.reply_code for _, f in wire.received() if isinstance(f, commands.Connection.Close)]
    reading = not wire.connection.reading_paused
    wire.send(0, commands.Connection.CloseOk())
    assert blocked and reading
    assert closes == [320]
    assert wire.connection.want_close


def test_a_blocked_connection_is_not_timed_out_for_missing_heartbeats(broker: Broker) -> None:
    wire = WireClient(broker)
    wire.handshake(capabilities=BLOCKED_CAPABILITY, heartbeat=2)
    wire.open_channel(1)
    declare(wire, "q")
    broker.resources.update_memory(used=2, limit=1)
    wire.publish(1, "", "q", b"x")
    for _ in range(10):  # 20 s without a byte from the client: it is us not reading
        wire.now += 2.0
        wire.connection.heartbeat_tick(wire.now)
    assert not wire.connection.want_close


# --------------------------------------------------- slow consumer, write side
def test_deliveries_pause_while_the_socket_does_not_drain(broker: Broker) -> None:
    producer = client(broker)
    consumer = client(broker)
    declare(producer, "q")
    consumer.send(1, commands.Basic.Consume(queue="q", no_ack=True))
    consumer.connection.writing_paused(True)  # the shell: write buffer over its high watermark
    for i in range(5):
        producer.publish(1, "", "q", b"m%d" % i)
    held = methods(consumer.received())
    depth = broker.vhosts["/"].queues["q"].message_count
    consumer.connection.writing_paused(False)  # drained below the low watermark
    resumed = methods(consumer.received())
    assert held == []
    assert depth == 5
    assert resumed.count("Basic.Deliver") == 5


def test_one_pass_queues_at_most_the_output_limit_for_a_consumer_that_does_not_read(broker: Broker) -> None:
    producer = client(broker)
    declare(producer, "q")
    body = b"x" * 10_000
    count = 3 * OUTPUT_LIMIT // len(body)
    for _ in range(count):
        producer.publish(1, "", "q", body)
    consumer = client(broker)
    connection = consumer.connection
    # Subscribing with everything ready at once: the shell has not written anything yet.
    connection.receive_data(frame.marshal(commands.Basic.Consume(queue="q", no_ack=True), 1))
    first = connection.data_to_send()  # the shell writes; the next pass may deliver more
    passes, total = 1, len(first)
    while (chunk := connection.data_to_send()):
        passes, total = passes + 1, total + len(chunk)
    print(f"{count} messages of {len(body)} B ready: the first pass queued {len(first)} B "
          f"(limit {OUTPUT_LIMIT} + one message), all {total} B went out in {passes} passes")
    assert OUTPUT_LIMIT < len(first) <= OUTPUT_LIMIT + len(body) + 200
    assert passes >= 3
    assert broker.vhosts["/"].queues["q"].message_count == 0
    assert total > count * len(body)


# ------------------------------------------------ acknowledgement timeout
def test_a_delivery_held_too_long_closes_the_channel_and_is_requeued(broker: Broker) -> None:
    broker.settings.consumer_timeout = 5000
    broker.settings.tick_interval = 1.0
    wire = client(broker)
    declare(wire, "q")
    wire.publish(1, "", "q", b"held")
    wire.send(1, commands.Basic.Qos(prefetch_count=1))
    wire.send(1, commands.Basic.Consume(queue="q", consumer_tag="c"))
    early: list[str] = []
    for _ in range(5):  # 5 s: not yet
        wire.now += 1.0
        wire.connection.tick(wire.now)
        early += methods(wire.received())
    for _ in range(2):  # past 5 s plus the tick of slack
        wire.now += 1.0
        wire.connection.tick(wire.now)
    closes = [frame for _, frame in wire.received() if isinstance(frame, commands.Channel.Close)]
    assert early == []
    assert [(c.reply_code, c.reply_text, c.class_id, c.method_id) for c in closes] == [(
        406, "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value used: "
        "5000 ms. This timeout value can be configured, see consumers doc guide to learn more", 0, 0)]
    queue = broker.vhosts["/"].queues["q"]
    assert queue.message_count == 1  # requeued


def test_acked_deliveries_do_not_time_out(broker: Broker) -> None:
    broker.settings.consumer_timeout = 2000
    wire = client(broker)
    declare(wire, "q")
    wire.send(1, commands.Basic.Consume(queue="q", consumer_tag="c"))
    tag = 0
    for second in range(10):
        got = wire.publish(1, "", "q", b"m")
        delivery = [f for _, f in got if isinstance(f, commands.Basic.Deliver)]
        tag = delivery[-1].delivery_tag
        wire.send(1, commands.Basic.Ack(delivery_tag=tag))
        wire.now = float(second + 1)
        wire.connection.tick(wire.now)
    assert tag == 10
    assert 1 in wire.connection.channels
    assert len(wire.connection.channels[1]._stamps) == 0  # nothing unacked: nothing kept


def test_an_unacked_basic_get_counts_too(broker: Broker) -> None:
    broker.settings.consumer_timeout = 1000
    wire = client(broker)
    declare(wire, "q")
    wire.publish(1, "", "q", b"m")
    wire.send(1, commands.Basic.Get(queue="q"))
    wire.now = 3.0
    wire.connection.tick(wire.now)
    assert "Channel.Close" in methods(wire.received())


# ------------------------------------------------- handshake and closing
def test_a_peer_that_never_finishes_the_handshake_is_dropped(broker: Broker) -> None:
    wire = WireClient(broker)
    wire.send_raw(b"AMQP\x00\x00\x09\x01")
    wire.now = 9.0
    wire.connection.tick(wire.now)
    waiting = wire.connection.want_close
    wire.now = 10.0
    wire.connection.tick(wire.now)
    assert not waiting
    assert wire.connection.want_close


def test_a_peer_that_never_answers_our_close_is_dropped(broker: Broker) -> None:
    wire = client(broker)
    wire.send(5, commands.Basic.Qos(prefetch_count=1))  # an unopened channel: 504, connection.close
    wire.now += 29.0
    wire.connection.tick(wire.now)
    waiting = wire.connection.want_close
    wire.now += 1.0
    wire.connection.tick(wire.now)
    assert not waiting
    assert wire.connection.want_close


def test_garbage_after_our_close_is_not_kept(broker: Broker) -> None:
    wire = client(broker)
    wire.send_raw(b"\x09\x00\x00\x00\x00\x00\x00\xce")  # unknown frame type: 501, connection.close
    for _ in range(100):
        wire.connection.receive_data(b"\xff" * 1000)
    assert wire.connection.reader.buffered == 0
    # After a frame error nothing more is read; the socket goes 3 s on, as with RabbitMQ.
    wire.now += 3.0
    wire.connection.tick(wire.now)
    assert wire.connection.want_close


def test_a_closed_channel_is_freed_without_waiting_for_the_garbage_collector(broker: Broker) -> None:
    """`leveret serve` makes full collections rare: a channel must not live on in a reference cycle."""
    wire = client(broker)
    declare(wire, "q")
    wire.send(1, commands.Basic.Consume(queue="q", consumer_tag="c"))
    channel = weakref.ref(wire.connection.channels[1])
    gc.disable()
    try:
        wire.send(1, commands.Channel.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
        alive = channel() is not None
    finally:
        gc.enable()
    assert not alive
