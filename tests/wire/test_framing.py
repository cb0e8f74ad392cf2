"""The frame reader and the delivery writer on large frames: the bytes that come
out are the bytes that went in, however the reads split them."""

from __future__ import annotations

import pytest
from leveret.amqp_wire import framing

FRAME_MAX = 131072


def _body_frame(channel: int, payload: bytes) -> bytes:
    return framing.frame(framing.FRAME_BODY, channel, payload)


@pytest.mark.parametrize("read_size", [1, 7, 1000, 4096, 65536, 300_000])
def test_a_large_frame_split_across_reads_comes_out_whole(read_size: int) -> None:
    big = bytes(range(256)) * 400  # 102 400 bytes
    small = b"tail"
    stream = _body_frame(1, big) + _body_frame(2, small) + framing.HEARTBEAT_FRAME
    reader = framing.FrameReader(FRAME_MAX)
    got: list[tuple[int, int, bytes]] = []
    for start in range(0, len(stream), read_size):
        reader.feed(stream[start : start + read_size])
        got += reader.frames()
    assert got == [(3, 1, big), (3, 2, small), (8, 0, b"")]
    assert reader.buffered == 0


@pytest.mark.parametrize("frame_max", [0, 4096, FRAME_MAX])
@pytest.mark.parametrize("size", [framing.LARGE_BODY, 1 << 20, 3 * FRAME_MAX + 5])
def test_large_delivery_buffers_are_the_same_bytes_as_one_delivery(frame_max: int, size: int) -> None:
    body = bytes(range(251)) * (size // 251) + b"z" * (size % 251)
    method, header = b"\x00\x3c\x00\x3c method", framing.content_header_payload(b"\x00\x00", len(body))
    buffers = framing.large_delivery_frames(5, method, header, body, frame_max)
    assert b"".join(buffers) == framing.delivery_frames(5, method, header, body, frame_max)
    assert any(isinstance(part, memoryview) for part in buffers)  # the body is not copied
