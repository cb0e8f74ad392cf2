"""Headers binding index: x-match parsing, RabbitMQ's value rules, explain."""

from __future__ import annotations

import datetime
import decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from leveret.bindings.headers import HeadersIndex, comparison_key, parse_rule, x_match_error
from leveret.bindings.model import Binding, Destination, Verdict
from pamqp import exceptions

from tests.bindings.bindings_fields import decoded, decoded_value, label
from tests.bindings.bindings_golden import HEADERS, X_MATCH_ERRORS, HeadersCase, XMatchCase

Q1, Q2 = Destination.queue("q1"), Destination.queue("q2")


def bind(arguments: dict[str, Any], destination: Destination = Q1) -> Binding:
    return Binding.make("x", destination, "", arguments)


def routes(arguments: dict[str, Any], headers: dict[str, Any] | None) -> bool:
    index = HeadersIndex()
    index.add(bind(arguments))
    return index.match("", headers) == [Q1]


# ------------------------------------------------------------------ golden


@pytest.mark.parametrize(
    "case", HEADERS, ids=[f"{label(c.arguments)}~{label(c.headers)}" for c in HEADERS]
)
def test_golden_table(case: HeadersCase) -> None:
    arguments, headers = decoded(case.arguments), decoded(case.headers)
    assert routes(arguments, headers) is case.expected
    verdict = HeadersIndex().explain(bind(arguments), "", headers)
    assert verdict.matched is case.expected


@pytest.mark.parametrize("case", X_MATCH_ERRORS, ids=[repr(c.value) for c in X_MATCH_ERRORS])
def test_bad_x_match_is_refused_with_rabbitmqs_text(case: XMatchCase) -> None:
    index = HeadersIndex()
    with pytest.raises(exceptions.AMQPPreconditionFailed) as raised:
        index.add(bind({"x-match": decoded_value(case.value), "a": 1}))
    assert str(raised.value) == case.expected
    assert len(index) == 0
    assert index.match("", {"a": 1}) == []


def test_x_match_error_text() -> None:
    assert x_match_error("bogus") == (
        'Invalid x-match field value <<"bogus">>; expected all, any, all-with-x, or any-with-x'
    )
    assert x_match_error(23) == "Invalid x-match field type signedint (value 23); expected longstr"
    assert x_match_error(2**31) == (
        "Invalid x-match field type long (value 2147483648); expected longstr"
    )


@pytest.mark.parametrize("mode", ["all", "any", "all-with-x", "any-with-x"])
def test_every_valid_mode_parses(mode: str) -> None:
    rule = parse_rule({"x-match": mode})
    assert rule.x_match == mode


# ------------------------------------------- values as Python code sends them

NOW = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)
NATIVE = [
    (1, 1, True),
    (1, 1.0, True),
    (1, True, False),
    (True, 1, False),
    (False, 0, False),
    (True, True, True),
    (1, "1", False),
    ("abc", b"abc", True),
    ("abc", bytearray(b"abc"), True),
    (decimal.Decimal("1.0"), decimal.Decimal("1"), False),
    (decimal.Decimal("1.5"), decimal.Decimal("1.5"), True),
    (decimal.Decimal("1"), 1, False),
    (int(NOW.timestamp()), NOW, True),
    (NOW, NOW.replace(tzinfo=None), True),  # naive datetimes are UTC
    (NOW, int(NOW.timestamp()) + 1, False),
    ({"a": 1, "b": "x"}, {"a": 1, "b": "x"}, True),
    ({"a": 1, "b": "x"}, {"b": "x", "a": 1}, False),  # nested tables compare in wire order
    ({"a": 1}, {"a": 1.0}, False),
    ({"a": True}, {"a": 1}, False),
    ({}, [], True),
    ([1, "a"], [1, "a"], True),
    ([1, "a"], ["a", 1], False),
    ([1], [True], False),
    ([{"a": [1]}], [{"a": [1]}], True),
]


@pytest.mark.parametrize(("wanted", "sent", "matched"), NATIVE)
def test_native_values(wanted: Any, sent: Any, matched: bool) -> None:
    assert routes({"k": wanted}, {"k": sent}) is matched
    assert (comparison_key(wanted) == comparison_key(sent)) is matched


def test_missing_headers_are_an_empty_table() -> None:
    assert routes({}, None) is True
    assert routes({"x-match": "any", "a": None}, None) is False


# ------------------------------------------------------------------- shape


def test_two_bindings_one_destination_deliver_once_and_remove_separately() -> None:
    index = HeadersIndex()
    by_format = bind({"format": "pdf"})
    by_type = bind({"x-match": "any", "type": "report"})
    index.add(by_format)
    index.add(by_type)
    index.add(bind({"format": "pdf"}, Q2))
    assert index.match("", {"format": "pdf", "type": "report"}) == [Q1, Q2]
    index.remove(by_format)
    assert index.match("", {"format": "pdf", "type": "report"}) == [Q1, Q2]
    assert index.match("", {"format": "pdf"}) == [Q2]
    index.remove(by_type)
    index.remove(by_type)  # unknown now: ignored
    assert index.match("", {"type": "report"}) == []
    assert len(index) == 1


def test_adding_twice_is_a_no_op() -> None:
    index = HeadersIndex()
    index.add(bind({"a": 1}))
    index.add(bind({"a": 1}))
    assert len(index) == 1
    index.remove(bind({"a": 1}))
    assert len(index) == 0
    assert index.match("", {"a": 1}) == []


def test_routing_key_is_ignored() -> None:
    index = HeadersIndex()
    index.add(Binding.make("x", Q1, "some.key", {"a": 1}))
    assert index.match("other", {"a": 1}) == [Q1]


# ----------------------------------------------------------------- explain

EXPLAIN = [
    (
        {"format": "zip"},
        {"format": "pdf"},
        False,
        "x-match all: header 'format' is 'pdf', binding wants 'zip'",
    ),
    ({"format": "zip"}, {}, False, "x-match all: header 'format' is missing"),
    (
        {"n": 1},
        {"n": "1"},
        False,
        "x-match all: header 'n' is '1' (string), binding wants 1 (number)",
    ),
    (
        {"f": True},
        {"f": 1},
        False,
        "x-match all: header 'f' is 1 (number), binding wants True (boolean)",
    ),
    ({"format": "pdf"}, {"format": "pdf"}, True, "x-match all: header 'format' is 'pdf'"),
    ({"a": 1, "b": None}, {"a": 1.0, "b": 0}, True, "x-match all: all 2 binding headers match"),
    ({}, {}, True, "x-match all: no headers to check, matches every message"),
    ({"x-match": "any"}, {"a": 1}, False, "x-match any: no headers to check, matches nothing"),
    ({"x-match": "any", "a": 1, "b": 2}, {"c": 3}, False, "x-match any: no binding header present"),
    ({"x-match": "any", "a": 1, "b": 2}, {"b": 2}, True, "x-match any: header 'b' is 2"),
    ({"x-match": "any", "a": None}, {"a": "x"}, True, "x-match any: header 'a' is present"),
    (
        {"x-match": "any", "a": 1},
        {"a": 2},
        False,
        "x-match any: no binding header matches; header 'a' is 2, binding wants 1",
    ),
    ({"x-tag": 1}, {}, True, "x-match all: no headers to check, matches every message"),
    (
        {"x-match": "all-with-x", "x-tag": 1},
        {},
        False,
        "x-match all-with-x: header 'x-tag' is missing",
    ),
    (
        {"x-match": "bogus"},
        {},
        False,
        'binding refused: Invalid x-match field value <<"bogus">>; '
        "expected all, any, all-with-x, or any-with-x",
    ),
]


@pytest.mark.parametrize(("arguments", "headers", "matched", "reason"), EXPLAIN)
def test_explain_reasons(
    arguments: dict[str, Any], headers: dict[str, Any], matched: bool, reason: str
) -> None:
    assert HeadersIndex().explain(bind(arguments), "", headers) == Verdict(matched, reason)


# -------------------------------------------------------------- properties

names = st.sampled_from(["a", "b", "x-c", "x-match"])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 2),
    st.sampled_from([0.0, 1.0, 1.5]),
    st.sampled_from(["", "1", "a", b"a"]),
    st.sampled_from([decimal.Decimal("1"), decimal.Decimal("1.0")]),
)
values = st.one_of(
    scalars, st.lists(scalars, max_size=2), st.dictionaries(names, scalars, max_size=2)
)
modes = st.sampled_from([None, "all", "any", "all-with-x", "any-with-x"])


def reference(mode: str | None, arguments: dict[str, Any], headers: dict[str, Any]) -> bool:
    """RabbitMQ 3.10's rule, written from its description."""
    mode = mode or "all"
    with_x = mode.endswith("-with-x")
    checks = [
        (k, v)
        for k, v in arguments.items()
        if k != "x-match" and (with_x or not k.startswith("x-"))
    ]
    results = [
        k in headers and (v is None or comparison_key(v) == comparison_key(headers[k]))
        for k, v in checks
    ]
    return all(results) if mode.startswith("all") else any(results)


@settings(max_examples=400, deadline=None)
@given(
    mode=modes,
    arguments=st.dictionaries(names, values, max_size=3),
    headers=st.dictionaries(names, values, max_size=3),
)
def test_match_and_explain_agree_with_the_rule(
    mode: str | None, arguments: dict[str, Any], headers: dict[str, Any]
) -> None:
    arguments = {k: v for k, v in arguments.items() if k != "x-match"}
    if mode is not None:
        arguments["x-match"] = mode
    expected = reference(mode, arguments, headers)
    assert routes(arguments, headers) is expected
    assert HeadersIndex().explain(bind(arguments), "", headers).matched is expected
