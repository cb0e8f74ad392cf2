"""The framed file format every store file shares, and how it is read back.

A file is `magic (8 bytes), u32 salt`, then records, each framed as
`u32 length, u32 crc32(payload, seed=salt), payload`. The salt is random per
file, so a record copied from elsewhere (say, inside a message body) never
verifies here. Nothing in this module knows what a payload means: message
segments, their ack logs and the topology journal all use it, and so can any
other append-only log (issue 18's stream segments).

Reading back (`scan`) verifies every frame. A bad frame in the middle is
skipped up to the next frame that verifies; a bad tail (a torn last write) is
cut off. Each drop is reported with its offset, so a damaged file costs the
records it damaged and no more.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable

MAGIC_MSG = b"LVRTMSG\x01"  # a message segment: PUBLISH records
MAGIC_ACK = b"LVRTACK\x01"  # a segment's ack log: state records of its messages
MAGIC_TOPOLOGY = b"LVRTTOP\x01"  # the topology journal

HEADER = struct.Struct("<8sI")  # magic, salt
FRAME = struct.Struct("<II")  # payload length, crc32(payload, salt)


def new_salt() -> int:
    return int.from_bytes(os.urandom(4), "little")


def header(magic: bytes, salt: int) -> bytes:
    return HEADER.pack(magic, salt)


def frame(payload: bytes, salt: int) -> bytes:
    return FRAME.pack(len(payload), zlib.crc32(payload, salt)) + payload


def payload(data: bytes, start: int) -> bytes:
    """The payload that starts at `start` (an offset `scan` returned)."""
    length: int = FRAME.unpack_from(data, start - FRAME.size)[0]
    return data[start : start + length]


def scan(name: str, data: bytes, magic: bytes, dropped: Callable[[str], None]) -> tuple[int, list[int], int]:
    """(salt, offsets of the verified payloads, length of the good prefix to keep;
    -1 if the file has no valid header and nothing in it can be read)."""
    size = len(data)
    if size < HEADER.size or data[:8] != magic:
        if size:
            dropped(f"{name}: no valid header, all {size} bytes dropped")
        return 0, [], -1
    salt: int = HEADER.unpack_from(data, 0)[1]
    view = memoryview(data)
    starts: list[int] = []
    append, unpack, crc32 = starts.append, FRAME.unpack_from, zlib.crc32
    pos = HEADER.size
    keep = size
    while pos < size:
        if pos + 8 <= size:  # the common case inline: one frame after another
            length, crc = unpack(data, pos)
            end = pos + 8 + length
            if 0 < length and end <= size and crc32(view[pos + 8 : end], salt) == crc:
                append(pos + 8)
                pos = end
                continue
        resume = _resync(data, view, pos + 1, salt)
        if resume is None:
            dropped(f"{name}: torn tail, dropped {size - pos} bytes at offset {pos}")
            keep = pos
            break
        dropped(f"{name}: corrupt record, dropped {resume - pos} bytes at offset {pos}")
        pos = resume
    return salt, starts, keep


def _resync(data: bytes, view: memoryview, start: int, salt: int) -> int | None:
    """The next offset where a frame verifies (the salt makes a false match ~2**-32)."""
    size = len(data)
    for pos in range(start, size - 8):
        length, crc = FRAME.unpack_from(data, pos)
        if 0 < length <= size - pos - 8 and zlib.crc32(view[pos + 8 : pos + 8 + length], salt) == crc:
            return pos
    return None
