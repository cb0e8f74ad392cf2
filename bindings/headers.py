"""The headers exchange's binding index: x-match rules over message headers.

Semantics (RabbitMQ 3.10, checked against the reference broker):

- `x-match` is `all` (the default), `any`, `all-with-x` or `any-with-x`;
  anything else is refused at bind time with RabbitMQ's text.
- Binding keys starting with "x-" (lower case) are ignored unless the mode
  ends in -with-x; "x-match" itself is always ignored.
- A void (None) binding value means "header present, any value".
- `all` with no keys left matches every message, `any` with none matches
  nothing.
- Values compare as RabbitMQ 3.10 does, with Erlang's `==` on the decoded
  values: integers of every width, floats, doubles and timestamps are one
  class compared by numeric value (1 == 1.0, timestamp 5 == long 5);
  booleans are their own class (True is not 1); long strings and byte
  arrays are both binaries, compared by bytes; a decimal is its (scale,
  digits) pair, so 1.0 is neither 1 nor decimal 1; void is only void.
  Nested tables and arrays compare element by element, in wire order, with
  the field type included, so inside them signedint 1 is not byte 1 (pika
  sends the one, aio-pika the other), 1 is not 1.0 and a string is not a
  byte array. Numbers decoded from the wire know their type
  (leveret.bindings.model.field_type); a plain int or float from in-process callers
  is a long or a double, as RabbitMQ writes them.

Theory of operation. `add` parses a binding's arguments once into a `_Rule`
(mode plus (header name, expected comparison key) checks) kept per
destination; `match` evaluates each destination's rules until one matches,
so every destination is yielded once and computes each header's comparison
key at most once per call. Nothing is stored on a miss.
"""

from __future__ import annotations

import calendar
import datetime
import decimal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from leveret.bindings.model import (
    Binding,
    BindingSet,
    Destination,
    FrozenTable,
    Headers,
    Verdict,
    field_type,
    thaw_table,
)
from pamqp import exceptions

__all__ = ["HeadersIndex", "HeaderRule", "parse_rule", "x_match_error"]

Mode = Literal["all", "any"]
_MODES: dict[str, tuple[Mode, bool]] = {
    "all": ("all", False),
    "any": ("any", False),
    "all-with-x": ("all", True),
    "any-with-x": ("any", True),
}

# What a void binding value expects: presence only.
_PRESENT: Any = object()


@dataclass(frozen=True, slots=True)
class HeaderRule:
    """A binding's arguments, parsed: the x-match mode and what to check."""

    mode: Mode
    with_x: bool
    # (header name, comparison key or _PRESENT, the binding's own value)
    checks: tuple[tuple[str, Any, Any], ...]

    @property
    def x_match(self) -> str:
        return self.mode + ("-with-x" if self.with_x else "")

    def matches(self, headers: Headers, keys: dict[str, Any]) -> bool:
        """Whether headers satisfy the rule; `keys` caches header comparison keys."""
        if self.mode == "any":
            for name, expected, _ in self.checks:
                if name in headers and (
                    expected is _PRESENT or _header_key(headers, name, keys) == expected
                ):
                    return True
            return False
        for name, expected, _ in self.checks:
            if name not in headers:
                return False
            if expected is not _PRESENT and _header_key(headers, name, keys) != expected:
                return False
        return True


def _header_key(headers: Headers, name: str, keys: dict[str, Any]) -> Any:
    key = keys.get(name, _PRESENT)
    if key is _PRESENT:
        key = keys[name] = comparison_key(headers[name])
    return key


def parse_rule(arguments: FrozenTable | Mapping[str, Any]) -> HeaderRule:
    """Parse binding arguments; raises AMQPPreconditionFailed for a bad x-match."""
    table = arguments if isinstance(arguments, Mapping) else thaw_table(arguments)
    x_match = table.get("x-match")
    if x_match is None and "x-match" not in table:
        mode, with_x = _MODES["all"]
    elif isinstance(x_match, str) and x_match in _MODES:
        mode, with_x = _MODES[x_match]
    else:
        raise exceptions.AMQPPreconditionFailed(x_match_error(x_match))
    checks = []
    for name, value in table.items():
        if name == "x-match" or (not with_x and name.startswith("x-")):
            continue
        expected = _PRESENT if value is None else comparison_key(value)
        checks.append((name, expected, value))
    return HeaderRule(mode, with_x, tuple(checks))


class HeadersIndex(BindingSet):
    """BindingIndex for headers exchanges (see the module docstring)."""

    __slots__ = ("_rules",)

    def __init__(self) -> None:
        super().__init__()
        self._rules: dict[Destination, dict[Binding, HeaderRule]] = {}

    def add(self, binding: Binding) -> None:
        """Parse and add a binding (raises AMQPPreconditionFailed for a bad x-match)."""
        if binding in self._bindings:
            return
        rule = parse_rule(binding.arguments)
        self._bindings.add(binding)
        self._rules.setdefault(binding.destination, {})[binding] = rule

    def remove(self, binding: Binding) -> None:
        """Remove a binding; unknown ones are ignored."""
        if binding not in self._bindings:
            return
        self._bindings.discard(binding)
        rules = self._rules[binding.destination]
        del rules[binding]
        if not rules:
            del self._rules[binding.destination]

    def match(self, routing_key: str, headers: Headers | None) -> list[Destination]:
        """Destinations with a binding whose rule the headers satisfy, each once."""
        headers = headers or {}
        keys: dict[str, Any] = {}
        return [
            destination
            for destination, rules in self._rules.items()
            if any(rule.matches(headers, keys) for rule in rules.values())
        ]

    def explain(self, binding: Binding, routing_key: str, headers: Headers | None) -> Verdict:
        try:
            rule = parse_rule(binding.arguments)
        except exceptions.AMQPPreconditionFailed as error:
            return Verdict(False, f"binding refused: {error}")
        return explain_rule(rule, headers or {})


# ------------------------------------------------------------ comparison keys
#
# A comparison key is a hashable stand-in for the Erlang term RabbitMQ 3.10
# decodes a field value to, so that Python `==` on keys is Erlang `==` on
# values. Top level: numbers (ints, floats, timestamps) share one class.


def comparison_key(value: Any) -> Any:
    """The key a top-level header or binding value compares by."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("num", value)
    if isinstance(value, datetime.datetime):
        return ("num", _epoch_seconds(value))
    if isinstance(value, str):
        return ("bin", value.encode("utf-8", "surrogateescape"))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ("bin", bytes(value))
    if isinstance(value, decimal.Decimal):
        return ("decimal", *_decimal_parts(value))
    if value is None:
        return ("void",)
    if isinstance(value, Mapping):
        if not value:
            return ("list", ())  # Erlang: an empty table and an empty array are both []
        return ("table", tuple((_binary(k), *_typed(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return ("list", tuple(_typed(v) for v in value))
    return ("other", type(value).__name__, repr(value))


def _typed(value: Any) -> tuple[str, Any]:
    """A value inside a table or array: its field type travels with it."""
    kind = field_type(value)
    if isinstance(value, datetime.datetime):
        return (kind, _epoch_seconds(value))
    if isinstance(value, (str, bytes, bytearray, memoryview)):
        return (kind, _binary(value))
    if isinstance(value, decimal.Decimal):
        return (kind, _decimal_parts(value))
    if isinstance(value, (Mapping, list, tuple)):
        return (kind, comparison_key(value))
    if value is None or isinstance(value, (bool, int, float)):
        return (kind, value)
    return ("other", comparison_key(value))


def _binary(text: str | bytes | bytearray | memoryview) -> bytes:
    return text.encode("utf-8", "surrogateescape") if isinstance(text, str) else bytes(text)


def _epoch_seconds(value: datetime.datetime) -> int:
    # AMQP timestamps are whole seconds; naive datetimes are UTC, as pamqp encodes them.
    return calendar.timegm(value.utctimetuple())


def _decimal_parts(value: decimal.Decimal) -> tuple[int, int]:
    """(scale, unscaled value): AMQP's decimal, which RabbitMQ keeps as is."""
    sign, digits, exponent = value.as_tuple()
    unscaled = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
    if not isinstance(exponent, int):  # NaN or infinity: no AMQP decimal
        return (0, unscaled)
    if exponent > 0:
        return (0, unscaled * 10**exponent)
    return (-exponent, unscaled)


# ------------------------------------------------------------------- explain


def explain_rule(rule: HeaderRule, headers: Headers) -> Verdict:
    label = f"x-match {rule.x_match}"
    keys: dict[str, Any] = {}
    if not rule.checks:
        if rule.mode == "all":
            return Verdict(True, f"{label}: no headers to check, matches every message")
        return Verdict(False, f"{label}: no headers to check, matches nothing")
    if rule.mode == "all":
        for name, expected, wanted in rule.checks:
            if name not in headers:
                return Verdict(False, f"{label}: header '{name}' is missing")
            if expected is not _PRESENT and _header_key(headers, name, keys) != expected:
                return Verdict(False, f"{label}: {_differs(name, headers[name], wanted)}")
        if len(rule.checks) == 1:
            return Verdict(True, f"{label}: {_agrees(rule.checks[0], headers)}")
        return Verdict(True, f"{label}: all {len(rule.checks)} binding headers match")
    present = [check for check in rule.checks if check[0] in headers]
    for check in present:
        name, expected, _ = check
        if expected is _PRESENT or _header_key(headers, name, keys) == expected:
            return Verdict(True, f"{label}: {_agrees(check, headers)}")
    if not present:
        return Verdict(False, f"{label}: no binding header present")
    name, _, wanted = present[0]
    return Verdict(
        False, f"{label}: no binding header matches; {_differs(name, headers[name], wanted)}"
    )


def _agrees(check: tuple[str, Any, Any], headers: Headers) -> str:
    name, expected, _ = check
    if expected is _PRESENT:
        return f"header '{name}' is present"
    return f"header '{name}' is {_show(headers[name])}"


def _differs(name: str, actual: Any, wanted: Any) -> str:
    shown, want = _show(actual), _show(wanted)
    kind, wanted_kind = _kind(actual), _kind(wanted)
    if kind != wanted_kind:
        shown, want = f"{shown} ({kind})", f"{want} ({wanted_kind})"
    return f"header '{name}' is {shown}, binding wants {want}"


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f"'{value}'"
    if value is None:
        return "void"
    return repr(value)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    for types, name in _KINDS:
        if isinstance(value, types):
            return name
    return type(value).__name__


_KINDS: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (str, "string"),
    ((bytes, bytearray, memoryview), "bytes"),
    (decimal.Decimal, "decimal"),
    (datetime.datetime, "timestamp"),
    (Mapping, "table"),
    ((list, tuple), "array"),
    (type(None), "void"),
)


# -------------------------------------------------------- RabbitMQ's refusal
#
# rabbit_exchange_type_headers:validate_binding formats the offending value
# with io_lib ~p; we render the same Erlang terms on one line (RabbitMQ wraps
# big tables and arrays over several lines, which we do not copy).

_LONGSTR_VALUE = "Invalid x-match field value {}; expected all, any, all-with-x, or any-with-x"
_OTHER_TYPE = "Invalid x-match field type {} (value {}); expected longstr"


def x_match_error(value: Any) -> str:
    """RabbitMQ's explanation for an x-match it refuses (no "NAME - " prefix)."""
    if isinstance(value, (str, bytes)):
        text = _LONGSTR_VALUE.format(_erl_binary(_binary(value)))
    else:
        text = _OTHER_TYPE.format(_erl_type(value), _erl_term(value))
    # ~p leaves Latin-1 printable bytes raw; RabbitMQ sends them as they are.
    return text.encode("latin-1").decode("utf-8", "replace")


def _erl_type(value: Any) -> str:
    """The AMQP field type RabbitMQ names: the wire type a value came with; a plain
    int gets the width most clients pick."""
    if isinstance(value, int) and not isinstance(value, bool) and not hasattr(value, "type_name"):
        return "signedint" if -(2**31) <= value < 2**31 else "long"
    return field_type(value)


def _erl_term(value: Any) -> str:
    """`value` as Erlang's ~p prints what RabbitMQ decodes it to, as Latin-1 text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _erl_float(value)
    if isinstance(value, decimal.Decimal):
        scale, unscaled = _decimal_parts(value)
        return f"{{{scale},{unscaled}}}"
    if isinstance(value, datetime.datetime):
        return str(_epoch_seconds(value))
    if isinstance(value, (str, bytes, bytearray, memoryview)):
        return _erl_binary(_binary(value) if isinstance(value, str) else bytes(value))
    if isinstance(value, Mapping):
        items = (
            f"{{{_erl_binary(_binary(k))},{_erl_type(v)},{_erl_term(v)}}}" for k, v in value.items()
        )
        return "[" + ",".join(items) + "]"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(f"{{{_erl_type(v)},{_erl_term(v)}}}" for v in value) + "]"
    return "undefined"


_ESCAPES = {
    ord('"'): '\\"',
    ord("\\"): "\\\\",
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
    ord("\v"): "\\v",
    ord("\b"): "\\b",
    ord("\f"): "\\f",
    27: "\\e",
}


def _erl_binary(data: bytes) -> str:
    """<<"text">> when every byte is printable Latin-1 (io_lib's rule), else <<1,2>>."""
    if not data:
        return "<<>>"
    if all(32 <= b <= 126 or b >= 160 or b in _ESCAPES for b in data):
        return '<<"' + "".join(_ESCAPES.get(b, chr(b)) for b in data) + '">>'
    return "<<" + ",".join(map(str, data)) + ">>"


def _erl_float(value: float) -> str:
    """Erlang's shortest round-trip float text (io_lib_format, OTP 24/25)."""
    if value != value or value in (float("inf"), float("-inf")):
        return repr(value)  # not an Erlang float; nothing to copy
    sign = "-" if value < 0 or (value == 0 and str(value).startswith("-")) else ""
    if value == 0:
        return sign + "0.0"
    _, digit_tuple, exponent = decimal.Decimal(repr(abs(value))).as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple))
    stripped = digits.rstrip("0")
    # value = 0.<digits> x 10**place
    place = len(stripped) + exponent + (len(digits) - len(stripped))
    return sign + _insert_decimal(place, stripped, abs(value))


def _insert_decimal(place: int, digits: str, magnitude: float) -> str:
    length = len(digits)
    if place == 0:
        return "0." + digits
    if 0 < place < length:
        return digits[:place] + "." + digits[place:]
    exp_text = str(place - 1)
    exp_cost = len(exp_text) + 1 + (2 if length == 1 else 1)
    if place < 0:
        if 2 - place <= exp_cost:
            return "0." + "0" * -place + digits
    elif place - length + 2 <= exp_cost and magnitude < float(2**53):
        return digits + "0" * (place - length) + ".0"
    if length == 1:
        return digits + ".0e" + exp_text
    return digits[0] + "." + digits[1:] + "e" + exp_text
