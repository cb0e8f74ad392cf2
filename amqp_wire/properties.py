"""The basic class content-header property list, byte-exact.

`raw` here is the content header payload after class-id, weight and body-size:
the 16-bit property flags word, then each present property in spec order
(AMQP 0-9-1 section 4.2.6.1). The broker decodes it to route
(`decode_properties`, giving pamqp's Basic.Properties) but forwards the
publisher's bytes; when it must change something (dead-lettering drops
`expiration` and rewrites `headers`) `RawProperties` swaps just those
properties and every other byte stays as the publisher sent it.

RabbitMQ 3.10 reads only one flags word and ignores its two low bits (a set
continuation bit is not followed), does not check shortstr values for UTF-8 and
accepts a non-empty cluster-id; bytes left over after the last property, or a
property running past the end, close the connection (541 INTERNAL_ERROR). Here
those raise `PropertiesError`. Shortstr values that are not UTF-8 decode with
surrogateescape, so `encode_properties` gives their bytes back.
"""

from __future__ import annotations

import datetime
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from leveret.amqp_wire.fieldtable import (
    FieldTableError,
    TypedTable,
    encode_table,
    read_table,
    read_table_plain,
    timestamp_to_datetime,
)
from pamqp.commands import Basic

# Wire order, pamqp's attribute names (`message_type` is the spec's `type`).
PROPERTY_NAMES: Final[tuple[str, ...]] = (
    "content_type",
    "content_encoding",
    "headers",
    "delivery_mode",
    "priority",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "timestamp",
    "message_type",
    "user_id",
    "app_id",
    "cluster_id",
)
_INDEX: Final = {name: index for index, name in enumerate(PROPERTY_NAMES)}
_HEADERS, _TIMESTAMP = _INDEX["headers"], _INDEX["timestamp"]
_OCTETS: Final = frozenset((_INDEX["delivery_mode"], _INDEX["priority"]))
_FLAGS = struct.Struct(">H")
_U64 = struct.Struct(">Q")


class PropertiesError(FieldTableError):
    """A malformed property list (or a headers table inside it)."""


def _bit(index: int) -> int:
    return 1 << (15 - index)


@dataclass(frozen=True, slots=True)
class RawProperties:
    """A property list split into each present property's own encoding.

    `parts[i]` is the wire encoding of property PROPERTY_NAMES[i] (a shortstr
    with its length octet, the headers table with its length, ...) or None.
    """

    parts: tuple[bytes | None, ...]

    @classmethod
    def parse(cls, raw: bytes) -> RawProperties:
        parts: list[bytes | None] = [None] * len(PROPERTY_NAMES)
        for index, start, end in _spans(raw):
            parts[index] = raw[start:end]
        return cls(tuple(parts))

    def to_bytes(self) -> bytes:
        flags = 0
        for index, part in enumerate(self.parts):
            if part is not None:
                flags |= _bit(index)
        return _FLAGS.pack(flags) + b"".join(part for part in self.parts if part is not None)

    def get(self, name: str) -> bytes | None:
        return self.parts[_INDEX[name]]

    def replace(self, **encoded: bytes | None) -> RawProperties:
        """Swap whole properties by name: their new encoding, or None to drop them."""
        parts = list(self.parts)
        for name, value in encoded.items():
            parts[_INDEX[name]] = value
        return RawProperties(tuple(parts))

    def without(self, *names: str) -> RawProperties:
        return self.replace(**dict.fromkeys(names))

    def headers(self) -> TypedTable | None:
        part = self.parts[_HEADERS]
        if part is None:
            return None
        try:
            table, _ = read_table(part, 0)
        except PropertiesError:
            raise
        except FieldTableError as err:
            raise PropertiesError(f"headers: {err}") from err
        return table

    def with_headers(self, table: TypedTable | Mapping[str, Any] | None) -> RawProperties:
        return self.replace(headers=None if table is None else encode_table(table))


def _spans(raw: bytes) -> list[tuple[int, int, int]]:
    """(property index, start, end) of each present property; checks the layout."""
    if len(raw) < 2:
        raise PropertiesError("content header has no property flags")
    (flags,) = _FLAGS.unpack_from(raw, 0)
    pos, size, spans = 2, len(raw), []
    for index in range(len(PROPERTY_NAMES)):
        if not flags & _bit(index):
            continue
        if index == _HEADERS:
            if pos + 4 > size:
                raise PropertiesError("truncated headers length")
            end = pos + 4 + int.from_bytes(raw[pos : pos + 4], "big")
        elif index == _TIMESTAMP:
            end = pos + 8
        elif index in _OCTETS:
            end = pos + 1
        else:
            if pos >= size:
                raise PropertiesError(f"truncated {PROPERTY_NAMES[index]}")
            end = pos + 1 + raw[pos]
        if end > size:
            raise PropertiesError(f"{PROPERTY_NAMES[index]} runs past the content header")
        spans.append((index, pos, end))
        pos = end
    if pos != size:
        raise PropertiesError(f"{size - pos} bytes after the last property")
    return spans


def _shortstr(raw: bytes, start: int, end: int) -> str:
    value = raw[start + 1 : end]
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("utf-8", "surrogateescape")


class _DecodedProperties(Basic.Properties):
    """pamqp's Basic.Properties whose absent properties default at class level,
    so decoding sets only the properties present (the hot path of every publish)."""


for _name in PROPERTY_NAMES:
    setattr(_DecodedProperties, _name, None)
_DecodedProperties.cluster_id = ""  # pamqp's default for an absent cluster_id

# (flag bit, property name, how it is encoded) in wire order
_LAYOUT: Final = tuple(
    (
        _bit(index),
        name,
        "table" if index == _HEADERS else "timestamp" if index == _TIMESTAMP
        else "octet" if index in _OCTETS else "shortstr",
    )
    for index, name in enumerate(PROPERTY_NAMES)
)


class _SharedProperties(_DecodedProperties):
    """Decoded properties shared by every message whose property bytes are the
    same: a busy publisher usually sends one short list (none at all, or just
    delivery-mode 2) for every message, and sharing its decoding saves ~180
    bytes of each queued message. Shared, so it refuses changes."""

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("decoded properties are shared: build new ones to change them")


NO_PROPERTIES: Final = _SharedProperties.__new__(_SharedProperties)

# Short property lists decoded once each; not those with a header table or
# the per-message fields (ids, timestamp), which would fill the table with
# one-off entries and push out the lists that do repeat.
_SHAREABLE_MAX_BYTES = 48
_SHARED_MAX_ENTRIES = 4096
_UNSHAREABLE_FLAGS = (
    _bit(_HEADERS) | _bit(_TIMESTAMP) | _bit(_INDEX["message_id"]) | _bit(_INDEX["correlation_id"])
)
_shared: dict[bytes, Basic.Properties] = {b"\x00\x00": NO_PROPERTIES}


def decode_properties(raw: bytes) -> Basic.Properties:
    """pamqp's Basic.Properties for a property list, without pamqp's validation
    (RabbitMQ checks delivery-mode itself, per publish, with its own error).
    Treat the result as read-only: an empty list decodes to a shared value."""
    shared = _shared.get(raw)
    if shared is not None:
        return shared
    if 2 <= len(raw) <= _SHAREABLE_MAX_BYTES and not ((raw[0] << 8) | raw[1]) & _UNSHAREABLE_FLAGS:
        decoded = _decode(raw)
        if len(_shared) < _SHARED_MAX_ENTRIES:
            frozen = _SharedProperties.__new__(_SharedProperties)
            frozen.__dict__.update(decoded.__dict__)
            _shared[bytes(raw)] = frozen
            return frozen
        return decoded
    return _decode(raw)


def _decode(raw: bytes) -> Basic.Properties:
    props = _DecodedProperties.__new__(_DecodedProperties)
    size = len(raw)
    if size < 2:
        raise PropertiesError("content header has no property flags")
    flags = (raw[0] << 8) | raw[1]
    pos = 2
    if flags:
        values = props.__dict__
        for bit, name, kind in _LAYOUT:
            if not flags & bit:
                continue
            if kind == "shortstr":
                if pos >= size:
                    raise PropertiesError(f"truncated {name}")
                end = pos + 1 + raw[pos]
                if end > size:
                    raise PropertiesError(f"{name} runs past the content header")
                values[name] = _shortstr(raw, pos, end)
            elif kind == "octet":
                if pos >= size:
                    raise PropertiesError(f"truncated {name}")
                end = pos + 1
                values[name] = raw[pos]
            elif kind == "table":
                if pos + 4 > size:
                    raise PropertiesError("truncated headers length")
                end = pos + 4 + int.from_bytes(raw[pos : pos + 4], "big")
                if end > size:
                    raise PropertiesError("headers runs past the content header")
                try:
                    values[name], _ = read_table_plain(raw, pos)
                except FieldTableError as err:
                    raise PropertiesError(f"headers: {err}") from err
            else:
                end = pos + 8
                if end > size:
                    raise PropertiesError(f"{name} runs past the content header")
                values[name] = timestamp_to_datetime(_U64.unpack_from(raw, pos)[0])
            pos = end
    if pos != size:
        raise PropertiesError(f"{size - pos} bytes after the last property")
    return props


def encode_properties(props: Basic.Properties) -> bytes:
    """A property list for decoded properties (when no publisher bytes exist).

    None means absent; so does pamqp's default empty cluster_id. A plain
    headers dict is typed as RabbitMQ types the headers it writes (ints `l`).
    """
    parts: dict[str, bytes | None] = {}
    for name in PROPERTY_NAMES:
        value = getattr(props, name, None)
        if value is None or (name == "cluster_id" and value == ""):
            continue
        parts[name] = encode_property(name, value)
    return RawProperties((None,) * len(PROPERTY_NAMES)).replace(**parts).to_bytes()


def encode_property(name: str, value: Any) -> bytes:
    """The wire encoding of one property value."""
    index = _INDEX[name]
    try:
        if index == _HEADERS:
            return encode_table(value)
        if index in _OCTETS:
            return bytes((value,))
        if index == _TIMESTAMP:
            if isinstance(value, datetime.datetime):
                if value.tzinfo is None:
                    value = value.replace(tzinfo=datetime.UTC)
                value = int(value.timestamp())
            return _U64.pack(value)
        encoded = (
            value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)
        )
    except (TypeError, ValueError, struct.error, OverflowError) as err:
        if isinstance(err, PropertiesError):
            raise
        raise PropertiesError(f"cannot encode {name}={value!r}: {err}") from err
    if len(encoded) > 255:
        raise PropertiesError(f"{name} is {len(encoded)} bytes, longer than a shortstr")
    return bytes((len(encoded),)) + encoded


def replace_headers(
    raw: bytes, edit: Callable[[TypedTable | None], TypedTable | Mapping[str, Any] | None]
) -> bytes:
    """Rewrite only the headers: `edit` gets the typed table (None if absent) and
    returns the new one (None drops the property). Entries it keeps unchanged
    and every other property keep their bytes."""
    parts = RawProperties.parse(raw)
    return parts.with_headers(edit(parts.headers())).to_bytes()
