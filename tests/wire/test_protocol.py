"""Byte-level protocol tests: the sans-IO connection fed frames, no sockets."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from leveret.amqp_wire import framing
from pamqp import commands, frame

from leveret.broker.broker import Broker
from tests.wire.conftest import WireClient

Basic = commands.Basic


def methods(out: list) -> list:
    return [m for _, m in out]


def test_wrong_protocol_header_gets_ours_back_and_a_close(broker: Broker) -> None:
    wire = WireClient(broker)
    wire.connection.receive_data(b"AMQP\x00\x00\x08\x00")
    assert wire.connection.data_to_send() == b"AMQP\x00\x00\x09\x01"
    assert wire.connection.want_close


def test_handshake_advertises_what_rabbitmq_clients_look_for(broker: Broker) -> None:
    wire = WireClient(broker)
    start = methods(wire.send_raw(framing.PROTOCOL_HEADER))[0]
    assert (start.version_major, start.version_minor) == (0, 9)
    assert start.mechanisms == "PLAIN AMQPLAIN"
    properties = start.server_properties
    # The keys and their order are RabbitMQ 3.10's; product/version name the semantics we implement.
    assert list(properties) == ["capabilities", "cluster_name", "copyright", "information", "platform", "product", "version"]
    assert (properties["product"], properties["version"]) == ("RabbitMQ", "3.10.8")
    assert properties["information"].startswith("leveret ")
    caps = properties["capabilities"]
    for capability in ("publisher_confirms", "basic.nack", "consumer_cancel_notify",
                       "exchange_exchange_bindings", "per_consumer_qos", "direct_reply_to",
                       "authentication_failure_close", "consumer_priorities"):
        assert caps[capability] is True
    out = wire.send(0, commands.Connection.StartOk(
        client_properties={}, mechanism="PLAIN", response="\x00guest\x00guest", locale="en_US"))
    tune = methods(out)[0]
    assert (tune.channel_max, tune.frame_max, tune.heartbeat) == (2047, 131072, 60)


def test_amqplain_login(broker: Broker) -> None:
    from pamqp import encode

    wire = WireClient(broker)
    wire.send_raw(framing.PROTOCOL_HEADER)
    response = encode.field_table({"LOGIN": "guest", "PASSWORD": "guest"})[4:]
    out = wire.send(0, commands.Connection.StartOk(
        client_properties={}, mechanism="AMQPLAIN", response=response.decode("latin-1"), locale="en_US"))
    assert isinstance(methods(out)[0], commands.Connection.Tune)


def test_bad_password_is_403_with_rabbitmqs_text(broker: Broker) -> None:
    wire = WireClient(broker)
    out = wire.handshake(password="wrong")
    close = methods(out)[0]
    assert isinstance(close, commands.Connection.Close)
    assert close.reply_code == 403
    assert close.reply_text == (
        "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. "
        "For details see the broker logfile."
    )


def test_bad_password_without_capability_drops_the_socket_3_s_later(broker: Broker) -> None:
    # RabbitMQ sends nothing, reads nothing more, and drops the socket after 3 s.
    wire = WireClient(broker)
    out = wire.handshake(password="wrong", capabilities={"authentication_failure_close": False})
    assert out == []
    assert wire.send(0, commands.Connection.Close(reply_code=200, reply_text="", class_id=0, method_id=0)) == []
    wire.now += 2.9
    wire.connection.tick(wire.now)
    assert not wire.connection.want_close, "dropped before RabbitMQ would"
    wire.now += 0.2
    wire.connection.tick(wire.now)
    assert wire.connection.want_close


def before_tune_ok(broker: Broker) -> WireClient:
    wire = WireClient(broker)
    wire.send_raw(framing.PROTOCOL_HEADER)
    wire.send(0, commands.Connection.StartOk(
        client_properties={}, mechanism="PLAIN", response="\x00guest\x00guest", locale="en_US"))
    return wire


@pytest.mark.parametrize(("channel_max", "frame_max"), [(2047, 100), (0, 131072), (2047, 0), (2048, 131072)])
def test_errors_before_tune_ok_close_without_a_frame(broker: Broker, channel_max: int, frame_max: int) -> None:
    # 0 is no "use the server's": RabbitMQ refuses it, like any value out of range.
    wire = before_tune_ok(broker)
    assert wire.send(0, commands.Connection.TuneOk(channel_max=channel_max, frame_max=frame_max, heartbeat=0)) == []
    assert wire.send(0, commands.Connection.Open(virtual_host="/")) == [], "input after the error was read"
    wire.now += 3.0
    wire.connection.tick(wire.now)
    assert wire.connection.want_close


@pytest.mark.parametrize(("mechanism", "response"), [
    ("PLAIN", "guest\x00guest\x00guest"),  # an authorization identity RabbitMQ does not take
    ("PLAIN", "guest\x00guest"),
    ("FOO", "\x00guest\x00guest"),
])
def test_a_login_that_cannot_be_read_gets_no_frame_even_with_the_capability(
    broker: Broker, mechanism: str, response: str
) -> None:
    wire = WireClient(broker)
    wire.send_raw(framing.PROTOCOL_HEADER)
    out = wire.send(0, commands.Connection.StartOk(
        client_properties={"capabilities": {"authentication_failure_close": True}}, mechanism=mechanism,
        response=response, locale="en_US"))
    assert out == []
    wire.now += 3.0
    wire.connection.tick(wire.now)
    assert wire.connection.want_close


def test_out_of_place_connection_methods_are_504_naming_the_state(client: WireClient) -> None:
    # rabbit_reader: "unexpected method in connection state running", with the method's ids.
    assert connection_close(client.send(0, commands.Connection.CloseOk())) == (
        504, "CHANNEL_ERROR - unexpected method in connection state running", 10, 51)


def test_a_channel_method_on_channel_0_is_504(client: WireClient) -> None:
    assert connection_close(client.send(0, Basic.Qos(prefetch_count=1))) == (
        504, "CHANNEL_ERROR - unexpected method in connection state running", 60, 10)


def test_a_second_open_before_connection_open_is_504_opening(broker: Broker) -> None:
    wire = before_tune_ok(broker)
    wire.send(0, commands.Connection.TuneOk(channel_max=2047, frame_max=131072, heartbeat=0))
    assert connection_close(wire.send(0, commands.Connection.TuneOk(channel_max=2047, frame_max=131072, heartbeat=0))) == (
        504, "CHANNEL_ERROR - unexpected method in connection state opening", 10, 31)


def test_channel_open_ok_carries_rabbitmqs_empty_reserved_string(broker: Broker) -> None:
    wire = WireClient(broker)
    wire.handshake()
    wire.connection.receive_data(frame.marshal(commands.Channel.Open(), 1))
    assert wire.connection.data_to_send() == framing.frame(framing.FRAME_METHOD, 1, b"\x00\x14\x00\x0b\x00\x00\x00\x00")


def test_guest_is_refused_from_a_remote_address(broker: Broker) -> None:
    wire = WireClient(broker, peer_host="10.1.2.3")
    close = methods(wire.handshake())[0]
    assert close.reply_code == 403
    assert "can only connect via localhost" in close.reply_text


def test_unknown_vhost_is_530(broker: Broker) -> None:
    wire = WireClient(broker)
    assert connection_close(wire.handshake(vhost="nope")) == (530, "NOT_ALLOWED - vhost nope not found", 10, 40)


def connection_close(out: list) -> tuple[int, str, int, int]:
    close = methods(out)[0]
    assert isinstance(close, commands.Connection.Close)
    return close.reply_code, close.reply_text, close.class_id, close.method_id


# Texts below are what RabbitMQ 3.10 sends for the same bytes (Erlang's ~p of the payload).
def test_bad_frame_end_is_501_frame_error(client: WireClient) -> None:
    data = bytearray(framing.frame(framing.FRAME_METHOD, 1, bytes([0, 50, 0, 10, 0, 0, 0, 4, 0, 0, 0, 0])))
    data[-1] = 0x00
    assert connection_close(client.send_raw(bytes(data))) == (
        501, "FRAME_ERROR - type 1, all octets = <<0,50,0,10,0,0,0,4,0,0,0,0>>: {invalid_frame_end_marker,0}", 0, 0)
    # RabbitMQ reads nothing more, close-ok included, and drops the socket 3 s later.
    assert client.send(0, commands.Connection.CloseOk()) == []
    assert not client.connection.want_close
    client.now += 3.0
    client.connection.tick(client.now)
    assert client.connection.want_close


def test_frame_over_frame_max_is_501(client: WireClient) -> None:
    header = struct.pack(">BHI", framing.FRAME_BODY, 1, 131073)
    assert connection_close(client.send_raw(header)) == (
        501, "FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,131073,131064}", 0, 0)


def test_unknown_frame_type_and_odd_heartbeats(broker: Broker) -> None:
    cases = [
        (framing.frame(9, 0, b"a"), (501, 'FRAME_ERROR - type 9, all octets = <<"a">>: unknown_frame', 0, 0)),
        (framing.frame(8, 1, b""), (505, "UNEXPECTED_FRAME - type 8, all octets = <<>>", 0, 0)),
        (framing.frame(8, 0, b"ab"), (501, 'FRAME_ERROR - type 8, all octets = <<"ab">>: unknown_frame', 0, 0)),
        (framing.frame(1, 1, b""), (501, "FRAME_ERROR - type 1, all octets = <<>>: unknown_frame", 0, 0)),
        (framing.frame(3, 0, b"abc"), (505, 'UNEXPECTED_FRAME - type 3, all octets = <<"abc">>', 0, 0)),
        (framing.frame(1, 1, struct.pack(">HH", 50, 10) + b"\x00\x00"), (501, "FRAME_ERROR - cannot decode <<0,0>>", 50, 10)),
    ]
    for data, expected in cases:
        wire = WireClient(broker)
        wire.handshake()
        wire.open_channel(1)
        assert connection_close(wire.send_raw(data)) == expected


def test_channel_open_before_connection_open_is_505(broker: Broker) -> None:
    wire = WireClient(broker)
    wire.send_raw(framing.PROTOCOL_HEADER)
    wire.send(0, commands.Connection.StartOk(client_properties={}, mechanism="PLAIN", response="\x00guest\x00guest", locale="en_US"))
    wire.send(0, commands.Connection.TuneOk(channel_max=2047, frame_max=131072, heartbeat=0))
    assert connection_close(wire.send(1, commands.Channel.Open())) == (
        505, "UNEXPECTED_FRAME - type 1, all octets = <<0,20,0,10,1,48>>", 0, 0)


def test_channel_max_limits_open_channels_not_numbers(broker: Broker) -> None:
    wire = WireClient(broker)
    wire.send_raw(framing.PROTOCOL_HEADER)
    wire.send(0, commands.Connection.StartOk(client_properties={}, mechanism="PLAIN", response="\x00guest\x00guest", locale="en_US"))
    wire.send(0, commands.Connection.TuneOk(channel_max=2, frame_max=131072, heartbeat=0))
    wire.send(0, commands.Connection.Open(virtual_host="/"))
    wire.open_channel(7)
    wire.open_channel(2000)
    assert connection_close(wire.send(3, commands.Channel.Open())) == (
        530, "NOT_ALLOWED - number of channels opened (2) has reached the negotiated channel_max (2)", 0, 0)


def test_method_on_an_unopened_channel_is_504(client: WireClient) -> None:
    # RabbitMQ names the method that came (observed: 60, 20 for basic.consume).
    assert connection_close(client.send(5, Basic.Qos(prefetch_count=1))) == (
        504, "CHANNEL_ERROR - expected 'channel.open'", 60, 10)


def test_content_header_without_publish_is_505(client: WireClient) -> None:
    from pamqp import header

    data = frame.marshal(header.ContentHeader(0, 3, commands.Basic.Properties()), 1)
    close = methods(client.send_raw(data))[0]
    assert isinstance(close, commands.Connection.Close)
    assert close.reply_code == 505


def test_unknown_method_is_540(client: WireClient) -> None:
    close = methods(client.send_raw(framing.frame(framing.FRAME_METHOD, 1, struct.pack(">HH", 60, 999))))[0]
    assert isinstance(close, commands.Connection.Close)
    assert close.reply_code == 540


def test_connection_is_discarding_after_close_until_close_ok(client: WireClient) -> None:
    client.send_raw(framing.frame(framing.FRAME_METHOD, 1, struct.pack(">HH", 60, 999)))
    assert client.send(1, Basic.Qos(prefetch_count=1)) == []
    client.send(0, commands.Connection.CloseOk())
    assert client.connection.want_close


def test_channel_error_closes_only_that_channel(client: WireClient) -> None:
    client.open_channel(2)
    out = client.publish(1, "missing", "rk", b"x")
    close = methods(out)[0]
    assert isinstance(close, commands.Channel.Close)
    assert (close.reply_code, close.reply_text) == (404, "NOT_FOUND - no exchange 'missing' in vhost '/'")
    assert (close.class_id, close.method_id) == (60, 40)
    out = client.send(2, commands.Queue.Declare(queue="still-works"))
    assert isinstance(methods(out)[0], commands.Queue.DeclareOk)
    # frames on the closing channel are dropped until its close-ok
    assert client.send(1, commands.Queue.Declare(queue="ignored")) == []
    client.send(1, commands.Channel.CloseOk())
    assert isinstance(methods(client.send(1, commands.Channel.Open()))[0], commands.Channel.OpenOk)


def test_get_returns_the_publishers_exact_header_frame(client: WireClient) -> None:
    client.send(1, commands.Queue.Declare(queue="q2"))
    table = b"\x01ab\x05" + b"\x01nd" + struct.pack(">d", 1.5) + b"\x01sS\x00\x00\x00\x02\xff\xfe"
    raw = struct.pack(">H", 0x2000) + struct.pack(">I", len(table)) + table
    client.publish(1, "", "q2", b"body", raw_properties=raw)
    client.connection.receive_data(frame.marshal(Basic.Get(queue="q2", no_ack=True), 1))
    reader = framing.FrameReader(0)
    reader.feed(client.connection.data_to_send())
    frames = reader.frames()
    assert [f[0] for f in frames] == [framing.FRAME_METHOD, framing.FRAME_HEADER, framing.FRAME_BODY]
    assert frames[1][2][12:] == raw
    assert frames[2][2] == b"body"


def test_message_over_the_size_limit_is_406(broker: Broker) -> None:
    broker.settings.max_message_size = 10
    wire = WireClient(broker)
    wire.handshake()
    wire.open_channel(1)
    close = methods(wire.publish(1, "", "q", b"x" * 11))[0]
    assert isinstance(close, commands.Channel.Close)
    assert (close.reply_code, close.reply_text) == (
        406, "PRECONDITION_FAILED - message size 11 is larger than configured max size 10")


def test_large_bodies_are_split_within_frame_max(client: WireClient) -> None:
    client.send(1, commands.Queue.Declare(queue="big"))
    body = bytes(range(256)) * 2000  # 512 000 bytes, several frames
    client.publish(1, "", "big", body)
    client.connection.receive_data(frame.marshal(Basic.Get(queue="big", no_ack=True), 1))
    reader = framing.FrameReader(0)
    reader.feed(client.connection.data_to_send())
    frames = reader.frames()
    bodies = [f[2] for f in frames if f[0] == framing.FRAME_BODY]
    assert len(bodies) >= 4
    assert all(len(b) + framing.FRAME_OVERHEAD <= 131072 for b in bodies)
    assert b"".join(bodies) == body


def test_mandatory_unroutable_is_returned_312(client: WireClient) -> None:
    out = methods(client.publish(1, "amq.direct", "nowhere", b"x", mandatory=True))
    assert isinstance(out[0], Basic.Return)
    assert (out[0].reply_code, out[0].reply_text, out[0].exchange, out[0].routing_key) == (
        312, "NO_ROUTE", "amq.direct", "nowhere")


def test_confirms_ack_in_order_and_nack_on_reject_publish(client: WireClient) -> None:
    client.send(1, commands.Confirm.Select())
    client.send(1, commands.Queue.Declare(queue="full", arguments={"x-max-length": 1, "x-overflow": "reject-publish"}))
    first = methods(client.publish(1, "", "full", b"1"))
    second = methods(client.publish(1, "", "full", b"2"))
    assert isinstance(first[0], Basic.Ack) and first[0].delivery_tag == 1
    assert isinstance(second[0], Basic.Nack) and second[0].delivery_tag == 2


def test_ack_of_unknown_tag_is_406(client: WireClient) -> None:
    close = methods(client.send(1, Basic.Ack(delivery_tag=5)))[0]
    assert isinstance(close, commands.Channel.Close)
    assert (close.reply_code, close.reply_text) == (406, "PRECONDITION_FAILED - unknown delivery tag 5")


def test_ack_multiple_zero_with_nothing_outstanding_is_fine(client: WireClient) -> None:
    assert client.send(1, Basic.Ack(delivery_tag=0, multiple=True)) == []


def test_duplicate_consumer_tag_closes_the_connection_530(client: WireClient) -> None:
    client.send(1, commands.Queue.Declare(queue="q"))
    client.send(1, Basic.Consume(queue="q", consumer_tag="dup"))
    close = methods(client.send(1, Basic.Consume(queue="q", consumer_tag="dup")))[0]
    assert isinstance(close, commands.Connection.Close)
    assert (close.reply_code, close.reply_text) == (530, "NOT_ALLOWED - attempt to reuse consumer tag 'dup'")


def test_consume_ok_precedes_deliveries_and_requeue_on_close(client: WireClient) -> None:
    client.send(1, commands.Queue.Declare(queue="work"))
    client.publish(1, "", "work", b"a")
    out = methods(client.send(1, Basic.Consume(queue="work", consumer_tag="c1")))
    assert isinstance(out[0], Basic.ConsumeOk)
    assert isinstance(out[1], Basic.Deliver) and out[1].redelivered is False
    client.send(1, commands.Channel.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
    queue = client.broker.vhosts["/"].queues["work"]
    assert queue.message_count == 1
    assert queue.ready_entries()[0].redelivered


def test_immediate_publish_is_540(client: WireClient) -> None:
    close = methods(client.send_raw(frame.marshal(Basic.Publish(exchange="", routing_key="q", immediate=True), 1)))[0]
    assert isinstance(close, commands.Connection.Close)
    assert (close.reply_code, close.reply_text) == (540, "NOT_IMPLEMENTED - immediate=true")


def test_unknown_exchange_type_closes_the_connection_503(client: WireClient) -> None:
    close = methods(client.send(1, commands.Exchange.Declare(exchange="x", exchange_type="foo")))[0]
    assert isinstance(close, commands.Connection.Close)
    assert (close.reply_code, close.reply_text, close.class_id, close.method_id) == (
        503, "COMMAND_INVALID - invalid exchange type 'foo'", 40, 10)


def test_tx_defers_publishes_until_commit(client: WireClient) -> None:
    client.send(1, commands.Queue.Declare(queue="tq"))
    client.send(1, commands.Tx.Select())
    client.publish(1, "", "tq", b"a")
    queue = client.broker.vhosts["/"].queues["tq"]
    assert queue.message_count == 0
    assert isinstance(methods(client.send(1, commands.Tx.Commit()))[0], commands.Tx.CommitOk)
    assert queue.message_count == 1
    client.publish(1, "", "tq", b"b")
    client.send(1, commands.Tx.Rollback())
    client.send(1, commands.Tx.Commit())
    assert queue.message_count == 1


def test_confirm_after_tx_is_406(client: WireClient) -> None:
    client.send(1, commands.Tx.Select())
    close = methods(client.send(1, commands.Confirm.Select()))[0]
    assert (close.reply_code, close.reply_text) == (406, "PRECONDITION_FAILED - cannot switch from tx to confirm mode")


def test_silent_peer_is_disconnected_after_three_heartbeats(broker: Broker) -> None:
    # RabbitMQ drops a silent client after 3 intervals (observed: 3.0 s at 1 s, 6.0 s at 2 s).
    wire = WireClient(broker)
    wire.handshake(heartbeat=10)
    wire.now = 6.0
    wire.connection.heartbeat_tick(wire.now)
    assert wire.connection.data_to_send() == framing.HEARTBEAT_FRAME
    wire.now = 29.9
    wire.connection.heartbeat_tick(wire.now)
    assert not wire.connection.want_close
    wire.now = 30.0
    wire.connection.heartbeat_tick(wire.now)
    assert wire.connection.want_close


def test_queue_deletion_cancels_consumers_with_basic_cancel(client: WireClient) -> None:
    client.send(1, commands.Queue.Declare(queue="gone"))
    client.send(1, Basic.Consume(queue="gone", consumer_tag="c"))
    client.open_channel(2)
    out = client.send(2, commands.Queue.Delete(queue="gone"))
    cancels = [(ch, m) for ch, m in out if isinstance(m, Basic.Cancel)]
    assert cancels and cancels[0][0] == 1 and cancels[0][1].consumer_tag == "c"


def test_tx_rollback_puts_acked_deliveries_back_as_unacked(client: WireClient) -> None:
    client.send(1, commands.Queue.Declare(queue="txr"))
    client.publish(1, "", "txr", b"x")
    client.send(1, commands.Tx.Select())
    client.send(1, Basic.Get(queue="txr"))
    client.send(1, Basic.Ack(delivery_tag=1))
    assert isinstance(methods(client.send(1, commands.Tx.Rollback()))[0], commands.Tx.RollbackOk)
    queue = client.broker.vhosts["/"].queues["txr"]
    assert queue.unacked_count == 1
    client.send(1, commands.Channel.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
    assert queue.message_count == 1 and queue.ready_entries()[0].redelivered


def test_uncommitted_ack_is_requeued_when_the_channel_closes(client: WireClient) -> None:
    client.send(1, commands.Queue.Declare(queue="txc"))
    client.publish(1, "", "txc", b"x")
    client.send(1, commands.Tx.Select())
    client.send(1, Basic.Get(queue="txc"))
    client.send(1, Basic.Ack(delivery_tag=1))
    client.send(1, commands.Channel.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
    assert client.broker.vhosts["/"].queues["txc"].message_count == 1


def test_publish_validation_matches_rabbitmq(broker: Broker) -> None:
    cases = [
        (commands.Basic.Properties(user_id="bob"),
         "PRECONDITION_FAILED - user_id property set to 'bob' but authenticated user was 'guest'"),
        (commands.Basic.Properties(expiration="abc"), "PRECONDITION_FAILED - invalid expiration 'abc': no_integer"),
        (commands.Basic.Properties(headers={"CC": "one"}),
         'PRECONDITION_FAILED - invalid message: {unacceptable_type_in_header,"CC",longstr}'),
    ]
    for properties, text in cases:
        wire = WireClient(broker)
        wire.handshake()
        wire.open_channel(1)
        close = methods(wire.publish(1, "", "q", b"x", properties=properties))[0]
        assert isinstance(close, commands.Channel.Close)
        assert (close.reply_code, close.reply_text, close.class_id, close.method_id) == (406, text, 60, 40)


def test_own_user_id_is_accepted(client: WireClient) -> None:
    client.send(1, commands.Queue.Declare(queue="uid"))
    assert client.publish(1, "", "uid", b"x", properties=commands.Basic.Properties(user_id="guest")) == []
    assert client.broker.vhosts["/"].queues["uid"].message_count == 1


def test_direct_reply_to_pseudo_queue(client: WireClient) -> None:
    declare_ok = methods(client.send(1, commands.Queue.Declare(queue="amq.rabbitmq.reply-to")))[0]
    assert (declare_ok.queue, declare_ok.message_count, declare_ok.consumer_count) == ("amq.rabbitmq.reply-to", 0, 1)
    close = methods(client.publish(1, "", "q", b"x", properties=commands.Basic.Properties(reply_to="amq.rabbitmq.reply-to")))[0]
    assert (close.reply_code, close.reply_text) == (406, "PRECONDITION_FAILED - fast reply consumer does not exist")
    client.open_channel(2)
    close = methods(client.send(2, Basic.Consume(queue="amq.rabbitmq.reply-to", no_ack=False)))[0]
    assert (close.reply_code, close.reply_text) == (406, "PRECONDITION_FAILED - reply consumer cannot acknowledge")


def test_confirms_coalesce_into_one_multiple_ack_per_read(client: WireClient) -> None:
    from pamqp import body as pamqp_body
    from pamqp import frame, header

    client.send(1, commands.Confirm.Select())
    client.send(1, commands.Queue.Declare(queue="cq"))
    data = b""
    for _ in range(5):
        data += frame.marshal(Basic.Publish(exchange="", routing_key="cq"), 1)
        data += frame.marshal(header.ContentHeader(0, 1, commands.Basic.Properties()), 1)
        data += frame.marshal(pamqp_body.ContentBody(b"x"), 1)
    acks = methods(client.send_raw(data))
    assert [(type(m).__name__, m.delivery_tag, m.multiple) for m in acks] == [("Ack", 5, True)]
    single = methods(client.publish(1, "", "cq", b"y"))
    assert [(type(m).__name__, m.delivery_tag, m.multiple) for m in single] == [("Ack", 6, False)]


def test_a_nack_flushes_the_acks_before_it(client: WireClient) -> None:
    from pamqp import body as pamqp_body
    from pamqp import frame, header

    client.send(1, commands.Confirm.Select())
    client.send(1, commands.Queue.Declare(queue="one", arguments={"x-max-length": 1, "x-overflow": "reject-publish"}))
    data = b""
    for _ in range(3):
        data += frame.marshal(Basic.Publish(exchange="", routing_key="one"), 1)
        data += frame.marshal(header.ContentHeader(0, 1, commands.Basic.Properties()), 1)
        data += frame.marshal(pamqp_body.ContentBody(b"x"), 1)
    replies = methods(client.send_raw(data))
    assert [(type(m).__name__, m.delivery_tag) for m in replies] == [("Ack", 1), ("Nack", 2), ("Nack", 3)]


# Out-of-place frames on an open channel, as RabbitMQ 3.10 answers them (observed).
def test_a_second_channel_open_is_504(client: WireClient) -> None:
    assert connection_close(client.send(1, commands.Channel.Open())) == (
        504, "CHANNEL_ERROR - second 'channel.open' seen", 20, 10)


@pytest.mark.parametrize("method", [
    commands.Channel.CloseOk(), commands.Channel.FlowOk(active=True), commands.Queue.DeclareOk(queue="q", message_count=0, consumer_count=0),
])
def test_methods_only_a_server_sends_are_503_unimplemented(client: WireClient, method: Any) -> None:
    assert connection_close(client.send(1, method)) == (
        503, "COMMAND_INVALID - unimplemented method", method.index >> 16, method.index & 0xFFFF)


def test_access_request_is_granted_ticket_1(client: WireClient) -> None:
    request = b"\x00\x1e\x00\x0a" + b"\x05/data" + b"\x1e"
    client.connection.receive_data(framing.frame(framing.FRAME_METHOD, 1, request))
    assert client.connection.data_to_send() == framing.frame(framing.FRAME_METHOD, 1, b"\x00\x1e\x00\x0b\x00\x01")


def content_after_publish(client: WireClient, frame_type: int, payload: bytes) -> list:
    data = frame.marshal(Basic.Publish(exchange="", routing_key="q"), 1)
    return client.send_raw(data + framing.frame(frame_type, 1, payload))


def test_a_content_header_with_a_weight_is_no_content_header(client: WireClient) -> None:
    header = struct.pack(">HHQH", 60, 1, 1, 0)
    assert connection_close(content_after_publish(client, framing.FRAME_HEADER, header)) == (
        505, "UNEXPECTED_FRAME - expected content header for class 60, got non content header frame instead", 60, 40)


def test_a_content_header_of_another_class_is_505_naming_it(client: WireClient) -> None:
    header = struct.pack(">HHQH", 50, 0, 1, 0)
    assert connection_close(content_after_publish(client, framing.FRAME_HEADER, header)) == (
        505, "UNEXPECTED_FRAME - expected content header for class 60, got one for class 50 instead", 60, 40)


def test_a_method_instead_of_content_is_505_naming_the_publish(client: WireClient) -> None:
    qos = frame.marshal(Basic.Qos(prefetch_count=1), 1)[7:-1]
    assert connection_close(content_after_publish(client, framing.FRAME_METHOD, qos)) == (
        505, "UNEXPECTED_FRAME - expected content header for class 60, got non content header frame instead", 60, 40)


def test_content_on_an_unopened_channel_is_505(client: WireClient) -> None:
    header = struct.pack(">HHQH", 60, 0, 1, 0)
    assert connection_close(client.send_raw(framing.frame(framing.FRAME_HEADER, 5, header))) == (
        505, "UNEXPECTED_FRAME - expected method frame, got non method frame instead", 0, 0)


def test_after_close_ok_the_client_closes_the_socket(client: WireClient) -> None:
    # RabbitMQ leaves the socket to the client (a client finishing its own close
    # must not see it go first), answers another close, and drops it itself after
    # the closing timeout: 30 s, or the heartbeat when that is shorter.
    close = commands.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0)
    assert isinstance(methods(client.send(0, close))[0], commands.Connection.CloseOk)
    assert not client.connection.want_close
    assert isinstance(methods(client.send(0, close))[0], commands.Connection.CloseOk)
    client.now += 29.9
    client.connection.tick(client.now)
    assert not client.connection.want_close
    client.now += 0.2
    client.connection.tick(client.now)
    assert client.connection.want_close


def test_on_a_channel_we_close_a_publish_is_discarded_but_content_alone_is_505(client: WireClient) -> None:
    client.send(1, commands.Queue.Declare(queue="missing", passive=True))  # 404: we close channel 1
    assert client.publish(1, "", "q", b"discarded") == [], "a whole publish on a closing channel is dropped"
    header = struct.pack(">HHQH", 60, 0, 1, 0)
    assert connection_close(client.send_raw(framing.frame(framing.FRAME_HEADER, 1, header))) == (
        505, "UNEXPECTED_FRAME - expected method frame, got non method frame instead", 0, 0)


def test_after_tune_ok_a_refused_open_waits_the_long_closing_timeout(broker: Broker) -> None:
    wire = WireClient(broker)
    assert connection_close(wire.handshake(vhost="nope"))[0] == 530
    wire.now += 29.0
    wire.connection.tick(wire.now)
    assert not wire.connection.want_close, "RabbitMQ still waits for close-ok after 3 s"
    wire.now += 1.0
    wire.connection.tick(wire.now)
    assert wire.connection.want_close


def test_an_oversized_start_ok_is_dropped_3_s_later_without_a_frame(broker: Broker) -> None:
    wire = WireClient(broker)
    wire.send_raw(framing.PROTOCOL_HEADER)
    start_ok = commands.Connection.StartOk(
        client_properties={"pad": "x" * 10000}, mechanism="PLAIN", response="\x00guest\x00guest", locale="en_US")
    assert wire.send(0, start_ok) == []
    assert not wire.connection.want_close
    wire.now += 3.0
    wire.connection.tick(wire.now)
    assert wire.connection.want_close


def test_after_a_frame_error_in_a_whole_frame_close_ok_is_still_read(client: WireClient) -> None:
    # A heartbeat with a payload is a whole frame: the stream is still in step,
    # and RabbitMQ takes the close-ok (unlike after a bad frame end).
    out = client.send_raw(framing.frame(framing.FRAME_HEARTBEAT, 0, b"xy"))
    assert connection_close(out)[0] == 501
    client.send(0, commands.Connection.CloseOk())
    assert client.connection.want_close
