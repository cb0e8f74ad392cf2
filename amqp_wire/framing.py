"""Splitting the byte stream into frames, and building outgoing frames.

pamqp cannot tell a partial frame from a corrupt one, so frames are split here:
7-byte header (type, channel, size), payload, frame-end octet 0xCE. The size is
checked against the negotiated frame_max before the payload is awaited, so a
peer cannot make us buffer an arbitrarily large frame.
"""

from __future__ import annotations

import struct

from leveret.amqp_wire.errors import frame_snippet
from pamqp import exceptions

FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_END = 0xCE
FRAME_END_BYTE = b"\xce"
FRAME_OVERHEAD = 8  # 7-byte header + frame-end octet

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
HEARTBEAT_FRAME = b"\x08\x00\x00\x00\x00\x00\x00\xce"

_HEADER = struct.Struct(">BHI")
_CONTENT_HEADER = struct.Struct(">HHQ")
_BASIC_CLASS = 60


class FrameReader:
    """Accumulates bytes and yields complete frames as (type, channel, payload).

    The buffer is immutable bytes: a read usually holds whole frames, so it is
    parsed in place and only the tail of a partial frame (less than frame_max)
    is kept and joined to the next read.
    """

    __slots__ = ("_buffer", "frame_max")

    def __init__(self, frame_max: int) -> None:
        self._buffer = b""
        self.frame_max = frame_max

    def feed(self, data: bytes) -> None:
        self._buffer = self._buffer + data if self._buffer else bytes(data)

    def take(self, count: int) -> bytes | None:
        """Raw bytes (the protocol header), or None until `count` have arrived."""
        if len(self._buffer) < count:
            return None
        chunk, self._buffer = self._buffer[:count], self._buffer[count:]
        return chunk

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def frames(self) -> list[tuple[int, int, bytes]]:
        buffer = self._buffer
        frames: list[tuple[int, int, bytes]] = []
        position = 0
        end = len(buffer)
        frame_max = self.frame_max
        unpack = _HEADER.unpack_from
        while end - position >= 7:
            frame_type, channel, size = unpack(buffer, position)
            # RabbitMQ lets a payload reach frame_max itself (clients are often off by the
            # 8 bytes of framing), though its error names frame_max - 8 as the limit.
            if frame_max and size > frame_max:
                self._buffer = buffer[position:]
                raise _lost_sync(
                    f"{frame_snippet(frame_type, b'')}: "
                    f"{{frame_too_large,{size},{frame_max - FRAME_OVERHEAD}}}"
                )
            frame_end = position + 7 + size
            if frame_end >= end:
                break
            if buffer[frame_end] != FRAME_END:
                self._buffer = buffer[position:]
                raise _lost_sync(
                    f"{frame_snippet(frame_type, buffer[position + 7 : frame_end])}: "
                    f"{{invalid_frame_end_marker,{buffer[frame_end]}}}"
                )
            frames.append((frame_type, channel, buffer[position + 7 : frame_end]))
            position = frame_end + 1
        self._buffer = buffer[position:] if position else buffer
        return frames


def _lost_sync(text: str) -> exceptions.AMQPFrameError:
    """A frame error after which the stream cannot be read on (see `lost_sync`)."""
    error = exceptions.AMQPFrameError(text)
    error.lost_sync = True  # type: ignore[attr-defined]
    return error


def lost_sync(error: Exception) -> bool:
    """Whether `error` left the frame stream unreadable: RabbitMQ then reads nothing
    more, close-ok included, and drops the socket 3 s later (observed)."""
    return getattr(error, "lost_sync", False)


def frame(frame_type: int, channel: int, payload: bytes) -> bytes:
    return _HEADER.pack(frame_type, channel, len(payload)) + payload + FRAME_END_BYTE


def content_frames(channel: int, raw_properties: bytes, body: bytes, frame_max: int) -> list[bytes]:
    """The header frame and as many body frames as frame_max requires."""
    header_payload = _CONTENT_HEADER.pack(_BASIC_CLASS, 0, len(body)) + raw_properties
    frames = [_HEADER.pack(FRAME_HEADER, channel, len(header_payload)) + header_payload + FRAME_END_BYTE]
    if body:
        chunk = (frame_max - FRAME_OVERHEAD) if frame_max else len(body)
        for start in range(0, len(body), chunk):
            piece = body[start : start + chunk]
            frames.append(_HEADER.pack(FRAME_BODY, channel, len(piece)) + piece + FRAME_END_BYTE)
    return frames


def content_header_payload(raw_properties: bytes, body_size: int) -> bytes:
    return _CONTENT_HEADER.pack(_BASIC_CLASS, 0, body_size) + raw_properties


# Bodies at least this large are written as views of the message body (the
# kernel gathers them), not copied into one delivery bytes object.
LARGE_BODY = 64 * 1024


def delivery_frames(channel: int, method_payload: bytes, header_payload: bytes, body: bytes, frame_max: int) -> bytes:
    """A method frame, its content header and body frames, as one write."""
    parts: list[bytes] = [
        _HEADER.pack(FRAME_METHOD, channel, len(method_payload)), method_payload, FRAME_END_BYTE,
        _HEADER.pack(FRAME_HEADER, channel, len(header_payload)), header_payload, FRAME_END_BYTE,
    ]
    if body:
        chunk = (frame_max - FRAME_OVERHEAD) if frame_max else len(body)
        if len(body) <= chunk:
            parts += (_HEADER.pack(FRAME_BODY, channel, len(body)), body, FRAME_END_BYTE)
        else:
            for start in range(0, len(body), chunk):
                piece = body[start : start + chunk]
                parts += (_HEADER.pack(FRAME_BODY, channel, len(piece)), piece, FRAME_END_BYTE)
    return b"".join(parts)


def large_delivery_frames(channel: int, method_payload: bytes, header_payload: bytes, body: bytes,
                          frame_max: int) -> list[bytes | memoryview]:
    """`delivery_frames` as buffers to write in order: the framing bytes apart and
    the body as views of it, so a large body is never copied on its way out."""
    head = b"".join((
        _HEADER.pack(FRAME_METHOD, channel, len(method_payload)), method_payload, FRAME_END_BYTE,
        _HEADER.pack(FRAME_HEADER, channel, len(header_payload)), header_payload, FRAME_END_BYTE,
    ))
    view = memoryview(body)
    chunk = (frame_max - FRAME_OVERHEAD) if frame_max else len(body)
    parts: list[bytes | memoryview] = []
    separator = head
    for start in range(0, len(body), chunk):
        piece = view[start : start + chunk]
        parts += (separator + _HEADER.pack(FRAME_BODY, channel, len(piece)), piece)
        separator = FRAME_END_BYTE
    parts.append(FRAME_END_BYTE)
    return parts


def parse_content_header(payload: bytes) -> tuple[int, int, bytes]:
    """(class_id, body_size, raw property bytes) of a content-header payload."""
    if len(payload) < 14:
        raise exceptions.AMQPFrameError("content header frame too short")
    class_id, _weight, body_size = _CONTENT_HEADER.unpack_from(payload, 0)
    return class_id, body_size, payload[12:]
