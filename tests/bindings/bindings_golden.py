"""Golden tables for binding semantics, observed on RabbitMQ 3.10.8.

Each headers case is the binding arguments and the message headers as typed
AMQP fields (see bindings_fields), what the reference broker did, and, where
leveret knowingly does otherwise, what it does instead and why (no row needs
that now: the frontend's decoder keeps the wire types RabbitMQ compares).
test_bindings_rabbitmq replays every row against a live broker, so the table
cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.bindings.bindings_fields import (
    A,
    B,
    D,
    F,
    Field,
    I,
    S,
    T,
    V,
    b,
    d,
    f,
    i,
    l,
    s,
    t,
    u,
    x,
)

# (binding key, routing key, matched)
TOPIC: list[tuple[str, str, bool]] = [
    ("*", "", False),
    ("*", "a", True),
    ("*", ".", False),
    ("*", "*", True),
    ("a.*", "a.", True),
    ("a.*", "a", False),
    ("a.*", "a.*", True),
    ("a.*.c", "a..c", True),
    ("#", "", True),
    ("#", ".", True),
    ("#", "..", True),
    ("#.#", "", True),
    ("#.#.#", "a", True),
    ("a.#", "a", True),
    ("a.#", "a.", True),
    ("#.a", "a", True),
    ("#.*.#", "", False),
    ("#.*.#", "a", True),
    ("#.*.#", "a.b", True),
    ("*.*", "a.", True),
    ("*.*", ".", True),
    ("*.#", "", False),
    ("*.#.*", "a", False),
    ("*.#.*", "a.b", True),
    ("a.#.#.b", "a.b", True),
    ("a.#.#.b", "a.x.y.b", True),
    ("a..b", "a..b", True),
    ("a..b", "a.b", False),
    (".", ".", True),
    (".", "", False),
    ("..", "..", True),
    (".*", ".", True),
    ("*.", ".", True),
    (".#", ".", True),
    (".#", "", False),
    ("#.", ".", True),
    ("#.", "", False),
    ("#.", "a.", True),
    ("#.", "a", False),
    ("#.b", ".b", True),
    ("#.b", "b", True),
    ("", "", True),
    ("", ".", False),
    ("a#", "ab", False),
    ("a#", "a#", True),
    ("a.b", "a.b.", False),
]


@dataclass(frozen=True)
class HeadersCase:
    arguments: dict[str, Field]
    headers: dict[str, Field]
    rabbitmq: bool
    leveret: bool | None = None  # set only where leveret knowingly differs
    why: str = ""

    @property
    def expected(self) -> bool:
        return self.rabbitmq if self.leveret is None else self.leveret




def _one(
    binding: Field, header: Field, rabbitmq: bool, leveret: bool | None = None, why: str = ""
) -> HeadersCase:
    return HeadersCase({"k": binding}, {"k": header}, rabbitmq, leveret, why)


_M = "x-match"

HEADERS: list[HeadersCase] = [
    # integers: every width is one class, compared by value
    _one(b(1), I(1), True),
    _one(s(1), l(1), True),
    _one(B(1), b(1), True),
    _one(u(1), I(1), True),
    _one(i(1), l(1), True),
    _one(i(4294967295), l(4294967295), True),
    _one(b(-1), l(-1), True),
    _one(I(1), I(2), False),
    # numbers: int == float by value (Erlang ==), exactly
    _one(I(1), d(1.0), True),
    _one(d(1.0), I(1), True),
    _one(f(1.0), d(1.0), True),
    _one(f(1.5), d(1.5), True),
    _one(f(0.1), d(0.1), False),
    _one(l(2**53 + 1), d(float(2**53)), False),
    _one(d(0.0), d(-0.0), True),
    _one(I(0), d(-0.0), True),
    # booleans are not numbers
    _one(I(1), t(1), False),
    _one(t(1), b(1), False),
    _one(t(0), I(0), False),
    _one(t(1), t(1), True),
    _one(t(0), t(0), True),
    _one(t(1), t(2), True),
    _one(t(1), t(0), False),
    # strings: no coercion from numbers; long string == byte array by bytes
    _one(I(1), S("1"), False),
    _one(S("1"), I(1), False),
    _one(S("abc"), x(b"abc"), True),
    _one(x(b"abc"), S("abc"), True),
    _one(S(b"\xff\xfe"), x(b"\xff\xfe"), True),
    _one(S("abc"), S("ABC"), False),
    _one(S(""), S(""), True),
    _one(S(""), V, False),
    # decimals: (scale, digits) as sent, never numbers
    _one(D(0, 1), I(1), False),
    _one(D(1, 10), D(0, 1), False),
    _one(D(1, 10), D(1, 10), True),
    _one(D(0, 1), d(1.0), False),
    # timestamps are integers
    _one(T(5), l(5), True),
    _one(l(5), T(5), True),
    _one(T(5), T(5), True),
    _one(T(5), d(5.0), True),
    _one(T(5), T(6), False),
    # void in the binding means "present"; void in a message is only void
    _one(V, V, True),
    _one(V, I(0), True),
    _one(S("x"), V, False),
    HeadersCase({"k": V}, {}, False),
    # nested tables: field types included, key order matters to RabbitMQ
    _one(F({"a": I(1)}), F({"a": I(1)}), True),
    _one(F({"a": b(1)}), F({"a": I(1)}), False),
    _one(F({"a": I(1)}), F({"a": d(1.0)}), False),
    _one(F({"a": I(1), "b": I(2)}), F({"b": I(2), "a": I(1)}), False),
    _one(F({"a": I(1), "b": I(2)}), F({"a": I(1), "b": I(2)}), True),
    _one(F({}), F({}), True),
    _one(F({"a": S("x")}), F({"a": x(b"x")}), False),
    _one(F({"a": T(5)}), F({"a": l(5)}), False),
    _one(F({"a": F({"b": I(1)})}), F({"a": F({"b": I(1)})}), True),
    _one(F({"a": V}), F({"a": V}), True),
    _one(F({"a": V}), F({"a": I(1)}), False),
    _one(F({"a": f(1.5)}), F({"a": d(1.5)}), False),
    _one(F({"a": t(1)}), F({"a": t(1)}), True),
    _one(F({"a": I(1)}), A(I(1)), False),
    _one(F({}), A(), True),
    # arrays: element types included, order matters
    _one(A(I(1)), A(I(1)), True),
    _one(A(b(1)), A(I(1)), False),
    _one(A(I(1), I(2)), A(I(2), I(1)), False),
    _one(A(), A(), True),
    _one(A(S("a")), A(x(b"a")), False),
    _one(A(I(1)), A(d(1.0)), False),
    _one(A(i(1)), A(I(1)), False),
    _one(A(s(1)), A(u(1)), False),
    _one(A(l(1)), A(T(1)), False),
    _one(A(V), A(V), True),
    # x-match modes and x- keys
    HeadersCase({"b": S("1"), "a": S("1")}, {"a": S("1"), "b": S("1")}, True),
    HeadersCase({_M: S("any"), "z": S("1"), "a": S("2")}, {"z": S("1")}, True),
    HeadersCase({"x-foo": S("1")}, {}, True),
    HeadersCase({"x-foo": S("1")}, {"x-foo": S("2")}, True),
    HeadersCase({_M: S("any"), "x-foo": S("1")}, {"x-foo": S("1")}, False),
    HeadersCase({"X-foo": S("1")}, {}, False),
    HeadersCase({"X-foo": S("1")}, {"X-foo": S("1")}, True),
    HeadersCase({"x-": S("1")}, {}, True),
    HeadersCase({"x": S("1")}, {}, False),
    HeadersCase({_M: S("all-with-x")}, {}, True),
    HeadersCase({_M: S("any-with-x")}, {_M: S("any-with-x")}, False),
    HeadersCase({_M: S("all-with-x"), "x-foo": S("1")}, {"x-foo": S("1")}, True),
    HeadersCase({_M: S("all-with-x"), "x-foo": S("1")}, {}, False),
    HeadersCase({_M: S("any-with-x"), "x-foo": S("1"), "a": S("2")}, {"x-foo": S("1")}, True),
    HeadersCase({_M: S("any-with-x"), "x-foo": V}, {"x-foo": I(3)}, True),
    HeadersCase({_M: S("all-with-x"), "x-foo": S("1"), "a": S("2")}, {"x-foo": S("1")}, False),
    HeadersCase(
        {_M: S("all-with-x"), "x-foo": S("1"), "a": S("2")}, {"x-foo": S("1"), "a": S("2")}, True
    ),
    HeadersCase({}, {}, True),
    HeadersCase({_M: S("all")}, {}, True),
    HeadersCase({_M: S("any")}, {"a": I(1)}, False),
    HeadersCase({_M: S("any")}, {}, False),
    HeadersCase({_M: S("any"), "a": V}, {"a": V}, True),
    HeadersCase({_M: S("any"), "a": I(1), "b": I(2)}, {"b": I(2)}, True),
    HeadersCase({_M: S("any"), "a": I(1), "b": I(2)}, {"b": I(3)}, False),
    HeadersCase({"a": I(1), "b": I(2)}, {"b": I(2)}, False),
    HeadersCase({"a": I(1), "b": I(2)}, {"b": I(2), "a": I(1), "c": I(3)}, True),
]


@dataclass(frozen=True)
class XMatchCase:
    value: Field
    rabbitmq: str  # RabbitMQ's text after "PRECONDITION_FAILED - "
    leveret: str | None = None  # set only where leveret knowingly differs
    why: str = ""

    @property
    def expected(self) -> str:
        return self.rabbitmq if self.leveret is None else self.leveret


_VALUE = "Invalid x-match field value {}; expected all, any, all-with-x, or any-with-x"
_TYPE = "Invalid x-match field type {} (value {}); expected longstr"

X_MATCH_ERRORS: list[XMatchCase] = [
    XMatchCase(S("bogus"), _VALUE.format('<<"bogus">>')),
    XMatchCase(S("ALL"), _VALUE.format('<<"ALL">>')),
    XMatchCase(S(""), _VALUE.format("<<>>")),
    XMatchCase(S("all\n"), _VALUE.format('<<"all\\n">>')),
    XMatchCase(S('a"b\\c'), _VALUE.format('<<"a\\"b\\\\c">>')),
    XMatchCase(S("\x01"), _VALUE.format("<<1>>")),
    XMatchCase(S("a\x01"), _VALUE.format("<<97,1>>")),
    XMatchCase(S("\x7f"), _VALUE.format("<<127>>")),
    XMatchCase(S("\x1b"), _VALUE.format('<<"\\e">>')),
    XMatchCase(S("é"), _VALUE.format('<<"é">>')),
    XMatchCase(I(23), _TYPE.format("signedint", "23")),
    XMatchCase(l(2**40), _TYPE.format("long", str(2**40))),
    XMatchCase(l(5), _TYPE.format("long", "5")),
    XMatchCase(b(1), _TYPE.format("byte", "1")),
    XMatchCase(t(1), _TYPE.format("bool", "true")),
    XMatchCase(x(b"all"), _TYPE.format("binary", '<<"all">>')),
    XMatchCase(x(b"\x01\x02"), _TYPE.format("binary", "<<1,2>>")),
    XMatchCase(V, _TYPE.format("void", "undefined")),
    XMatchCase(d(1.5), _TYPE.format("double", "1.5")),
    XMatchCase(d(1e15), _TYPE.format("double", "1.0e15")),
    XMatchCase(d(1e-5), _TYPE.format("double", "1.0e-5")),
    XMatchCase(d(0.0001), _TYPE.format("double", "0.0001")),
    XMatchCase(d(1000.0), _TYPE.format("double", "1.0e3")),
    XMatchCase(d(float(2**53)), _TYPE.format("double", "9.007199254740992e15")),
    XMatchCase(f(1.5), _TYPE.format("float", "1.5")),
    XMatchCase(D(1, 15), _TYPE.format("decimal", "{1,15}")),
    XMatchCase(T(5), _TYPE.format("timestamp", "5")),
    XMatchCase(F({}), _TYPE.format("table", "[]")),
    XMatchCase(F({"a": I(1)}), _TYPE.format("table", '[{<<"a">>,signedint,1}]')),
    XMatchCase(A(), _TYPE.format("array", "[]")),
    XMatchCase(A(I(1), S("a")), _TYPE.format("array", '[{signedint,1},{longstr,<<"a">>}]')),
]
