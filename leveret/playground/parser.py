"""Parse route files (`grammar.lark`) into statements, with errors that point
at the line and column and say what to do.

Parsing happens in two steps: lark builds a tree (LALR, contextual lexer), and
`_Build` turns it into frozen statement values, translating friendly option
names (`ttl=30s`, `dlx=retry`) into the AMQP arguments the broker takes
(`x-message-ttl: 30000`, `x-dead-letter-exchange: "retry"`). Unknown options
are refused here, with a suggestion, so a typo never silently becomes an
argument the broker ignores.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Literal

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import (
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)
from lark.tree import Meta

from leveret.exchanges.registry import REGISTRY

# ------------------------------------------------------------------ values


@dataclass(frozen=True, slots=True)
class Duration:
    """A time literal (`500ms`, `30s`, `5m`, `1h`, `1d`), kept with its text."""

    ms: int
    text: str


@dataclass(frozen=True, slots=True)
class Location:
    line: int
    column: int
    source: str  # the statement's first line, stripped


UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration(text: str) -> Duration:
    unit = "ms" if text.endswith("ms") else text[-1]
    number = float(text[: -len(unit)])
    return Duration(round(number * UNITS_MS[unit]), text)


# -------------------------------------------------------------- statements


@dataclass(frozen=True, slots=True, kw_only=True)
class Statement:
    at: Location


@dataclass(frozen=True, slots=True, kw_only=True)
class DeclareExchange(Statement):
    name: str
    type: str
    durable: bool = False
    auto_delete: bool = False
    internal: bool = False
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeclareQueue(Statement):
    name: str
    durable: bool = False
    exclusive: bool = False
    auto_delete: bool = False
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Bind(Statement):
    source: str
    destination: str
    # None: a queue if one has that name, else an exchange.
    destination_kind: Literal["queue", "exchange"] | None = None
    binding_key: str | None = None  # None: not written (the runner insists for direct/topic)
    arguments: Mapping[str, Any] = field(default_factory=dict)
    unbind: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Publish(Statement):
    exchange: str
    routing_key: str
    body: str = ""
    headers: Mapping[str, Any] = field(default_factory=dict)
    properties: Mapping[str, Any] = field(default_factory=dict)  # pamqp Basic.Properties keywords
    mandatory: bool = False
    repeat: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Wait(Statement):
    ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Get(Statement):
    queue: str
    no_ack: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Settle(Statement):
    action: Literal["ack", "reject", "nack"]
    queue: str | None = None
    requeue: bool = False
    all: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Delete(Statement):
    kind: Literal["queue", "exchange"]
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Purge(Statement):
    queue: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Load(Statement):
    path: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Explain(Statement):
    exchange: str
    routing_key: str
    headers: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Show(Statement):
    what: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Expect(Statement):
    """One expectation; `check` names it, the other fields are its operands."""

    check: str
    queue: str | None = None
    text: str | None = None
    number: int | None = None
    names: tuple[str, ...] = ()
    field_name: str | None = None
    value: Any = None
    filters: tuple[tuple[str, str], ...] = ()


# ------------------------------------------------------------------ errors


class PlaygroundError(Exception):
    """A problem in a route file, located at a line and column, with a hint."""

    def __init__(
        self,
        message: str,
        *,
        line: int,
        column: int,
        source_line: str = "",
        hint: str | None = None,
        filename: str | None = None,
        kind: str = "error",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column
        self.source_line = source_line
        self.hint = hint
        self.filename = filename
        self.kind = kind

    @property
    def where(self) -> str:
        return f"{self.filename or '<input>'}:{self.line}:{self.column}"

    def __str__(self) -> str:
        lines = [f"{self.where}: {self.kind}: {self.message}"]
        if self.source_line:
            gutter = f"{self.line:>4} | "
            lines.append(gutter + self.source_line.rstrip("\n"))
            caret_at = _display_width(self.source_line[: max(self.column - 1, 0)])
            lines.append(" " * (len(gutter) - 2) + "| " + " " * caret_at + "^")
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)


def _display_width(text: str) -> int:
    return len(text.expandtabs(4))


# ---------------------------------------------------------------- options

QUEUE_FLAGS = {"durable", "exclusive", "auto-delete"}
QUEUE_OPTIONS: dict[str, tuple[str, str]] = {
    # friendly name: (argument, kind); kind says how the value is read
    "ttl": ("x-message-ttl", "ms"),
    "message-ttl": ("x-message-ttl", "ms"),
    "expires": ("x-expires", "ms"),
    "dlx": ("x-dead-letter-exchange", "text"),
    "dead-letter-exchange": ("x-dead-letter-exchange", "text"),
    "dlk": ("x-dead-letter-routing-key", "text"),
    "dl-routing-key": ("x-dead-letter-routing-key", "text"),
    "dead-letter-routing-key": ("x-dead-letter-routing-key", "text"),
    "max-length": ("x-max-length", "int"),
    "max-length-bytes": ("x-max-length-bytes", "int"),
    "overflow": ("x-overflow", "text"),
    "max-priority": ("x-max-priority", "int"),
    "priority": ("x-max-priority", "int"),
    "delivery-limit": ("x-delivery-limit", "int"),
    "queue-type": ("x-queue-type", "text"),
    "type": ("x-queue-type", "text"),
    "single-active-consumer": ("x-single-active-consumer", "bool"),
    # streams (queue-type=stream)
    "max-age": ("x-max-age", "text"),
    "segment-size": ("x-stream-max-segment-size-bytes", "int"),
    "deduplication": ("x-message-deduplication", "bool"),
    "message-deduplication": ("x-message-deduplication", "bool"),
}
QUEUE_OPTIONS_HELP = (
    "durable, exclusive, auto-delete, ttl=, expires=, dlx=, dlk=, max-length=, "
    "max-length-bytes=, overflow=, max-priority=, delivery-limit=, queue-type=, "
    "single-active-consumer, deduplication, max-age= and segment-size= (streams), and raw x-...= arguments"
)
EXCHANGE_FLAGS = {"durable", "auto-delete", "internal"}
EXCHANGE_OPTIONS: dict[str, tuple[str, str]] = {
    "alternate-exchange": ("alternate-exchange", "text"),
    "ae": ("alternate-exchange", "text"),
    # the plugin exchange types' arguments
    "delayed-type": ("x-delayed-type", "text"),
    "hash-header": ("hash-header", "text"),
    "hash-property": ("hash-property", "text"),
    "cache-size": ("x-cache-size", "int"),
    "cache-ttl": ("x-cache-ttl", "ms"),
    "cache-persistence": ("x-cache-persistence", "text"),
}
PUBLISH_FLAGS = {"mandatory", "persistent", "transient"}
PUBLISH_PROPERTIES: dict[str, tuple[str, str]] = {
    "expiration": ("expiration", "expiration"),
    "priority": ("priority", "int"),
    "message-id": ("message_id", "text"),
    "correlation-id": ("correlation_id", "text"),
    "reply-to": ("reply_to", "text"),
    "content-type": ("content_type", "text"),
    "content-encoding": ("content_encoding", "text"),
    "type": ("message_type", "text"),
    "app-id": ("app_id", "text"),
    "user-id": ("user_id", "text"),
    "delivery-mode": ("delivery_mode", "int"),
    "timestamp": ("timestamp", "int"),
}
# Sugar for the CC and BCC headers (extra routing keys).
PUBLISH_HEADER_SUGAR = {"cc": "CC", "bcc": "BCC"}
# Sugar for the plugin headers: x-delay and x-cache-ttl in ms, the deduplication key.
PUBLISH_HEADERS: dict[str, tuple[str, str]] = {
    "delay": ("x-delay", "ms"),
    "dedup": ("x-deduplication-header", "value"),
    "deduplication-header": ("x-deduplication-header", "value"),
    "cache-ttl": ("x-cache-ttl", "ms"),
}
PROPERTY_NAMES = {friendly: prop for friendly, (prop, _) in PUBLISH_PROPERTIES.items()}

EXCHANGE_TYPES = tuple(REGISTRY)
STATEMENTS = (
    "exchange", "queue", "bind", "unbind", "publish", "wait", "get", "ack", "reject",
    "nack", "delete", "purge", "load", "explain", "show", "expect",
)


def _normal(name: str) -> str:
    return name.replace("_", "-").lower()


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'? " if close else ""


# ---------------------------------------------------------------- the tree


@dataclass(slots=True)
class _Option:
    name: str
    token: Token
    value: Any
    has_value: bool


class _Build(Transformer[Token, list[Statement]]):
    """Tree -> statements. Raises PlaygroundError (wrapped by lark in VisitError)."""

    def __init__(self, text: str, filename: str | None) -> None:
        super().__init__()
        self.lines = text.splitlines()
        self.filename = filename

    # -- helpers
    def _at(self, meta: Meta) -> Location:
        source = self.lines[meta.line - 1].strip() if 0 < meta.line <= len(self.lines) else ""
        return Location(meta.line, meta.column, source)

    def _error(self, token: Token | Meta, message: str, hint: str | None = None) -> PlaygroundError:
        line = token.line or 1
        column = token.column or 1
        source = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        return PlaygroundError(
            message, line=line, column=column, source_line=source, hint=hint, filename=self.filename
        )

    def _convert(self, option: _Option, kind: str, what: str) -> Any:
        value = option.value
        if kind == "bool":
            if not option.has_value:
                return True
            if isinstance(value, bool):
                return value
        elif not option.has_value:
            raise self._error(option.token, f"{what} option '{option.name}' needs a value",
                              f"write {option.name}=VALUE")
        elif kind == "ms":
            if isinstance(value, Duration):
                return value.ms
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            raise self._error(option.token, f"'{option.name}' takes a duration",
                              "write e.g. 500ms, 30s, 5m or a number of milliseconds")
        elif kind == "int":
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            raise self._error(option.token, f"'{option.name}' takes a whole number")
        elif kind == "text":
            if isinstance(value, str):
                return value
            raise self._error(option.token, f"'{option.name}' takes a name or a \"string\"")
        elif kind == "expiration":
            # The expiration property is milliseconds, as a string on the wire.
            if isinstance(value, Duration):
                return str(value.ms)
            if isinstance(value, int) and not isinstance(value, bool):
                return str(value)
            if isinstance(value, str):
                return value
            raise self._error(option.token, "'expiration' takes a duration such as 30s")
        raise self._error(option.token, f"'{option.name}' takes a {kind}")

    def _raw(self, option: _Option) -> Any:
        value = option.value if option.has_value else True
        return value.ms if isinstance(value, Duration) else value

    # -- values
    def string(self, children: list[Token]) -> str:
        return _unquote(children[0])

    def word(self, children: list[Token]) -> Any:
        text = str(children[0])
        return {"true": True, "false": False, "null": None}.get(text, text)

    def integer(self, children: list[Token]) -> int:
        return int(children[0])

    def real(self, children: list[Token]) -> float:
        return float(children[0])

    def duration(self, children: list[Token]) -> Duration:
        return parse_duration(str(children[0]))

    def table(self, children: list[Any]) -> dict[str, Any]:
        return dict(item for item in children if item is not None)

    def table_item(self, children: list[Any]) -> tuple[str, Any]:
        name, value = children
        return str(name), _plain(value)

    def array(self, children: list[Any]) -> list[Any]:
        return [_plain(v) for v in children if v is not None] if children != [None] else []

    def name(self, children: list[Token]) -> str:
        token = children[0]
        return _unquote(token) if token.type == "STRING" else str(token)

    key = name

    def field_name(self, children: list[Token]) -> Token:
        token = children[0]
        text = _unquote(token) if token.type == "STRING" else str(token)
        return Token(token.type, text, token.start_pos, token.line, token.column)

    def option(self, children: list[Any]) -> _Option:
        token = children[0]
        if len(children) == 1:
            return _Option(str(token), token, None, False)
        return _Option(str(token), token, children[1], True)

    def pair(self, children: list[Any]) -> tuple[str, Any]:
        return str(children[0]), _plain(children[1])

    def where(self, children: list[tuple[str, Any]]) -> dict[str, Any]:
        return dict(children)

    # -- topology
    @v_args(meta=True)
    def exchange(self, meta: Meta, children: list[Any]) -> DeclareExchange:
        name, type_token, *options = children
        exchange_type = str(type_token)
        if exchange_type not in EXCHANGE_TYPES:
            raise self._error(
                type_token, f"unknown exchange type '{exchange_type}'",
                _suggest(exchange_type, list(EXCHANGE_TYPES)) + "types: " + ", ".join(EXCHANGE_TYPES),
            )
        flags: dict[str, bool] = {}
        arguments: dict[str, Any] = {}
        for option in options:
            normal = _normal(option.name)
            if normal in EXCHANGE_FLAGS and not option.has_value:
                flags[normal] = True
            elif normal in EXCHANGE_OPTIONS:
                argument, kind = EXCHANGE_OPTIONS[normal]
                arguments[argument] = self._convert(option, kind, "exchange")
            elif option.name.startswith("x-"):
                arguments[option.name] = self._raw(option)
            else:
                known = sorted(EXCHANGE_FLAGS | set(EXCHANGE_OPTIONS))
                raise self._error(
                    option.token, f"unknown exchange option '{option.name}'",
                    _suggest(normal, known) + "exchange options: " + ", ".join(known)
                    + " (and raw x-... arguments)",
                )
        return DeclareExchange(
            at=self._at(meta), name=name, type=exchange_type, durable=flags.get("durable", False),
            auto_delete=flags.get("auto-delete", False), internal=flags.get("internal", False),
            arguments=arguments,
        )

    @v_args(meta=True)
    def queue(self, meta: Meta, children: list[Any]) -> DeclareQueue:
        name, *options = children
        flags: dict[str, bool] = {}
        arguments: dict[str, Any] = {}
        for option in options:
            normal = _normal(option.name)
            if normal in QUEUE_FLAGS and not option.has_value:
                flags[normal] = True
            elif normal in QUEUE_OPTIONS:
                argument, kind = QUEUE_OPTIONS[normal]
                arguments[argument] = self._convert(option, kind, "queue")
            elif option.name.startswith("x-"):
                arguments[option.name] = self._raw(option)
            else:
                known = sorted(QUEUE_FLAGS | set(QUEUE_OPTIONS))
                raise self._error(
                    option.token, f"unknown queue option '{option.name}'",
                    _suggest(normal, known) + "queue options: " + QUEUE_OPTIONS_HELP,
                )
        return DeclareQueue(
            at=self._at(meta), name=name, durable=flags.get("durable", False),
            exclusive=flags.get("exclusive", False), auto_delete=flags.get("auto-delete", False),
            arguments=arguments,
        )

    def queue_destination(self, children: list[str]) -> tuple[str | None, str]:
        return "queue", children[0]

    def exchange_destination(self, children: list[str]) -> tuple[str | None, str]:
        return "exchange", children[0]

    def any_destination(self, children: list[str]) -> tuple[str | None, str]:
        return None, children[0]

    def _bind(self, meta: Meta, children: list[Any], unbind: bool) -> Bind:
        source, (kind, destination), *rest = children
        binding_key: str | None = None
        arguments: dict[str, Any] = {}
        for item in rest:
            if isinstance(item, dict):
                arguments = item
            else:
                binding_key = item
        return Bind(
            at=self._at(meta), source=source, destination=destination, destination_kind=kind,
            binding_key=binding_key, arguments=arguments, unbind=unbind,
        )

    @v_args(meta=True)
    def bind(self, meta: Meta, children: list[Any]) -> Bind:
        return self._bind(meta, children, unbind=False)

    @v_args(meta=True)
    def unbind(self, meta: Meta, children: list[Any]) -> Bind:
        return self._bind(meta, children, unbind=True)

    @v_args(meta=True)
    def delete_queue(self, meta: Meta, children: list[str]) -> Delete:
        return Delete(at=self._at(meta), kind="queue", name=children[0])

    @v_args(meta=True)
    def delete_exchange(self, meta: Meta, children: list[str]) -> Delete:
        return Delete(at=self._at(meta), kind="exchange", name=children[0])

    @v_args(meta=True)
    def purge(self, meta: Meta, children: list[str]) -> Purge:
        return Purge(at=self._at(meta), queue=children[0])

    @v_args(meta=True)
    def load(self, meta: Meta, children: list[Token]) -> Load:
        return Load(at=self._at(meta), path=_unquote(children[0]))

    # -- messages
    def body(self, children: list[Token]) -> tuple[str, str]:
        return ("body", _unquote(children[0]))

    def headers(self, children: list[Any]) -> tuple[str, Any]:
        return ("headers", children[0])

    def repeat(self, children: list[Token]) -> tuple[str, Any]:
        count = int(children[0])
        if count < 1:
            raise self._error(children[0], "repeat takes a count of at least 1")
        return ("repeat", count)

    @v_args(meta=True)
    def publish(self, meta: Meta, children: list[Any]) -> Publish:
        exchange, routing_key, *rest = children
        body = ""
        headers: dict[str, Any] = {}
        properties: dict[str, Any] = {}
        mandatory = False
        repeat = 1
        bare_body: str | None = None
        for index, item in enumerate(rest):
            if (
                index == 0 and isinstance(item, _Option) and not item.has_value
                and _normal(item.name) not in PUBLISH_FLAGS
            ):
                body = bare_body = item.name  # a one-word body needs no quotes
                continue
            if isinstance(item, tuple):
                tag, value = item
                if tag == "body":
                    body = value
                elif tag == "headers":
                    headers.update(value)
                else:
                    repeat = value
                continue
            option: _Option = item
            normal = _normal(option.name)
            if normal == "mandatory" and not option.has_value:
                mandatory = True
            elif normal == "persistent" and not option.has_value:
                properties["delivery_mode"] = 2
            elif normal == "transient" and not option.has_value:
                properties["delivery_mode"] = 1
            elif normal in PUBLISH_PROPERTIES:
                prop, kind = PUBLISH_PROPERTIES[normal]
                properties[prop] = self._convert(option, kind, "publish")
            elif normal in PUBLISH_HEADER_SUGAR and option.has_value:
                value = option.value
                headers[PUBLISH_HEADER_SUGAR[normal]] = value if isinstance(value, list) else [value]
            elif normal in PUBLISH_HEADERS:
                header, kind = PUBLISH_HEADERS[normal]
                headers[header] = (
                    self._raw(option) if kind == "value" else self._convert(option, kind, "publish")
                )
            else:
                known = sorted(
                    PUBLISH_FLAGS | set(PUBLISH_PROPERTIES) | set(PUBLISH_HEADER_SUGAR) | set(PUBLISH_HEADERS)
                )
                hint = _suggest(normal, known) + "publish options: " + ", ".join(known)
                hint += ", headers {...}, repeat N"
                if not option.has_value and bare_body is not None and index == 1:
                    hint = f'quote a body with spaces: "{bare_body} {option.name}"; or ' + hint
                raise self._error(option.token, f"unknown publish option '{option.name}'", hint)
        return Publish(
            at=self._at(meta), exchange=exchange, routing_key=routing_key, body=body,
            headers=headers, properties=properties, mandatory=mandatory, repeat=repeat,
        )

    @v_args(meta=True)
    def wait(self, meta: Meta, children: list[Token]) -> Wait:
        return Wait(at=self._at(meta), ms=parse_duration(str(children[0])).ms)

    @v_args(meta=True)
    def get(self, meta: Meta, children: list[Any]) -> Get:
        return Get(at=self._at(meta), queue=children[0], no_ack=len(children) > 1)

    def _settle(self, meta: Meta, action: Literal["ack", "reject", "nack"], children: list[Any]) -> Settle:
        queue: str | None = None
        requeue = every = False
        for child in children:
            if isinstance(child, Token) and child.type == "REQUEUE":
                requeue = True
            elif isinstance(child, Token) and child.type == "ALL":
                every = True
            else:
                queue = child
        return Settle(at=self._at(meta), action=action, queue=queue, requeue=requeue, all=every)

    @v_args(meta=True)
    def ack(self, meta: Meta, children: list[Any]) -> Settle:
        return self._settle(meta, "ack", children)

    @v_args(meta=True)
    def reject(self, meta: Meta, children: list[Any]) -> Settle:
        return self._settle(meta, "reject", children)

    @v_args(meta=True)
    def nack(self, meta: Meta, children: list[Any]) -> Settle:
        return self._settle(meta, "nack", children)

    @v_args(meta=True)
    def explain(self, meta: Meta, children: list[Any]) -> Explain:
        exchange, routing_key, *rest = children
        return Explain(at=self._at(meta), exchange=exchange, routing_key=routing_key,
                       headers=rest[0] if rest else {})

    @v_args(meta=True)
    def show(self, meta: Meta, children: list[str]) -> Show:
        return Show(at=self._at(meta), what=children[0] if children else None)

    # -- expectations
    def queue_ref(self, children: list[str]) -> str:
        return children[0]

    @v_args(meta=True)
    def expect(self, meta: Meta, children: list[Expect]) -> Expect:
        expectation = children[0]
        return Expect(
            at=self._at(meta), check=expectation.check, queue=expectation.queue,
            text=expectation.text, number=expectation.number, names=expectation.names,
            field_name=expectation.field_name, value=expectation.value, filters=expectation.filters,
        )

    _NOWHERE = Location(0, 0, "")

    def _check(self, check: str, **fields: Any) -> Expect:
        return Expect(at=self._NOWHERE, check=check, **fields)

    def expect_got(self, c: list[Any]) -> Expect:
        return self._check("got", queue=c[0], text=_unquote(c[1]))

    def expect_got_matching(self, c: list[Any]) -> Expect:
        return self._check("got-matching", queue=c[0], text=_unquote(c[1]))

    def expect_never_got(self, c: list[Any]) -> Expect:
        return self._check("never-got", queue=c[0], text=_unquote(c[1]))

    def expect_count(self, c: list[Any]) -> Expect:
        return self._check("count", queue=c[0], number=int(c[1]))

    def expect_unacked(self, c: list[Any]) -> Expect:
        return self._check("unacked", queue=c[0], number=int(c[1]))

    def expect_empty(self, c: list[Any]) -> Expect:
        return self._check("count", queue=c[0], number=0)

    def expect_deleted(self, c: list[Any]) -> Expect:
        return self._check("deleted", queue=c[0])

    def expect_exists(self, c: list[Any]) -> Expect:
        return self._check("exists", queue=c[0])

    def expect_unroutable(self, c: list[Any]) -> Expect:
        return self._check("unroutable")

    def expect_routed(self, c: list[Any]) -> Expect:
        return self._check("routed")

    def expect_routed_to(self, c: list[Any]) -> Expect:
        return self._check("routed-to", names=tuple(c))

    def expect_returned(self, c: list[Any]) -> Expect:
        return self._check("returned")

    def expect_nacked(self, c: list[Any]) -> Expect:
        return self._check("nacked")

    def expect_x_death(self, c: list[Any]) -> Expect:
        count, *filters = c
        return self._check("x-death", number=int(count), filters=tuple(filters))

    def reason_filter(self, c: list[Token]) -> tuple[str, str]:
        return ("reason", str(c[0]))

    def queue_filter(self, c: list[str]) -> tuple[str, str]:
        return ("queue", c[0])

    def exchange_filter(self, c: list[str]) -> tuple[str, str]:
        return ("exchange", c[0])

    def expect_body(self, c: list[Any]) -> Expect:
        return self._check("body", text=_unquote(c[0]))

    def expect_header(self, c: list[Any]) -> Expect:
        return self._check("header", field_name=str(c[0]), value=_plain(c[1]))

    def expect_property(self, c: list[Any]) -> Expect:
        name = str(c[0])
        prop = PROPERTY_NAMES.get(_normal(name))
        if prop is None:
            known = sorted(PROPERTY_NAMES)
            raise self._error(c[0], f"unknown property '{name}'",
                              _suggest(_normal(name), known) + "properties: " + ", ".join(known))
        value = _plain(c[1])
        if prop == "expiration" and not isinstance(value, str):
            value = str(value)
        return self._check("property", field_name=prop, value=value)

    def expect_redelivered(self, c: list[Any]) -> Expect:
        return self._check("redelivered")

    def expect_not_redelivered(self, c: list[Any]) -> Expect:
        return self._check("not-redelivered")

    def expect_no_message(self, c: list[Any]) -> Expect:
        return self._check("no-message")

    def expect_error(self, c: list[Token]) -> Expect:
        if not c:
            return self._check("error")
        token = c[0]
        if token.type == "INT":
            return self._check("error", number=int(token))
        return self._check("error", text=_unquote(token))

    def start(self, children: list[Statement]) -> list[Statement]:
        return list(children)


def _unquote(token: Token | str) -> str:
    text = str(token)
    if not (len(text) >= 2 and text[0] == '"' and text[-1] == '"'):
        return text
    out: list[str] = []
    chars = iter(text[1:-1])
    escapes = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "0": "\0"}
    for char in chars:
        if char == "\\":
            nxt = next(chars, "")
            out.append(escapes.get(nxt, "\\" + nxt))
        else:
            out.append(char)
    return "".join(out)


def _plain(value: Any) -> Any:
    """A value as the broker sees it: durations inside tables become their text."""
    if isinstance(value, Duration):
        return value.text
    return value


# --------------------------------------------------------------- the parser


@cache
def _lark() -> Lark:
    grammar = resources.files("leveret.playground").joinpath("grammar.lark").read_text()
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True)


# Broken inputs and what to tell the person who wrote them. lark matches the
# parser state of an error against these (UnexpectedInput.match_examples).
_EXAMPLES: dict[str, list[str]] = {
    "write `bind SOURCE -> DESTINATION [KEY] [where k=v ...]`": [
        "bind logs q",
        "bind logs q \"k\"",
        "unbind logs q",
    ],
    f"give the exchange a type: {', '.join(EXCHANGE_TYPES[:-1])} or {EXCHANGE_TYPES[-1]}": [
        "exchange logs\n",
        "exchange logs",
    ],
    "write `publish EXCHANGE ROUTING_KEY [\"body\"] [options]`; "
    "use \"\" for the default exchange or an empty key, and quote keys that start with # "
    "(a bare # starts a comment)": [
        "publish logs\n",
        "publish logs",
        "publish\n",
        "publish",
    ],
    "give a binding key after the destination, or `where k=v` arguments; "
    "quote keys that start with # (a bare # starts a comment)": [
        "bind a -> b where\n",
    ],
    "wait takes a duration with a unit: 500ms, 30s, 5m, 1h": [
        "wait 30\n",
        "wait 30",
        "wait\n",
        "wait",
        "wait x",
    ],
    "write `expect QUEUE has N messages`": [
        "expect q has 2\n",
        "expect q has 2",
        "expect q has\n",
    ],
    "after `expect QUEUE` comes: got \"body\", got matching \"glob\", never got \"body\", "
    "has N messages, has N unacked, is empty, is deleted, exists": [
        "expect q\n",
        "expect q",
        "expect q foo",
    ],
    "expectations: QUEUE got/has/is/exists ..., unroutable, routed [to Q, ...], returned, "
    "nacked, x-death count N, body \"..\", header K=V, property K=V, redelivered, "
    "not redelivered, no message, error [CODE]; write `expect queue NAME ...` when the "
    "queue's name is one of these words": [
        "expect\n",
        "expect",
        "expect error got \"x\"",
        "expect body got \"x\"",
        "expect routed got \"x\"",
        "expect header got \"x\"",
        "expect redelivered got \"x\"",
        "expect 3",
    ],
    "write `expect x-death count N [reason R] [queue Q] [exchange X]`": [
        "expect x-death 3",
        "expect x-death\n",
        "expect x-death count\n",
        "expect x-death count 3 reason\n",
    ],
    "options are written name=value, e.g. ttl=30s": [
        "queue q ttl 30s",
        "queue q ttl 30",
        "exchange x topic ae \"y\"",
    ],
    "close the table with '}' and separate entries with commas: {k: v, k2: v2}": [
        "publish x k headers {a: 1",
        "publish x k headers {a: 1 b: 2}",
    ],
    "statements: " + ", ".join(STATEMENTS): [
        "foo",
        "declare queue q",
        "q",
        "queue q\nfoo",
        "queue q\nq",
        "queue q\n\"q\"",
    ],
}


def parse(text: str, filename: str | None = None) -> list[Statement]:
    """Parse a route file; raise PlaygroundError pointing at the first problem."""
    parser = _lark()
    try:
        tree = parser.parse(text)
    except UnexpectedInput as error:
        raise _syntax_error(error, text, filename) from None
    try:
        statements: list[Statement] = _Build(text, filename).transform(tree)
    except VisitError as error:
        if isinstance(error.orig_exc, PlaygroundError):
            raise error.orig_exc from None
        raise
    return statements


def _syntax_error(error: UnexpectedInput, text: str, filename: str | None) -> PlaygroundError:
    lines = text.splitlines()
    at_end = isinstance(error, UnexpectedEOF) or (
        isinstance(error, UnexpectedToken) and error.token.type == "$END"
    )
    if at_end or not error.line or error.line < 1:
        # Point just past the last thing written, where the missing part goes.
        line = len(lines) or 1
        while line > 1 and not lines[line - 1].strip():
            line -= 1
        column = len(lines[line - 1].rstrip()) + 2 if lines else 1
    else:
        line, column = error.line, error.column
    source = lines[line - 1] if 0 < line <= len(lines) else ""
    hint: str | None = None
    if isinstance(error, UnexpectedCharacters):
        pos = error.pos_in_stream or 0
        char = text[pos] if pos < len(text) else ""
        message = f"unexpected character {char!r}"
        hint = _character_hint(char, text, pos)
    elif isinstance(error, UnexpectedToken):
        message = f"unexpected {_describe_token(error.token)}"
        if error.token.type == "$END":
            message = "unexpected end of input"
    elif isinstance(error, UnexpectedEOF):
        message = "unexpected end of input"
    else:
        message = "syntax error"
    if hint is None:
        hint = _example_hint(error, source)
    if hint is None:
        expected = _expected(error)
        if expected:
            hint = "expected " + _or_list(expected)
    return PlaygroundError(message, line=line, column=column, source_line=source, hint=hint,
                           filename=filename, kind="syntax error")


def _example_hint(error: UnexpectedInput, line: str) -> str | None:
    """The hint of the broken example that fails the same way. lark compares
    whole parser states, so the failing line is parsed again on its own."""
    parse_fn: Callable[[str], Tree[Token]] = _lark().parse
    try:
        parse_fn(line)
    except UnexpectedInput as alone:
        error = alone
    else:
        return None
    try:
        label = error.match_examples(parse_fn, _EXAMPLES, use_accepts=True)
    except Exception:  # noqa: BLE001  a hint is best-effort; never hide the real error
        return None
    return label if isinstance(label, str) else None


def _character_hint(char: str, text: str, pos: int) -> str:
    if char == '"':
        return "close the string with a double quote on the same line"
    if char.isdigit():
        return "quote names and keys that start with a digit: \"2fa.codes\"; durations need a unit: 30s"
    if char == "-" and text[pos: pos + 2] == "->":
        return "an arrow belongs in `bind SOURCE -> DESTINATION`"
    if char == "'":
        return "strings use double quotes: \"like this\""
    return "quote names, keys and bodies that contain this character"


_TERMINAL_WORDS = {
    "WORD": "a name",
    "STRING": "a \"string\"",
    "INT": "a number",
    "FLOAT": "a number",
    "DURATION": "a duration (30s)",
    "_NL": "end of line",
    "$END": "end of input",
}


def _expected(error: UnexpectedInput) -> list[str]:
    names: set[str] = set()
    if isinstance(error, UnexpectedToken):
        names = set(error.accepts or error.expected)
    elif isinstance(error, UnexpectedCharacters):
        names = set(error.allowed or ())
    elif isinstance(error, UnexpectedEOF):
        names = set(error.expected)
    words: list[str] = []
    parser = _lark()
    for name in sorted(names):
        if name in _TERMINAL_WORDS:
            word = _TERMINAL_WORDS[name]
        else:
            try:
                pattern = parser.get_terminal(name).pattern
            except KeyError:
                continue
            word = f"'{pattern.value}'" if pattern.type == "str" else name.lower()
        if word not in words:
            words.append(word)
    return words


def _describe_token(token: Token) -> str:
    if token.type == "_NL":
        return "end of line"
    if token.type == "$END":
        return "end of input"
    return repr(str(token))


def _or_list(words: list[str]) -> str:
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]
