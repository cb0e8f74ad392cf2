"""A byte-level AMQP client for driving the sans-IO Connection without sockets."""

from __future__ import annotations

from typing import Any

import pytest
from leveret.amqp_wire import framing
from pamqp import body as pamqp_body
from pamqp import commands, frame, header

from leveret.broker.broker import Broker
from leveret.clock import VirtualClock
from leveret.server.connection import Connection


class WireClient:
    """Feeds frames into a Connection and decodes what it answers."""

    def __init__(self, broker: Broker, peer_host: str = "127.0.0.1") -> None:
        self.broker = broker
        self.now = 0.0
        self.connection = Connection(broker, peer_host=peer_host, monotonic=lambda: self.now)
        self.reader = framing.FrameReader(0)

    def send_raw(self, data: bytes) -> list[tuple[int, Any]]:
        self.connection.receive_data(data)
        return self.received()

    def received(self) -> list[tuple[int, Any]]:
        self.reader.feed(self.connection.data_to_send())
        out = []
        for frame_type, channel, payload in self.reader.frames():
            data = framing.frame(frame_type, channel, payload)
            out.append((channel, frame.unmarshal(data)[2]))
        return out

    def send(self, channel: int, method: Any) -> list[tuple[int, Any]]:
        return self.send_raw(frame.marshal(method, channel))

    def publish(
        self, channel: int, exchange: str, routing_key: str, body: bytes,
        properties: commands.Basic.Properties | None = None, mandatory: bool = False,
        raw_properties: bytes | None = None,
    ) -> list[tuple[int, Any]]:
        data = frame.marshal(commands.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=mandatory), channel)
        if raw_properties is not None:
            payload = (60).to_bytes(2, "big") + b"\x00\x00" + len(body).to_bytes(8, "big") + raw_properties
            data += framing.frame(framing.FRAME_HEADER, channel, payload)
        else:
            data += frame.marshal(header.ContentHeader(0, len(body), properties or commands.Basic.Properties()), channel)
        chunk = 131072 - framing.FRAME_OVERHEAD
        for start in range(0, len(body), chunk):
            data += frame.marshal(pamqp_body.ContentBody(body[start : start + chunk]), channel)
        return self.send_raw(data)

    def handshake(self, capabilities: dict[str, Any] | None = None, user: str = "guest",
                  password: str = "guest", vhost: str = "/", heartbeat: int = 0) -> list[tuple[int, Any]]:
        out = self.send_raw(framing.PROTOCOL_HEADER)
        assert isinstance(out[0][1], commands.Connection.Start)
        caps = {"authentication_failure_close": True, "consumer_cancel_notify": True}
        caps.update(capabilities or {})
        out = self.send(0, commands.Connection.StartOk(
            client_properties={"capabilities": caps}, mechanism="PLAIN",
            response=f"\x00{user}\x00{password}", locale="en_US",
        ))
        if not out or not isinstance(out[0][1], commands.Connection.Tune):
            return out
        tune = out[0][1]
        self.send(0, commands.Connection.TuneOk(channel_max=tune.channel_max, frame_max=tune.frame_max, heartbeat=heartbeat))
        return self.send(0, commands.Connection.Open(virtual_host=vhost))

    def open_channel(self, channel: int = 1) -> None:
        out = self.send(channel, commands.Channel.Open())
        assert isinstance(out[0][1], commands.Channel.OpenOk)


@pytest.fixture
def broker() -> Broker:
    return Broker(clock=VirtualClock())


@pytest.fixture
def client(broker: Broker) -> WireClient:
    wire = WireClient(broker)
    out = wire.handshake()
    assert isinstance(out[0][1], commands.Connection.OpenOk)
    wire.open_channel(1)
    return wire
