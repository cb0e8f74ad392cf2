"""Method frames to method objects.

pamqp decodes every method; the two a busy channel sees most (basic.publish
and basic.ack) are decoded by hand into small slotted objects with the same
attribute names, because pamqp's generic decoder and validation cost several
microseconds per frame.

Argument tables (declare, bind, consume) are read again with
leveret.amqp_wire.fieldtable, whose numbers keep their wire type: RabbitMQ names that
type in its error texts and compares binding arguments with it.

Short strings must be UTF-8 ("Malformed UTF-8 in shortstr", 501), except in
basic.publish: RabbitMQ 3.10 takes its exchange and routing key as bytes, so
they are kept with surrogate escapes and go back out unchanged.
"""

from __future__ import annotations

import struct
from typing import Any

from leveret.amqp_wire import framing
from leveret.amqp_wire.errors import erlang_binary, frame_snippet
from leveret.amqp_wire.fieldtable import FieldTableError, read_table_plain
from pamqp import commands, exceptions

PUBLISH_INDEX = b"\x00\x3c\x00\x28"  # basic.publish (60, 40)
ACK_INDEX = b"\x00\x3c\x00\x50"  # basic.ack (60, 80)
ACCESS_REQUEST_INDEX = b"\x00\x1e\x00\x0a"  # access.request (30, 10), gone from 0-9-1
ACCESS_REQUEST_OK = b"\x00\x1e\x00\x0b\x00\x01"  # access.request-ok, ticket 1
_ACK = struct.Struct(">QB")


class Publish:
    """basic.publish, as the channel reads it."""

    __slots__ = ("exchange", "routing_key", "mandatory", "immediate")
    index = 0x003C0028
    name = "Basic.Publish"

    def __init__(self, exchange: str, routing_key: str, mandatory: bool, immediate: bool) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.mandatory = mandatory
        self.immediate = immediate


class Ack:
    """basic.ack, as the channel reads it."""

    __slots__ = ("delivery_tag", "multiple")
    index = 0x003C0050
    name = "Basic.Ack"

    def __init__(self, delivery_tag: int, multiple: bool) -> None:
        self.delivery_tag = delivery_tag
        self.multiple = multiple


def _cannot_decode(payload: bytes) -> exceptions.AMQPFrameError:
    index = int.from_bytes(payload[:4], "big")
    failure = exceptions.AMQPFrameError(f"cannot decode {erlang_binary(payload[4:])}")
    failure.method_ids = (index >> 16, index & 0xFFFF)  # type: ignore[attr-defined]
    return failure


def decode_publish(payload: bytes) -> Publish:
    try:
        # ticket (short, reserved), exchange, routing key, then the mandatory/immediate bits
        position = 6
        end = position + 1 + payload[position]
        exchange = payload[position + 1 : end].decode("utf-8", "surrogateescape")
        position = end
        end = position + 1 + payload[position]
        routing_key = payload[position + 1 : end].decode("utf-8", "surrogateescape")
        bits = payload[end]
        if end + 1 != len(payload):
            raise ValueError("trailing bytes")
    except (IndexError, ValueError) as error:
        raise _cannot_decode(payload) from error
    return Publish(exchange, routing_key, bool(bits & 1), bool(bits & 2))


def decode_ack(payload: bytes) -> Ack:
    if len(payload) != 13:
        raise _cannot_decode(payload)
    delivery_tag, bits = _ACK.unpack_from(payload, 4)
    return Ack(delivery_tag, bool(bits & 1))


def decode_method(payload: bytes) -> Any:
    if len(payload) < 4:
        raise exceptions.AMQPFrameError(f"{frame_snippet(framing.FRAME_METHOD, payload)}: unknown_frame")
    index = int.from_bytes(payload[:4], "big")
    cls: Any = commands.INDEX_MAPPING.get(index)
    if cls is None:
        raise exceptions.AMQPNotImplemented(
            f"unknown method class {index >> 16} method {index & 0xFFFF}"
        )
    method = cls()
    try:
        method.unmarshal(payload[4:])
        layout = _ARGUMENTS_AFTER.get(index)
        if layout is not None:
            method.arguments = _arguments(payload, *layout)
    except Exception as error:
        if isinstance(error, UnicodeDecodeError) or isinstance(error.__cause__, UnicodeDecodeError):
            # RabbitMQ's parser fails before it knows the method: class and method 0.
            raise exceptions.AMQPFrameError("Malformed UTF-8 in shortstr") from error
        raise _cannot_decode(payload) from error
    return method


# Methods whose last field is an arguments table: the short strings before it
# (after the reserved short) and whether a bits octet comes between.
_ARGUMENTS_AFTER: dict[int, tuple[int, bool]] = {
    0x0028000A: (2, True),  # exchange.declare: exchange, type
    0x0028001E: (3, True),  # exchange.bind: destination, source, routing key
    0x00280028: (3, True),  # exchange.unbind
    0x0032000A: (1, True),  # queue.declare: queue
    0x00320014: (3, True),  # queue.bind: queue, exchange, routing key
    0x00320032: (3, False),  # queue.unbind: queue, exchange, routing key
    0x003C0014: (2, True),  # basic.consume: queue, consumer tag
}


def _arguments(payload: bytes, short_strings: int, bits: bool) -> dict[str, Any]:
    position = 6
    for _ in range(short_strings):
        position += 1 + payload[position]
    if bits:
        position += 1
    try:
        return read_table_plain(payload, position)[0]
    except FieldTableError as error:
        raise ValueError(str(error)) from error
