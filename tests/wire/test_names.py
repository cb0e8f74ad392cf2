"""Names and keys that are not UTF-8, byte for byte, as RabbitMQ 3.10 treats them
(observed on the reference with a client that sends raw short strings).

basic.publish takes its exchange and routing key as bytes: they route, and go
back out in basic.return / basic.deliver exactly as they came. Every other
method refuses a short string that is not UTF-8: 501 "Malformed UTF-8 in
shortstr", closing the connection.
"""

from __future__ import annotations

import struct

from leveret.amqp_wire import framing
from pamqp import commands

from tests.wire.conftest import WireClient
from tests.wire.test_protocol import connection_close


def shortstr(data: bytes) -> bytes:
    return bytes([len(data)]) + data


def raw_publish(channel: int, exchange: bytes, routing_key: bytes, body: bytes, mandatory: bool) -> bytes:
    method = struct.pack(">HHH", 60, 40, 0) + shortstr(exchange) + shortstr(routing_key) + bytes([mandatory])
    header = struct.pack(">HHQH", 60, 0, len(body), 0)
    return (
        framing.frame(framing.FRAME_METHOD, channel, method)
        + framing.frame(framing.FRAME_HEADER, channel, header)
        + framing.frame(framing.FRAME_BODY, channel, body)
    )


def raw_frames(client: WireClient) -> list[tuple[int, int, bytes]]:
    client.reader.feed(client.connection.data_to_send())
    return list(client.reader.frames())


def test_a_routing_key_that_is_not_utf8_is_returned_as_it_came(client: WireClient) -> None:
    client.connection.receive_data(raw_publish(1, b"amq.direct", b"\xff\xfe", b"x", mandatory=True))
    frames = raw_frames(client)
    returned = frames[0][2]
    assert returned[:4] == struct.pack(">HH", 60, 50), "expected basic.return"
    assert returned[4:] == struct.pack(">H", 312) + shortstr(b"NO_ROUTE") + shortstr(b"amq.direct") + shortstr(b"\xff\xfe")
    assert frames[2] == (framing.FRAME_BODY, 1, b"x")


def test_a_routing_key_that_is_not_utf8_routes_by_its_words(client: WireClient) -> None:
    client.send(1, commands.Exchange.Declare(exchange="t", exchange_type="topic"))
    client.send(1, commands.Queue.Declare(queue="q"))
    client.send(1, commands.Queue.Bind(queue="q", exchange="t", routing_key="*.a"))
    client.send(1, commands.Basic.Consume(queue="q", consumer_tag="c", no_ack=True))
    client.connection.receive_data(raw_publish(1, b"t", b"\xff.a", b"body", mandatory=True))
    deliver = raw_frames(client)[0][2]
    assert deliver[:4] == struct.pack(">HH", 60, 60), "expected basic.deliver"
    assert deliver.endswith(shortstr(b"t") + shortstr(b"\xff.a"))


def test_publishing_to_an_exchange_name_that_is_not_utf8_is_404_naming_its_bytes(client: WireClient) -> None:
    client.connection.receive_data(raw_publish(1, b"ex\xff", b"k", b"x", mandatory=False))
    text = b"NOT_FOUND - no exchange 'ex\xff' in vhost '/'"
    assert raw_frames(client) == [
        (framing.FRAME_METHOD, 1, struct.pack(">HHH", 20, 40, 404) + shortstr(text) + struct.pack(">HH", 60, 40))
    ]


def test_a_long_reply_text_is_cut_at_252_bytes_even_inside_a_character(client: WireClient) -> None:
    name = "a" + "\u00e9" * 127  # 255 bytes
    declare = struct.pack(">HHH", 50, 10, 0) + shortstr(name.encode()) + b"\x01" + struct.pack(">I", 0)
    client.connection.receive_data(framing.frame(framing.FRAME_METHOD, 1, declare))
    text = f"NOT_FOUND - no queue '{name}' in vhost '/'".encode()
    cut = text[:252] + b"..."
    assert cut[-4:-3] == b"\xc3", "the cut should fall inside an '\u00e9'"
    assert raw_frames(client) == [
        (framing.FRAME_METHOD, 1, struct.pack(">HHH", 20, 40, 404) + shortstr(cut) + struct.pack(">HH", 50, 10))
    ]


def test_a_declare_with_a_name_that_is_not_utf8_is_501(client: WireClient) -> None:
    method = struct.pack(">HHH", 50, 10, 0) + shortstr(b"q\xff") + b"\x00" + struct.pack(">I", 0)
    out = client.send_raw(framing.frame(framing.FRAME_METHOD, 1, method))
    assert connection_close(out) == (501, "FRAME_ERROR - Malformed UTF-8 in shortstr", 0, 0)
