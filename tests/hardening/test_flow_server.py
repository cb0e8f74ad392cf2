"""Back-pressure and timeouts through real sockets and real clients (pika)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pika
import pika.exceptions
import pytest
from pamqp import commands, frame

from leveret.broker.broker import Broker, BrokerSettings
from leveret.server.shell import WRITE_BUFFER_HARD, WRITE_BUFFER_HIGH, ServerThread
from tests.hardening.rawclient import RawClient


def start(**settings: Any) -> ServerThread:
    return ServerThread(Broker(settings=BrokerSettings(tick_interval=0.05, **settings))).start()


@pytest.fixture
def server() -> Iterator[ServerThread]:
    running = start()
    yield running
    running.stop()


def until(condition: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return bool(condition())


def buffered_for_consumers(server: ServerThread) -> int:
    """Bytes leveret holds for its connections: socket write buffers plus queued output."""
    def measure(_: Broker) -> int:
        total = 0
        for protocol in server.server.protocols:
            if protocol.transport is not None:
                total += protocol.transport.get_write_buffer_size()
            total += getattr(protocol.connection, "_out_bytes", 0)
        return total
    return server.call(measure)


def test_a_consumer_that_stops_reading_does_not_make_the_broker_buffer(server: ServerThread) -> None:
    consumer = RawClient(server.host, server.port)
    consumer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    consumer.handshake()
    consumer.open_channel(1)
    consumer.call(commands.Queue.Declare(queue="slow"), reply=commands.Queue.DeclareOk)
    consumer.call(commands.Basic.Consume(queue="slow", no_ack=True), reply=commands.Basic.ConsumeOk)
    # ...and from here on the consumer reads nothing.
    producer = pika.BlockingConnection(pika.URLParameters(server.url))
    channel = producer.channel()
    body = b"x" * 65536
    count = 40 * WRITE_BUFFER_HIGH // len(body)  # 40 MiB, far more than the socket holds
    peak = 0
    for i in range(count):
        channel.basic_publish("", "slow", body, pika.BasicProperties(message_id=str(i)))
        if i % 64 == 0:
            producer.process_data_events(0)
            peak = max(peak, buffered_for_consumers(server))
    producer.process_data_events(0)
    until(lambda: server.call(lambda b: b.vhosts["/"].queues["slow"].message_count) > 0)
    peak = max(peak, buffered_for_consumers(server))
    waiting = server.call(lambda b: b.vhosts["/"].queues["slow"].message_count)
    # The consumer reads again: every message arrives, in order.
    seen = 0
    while seen < count:
        got = consumer.recv(5.0)
        assert got is not None, f"stalled after {seen} of {count}"
        if isinstance(got[1], commands.Basic.Deliver):
            seen += 1
    producer.close()
    consumer.close()
    print(f"slow consumer: {count} messages of {len(body)} B published, broker held at most "
          f"{peak} B for sockets ({peak / WRITE_BUFFER_HIGH:.1f} x the write watermark), "
          f"{waiting} waited in the queue; delivered {seen}, lost {count - seen}")
    assert peak < 4 * WRITE_BUFFER_HIGH
    assert waiting > count // 2
    assert seen == count


def test_the_memory_alarm_blocks_publishers_and_unblocks_them_with_pika(server: ServerThread) -> None:
    events: list[str] = []
    publisher = pika.BlockingConnection(pika.URLParameters(server.url))
    publisher.add_on_connection_blocked_callback(lambda *a: events.append("blocked"))
    publisher.add_on_connection_unblocked_callback(lambda *a: events.append("unblocked"))
    channel = publisher.channel()
    channel.queue_declare("work")
    for i in range(20):
        channel.basic_publish("", "work", b"before %d" % i)
    publisher.process_data_events(0.1)
    server.broker.settings.memory_high_watermark = 1  # one byte: the next check sets the alarm
    assert until(lambda: server.broker.resources.memory_alarm)
    channel.basic_publish("", "work", b"during")  # pika writes it; leveret stops reading there
    assert until(lambda: (publisher.process_data_events(0.05), "blocked" in events)[1])
    consumer = RawClient(server.host, server.port)
    consumer.handshake()
    consumer.open_channel(1)
    consumer.call(commands.Basic.Qos(prefetch_count=1), reply=commands.Basic.QosOk)
    consumer.send(commands.Basic.Consume(queue="work"), 1)
    drained = 0
    while (delivery := consumer.expect(commands.Basic.Deliver, timeout=0.5)) is not None:
        drained += 1  # acks are read and answered while the publisher is blocked
        consumer.send(commands.Basic.Ack(delivery_tag=delivery.delivery_tag), 1)
    server.broker.settings.memory_high_watermark = 1.0  # all of memory: clears at the next check
    assert until(lambda: (publisher.process_data_events(0.05), "unblocked" in events)[1])
    after = consumer.expect(commands.Basic.Deliver)
    publisher.close()
    consumer.close()
    print(f"memory alarm: pika saw {events}; the consumer drained {drained} queued messages while "
          f"the publisher was blocked, and got the held publish after the alarm cleared")
    assert events == ["blocked", "unblocked"]
    assert drained == 20
    assert isinstance(after, commands.Basic.Deliver)


def test_a_consumer_holding_a_message_too_long_loses_its_channel_and_the_message_is_requeued() -> None:
    server = start(consumer_timeout=300)
    try:
        client = RawClient(server.host, server.port)
        client.handshake()
        client.open_channel(1)
        client.call(commands.Queue.Declare(queue="jobs"), reply=commands.Queue.DeclareOk)
        client.publish(1, "", "jobs", b"job")
        client.call(commands.Basic.Qos(prefetch_count=1), reply=commands.Basic.QosOk)
        client.send(commands.Basic.Consume(queue="jobs"), 1)
        delivered = client.expect(commands.Basic.Deliver)
        started = time.monotonic()
        closed = client.expect(commands.Channel.Close, timeout=5.0)
        held_for = time.monotonic() - started
        client.open_channel(2)
        again = client.call(commands.Basic.Get(queue="jobs", no_ack=True), channel=2, reply=commands.Basic.GetOk)
        client.close()
    finally:
        server.stop()
    print(f"consumer_timeout 300 ms: channel closed {held_for:.2f} s after the delivery, "
          f"message requeued (redelivered={again.redelivered})")
    assert isinstance(delivered, commands.Basic.Deliver)
    assert (closed.code, closed.text, closed.class_id, closed.method_id) == (
        406, "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value used: 300 ms. "
        "This timeout value can be configured, see consumers doc guide to learn more", 0, 0)
    assert 0.3 <= held_for < 1.0
    assert again.redelivered


def test_a_silent_socket_is_closed_after_the_handshake_timeout() -> None:
    server = start(handshake_timeout=0.3)
    try:
        client = RawClient(server.host, server.port)
        started = time.monotonic()
        client.send_bytes(b"AMQP\x00\x00\x09\x01")
        client.expect(commands.Connection.Start)
        ended = client.recv(3.0)  # nothing more: the socket closes
        took = time.monotonic() - started
        closed = client.eof
        client.close()
    finally:
        server.stop()
    assert ended is None
    assert closed
    assert 0.3 <= took < 1.5


def test_a_client_that_does_not_read_its_replies_is_not_read_either(server: ServerThread) -> None:
    """basic.get after basic.get and no reads: leveret stops reading before it buffers much."""
    client = RawClient(server.host, server.port)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    client.handshake()
    client.open_channel(1)
    client.call(commands.Queue.Declare(queue="big"), reply=commands.Queue.DeclareOk)
    client.publish(1, "", "big", b"y" * 100_000)
    request = frame.marshal(commands.Basic.Get(queue="big"), 1)
    request += frame.marshal(commands.Basic.Recover(requeue=True), 1)
    sent = 0
    stop = threading.Event()

    def flood() -> None:
        nonlocal sent
        client.sock.settimeout(0.5)
        try:
            while not stop.is_set():
                client.sock.sendall(request * 16)
                sent += 16
        except OSError:
            pass

    writer = threading.Thread(target=flood, daemon=True)
    writer.start()
    time.sleep(1.5)
    held = buffered_for_consumers(server)
    stop.set()
    writer.join(2.0)
    client.sock.close()
    print(f"{sent} get+recover pairs sent without reading the replies; leveret held {held} B of output")
    assert sent * 100_000 > 4 * WRITE_BUFFER_HARD  # asked for far more than leveret kept
    assert held < WRITE_BUFFER_HARD + 2 * WRITE_BUFFER_HIGH
