"""AMQP field values with their wire type spelled out, for golden tables.

Python values lose the field type (pamqp picks integer widths for us), yet
RabbitMQ compares some of them by type. A `Field` carries the exact tag and
payload, so a case is the same bytes for the reference broker (through a
patched pika encoder) and for leveret (through its frontend's decoder).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from leveret.amqp_wire.fieldtable import read_table_plain
from pamqp import decode


@dataclass(frozen=True)
class Field:
    tag: bytes
    payload: bytes
    label: str

    @property
    def wire(self) -> bytes:
        return self.tag + self.payload

    def __repr__(self) -> str:
        return self.label


def _packed(tag: str, fmt: str, value: Any, label: str) -> Field:
    return Field(tag.encode(), struct.pack(fmt, value), label)


def b(v: int) -> Field:
    return _packed("b", ">b", v, f"b{v}")


def B(v: int) -> Field:
    return _packed("B", ">B", v, f"B{v}")


def s(v: int) -> Field:
    return _packed("s", ">h", v, f"s{v}")


def u(v: int) -> Field:
    return _packed("u", ">H", v, f"u{v}")


def I(v: int) -> Field:  # noqa: E743 - AMQP's own letter for signed 32-bit
    return _packed("I", ">i", v, f"I{v}")


def i(v: int) -> Field:
    return _packed("i", ">I", v, f"i{v}")


def l(v: int) -> Field:  # noqa: E741, E743 - AMQP's own letter for signed 64-bit
    return _packed("l", ">q", v, f"l{v}")


def f(v: float) -> Field:
    return _packed("f", ">f", v, f"f{v}")


def d(v: float) -> Field:
    return _packed("d", ">d", v, f"d{v}")


def D(scale: int, unscaled: int) -> Field:
    return Field(b"D", struct.pack(">BI", scale, unscaled), f"D({scale},{unscaled})")


def S(v: str | bytes) -> Field:
    data = v.encode() if isinstance(v, str) else v
    return Field(b"S", struct.pack(">I", len(data)) + data, f"S{v!r}")


def x(v: bytes) -> Field:
    return Field(b"x", struct.pack(">I", len(v)) + v, f"x{v!r}")


def t(v: int) -> Field:
    return _packed("t", ">B", v, f"t{v}")


def T(v: int) -> Field:
    return _packed("T", ">Q", v, f"T{v}")


V = Field(b"V", b"", "V")


def table_bytes(entries: dict[str, Field]) -> bytes:
    body = b"".join(bytes([len(k.encode())]) + k.encode() + v.wire for k, v in entries.items())
    return struct.pack(">I", len(body)) + body


def F(entries: dict[str, Field]) -> Field:
    label = "F{" + ", ".join(f"{k}: {v!r}" for k, v in entries.items()) + "}"
    return Field(b"F", table_bytes(entries), label)


def A(*items: Field) -> Field:
    body = b"".join(item.wire for item in items)
    return Field(
        b"A", struct.pack(">I", len(body)) + body, "A[" + ", ".join(map(repr, items)) + "]"
    )


def decoded(entries: dict[str, Field]) -> dict[str, Any]:
    """The table as leveret's frontend sees it: leveret.amqp_wire.fieldtable's plain view
    of the same bytes (pamqp's values, numbers knowing their wire type)."""
    data = table_bytes(entries)
    table, consumed = read_table_plain(data, 0)
    assert consumed == len(data)
    assert table == dict(decode.field_table(data)[1]) or _has_decimal(entries)
    return table


def _has_decimal(entries: dict[str, Field]) -> bool:
    # pamqp reads decimal digits signed, RabbitMQ (and leveret) unsigned.
    return any(b"D" in field.wire for field in entries.values())


def decoded_value(field: Field) -> Any:
    return decoded({"v": field})["v"]


def label(entries: dict[str, Field]) -> str:
    return "{" + ", ".join(f"{k}: {v!r}" for k, v in entries.items()) + "}"
