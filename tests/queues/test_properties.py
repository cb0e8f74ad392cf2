"""Content-header property lists: decode for routing, keep the publisher's bytes."""

from __future__ import annotations

import datetime
import struct
import timeit

import pytest
from leveret.amqp_wire.fieldtable import Field, FieldTableError, TypedTable, decode_table
from leveret.amqp_wire.properties import (
    PROPERTY_NAMES,
    PropertiesError,
    RawProperties,
    decode_properties,
    encode_properties,
    replace_headers,
)
from pamqp.commands import Basic


def shortstr(text: bytes) -> bytes:
    return bytes((len(text),)) + text


def longlen(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


HEADER_ENTRIES = [
    shortstr(b"long-L") + b"L" + struct.pack(">q", 3),
    shortstr(b"bool2") + b"t\x02",
    shortstr(b"dbl") + b"d" + struct.pack(">d", 0.1),
    shortstr(b"small") + b"b\x05",
    shortstr(b"latin1") + b"S" + longlen(b"caf\xe9"),
    shortstr(b"dup") + b"V",
    shortstr(b"dup") + b"s\x00\x01",
]
HEADERS = longlen(b"".join(HEADER_ENTRIES))

ALL_FOURTEEN = (
    struct.pack(">H", 0xFFFC)
    + shortstr(b"application/json")
    + shortstr(b"gzip")
    + HEADERS
    + b"\x02"  # delivery mode
    + b"\x07"  # priority
    + shortstr(b"corr")
    + shortstr(b"amq.rabbitmq.reply-to")
    + shortstr(b"60000")
    + shortstr(b"msg-1")
    + struct.pack(">Q", 1_700_000_000)
    + shortstr(b"kind")
    + shortstr(b"guest")
    + shortstr(b"app")
    + shortstr(b"cluster")
)


def test_all_fourteen_properties_decode_in_spec_order() -> None:
    props = decode_properties(ALL_FOURTEEN)
    assert props.content_type == "application/json"
    assert props.content_encoding == "gzip"
    assert props.headers == {
        "long-L": 3,
        "bool2": True,
        "dbl": 0.1,
        "small": 5,
        "latin1": b"caf\xe9",
        "dup": None,
    }
    assert (props.delivery_mode, props.priority) == (2, 7)
    assert props.correlation_id == "corr"
    assert props.reply_to == "amq.rabbitmq.reply-to"
    assert props.expiration == "60000"
    assert props.message_id == "msg-1"
    assert props.timestamp == datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=datetime.UTC)
    assert (props.message_type, props.user_id, props.app_id) == ("kind", "guest", "app")
    assert props.cluster_id == "cluster"  # RabbitMQ accepts it; pamqp's validation would not


def test_split_and_join_is_byte_exact() -> None:
    parts = RawProperties.parse(ALL_FOURTEEN)
    assert parts.to_bytes() == ALL_FOURTEEN
    assert parts.get("headers") == HEADERS
    assert parts.get("expiration") == shortstr(b"60000")
    assert all(part is not None for part in parts.parts)


def test_decode_agrees_with_pamqp_on_what_pamqp_reads() -> None:
    props = Basic.Properties(
        content_type="text/plain",
        headers={"a": "b", "n": 300, "nested": {"x": [1, "y"]}},
        delivery_mode=1,
        correlation_id="c",
        expiration="10",
        timestamp=datetime.datetime(2024, 2, 3, 4, 5, 6, tzinfo=datetime.UTC),
        app_id="app",
    )
    raw = props.marshal()
    assert decode_properties(raw) == props
    assert RawProperties.parse(raw).to_bytes() == raw


def test_encode_properties_round_trips_decoded_properties() -> None:
    props = decode_properties(ALL_FOURTEEN)
    again = decode_properties(encode_properties(props))
    assert again == props
    # Absent stays absent: None, and pamqp's default empty cluster_id.
    assert encode_properties(Basic.Properties()) == b"\x00\x00"
    assert encode_properties(Basic.Properties(content_type="")) == b"\x80\x00\x00"


def test_encode_properties_types_header_ints_as_rabbitmq_does() -> None:
    raw = encode_properties(Basic.Properties(headers={"n": 1}))
    table = RawProperties.parse(raw).headers()
    assert table == TypedTable((("n", Field("l", 1)),))


def test_unusual_but_accepted_property_lists() -> None:
    # RabbitMQ 3.10 ignores the two low flag bits (no continuation word is read),
    # does not check shortstrs for UTF-8, and leaves delivery-mode to the channel.
    low_bits = struct.pack(">H", 0x8003) + shortstr(b"text/plain")
    assert decode_properties(low_bits).content_type == "text/plain"
    latin = struct.pack(">H", 0x8000) + shortstr(b"\xe9")
    assert decode_properties(latin).content_type == "\udce9"
    assert encode_properties(decode_properties(latin)) == latin
    mode3 = struct.pack(">H", 0x1000) + b"\x03"
    assert decode_properties(mode3).delivery_mode == 3
    far = struct.pack(">H", 0x0040) + struct.pack(">Q", 2**64 - 1)
    assert decode_properties(far).timestamp == 2**64 - 1  # no datetime holds it
    assert encode_properties(decode_properties(far)) == far


MALFORMED = {
    "empty": b"",
    "one byte": b"\x80",
    "truncated shortstr": struct.pack(">H", 0x8000) + b"\x05ab",
    "missing shortstr": struct.pack(">H", 0x8000),
    "truncated octet": struct.pack(">H", 0x1000),
    "truncated timestamp": struct.pack(">H", 0x0040) + b"\x00" * 7,
    "headers length past the end": struct.pack(">H", 0x2000) + b"\x00\x00\x00\x04\x01aV",
    "headers length truncated": struct.pack(">H", 0x2000) + b"\x00\x00",
    "bytes after the last property": struct.pack(">H", 0x8000) + shortstr(b"a") + b"junk",
    "continuation word is not read": struct.pack(">H", 0x8001) + b"\x00\x00" + shortstr(b"a"),
    "bad header value": struct.pack(">H", 0x2000) + longlen(b"\x01aZ"),
    "nan header": struct.pack(">H", 0x2000) + longlen(b"\x01ad" + b"\x7f\xf8" + b"\x00" * 6),
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_property_lists_raise(raw: bytes) -> None:
    with pytest.raises(PropertiesError) as decoded:
        decode_properties(raw)
    with pytest.raises(PropertiesError):
        RawProperties.parse(raw).headers()
    assert isinstance(decoded.value, FieldTableError)
    assert isinstance(decoded.value, ValueError)


def test_unencodable_property_raises() -> None:
    with pytest.raises(PropertiesError):
        encode_properties(Basic.Properties(message_id="x" * 256))
    with pytest.raises(PropertiesError):
        encode_properties(Basic.Properties(priority=256))


# ------------------------------------------------------------ header rewrites


def test_replace_headers_keeps_untouched_entries_and_properties() -> None:
    def edit(table: TypedTable | None) -> TypedTable:
        assert table is not None
        return table.keydelete("small").keystore("added", Field("S", b"new"))

    new = replace_headers(ALL_FOURTEEN, edit)
    before, after = RawProperties.parse(ALL_FOURTEEN), RawProperties.parse(new)
    for name in PROPERTY_NAMES:
        if name != "headers":
            assert after.get(name) == before.get(name), name
    kept = [entry for entry in HEADER_ENTRIES if not entry.startswith(shortstr(b"small"))]
    added = shortstr(b"added") + b"S" + longlen(b"new")
    assert after.get("headers") == longlen(b"".join(kept) + added)
    assert decode_table(longlen(b"".join(kept) + added)).get("long-L") == Field("L", 3)


def test_replace_headers_identity_is_byte_exact() -> None:
    assert replace_headers(ALL_FOURTEEN, lambda table: table) == ALL_FOURTEEN


def test_replace_headers_adds_and_drops_the_property() -> None:
    bare = struct.pack(">H", 0x8000) + shortstr(b"text/plain")
    added = replace_headers(bare, lambda table: TypedTable((("k", Field("V", None)),)))
    assert added == struct.pack(">H", 0xA000) + shortstr(b"text/plain") + longlen(b"\x01kV")
    assert replace_headers(added, lambda table: None) == bare
    assert decode_properties(replace_headers(bare, lambda table: {"n": 2})).headers == {"n": 2}


def test_without_drops_only_the_named_properties() -> None:
    parts = RawProperties.parse(ALL_FOURTEEN).without("expiration", "cluster_id")
    raw = parts.to_bytes()
    props = decode_properties(raw)
    assert props.expiration is None
    assert props.cluster_id == ""
    assert props.message_id == "msg-1"
    assert struct.unpack(">H", raw[:2])[0] == 0xFFFC & ~0x0100 & ~0x0004


# ------------------------------------------------------------ speed


def test_decode_is_not_much_slower_than_pamqp() -> None:
    props = Basic.Properties(
        content_type="application/json",
        headers={"x-match": "all", "format": "pdf", "n": 12, "tags": ["a", "b"]},
        delivery_mode=2,
        correlation_id="abc",
        reply_to="amq.rabbitmq.reply-to",
        expiration="60000",
        message_id="id-1",
        timestamp=datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
    )
    raw = props.marshal()
    flags = int.from_bytes(raw[:2], "big")

    def with_pamqp() -> Basic.Properties:
        decoded = Basic.Properties()
        decoded.unmarshal(flags, raw[2:])
        return decoded

    assert decode_properties(raw) == with_pamqp()
    ours = min(timeit.repeat(lambda: decode_properties(raw), number=2000, repeat=5))
    theirs = min(timeit.repeat(with_pamqp, number=2000, repeat=5))
    assert ours < 2 * theirs, (ours, theirs)


def test_repeated_short_property_lists_share_one_read_only_decoding() -> None:
    persistent = encode_properties(Basic.Properties(delivery_mode=2, content_type="application/json"))
    first, second = decode_properties(persistent), decode_properties(persistent)
    assert first is second
    assert (first.delivery_mode, first.content_type, first.headers) == (2, "application/json", None)
    with pytest.raises(AttributeError):
        first.priority = 1  # type: ignore[misc]
    assert first.priority is None
    # header tables and per-message ids are decoded afresh every time
    for props in (Basic.Properties(headers={"a": 1}), Basic.Properties(message_id="m-1")):
        raw = encode_properties(props)
        assert decode_properties(raw) is not decode_properties(raw)
