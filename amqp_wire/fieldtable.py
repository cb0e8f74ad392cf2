"""AMQP 0-9-1 field tables and arrays that survive a decode/encode byte for byte.

Two views of the same bytes:

* typed: `TypedTable` (entries of name and `Field`) and `Field` (tag plus value)
  keep every value's wire type, so `encode_table(decode_table(b)) == b` for every
  table RabbitMQ accepts. The broker edits these when it must change headers
  (dead-lettering) and every entry it does not touch keeps its bytes.
* plain: dicts, lists and Python scalars as pamqp gives them (str for UTF-8
  longstr, else bytes; bytearray for `x`; int; bool; float; Decimal; datetime in
  UTC; None), read to route. `read_table_plain` decodes straight to this view.

Accepted type tags are RabbitMQ 3.10's (rabbit_binary_parser): t b B s u I i l L
f d D S x A T F V. Anything else, a length running past its container, or a
NaN/infinite float (Erlang cannot hold one) is malformed: RabbitMQ closes the
connection (541 INTERNAL_ERROR) for all of these; here they raise
`FieldTableError`.

Values by tag in the typed view:
  t: bool (a non-canonical octet 2..255 stays an int so it re-encodes unchanged)
  b B s u I i l L T: int (T is seconds since the epoch, unsigned)
  f d: float (finite)       D: Decimal, exponent = -scale, unsigned 32-bit digits
  S x: bytes                A: tuple[Field, ...]      F: TypedTable      V: None
In the plain view integers and floats are `WireInt`/`WireFloat` subclasses
that remember their tag: equal to (and hashed as) the number, they let error
texts name the type the client sent and let comparisons that include the type
(binding identity, values inside arrays and tables) see it, as RabbitMQ does.
Field names are str; bytes that are not UTF-8 are kept as lone surrogates
(surrogateescape) so they re-encode unchanged. Plain dicts keep the FIRST entry
for a repeated name, as RabbitMQ's lookups (lists:keysearch) do.
"""

from __future__ import annotations

import datetime
import decimal
import math
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final


class FieldTableError(ValueError):
    """Malformed field table or array, or a value that cannot be encoded."""


# Fixed-width tags: struct format and size. `l` and `L` are both signed 64-bit,
# as in RabbitMQ (see the AMQP 0-9-1 errata).
_FIXED: Final[dict[int, struct.Struct]] = {
    ord("b"): struct.Struct(">b"),
    ord("B"): struct.Struct(">B"),
    ord("s"): struct.Struct(">h"),
    ord("u"): struct.Struct(">H"),
    ord("I"): struct.Struct(">i"),
    ord("i"): struct.Struct(">I"),
    ord("l"): struct.Struct(">q"),
    ord("L"): struct.Struct(">q"),
    ord("f"): struct.Struct(">f"),
    ord("d"): struct.Struct(">d"),
    ord("T"): struct.Struct(">Q"),
}
_INT_TAGS: Final = frozenset("bBsuIilLT")
_FLOAT_TAGS: Final = frozenset("fd")
TAGS: Final = frozenset("tbBsuIilLfdDSxATFV")

_U32 = struct.Struct(">I")
_DECIMAL = struct.Struct(">BI")
_BOOL, _D, _S, _X, _A, _F, _V, _TIMESTAMP = (ord(c) for c in "tDSxAFVT")
_FLOAT_CODES: Final = frozenset((ord("f"), ord("d")))


class WireInt(int):
    """An integer read from a field table, with its wire tag and RabbitMQ's type name."""

    __slots__ = ()
    tag: ClassVar[str] = "l"
    type_name: ClassVar[str] = "long"


class WireFloat(float):
    """A float read from a field table, with its wire tag and RabbitMQ's type name."""

    __slots__ = ()
    tag: ClassVar[str] = "d"
    type_name: ClassVar[str] = "double"


# One class per tag, named as RabbitMQ names the type (rabbit_binary_parser).
class Byte(WireInt):
    __slots__ = ()
    tag, type_name = "b", "byte"


class UnsignedByte(WireInt):
    __slots__ = ()
    tag, type_name = "B", "unsignedbyte"


class Short(WireInt):
    __slots__ = ()
    tag, type_name = "s", "short"


class UnsignedShort(WireInt):
    __slots__ = ()
    tag, type_name = "u", "unsignedshort"


class SignedInt(WireInt):
    __slots__ = ()
    tag, type_name = "I", "signedint"


class UnsignedInt(WireInt):
    __slots__ = ()
    tag, type_name = "i", "unsignedint"


class Long(WireInt):
    __slots__ = ()


class LongL(WireInt):
    """'L': RabbitMQ reads it as a signed long, like 'l'."""

    __slots__ = ()
    tag = "L"


class Timestamp(WireInt):
    """A timestamp no datetime can hold (the plain view's datetime otherwise)."""

    __slots__ = ()
    tag, type_name = "T", "timestamp"


class Float(WireFloat):
    __slots__ = ()
    tag, type_name = "f", "float"


class Double(WireFloat):
    __slots__ = ()


WIRE_NUMBERS: Final[dict[int, type[WireInt] | type[WireFloat]]] = {
    ord(cls.tag): cls
    for cls in (Byte, UnsignedByte, Short, UnsignedShort, SignedInt, UnsignedInt, Long, LongL,
                Timestamp, Float, Double)
}


@dataclass(frozen=True, slots=True)
class Field:
    """One field value with its wire type tag."""

    tag: str
    value: Any

    def __repr__(self) -> str:
        return f"Field({self.tag!r}, {self.value!r})"


@dataclass(frozen=True, slots=True)
class TypedTable:
    """A field table as an ordered list of (name, Field); names may repeat.

    The editing helpers are named after the Erlang list functions RabbitMQ uses
    on tables, so code that copies its behaviour can say so.
    """

    entries: tuple[tuple[str, Field], ...] = ()

    def __iter__(self) -> Iterator[tuple[str, Field]]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, name: str) -> Field | None:
        """The first entry called `name` (rabbit_misc:table_lookup)."""
        for key, value in self.entries:
            if key == name:
                return value
        return None

    def keystore(self, name: str, value: Field) -> TypedTable:
        """Replace the first entry called `name` in place, or append (lists:keystore)."""
        entries = list(self.entries)
        for index, (key, _) in enumerate(entries):
            if key == name:
                entries[index] = (name, value)
                return TypedTable(tuple(entries))
        entries.append((name, value))
        return TypedTable(tuple(entries))

    def keydelete(self, name: str) -> TypedTable:
        """Without the first entry called `name` (lists:keydelete)."""
        for index, (key, _) in enumerate(self.entries):
            if key == name:
                return TypedTable(self.entries[:index] + self.entries[index + 1 :])
        return self

    def sorted(self) -> TypedTable:
        """Stable sort by name bytes (lists:keysort/2, as rabbit_misc:sort_field_table)."""
        return TypedTable(tuple(sorted(self.entries, key=lambda entry: _name_bytes(entry[0]))))


# ----------------------------------------------------------------- decoding


def decode_table(data: bytes) -> TypedTable:
    """Decode a whole length-prefixed field table (as it appears on the wire)."""
    table, end = read_table(data, 0)
    if end != len(data):
        raise FieldTableError(f"{len(data) - end} bytes after the field table")
    return table


def decode_table_plain(data: bytes) -> dict[str, Any]:
    """Decode a whole length-prefixed field table to plain Python values."""
    table, end = read_table_plain(data, 0)
    if end != len(data):
        raise FieldTableError(f"{len(data) - end} bytes after the field table")
    return table


def read_table(data: bytes, offset: int) -> tuple[TypedTable, int]:
    """Read a length-prefixed table at `offset`; returns it and the offset after it."""
    start, end = _container(data, offset, "table")
    return TypedTable(tuple(_table_entries(data, start, end))), end


def read_table_plain(data: bytes, offset: int) -> tuple[dict[str, Any], int]:
    """Like `read_table`, straight to plain values (the fast path for routing)."""
    start, end = _container(data, offset, "table")
    return _plain_table(data, start, end), end


def _container(data: bytes, offset: int, what: str) -> tuple[int, int]:
    if offset + 4 > len(data):
        raise FieldTableError(f"truncated {what} length at offset {offset}")
    (size,) = _U32.unpack_from(data, offset)
    start = offset + 4
    end = start + size
    if end > len(data):
        raise FieldTableError(f"{what} of {size} bytes at offset {offset} runs past the data")
    return start, end


def _name(data: bytes, pos: int, end: int) -> tuple[str, int]:
    size = data[pos]
    pos += 1
    if pos + size > end:
        raise FieldTableError(f"field name at offset {pos - 1} runs past its table")
    raw = data[pos : pos + size]
    try:
        return raw.decode("utf-8"), pos + size
    except UnicodeDecodeError:
        return raw.decode("utf-8", "surrogateescape"), pos + size


def _table_entries(data: bytes, pos: int, end: int) -> Iterator[tuple[str, Field]]:
    while pos < end:
        name, pos = _name(data, pos, end)
        if pos >= end:
            raise FieldTableError(f"field {name!r} has no value")
        value, pos = _typed_value(data, pos, end)
        yield name, value


def _typed_value(data: bytes, pos: int, end: int) -> tuple[Field, int]:
    """Read one tag and its value at `pos`, not past `end`."""
    code = data[pos]
    pos += 1
    fixed = _FIXED.get(code)
    if fixed is not None:
        stop = pos + fixed.size
        if stop > end:
            raise FieldTableError(f"truncated {chr(code)!r} value at offset {pos - 1}")
        (value,) = fixed.unpack_from(data, pos)
        if code in _FLOAT_CODES and not math.isfinite(value):
            raise FieldTableError(f"non-finite {chr(code)!r} value at offset {pos - 1}")
        return Field(chr(code), value), stop
    if code == _S or code == _X:
        start, stop = _container(data, pos, "string")
        if stop > end:
            raise FieldTableError(f"string at offset {pos - 1} runs past its container")
        return Field(chr(code), data[start:stop]), stop
    if code == _F:
        start, stop = _container(data, pos, "table")
        if stop > end:
            raise FieldTableError(f"table at offset {pos - 1} runs past its container")
        return Field("F", TypedTable(tuple(_table_entries(data, start, stop)))), stop
    if code == _A:
        start, stop = _container(data, pos, "array")
        if stop > end:
            raise FieldTableError(f"array at offset {pos - 1} runs past its container")
        items = []
        while start < stop:
            item, start = _typed_value(data, start, stop)
            items.append(item)
        return Field("A", tuple(items)), stop
    if code == _BOOL:
        if pos >= end:
            raise FieldTableError(f"truncated 't' value at offset {pos - 1}")
        octet = data[pos]
        return Field("t", octet == 1 if octet < 2 else octet), pos + 1
    if code == _D:
        if pos + 5 > end:
            raise FieldTableError(f"truncated 'D' value at offset {pos - 1}")
        scale, digits = _DECIMAL.unpack_from(data, pos)
        return Field("D", _make_decimal(scale, digits)), pos + 5
    if code == _V:
        return Field("V", None), pos
    raise FieldTableError(f"unknown field type {chr(code)!r} at offset {pos - 1}")


def _make_decimal(scale: int, digits: int) -> decimal.Decimal:
    return decimal.Decimal((0, tuple(int(c) for c in str(digits)), -scale))


def _plain_table(data: bytes, pos: int, end: int) -> dict[str, Any]:
    result: dict[str, Any] = {}
    while pos < end:
        size = data[pos]
        stop = pos + 1 + size
        if stop >= end:
            if stop > end:
                raise FieldTableError(f"field name at offset {pos} runs past its table")
            raise FieldTableError(f"field at offset {pos} has no value")
        raw = data[pos + 1 : stop]
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            name = raw.decode("utf-8", "surrogateescape")
        value, pos = _plain_value(data, stop, end)
        if name not in result:  # first wins, as rabbit_misc:table_lookup
            result[name] = value
    return result


def _plain_value(data: bytes, pos: int, end: int) -> tuple[Any, int]:
    # Inlined per tag: this is the per-publish path (routing reads headers).
    code = data[pos]
    if code == _S or code == _X:
        start = pos + 5
        if start > end:
            raise FieldTableError(f"truncated string length at offset {pos}")
        stop = start + _U32.unpack_from(data, pos + 1)[0]
        if stop > end:
            raise FieldTableError(f"string at offset {pos} runs past its container")
        raw = data[start:stop]
        if code == _X:
            return bytearray(raw), stop
        try:
            return raw.decode("utf-8"), stop
        except UnicodeDecodeError:
            return raw, stop
    fixed = _FIXED.get(code)
    if fixed is not None:
        stop = pos + 1 + fixed.size
        if stop > end:
            raise FieldTableError(f"truncated {chr(code)!r} value at offset {pos}")
        value = fixed.unpack_from(data, pos + 1)[0]
        if code in _FLOAT_CODES:
            if not math.isfinite(value):
                raise FieldTableError(f"non-finite {chr(code)!r} value at offset {pos}")
        elif code == _TIMESTAMP:
            return timestamp_to_datetime(value), stop
        return WIRE_NUMBERS[code](value), stop
    if code == _F or code == _A:
        start = pos + 5
        if start > end:
            raise FieldTableError(f"truncated container length at offset {pos}")
        stop = start + _U32.unpack_from(data, pos + 1)[0]
        if stop > end:
            raise FieldTableError(f"container at offset {pos} runs past its parent")
        if code == _F:
            return _plain_table(data, start, stop), stop
        items = []
        while start < stop:
            item, start = _plain_value(data, start, stop)
            items.append(item)
        return items, stop
    field, stop = _typed_value(data, pos, end)
    return _plain_scalar(field), stop


# ------------------------------------------------------------- plain values


def to_plain(value: Field | TypedTable) -> Any:
    """The plain Python value pamqp would give for a typed field or table."""
    if isinstance(value, TypedTable):
        result: dict[str, Any] = {}
        for name, item in value.entries:
            if name not in result:
                result[name] = to_plain(item)
        return result
    tag = value.tag
    if tag == "S":
        try:
            return value.value.decode("utf-8")
        except UnicodeDecodeError:
            return bytes(value.value)
    if tag == "F":
        return to_plain(value.value)
    if tag == "A":
        return [to_plain(item) for item in value.value]
    if tag == "x":
        return bytearray(value.value)
    return _plain_scalar(value)


def _plain_scalar(field: Field) -> Any:
    tag = field.tag
    if tag == "t":
        return bool(field.value)
    if tag == "T":
        return timestamp_to_datetime(field.value)
    number = WIRE_NUMBERS.get(ord(tag))
    if number is not None and not isinstance(field.value, bool):
        return number(field.value)
    return field.value


def timestamp_to_datetime(seconds: int) -> datetime.datetime | int:
    """pamqp's reading of an AMQP timestamp: seconds, or milliseconds when it is
    past 2106; a value no datetime can hold stays the int it was."""
    value: float = seconds
    if seconds > 0xFFFFFFFF:
        value = seconds / 1000.0
    try:
        return datetime.datetime.fromtimestamp(value, tz=datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return Timestamp(seconds)


def field_from_plain(value: Any) -> Field:
    """The typed field RabbitMQ writes for a plain value: a WireInt or WireFloat
    as its own tag, another int as `l`, str `S`,
    bool `t`, float `d`, Decimal `D`, datetime `T`, bytes `x`, dict `F`,
    list/tuple `A`, None `V`. Fields and TypedTables pass through."""
    if isinstance(value, Field):
        return value
    if isinstance(value, bool):
        return Field("t", value)
    if isinstance(value, (WireInt, WireFloat)):
        return Field(value.tag, int(value) if isinstance(value, int) else float(value))
    if isinstance(value, int):
        return Field("l", value)
    if isinstance(value, str):
        return Field("S", value.encode("utf-8", "surrogateescape"))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return Field("x", bytes(value))
    if isinstance(value, float):
        return Field("d", value)
    if isinstance(value, decimal.Decimal):
        return Field("D", value)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.UTC)  # naive means UTC, as pamqp
        return Field("T", int(value.timestamp()))
    if isinstance(value, (Mapping, TypedTable)):
        return Field("F", table_from_plain(value))
    if isinstance(value, (list, tuple)):
        return Field("A", tuple(field_from_plain(item) for item in value))
    if value is None:
        return Field("V", None)
    raise FieldTableError(f"cannot encode {type(value).__name__} in a field table")


def table_from_plain(table: Mapping[str, Any] | TypedTable) -> TypedTable:
    """A typed table from a mapping, in the mapping's order."""
    if isinstance(table, TypedTable):
        return table
    return TypedTable(tuple((name, field_from_plain(value)) for name, value in table.items()))


# ----------------------------------------------------------------- encoding


def encode_table(table: TypedTable | Mapping[str, Any]) -> bytes:
    """Encode a table with its 4-byte length; a mapping is typed as RabbitMQ would."""
    body = b"".join(_encode_entries(table_from_plain(table).entries))
    return _U32.pack(len(body)) + body


def encode_field(value: Field | Any) -> bytes:
    """Encode one tagged value (tag octet and payload)."""
    return b"".join(_encode_value(field_from_plain(value)))


def _encode_entries(entries: Iterable[tuple[str, Field]]) -> Iterator[bytes]:
    for name, value in entries:
        raw = _name_bytes(name)
        if len(raw) > 255:
            raise FieldTableError(f"field name of {len(raw)} bytes is longer than 255")
        yield bytes((len(raw),))
        yield raw
        yield from _encode_value(value)


def _name_bytes(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def _encode_value(field: Field) -> Iterator[bytes]:
    tag, value = field.tag, field.value
    if tag not in TAGS:
        raise FieldTableError(f"unknown field type {tag!r}")
    code = ord(tag)
    yield tag.encode()
    fixed = _FIXED.get(code)
    if fixed is not None:
        if tag in _FLOAT_TAGS:
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise FieldTableError(f"{tag!r} needs a finite float, not {value!r}")
        elif not isinstance(value, int) or isinstance(value, bool):
            raise FieldTableError(f"{tag!r} needs an int, not {value!r}")
        try:
            yield fixed.pack(value)
        except (struct.error, OverflowError) as err:
            raise FieldTableError(f"{value!r} does not fit field type {tag!r}") from err
    elif tag in "Sx":
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise FieldTableError(f"{tag!r} needs bytes, not {type(value).__name__}")
        yield _U32.pack(len(value))
        yield bytes(value)
    elif tag == "F":
        if not isinstance(value, (TypedTable, Mapping)):
            raise FieldTableError(f"'F' needs a TypedTable, not {type(value).__name__}")
        yield encode_table(value)
    elif tag == "A":
        if not isinstance(value, (tuple, list)):
            raise FieldTableError(f"'A' needs a tuple of Fields, not {type(value).__name__}")
        body = b"".join(b"".join(_encode_value(field_from_plain(item))) for item in value)
        yield _U32.pack(len(body))
        yield body
    elif tag == "t":
        if not isinstance(value, int) or not 0 <= value <= 255:
            raise FieldTableError(f"'t' needs a bool, not {value!r}")
        yield bytes((int(value),))
    elif tag == "D":
        yield _encode_decimal(value)
    # "V" has no payload


def _encode_decimal(value: Any) -> bytes:
    if not isinstance(value, decimal.Decimal) or not value.is_finite():
        raise FieldTableError(f"'D' needs a finite Decimal, not {value!r}")
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    number = int("".join(map(str, digits)) or "0")
    if exponent > 0:
        number *= 10**exponent
        exponent = 0
    if sign and number:
        raise FieldTableError(f"'D' is unsigned on the wire (RabbitMQ), not {value}")
    if -exponent > 255 or number > 0xFFFFFFFF:
        raise FieldTableError(f"{value} does not fit 'D' (scale octet, 32-bit digits)")
    return _DECIMAL.pack(-exponent, number)
