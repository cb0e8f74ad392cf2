"""Field tables: byte-exact round trips, the plain view, RabbitMQ's typing, malformed input."""

from __future__ import annotations

import datetime
import pickle
import struct
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from leveret.amqp_wire.fieldtable import (
    Field,
    FieldTableError,
    TypedTable,
    WireFloat,
    WireInt,
    decode_table,
    decode_table_plain,
    encode_field,
    encode_table,
    field_from_plain,
    table_from_plain,
    timestamp_to_datetime,
    to_plain,
)
from pamqp import decode as pamqp_decode
from pamqp import encode as pamqp_encode


def name(text: bytes) -> bytes:
    return bytes((len(text),)) + text


def long(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def table(*entries: bytes) -> bytes:
    return long(b"".join(entries))


# (wire bytes of tag + value, the typed Field, the plain value: pamqp's, except that
# decimal digits are unsigned as RabbitMQ reads them; None = ask pamqp)
GOLDEN_VALUES = [
    (b"t\x00", Field("t", False), False),
    (b"t\x01", Field("t", True), True),
    (b"t\x02", Field("t", 2), True),  # non-canonical octet kept, still true
    (b"b\xff", Field("b", -1), -1),
    (b"B\xff", Field("B", 255), 255),
    (b"s\x80\x00", Field("s", -32768), -32768),
    (b"u\xff\xff", Field("u", 65535), 65535),
    (b"I\xff\xff\xff\xfe", Field("I", -2), -2),
    (b"i\xff\xff\xff\xfe", Field("i", 4294967294), 4294967294),
    (b"l" + struct.pack(">q", -(2**63)), Field("l", -(2**63)), -(2**63)),
    (b"L" + struct.pack(">q", 7), Field("L", 7), 7),
    (
        b"f" + struct.pack(">f", 0.1),
        Field("f", struct.unpack(">f", struct.pack(">f", 0.1))[0]),
        None,
    ),
    (b"f" + struct.pack(">f", -0.0), Field("f", -0.0), -0.0),
    (b"d" + struct.pack(">d", 2.5e-300), Field("d", 2.5e-300), 2.5e-300),
    (b"D\x02\x00\x00\x00\x78", Field("D", Decimal("1.20")), Decimal("1.20")),
    (b"D\x00\xff\xff\xff\xff", Field("D", Decimal(4294967295)), Decimal(4294967295)),
    (b"D\x05\x00\x00\x00\x00", Field("D", Decimal("0.00000")), Decimal(0)),
    (b"S" + long(b"caf\xc3\xa9"), Field("S", b"caf\xc3\xa9"), "café"),
    (b"S" + long(b"\xff\xfe"), Field("S", b"\xff\xfe"), b"\xff\xfe"),
    (b"S" + long(b""), Field("S", b""), ""),
    (b"x" + long(b"\x00\x01"), Field("x", b"\x00\x01"), bytearray(b"\x00\x01")),
    (
        b"T" + struct.pack(">Q", 1_700_000_000),
        Field("T", 1_700_000_000),
        datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=datetime.UTC),
    ),
    (b"V", Field("V", None), None),
    (
        b"A" + long(b"S" + long(b"a") + b"b\x01" + b"V" + b"A" + long(b"")),
        Field("A", (Field("S", b"a"), Field("b", 1), Field("V", None), Field("A", ()))),
        ["a", 1, None, []],
    ),
    (
        b"F" + table(name(b"k") + b"l" + struct.pack(">q", 5), name(b"e") + b"F" + table()),
        Field("F", TypedTable((("k", Field("l", 5)), ("e", Field("F", TypedTable()))))),
        {"k": 5, "e": {}},
    ),
]


@pytest.mark.parametrize(("wire", "field", "plain"), GOLDEN_VALUES)
def test_every_tag_round_trips_byte_exactly(wire: bytes, field: Field, plain: object) -> None:
    data = table(name(b"key") + wire)
    decoded = decode_table(data)
    assert decoded == TypedTable((("key", field),))
    assert encode_table(decoded) == data
    assert encode_field(field) == wire


@pytest.mark.parametrize(("wire", "field", "plain"), GOLDEN_VALUES)
def test_every_tag_round_trips_inside_an_array(wire: bytes, field: Field, plain: object) -> None:
    data = table(name(b"arr") + b"A" + long(wire + wire))
    decoded = decode_table(data)
    assert decoded == TypedTable((("arr", Field("A", (field, field))),))
    assert encode_table(decoded) == data


@pytest.mark.parametrize(("wire", "field", "plain"), GOLDEN_VALUES)
def test_plain_values_are_what_pamqp_gives(wire: bytes, field: Field, plain: object) -> None:
    data = table(name(b"key") + wire)
    expected = pamqp_decode.field_table(data)[1]["key"] if plain is None else plain
    assert decode_table_plain(data) == {"key": expected}
    assert to_plain(decode_table(data)) == {"key": expected}
    value = decode_table_plain(data)["key"]
    if isinstance(value, (WireInt, WireFloat)):
        # pamqp's number, remembering the tag it came as
        assert isinstance(value, type(expected)) and not isinstance(expected, bool)
        assert value.tag == wire[:1].decode()
        assert type(to_plain(decode_table(data))["key"]) is type(value)
    else:
        assert type(value) is type(expected)


def test_whole_table_plain_view_matches_pamqp() -> None:
    data = table(*(name(b"k%d" % i) + wire for i, (wire, _, _) in enumerate(GOLDEN_VALUES)))
    ours, theirs = decode_table_plain(data), pamqp_decode.field_table(data)[1]
    assert to_plain(decode_table(data)) == ours
    # The one difference: decimal digits are unsigned for RabbitMQ, signed for pamqp.
    assert {k: v for k, v in ours.items() if v != theirs[k]} == {"k15": Decimal(4294967295)}
    assert theirs["k15"] == Decimal(-1)


def test_names_repeat_keep_order_and_non_utf8_bytes() -> None:
    data = table(
        name(b"b") + b"b\x01",
        name(b"a") + b"b\x02",
        name(b"b") + b"b\x03",
        name(b"\xff") + b"V",
        name(b"") + b"V",
    )
    decoded = decode_table(data)
    assert [key for key, _ in decoded] == ["b", "a", "b", "\udcff", ""]
    assert encode_table(decoded) == data
    # First entry wins in the plain view, as RabbitMQ's table_lookup (pamqp keeps the last).
    assert decode_table_plain(data) == {"b": 1, "a": 2, "\udcff": None, "": None}
    assert decoded.get("b") == Field("b", 1)


def test_pamqp_does_not_round_trip_what_we_do() -> None:
    data = table(
        name(b"n") + b"l" + struct.pack(">q", 1), name(b"d") + b"d" + struct.pack(">d", 0.1)
    )
    assert pamqp_encode.field_table(pamqp_decode.field_table(data)[1]) != data
    assert encode_table(decode_table(data)) == data


def test_table_editing_helpers_follow_erlang_lists() -> None:
    t = TypedTable((("b", Field("b", 1)), ("a", Field("b", 2)), ("b", Field("b", 3))))
    assert t.keystore("b", Field("V", None)).entries == (
        ("b", Field("V", None)),
        ("a", Field("b", 2)),
        ("b", Field("b", 3)),
    )
    assert t.keystore("c", Field("V", None)).entries[-1] == ("c", Field("V", None))
    assert t.keydelete("b").entries == (("a", Field("b", 2)), ("b", Field("b", 3)))
    assert t.keydelete("zz") is t
    assert [v.value for _, v in t.sorted()] == [2, 1, 3]  # stable
    # Names sort by their bytes, as Erlang binaries do: "Z" < "a", "\xff" last.
    odd = TypedTable(
        (("\udcff", Field("V", None)), ("a", Field("V", None)), ("Z", Field("V", None)))
    )
    assert [key for key, _ in odd.sorted()] == ["Z", "a", "\udcff"]


# ------------------------------------------------------------ plain encoder


def test_plain_values_get_the_types_rabbitmq_writes() -> None:
    when = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    assert field_from_plain(5) == Field("l", 5)
    assert field_from_plain(True) == Field("t", True)
    assert field_from_plain("é") == Field("S", b"\xc3\xa9")
    assert field_from_plain(b"\x00") == Field("x", b"\x00")
    assert field_from_plain(bytearray(b"\x00")) == Field("x", b"\x00")
    assert field_from_plain(1.5) == Field("d", 1.5)
    assert field_from_plain(Decimal("1.5")) == Field("D", Decimal("1.5"))
    assert field_from_plain(when) == Field("T", int(when.timestamp()))
    assert field_from_plain(None) == Field("V", None)
    assert field_from_plain([1, "a"]) == Field("A", (Field("l", 1), Field("S", b"a")))
    assert field_from_plain({"k": {}}) == Field("F", TypedTable((("k", Field("F", TypedTable())),)))
    assert field_from_plain(Field("b", 1)) == Field("b", 1)
    assert encode_table({"n": 1}) == table(name(b"n") + b"l" + struct.pack(">q", 1))
    assert encode_table({}) == b"\x00\x00\x00\x00"


def test_plain_round_trip_of_a_rabbitmq_typed_table() -> None:
    plain = {
        "s": "text",
        "n": -3,
        "b": False,
        "f": 0.5,
        "dec": Decimal("12.345"),
        "ts": datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC),
        "list": [1, ["x"], {"in": None}],
        "raw": bytearray(b"\x01\x02"),
    }
    assert decode_table_plain(encode_table(plain)) == plain
    assert to_plain(table_from_plain(plain)) == plain


@pytest.mark.parametrize(
    "field",
    [
        Field("b", 128),
        Field("B", -1),
        Field("u", 65536),
        Field("l", 2**63),
        Field("T", -1),
        Field("d", float("nan")),
        Field("f", float("inf")),
        Field("f", 1e300),
        Field("D", Decimal("-1")),
        Field("D", Decimal("NaN")),
        Field("D", Decimal(2**32)),
        Field("D", Decimal("1E-256")),
        Field("t", 256),
        Field("S", "not bytes"),
        Field("Z", 1),
        Field("l", "1"),
    ],
)
def test_unencodable_fields_raise(field: Field) -> None:
    with pytest.raises(FieldTableError):
        encode_field(field)


def test_unencodable_plain_values_raise() -> None:
    with pytest.raises(FieldTableError) as info:
        encode_table({"k": object()})
    assert isinstance(info.value, ValueError)
    with pytest.raises(FieldTableError):
        encode_table({"x" * 256: 1})


def test_decimal_with_positive_exponent_is_scaled_to_zero() -> None:
    assert encode_field(Decimal("1E+2")) == b"D\x00\x00\x00\x00\x64"


# ------------------------------------------------------------ malformed


MALFORMED = {
    "unknown tag": table(name(b"a") + b"Z"),
    "NUL tag (pamqp accepts it, RabbitMQ does not)": table(name(b"a") + b"\x00"),
    "nan double": table(name(b"a") + b"d" + struct.pack(">Q", 0x7FF8000000000000)),
    "inf double": table(name(b"a") + b"d" + struct.pack(">Q", 0x7FF0000000000000)),
    "nan float": table(name(b"a") + b"f" + struct.pack(">I", 0x7FC00000)),
    "nan in array": table(name(b"a") + b"A" + long(b"f" + struct.pack(">I", 0x7F800001))),
    "truncated long": table(name(b"a") + b"l\x00\x00"),
    "truncated bool": table(name(b"a") + b"t"),
    "truncated decimal": table(name(b"a") + b"D\x01\x00"),
    "string past its table": table(name(b"a") + b"S\x00\x00\x00\x09abc"),
    "string length truncated": table(name(b"a") + b"S\x00\x00"),
    "name past the table": table(b"\x05ab"),
    "name without value": table(name(b"a")),
    "nested table past parent": table(name(b"a") + b"F\x00\x00\x00\x10" + name(b"b") + b"V"),
    "array past parent": table(name(b"a") + b"A\x00\x00\x00\x10V"),
    "table length past data": b"\x00\x00\x00\x09" + name(b"a") + b"V",
    "table length truncated": b"\x00\x00",
    "bytes after the table": table(name(b"a") + b"V") + b"\x00",
    "value past nested array": table(name(b"a") + b"A" + long(b"l\x00\x00")),
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_tables_raise_a_value_error(data: bytes) -> None:
    with pytest.raises(FieldTableError) as typed:
        decode_table(data)
    with pytest.raises(FieldTableError) as plain:
        decode_table_plain(data)
    assert isinstance(typed.value, ValueError)
    assert isinstance(plain.value, ValueError)


# ------------------------------------------------------------ timestamps


def test_timestamps_read_like_pamqp_and_never_fail() -> None:
    assert timestamp_to_datetime(0) == datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    # pamqp's heuristic: past 2106 it must be milliseconds.
    assert timestamp_to_datetime(1_700_000_000_000) == datetime.datetime(
        2023, 11, 14, 22, 13, 20, tzinfo=datetime.UTC
    )
    assert timestamp_to_datetime(2**64 - 1) == 2**64 - 1  # no datetime holds it: stays an int


# ------------------------------------------------------------ properties of the codec


def _fields(children: st.SearchStrategy[Field]) -> st.SearchStrategy[Field]:
    names = st.one_of(
        st.text(max_size=8),
        st.binary(max_size=8).map(lambda raw: raw.decode("utf-8", "surrogateescape")),
    )
    return st.one_of(
        st.lists(children, max_size=4).map(lambda items: Field("A", tuple(items))),
        st.lists(st.tuples(names, children), max_size=4).map(
            lambda entries: Field("F", TypedTable(tuple(entries)))
        ),
    )


def _int(tag: str, low: int, high: int) -> st.SearchStrategy[Field]:
    return st.integers(low, high).map(lambda value: Field(tag, value))


SCALARS = st.one_of(
    st.booleans().map(lambda value: Field("t", value)),
    _int("t", 2, 255),
    _int("b", -(2**7), 2**7 - 1),
    _int("B", 0, 2**8 - 1),
    _int("s", -(2**15), 2**15 - 1),
    _int("u", 0, 2**16 - 1),
    _int("I", -(2**31), 2**31 - 1),
    _int("i", 0, 2**32 - 1),
    _int("l", -(2**63), 2**63 - 1),
    _int("L", -(2**63), 2**63 - 1),
    _int("T", 0, 2**64 - 1),
    st.floats(width=32, allow_nan=False, allow_infinity=False).map(lambda v: Field("f", v)),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda v: Field("d", v)),
    st.tuples(st.integers(0, 255), st.integers(0, 2**32 - 1)).map(
        lambda sd: Field("D", Decimal(f"{sd[1]}E-{sd[0]}"))
    ),
    st.binary(max_size=12).map(lambda v: Field("S", v)),
    st.binary(max_size=12).map(lambda v: Field("x", v)),
    st.just(Field("V", None)),
)
FIELDS = st.recursive(SCALARS, _fields, max_leaves=20)
TABLES = _fields(FIELDS).filter(lambda f: f.tag == "F").map(lambda f: f.value)


@given(TABLES)
def test_random_typed_tables_round_trip(value: TypedTable) -> None:
    data = encode_table(value)
    decoded = decode_table(data)
    assert decoded == value
    assert encode_table(decoded) == data
    assert decode_table_plain(data) == to_plain(decoded)


@given(st.binary(max_size=64))
def test_any_bytes_either_fail_cleanly_or_round_trip(payload: bytes) -> None:
    data = long(payload)
    try:
        decoded = decode_table(data)
    except FieldTableError:
        with pytest.raises(FieldTableError):
            decode_table_plain(data)
        return
    assert encode_table(decoded) == data
    assert decode_table_plain(data) == to_plain(decoded)


@pytest.mark.parametrize("tag", list("bBsuIilLfd"))
def test_plain_numbers_re_encode_with_the_tag_they_came_with(tag: str) -> None:
    data = table(name(b"n") + tag.encode() + bytes(4 if tag in "Iif" else 8 if tag in "lLd" else 2 if tag in "su" else 1))
    decoded = decode_table_plain(data)
    assert decoded["n"] == 0
    assert encode_table(decoded) == data, "a plain number lost its wire type"
    assert pickle.loads(pickle.dumps(decoded)) == decoded
    assert type(pickle.loads(pickle.dumps(decoded))["n"]) is type(decoded["n"])
