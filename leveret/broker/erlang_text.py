"""JSON values printed as Erlang's `~p` prints the terms RabbitMQ decodes them to.

RabbitMQ's validation errors (policies, parameters) quote the offending value
with `~p`: a JSON string is a binary (`<<"lazy">>`), an object a map
(`#{<<"a">> => 1}`), null the atom `null`, a float in Erlang's shortest form
(`6.0e4`). A term that would run past the line breaks after its commas, the
rest aligned inside the bracket, as io_lib_pretty does.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

# A line holds a flat term that ends by this column (as probed on 3.10.8).
_LAST_COLUMN = 78


class Charlist(str):
    """An Erlang string (a list of characters): printed "in quotes", not as a binary."""


def _float(value: float) -> str:
    """Erlang's shortest round-trip float text: the shorter of fixed and scientific."""
    sign, digit_tuple, exponent = Decimal(repr(value)).as_tuple()
    assert isinstance(exponent, int)  # finite: JSON has no inf or nan
    digits = "".join(map(str, digit_tuple)).lstrip("0") or "0"
    point = len(digit_tuple) + exponent - (len(digit_tuple) - len("".join(map(str, digit_tuple)).lstrip("0")))
    if digits == "0":
        point = 1
    digits = digits.rstrip("0") or "0"
    minus = "-" if sign else ""
    sci = f"{minus}{digits[0]}.{digits[1:] or '0'}e{point - 1}"
    if point <= 0:
        fixed = f"{minus}0.{'0' * -point}{digits}"
    elif point >= len(digits):
        fixed = f"{minus}{digits}{'0' * (point - len(digits))}.0"
    else:
        fixed = f"{minus}{digits[:point]}.{digits[point:]}"
    return fixed if len(fixed) <= len(sci) else sci


def _printable(data: bytes) -> bool:
    return all(32 <= b <= 126 or 160 <= b <= 255 or b in (8, 9, 10, 11, 12, 13, 27) for b in data)


_ESCAPES = {ord('"'): '\\"', ord("\\"): "\\\\", 8: "\\b", 9: "\\t", 10: "\\n", 11: "\\v",
            12: "\\f", 13: "\\r", 27: "\\e"}


def _quoted(text: str) -> str:
    return '"' + "".join(_ESCAPES.get(ord(c), c) for c in text) + '"'


def _binary(value: str) -> str:
    data = value.encode("utf-8")
    if _printable(data):
        # ~p prints the bytes one character each; the reply body turns those back
        # into the same bytes, so a client reads the UTF-8 text it sent.
        return "<<" + _quoted(value) + ">>"
    return "<<" + ",".join(str(b) for b in data) + ">>"


def _items(value: Any) -> tuple[str, str, list[Any]] | None:
    """(open, close, elements) of a compound term, None for a leaf."""
    if isinstance(value, tuple):
        return "{", "}", list(value)
    if isinstance(value, list):
        return "[", "]", value
    return None


def flat(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, Charlist):
        return _quoted(value)
    if isinstance(value, str):
        return _binary(value)
    if isinstance(value, Mapping):
        # Small maps print in key order (binaries compare bytewise).
        keys = sorted(value, key=lambda k: str(k).encode("utf-8"))
        return "#{" + ",".join(f"{flat(str(k))} => {flat(value[k])}" for k in keys) + "}"
    compound = _items(value)
    if compound is not None:
        open_, close, elements = compound
        return open_ + ",".join(flat(e) for e in elements) + close
    return str(value)


def pretty(value: Any, column: int = 0) -> str:
    """`value` as ~p prints it when it starts at `column` of its line."""
    text = flat(value)
    compound = _items(value)
    if compound is None or column + len(text) <= _LAST_COLUMN:
        return text
    open_, close, elements = compound
    inner = column + 1
    parts = [pretty(e, inner) for e in elements]
    return open_ + (",\n" + " " * inner).join(parts) + close


def format_error(template: str, *values: Any) -> str:
    """A RabbitMQ error format with `~p` and `~s` directives filled in."""
    out = ""
    pieces = iter(values)
    i = 0
    while i < len(template):
        if template.startswith("~p", i):
            line_start = out.rfind("\n") + 1
            out += pretty(next(pieces), len(out) - line_start)
            i += 2
        elif template.startswith("~s", i):
            out += str(next(pieces))
            i += 2
        else:
            out += template[i]
            i += 1
    return out
