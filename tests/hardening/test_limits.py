"""Limits with RabbitMQ's codes and texts: frame_max (and its fudge), channel_max, message size."""

from __future__ import annotations

from typing import Any

from leveret.amqp_wire import framing
from pamqp import commands

from leveret.broker.broker import Broker
from leveret.clock import VirtualClock
from tests.wire.conftest import WireClient


def opened(broker: Broker | None = None) -> WireClient:
    wire = WireClient(broker or Broker(clock=VirtualClock()))
    wire.handshake()
    wire.open_channel(1)
    wire.send(1, commands.Queue.Declare(queue="q"))
    return wire


def closes(frames: list[tuple[int, Any]]) -> list[tuple[int, str, int, int]]:
    return [(f.reply_code, f.reply_text, f.class_id, f.method_id) for _, f in frames
            if isinstance(f, (commands.Connection.Close, commands.Channel.Close))]


def publish_in_one_frame(wire: WireClient, size: int) -> list[tuple[int, Any]]:
    """basic.publish whose whole body is one frame of `size` payload bytes."""
    data = framing.frame(framing.FRAME_METHOD, 1, b"\x00\x3c\x00\x28\x00\x00\x00\x01q\x00")
    data += framing.frame(framing.FRAME_HEADER, 1, b"\x00\x3c\x00\x00" + size.to_bytes(8, "big") + b"\x00\x00")
    return wire.send_raw(data + framing.frame(framing.FRAME_BODY, 1, b"b" * size))


def test_a_payload_may_reach_frame_max_itself_as_in_rabbitmq() -> None:
    wire = opened()
    at_limit = publish_in_one_frame(wire, 131072)
    over = publish_in_one_frame(wire, 131073)
    assert closes(at_limit) == []
    assert wire.broker.vhosts["/"].queues["q"].message_count == 1
    assert closes(over) == [(501, "FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,131073,131064}", 0, 0)]


def test_channel_max_counts_open_channels_and_closes_the_connection() -> None:
    broker = Broker(clock=VirtualClock())
    broker.settings.channel_max = 2
    wire = WireClient(broker)
    wire.handshake()
    wire.open_channel(1)
    wire.open_channel(65535)  # the number does not matter, the count does
    refused = wire.send(7, commands.Channel.Open())
    assert closes(refused) == [
        (530, "NOT_ALLOWED - number of channels opened (2) has reached the negotiated channel_max (2)", 0, 0)]


def test_a_message_over_max_message_size_closes_the_channel() -> None:
    broker = Broker(clock=VirtualClock())
    broker.settings.max_message_size = 1000
    wire = opened(broker)
    refused = wire.publish(1, "", "q", b"x" * 1001)
    accepted = opened(broker).publish(1, "", "q", b"x" * 1000)
    assert closes(refused) == [
        (406, "PRECONDITION_FAILED - message size 1001 is larger than configured max size 1000", 60, 40)]
    assert closes(accepted) == []
