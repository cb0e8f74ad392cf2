"""Structured logs: the formatters, the events the broker logs, dead-letter storms."""

from __future__ import annotations

import io
import json
import logging
import socket
import time
from collections.abc import Iterator

import pika
import pytest

from leveret.broker.broker import Broker
from leveret.management import logs
from leveret.management.core import Management
from tests.core.core_support import make_message


def record(msg: str, level: int = logging.INFO, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("leveret.test", level, __file__, 1, msg, None, None)
    made.created = 1795456703.074
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def test_logfmt_puts_the_event_first_and_quotes_what_needs_it() -> None:
    line = logs.LogfmtFormatter().format(record(
        "connection closed", event="connection_closed", connection="127.0.0.1:1 -> 127.0.0.1:2",
        user="guest", code=320, reason='say "bye"',
    ))

    assert line == (
        '2026-11-23T17:58:23.074Z info event=connection_closed connection="127.0.0.1:1 -> 127.0.0.1:2" '
        'user=guest code=320 reason="say \\"bye\\"" msg="connection closed"'
    )


def test_a_plain_log_line_names_its_logger() -> None:
    line = logs.LogfmtFormatter().format(record("internal error", logging.ERROR))

    assert line == '2026-11-23T17:58:23.074Z error logger=leveret.test msg="internal error"'


def test_json_lines() -> None:
    line = logs.JsonFormatter().format(record("queue deleted", event="queue_deleted", queue="q", messages=3))

    assert json.loads(line) == {"time": "2026-11-23T17:58:23.074Z", "level": "info", "logger": "leveret.test",
                                "event": "queue_deleted", "queue": "q", "messages": 3, "msg": "queue deleted"}


@pytest.fixture
def leveret_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("leveret")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    try:
        yield logger
    finally:
        logger.handlers[:] = saved[0]
        logger.setLevel(saved[1])
        logger.propagate = saved[2]


def test_configure_is_quiet_at_warning_and_replaces_its_own_handler(leveret_logger: logging.Logger) -> None:
    first, second = io.StringIO(), io.StringIO()
    logs.configure("warning", stream=first)
    logs.configure("info", "json", stream=second)

    logging.getLogger("leveret.vhost").info("queue deleted", extra={"event": "queue_deleted", "queue": "q"})
    logging.getLogger("leveret.vhost").debug("not shown")

    assert first.getvalue() == ""
    assert [json.loads(line)["event"] for line in second.getvalue().splitlines()] == ["queue_deleted"]


def events(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [logs.event_fields(r) for r in caplog.records if hasattr(r, "event")]


def wait_for(condition: object, seconds: float = 2.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not condition():  # type: ignore[operator]
        time.sleep(0.02)


def test_connection_channel_and_queue_events(leveret_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="leveret")
    params = pika.URLParameters(leveret_url)
    params.client_properties = {"connection_name": "billing"}
    connection = pika.BlockingConnection(params)
    channel = connection.channel()
    channel.queue_declare("temp", auto_delete=True)
    tag = channel.basic_consume("temp", lambda *args: None)
    channel.basic_cancel(tag)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        channel.queue_declare("missing", passive=True)
    connection.close()
    wait_for(lambda: any(e.get("event") == "connection_closed" for e in events(caplog)))

    seen = events(caplog)

    opened, = [e for e in seen if e["event"] == "connection_opened"]
    assert opened["client"] == "billing" and opened["user"] == "guest" and opened["vhost"] == "/"
    assert " -> " in str(opened["connection"])
    deleted, = [e for e in seen if e["event"] == "queue_deleted"]
    assert (deleted["queue"], deleted["reason"]) == ("temp", "auto_delete")
    error, = [e for e in seen if e["event"] == "channel_error"]
    assert error["code"] == 404 and error["text"] == "NOT_FOUND - no queue 'missing' in vhost '/'"
    assert (error["class_id"], error["method_id"]) == (50, 10)
    closed, = [e for e in seen if e["event"] == "connection_closed"]
    assert closed["reason"] == "client closed: 200 Normal shutdown"
    assert closed["connection"] == opened["connection"]


def test_a_dropped_socket_is_logged_with_its_reason(leveret_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="leveret")
    port = int(leveret_url.rsplit(":", 1)[1].strip("/"))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        assert sock.recv(7)[:1] == b"\x01"  # connection.start arrived; now the socket just goes
    wait_for(lambda: any(e.get("event") == "connection_closed" for e in events(caplog)))

    closed, = [e for e in events(caplog) if e["event"] == "connection_closed"]

    assert closed["reason"] == "client unexpectedly closed TCP connection"


def test_a_dead_letter_storm_is_logged_when_it_starts_and_ends(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="leveret")
    broker = Broker()
    vhost = broker.vhost("/")
    vhost.declare_exchange("dlx", "fanout")
    vhost.declare_queue("overflowing", arguments={"x-max-length": 1, "x-dead-letter-exchange": "dlx"})
    clock = [0.0]
    management = Management(broker, storm_rate=100.0, monotonic=lambda: clock[0])

    def second_with(count: int) -> None:
        for _ in range(count):
            vhost.publish("", make_message("", "overflowing"), 0)
        clock[0] += 1.0
        management.sample()

    management.sample()
    second_with(50)  # below the threshold
    second_with(300)  # a storm starts
    second_with(80)  # still above half the threshold: the same storm
    second_with(10)  # over

    storms = [e for e in events(caplog) if str(e["event"]).startswith("dead_letter_storm")]
    assert storms == [
        {"event": "dead_letter_storm", "vhost": "/", "queue": "overflowing", "reason": "maxlen", "rate": 300.0},
        {"event": "dead_letter_storm_ended", "vhost": "/", "queue": "overflowing", "reason": "maxlen"},
    ]
    warnings = [r for r in caplog.records if getattr(r, "event", "").startswith("dead_letter_storm")]
    assert {r.levelno for r in warnings} == {logging.WARNING}
