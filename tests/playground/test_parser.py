"""The route-file language: what parses into what, and errors a person can act on."""

from __future__ import annotations

import pytest

from leveret.playground.parser import (
    Bind,
    DeclareExchange,
    DeclareQueue,
    Expect,
    Explain,
    Get,
    Load,
    PlaygroundError,
    Publish,
    Settle,
    Show,
    Wait,
    parse,
)


def one(text: str) -> object:
    statements = parse(text)
    assert len(statements) == 1
    return statements[0]


# ------------------------------------------------------------------ topology


def test_exchange_of_every_type_with_flags_and_alternate_exchange() -> None:
    statements = parse(
        "exchange a direct\nexchange b fanout durable\n"
        "exchange c topic ae=unrouted internal\nexchange d headers auto-delete alternate-exchange=\"x y\"\n"
    )
    assert [(s.name, s.type) for s in statements if isinstance(s, DeclareExchange)] == [
        ("a", "direct"), ("b", "fanout"), ("c", "topic"), ("d", "headers"),
    ]
    b, c, d = statements[1:]
    assert isinstance(b, DeclareExchange) and b.durable and not b.internal
    assert isinstance(c, DeclareExchange) and c.internal and c.arguments == {"alternate-exchange": "unrouted"}
    assert isinstance(d, DeclareExchange) and d.auto_delete and d.arguments == {"alternate-exchange": "x y"}


def test_queue_friendly_options_become_x_arguments() -> None:
    queue = one(
        "queue jobs ttl=30s dlx=retry dlk=parking max-length=10 max-length-bytes=1024 "
        "overflow=reject-publish-dlx priority=9 expires=1m delivery-limit=3 "
        "queue-type=classic x-custom=\"v\" durable exclusive auto-delete"
    )
    assert isinstance(queue, DeclareQueue)
    assert queue.arguments == {
        "x-message-ttl": 30_000,
        "x-dead-letter-exchange": "retry",
        "x-dead-letter-routing-key": "parking",
        "x-max-length": 10,
        "x-max-length-bytes": 1024,
        "x-overflow": "reject-publish-dlx",
        "x-max-priority": 9,
        "x-expires": 60_000,
        "x-delivery-limit": 3,
        "x-queue-type": "classic",
        "x-custom": "v",
    }
    assert queue.durable and queue.exclusive and queue.auto_delete


@pytest.mark.parametrize(
    ("literal", "ms"),
    [("500ms", 500), ("30s", 30_000), ("1.5s", 1500), ("5m", 300_000), ("1h", 3_600_000), ("1d", 86_400_000), ("250", 250)],
)
def test_ttl_takes_durations_or_milliseconds(literal: str, ms: int) -> None:
    queue = one(f"queue q ttl={literal}")
    assert isinstance(queue, DeclareQueue)
    assert queue.arguments == {"x-message-ttl": ms}


def test_dead_letter_exchange_may_be_the_default_exchange() -> None:
    queue = one('queue q dlx="" dlk=other')
    assert isinstance(queue, DeclareQueue)
    assert queue.arguments == {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "other"}


def test_bindings_queue_exchange_and_inferred_destinations() -> None:
    a, b, c, d = parse(
        'bind logs -> errors "*.error"\n'
        "bind logs -> exchange audit logs.#\n"
        "bind logs -> queue q\n"
        "bind h -> q where x-match=any, format=pdf type=\"report\" size=3 ok=true v=null\n"
    )
    assert isinstance(a, Bind) and (a.destination_kind, a.destination, a.binding_key) == (None, "errors", "*.error")
    assert isinstance(b, Bind) and (b.destination_kind, b.binding_key) == ("exchange", "logs.#")
    assert isinstance(c, Bind) and (c.destination_kind, c.binding_key) == ("queue", None)
    assert isinstance(d, Bind) and d.arguments == {
        "x-match": "any", "format": "pdf", "type": "report", "size": 3, "ok": True, "v": None,
    }


def test_unbind() -> None:
    statement = one('unbind logs -> errors "*.error"')
    assert isinstance(statement, Bind) and statement.unbind


# ------------------------------------------------------------------ messages


def test_publish_with_headers_properties_body_and_mandatory() -> None:
    publish = one(
        'publish logs kern.error "disk full" mandatory persistent priority=5 expiration=30s '
        "message-id=m-1 correlation-id=c content-type=text/plain type=alert app-id=svc "
        'headers {a: 1, "b c": [1, "x", true], d: {e: null}, f: 1.5} cc=[x.y, "z"] bcc=w repeat 3'
    )
    assert isinstance(publish, Publish)
    assert (publish.exchange, publish.routing_key, publish.body) == ("logs", "kern.error", "disk full")
    assert publish.mandatory and publish.repeat == 3
    assert publish.properties == {
        "delivery_mode": 2, "priority": 5, "expiration": "30000", "message_id": "m-1",
        "correlation_id": "c", "content_type": "text/plain", "message_type": "alert", "app_id": "svc",
    }
    assert publish.headers == {
        "a": 1, "b c": [1, "x", True], "d": {"e": None}, "f": 1.5, "CC": ["x.y", "z"], "BCC": ["w"],
    }


def test_publish_to_the_default_exchange_with_escapes() -> None:
    publish = one(r'publish "" jobs "line\n\"quoted\""')
    assert isinstance(publish, Publish)
    assert (publish.exchange, publish.routing_key, publish.body) == ("", "jobs", 'line\n"quoted"')


def test_consumer_actions() -> None:
    statements = parse("get q\nget q no-ack\nack\nack q all\nreject requeue\nreject q\nnack q requeue all\nnack")
    gets = [s for s in statements if isinstance(s, Get)]
    assert [(g.queue, g.no_ack) for g in gets] == [("q", False), ("q", True)]
    settles = [(s.action, s.queue, s.requeue, s.all) for s in statements if isinstance(s, Settle)]
    assert settles == [
        ("ack", None, False, False), ("ack", "q", False, True), ("reject", None, True, False),
        ("reject", "q", False, False), ("nack", "q", True, True), ("nack", None, False, False),
    ]


def test_wait_units_and_separators_and_continuations() -> None:
    statements = parse("wait 500ms; wait 30s\n\n  # just a comment\nwait \\\n  2m  # trailing comment\n")
    assert [s.ms for s in statements if isinstance(s, Wait)] == [500, 30_000, 120_000]


# --------------------------------------------------------------- expectations


@pytest.mark.parametrize(
    ("text", "check", "fields"),
    [
        ('expect q.errors got "disk full"', "got", {"queue": "q.errors", "text": "disk full"}),
        ('expect q got matching "disk*"', "got-matching", {"queue": "q", "text": "disk*"}),
        ('expect q never got "x"', "never-got", {"queue": "q", "text": "x"}),
        ("expect queue q has 2 messages", "count", {"queue": "q", "number": 2}),
        ("expect q has 1 message", "count", {"queue": "q", "number": 1}),
        ("expect q has 1 unacked", "unacked", {"queue": "q", "number": 1}),
        ("expect q is empty", "count", {"queue": "q", "number": 0}),
        ("expect queue q is deleted", "deleted", {"queue": "q"}),
        ("expect queue q exists", "exists", {"queue": "q"}),
        ("expect unroutable", "unroutable", {}),
        ("expect routed", "routed", {}),
        ("expect routed to a, b.c", "routed-to", {"names": ("a", "b.c")}),
        ("expect returned", "returned", {}),
        ("expect nacked", "nacked", {}),
        ("expect x-death count 3", "x-death", {"number": 3}),
        ("expect x-death count 1 reason expired queue q exchange x", "x-death",
         {"number": 1, "filters": (("reason", "expired"), ("queue", "q"), ("exchange", "x"))}),
        ('expect body "b"', "body", {"text": "b"}),
        ('expect header x-first-death-reason = "expired"', "header",
         {"field_name": "x-first-death-reason", "value": "expired"}),
        ("expect property message-id = m1", "property", {"field_name": "message_id", "value": "m1"}),
        ("expect property priority = 5", "property", {"field_name": "priority", "value": 5}),
        ("expect redelivered", "redelivered", {}),
        ("expect not redelivered", "not-redelivered", {}),
        ("expect no message", "no-message", {}),
        ("expect error", "error", {}),
        ("expect error 404", "error", {"number": 404}),
        ('expect error "NOT_FOUND"', "error", {"text": "NOT_FOUND"}),
        # a keyword as a queue name after `queue`
        ('expect queue error got "x"', "got", {"queue": "error", "text": "x"}),
    ],
)
def test_expectations(text: str, check: str, fields: dict[str, object]) -> None:
    statement = one(text)
    assert isinstance(statement, Expect)
    assert statement.check == check
    assert {name: getattr(statement, name) for name in fields} == fields


def test_keywords_are_names_where_a_name_is_expected() -> None:
    statements = parse("queue error\nexchange expect fanout\nbind expect -> error")
    assert [getattr(s, "name", None) for s in statements[:2]] == ["error", "expect"]


def test_other_statements_and_positions() -> None:
    statements = parse('explain logs a.b headers {k: v}\n  show queues\nshow\nload "defs.json"')
    explain, show, show_all, load = statements
    assert isinstance(explain, Explain) and explain.headers == {"k": "v"}
    assert isinstance(show, Show) and show.what == "queues"
    assert (show.at.line, show.at.column, show.at.source) == (2, 3, "show queues")
    assert isinstance(show_all, Show) and show_all.what is None
    assert isinstance(load, Load) and load.path == "defs.json"


def test_an_empty_file_and_only_comments_are_fine() -> None:
    assert parse("") == []
    assert parse("# nothing\n\n   # here\n") == []


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "line", "column", "message", "hint"),
    [
        ("queue q\nbind logs q", 2, 11, "unexpected 'q'", "bind SOURCE -> DESTINATION"),
        ("exchange logs", 1, 15, "unexpected end of input", "direct, fanout, topic, headers, x-delayed-message"),
        ("publish logs\nqueue q", 1, 13, "unexpected end of line", "ROUTING_KEY"),
        ("wait 30", 1, 6, "unexpected '30'", "500ms, 30s"),
        ("queue q ttl 30s", 1, 13, "unexpected '30s'", "name=value"),
        ("queue q tll=5s", 1, 9, "unknown queue option 'tll'", "did you mean 'ttl'?"),
        ("exchange x topc", 1, 12, "unknown exchange type 'topc'", "did you mean 'topic'?"),
        ("exchange x topic colour=red", 1, 18, "unknown exchange option 'colour'", "alternate-exchange"),
        ('expect error got "x"', 1, 14, "unexpected 'got'", "expect queue NAME"),
        ("publish x k disk full", 1, 18, "unknown publish option 'full'", 'quote a body with spaces: "disk full"'),
        ('queue "abc', 1, 7, "unexpected character '\"'", "close the string"),
        ("declare queue q", 1, 1, "unexpected 'declare'", "statements: exchange, queue"),
        ("publish x k headers {a: 1", 1, 27, "unexpected end of input", "close the table"),
        ("expect q has 2", 1, 16, "unexpected end of input", "has N messages"),
        ("queue 2fa", 1, 7, "unexpected character '2'", "quote names"),
        ("queue q ttl=soon", 1, 9, "'ttl' takes a duration", "30s"),
        ("expect property colour = red", 1, 17, "unknown property 'colour'", "properties:"),
        ("publish x k repeat 0", 1, 20, "repeat takes a count of at least 1", None),
    ],
)
def test_errors_point_at_line_and_column_with_a_hint(
    text: str, line: int, column: int, message: str, hint: str | None
) -> None:
    with pytest.raises(PlaygroundError) as caught:
        parse(text, "broken.route")
    error = caught.value
    assert (error.line, error.column) == (line, column)
    assert message in error.message
    if hint is not None:
        assert error.hint is not None and hint in error.hint


def test_error_text_shows_the_line_and_a_caret_under_the_column() -> None:
    with pytest.raises(PlaygroundError) as caught:
        parse("queue ok\nqueue q tll=5s\n", "file.route")
    lines = str(caught.value).split("\n")
    assert lines[0] == "file.route:2:9: error: unknown queue option 'tll'"
    assert lines[1] == "   2 | queue q tll=5s"
    assert lines[2] == "     |         ^"
    assert lines[3].startswith("hint: did you mean 'ttl'?")


def test_a_one_word_body_needs_no_quotes_but_flags_stay_flags() -> None:
    publish = one("publish x k hello mandatory")
    assert isinstance(publish, Publish)
    assert (publish.body, publish.mandatory) == ("hello", True)
    flag_only = one("publish x k mandatory")
    assert isinstance(flag_only, Publish)
    assert (flag_only.body, flag_only.mandatory) == ("", True)
