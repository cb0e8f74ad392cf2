"""`leveret play --against`: the same file on a live broker, differences reported.

Against the reference RabbitMQ (skipped when it is unreachable) and against a
leveret server started for the test. Live names carry a unique prefix and are
deleted afterwards; a test checks that too.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pika
import pika.exceptions
import pytest

from leveret.playground.live import (
    Difference,
    Observation,
    compare,
    compare_against,
    live_observations,
)
from leveret.playground.parser import parse
from leveret.playground.render import make_console
from tests import reference

RABBITMQ_URL = reference.URL
SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "playground"
# Every sample: the bar is that they show no difference against
# RabbitMQ. retry-backoff and payment-flow wait in real time (~5s each).
# The reference RabbitMQ runs without plugins; these show leveret's built-in ones.
PLUGIN_SAMPLES = {"consistent-hash.route", "deduplication.route", "delayed-retry.route"}
SAMPLE_FILES = sorted(p.name for p in SAMPLES.glob("*.route") if p.name not in PLUGIN_SAMPLES)


needs_rabbitmq = reference.needs_reference


def against(url: str, path: Path) -> tuple[list[Difference] | None, str]:
    console = make_console(120, color=False)
    with console.capture() as capture:
        differences = compare_against(url, parse(path.read_text(), str(path)), [], console,
                                      base_dir=path.parent)
    return differences, capture.get()


@needs_rabbitmq
@pytest.mark.rabbitmq
@pytest.mark.parametrize("name", SAMPLE_FILES)
def test_samples_show_no_difference_against_rabbitmq(name: str) -> None:
    differences, output = against(RABBITMQ_URL, SAMPLES / name)
    assert differences == [], output
    assert "no difference" in output
    assert "guest:***@" in output


@needs_rabbitmq
@pytest.mark.rabbitmq
def test_timed_dead_letter_loop_matches_rabbitmq() -> None:
    text = """
    exchange work direct
    exchange retry direct
    queue jobs dlx=retry
    queue jobs.wait ttl=300ms dlx=work
    bind work -> jobs jobs
    bind retry -> jobs.wait jobs
    publish work jobs "charge" message-id=m1
    get jobs; reject; wait 300ms
    get jobs; reject; wait 300ms
    get jobs
    expect x-death count 2 reason rejected queue jobs
    reject requeue
    get jobs
    ack
    """
    statements = parse(text)
    console = make_console(120, color=False)
    with console.capture() as capture:
        differences = compare_against(RABBITMQ_URL, statements, [], console, base_dir=Path.cwd())
    assert differences == [], capture.get()


@needs_rabbitmq
@pytest.mark.rabbitmq
def test_live_names_are_prefixed_and_deleted_afterwards() -> None:
    statements = parse("exchange x fanout\nqueue q\nbind x -> q\npublish x k m\n")
    prefix, observations = asyncio.run(live_observations(RABBITMQ_URL, statements, Path.cwd()))
    assert prefix.startswith("pg-")
    assert observations[-1] is not None and observations[-1].queues == {"q": 1}
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    try:
        channel = connection.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
            channel.queue_declare(prefix + "q", passive=True)
        code = caught.value.reply_code
        channel = connection.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught_exchange:
            channel.exchange_declare(prefix + "x", passive=True)
        exchange_code = caught_exchange.value.reply_code
    finally:
        connection.close()
    assert (code, exchange_code) == (404, 404)


@needs_rabbitmq
@pytest.mark.rabbitmq
def test_errors_are_compared_and_the_channel_reopens() -> None:
    text = "exchange i topic internal\npublish i k x\nqueue q\npublish \"\" q m\n"
    statements = parse(text)
    _, observations = asyncio.run(live_observations(RABBITMQ_URL, statements, Path.cwd()))
    publish_internal, declare, publish = observations[1], observations[2], observations[3]
    assert publish_internal is not None and publish_internal.error == 403
    assert declare is not None and declare.error is None
    assert publish is not None and (publish.routed, publish.queues) == (True, {"q": 1})


def test_against_a_leveret_server(leveret_url: str) -> None:
    differences, output = against(leveret_url, SAMPLES / "alternate-exchange.route")
    assert differences == [], output


def test_an_unreachable_broker_is_reported() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket closes
    differences, output = against(f"amqp://guest:guest@127.0.0.1:{port}/", SAMPLES / "fanout.route")
    assert differences is None
    assert "cannot use amqp://guest:***@127.0.0.1:" in output


def test_compare_reports_each_field_that_differs() -> None:
    statements = parse('publish x k m\nget q\nwait 1s\nexpect q is empty')
    ours = [
        Observation(queues={"q": 1}, routed=True, nacked=False),
        Observation(queues={"q": 0}, got=("m", False, (("q", "rejected", 1),), ("q", "rejected"))),
        Observation(queues={"q": 0, "gone": None}),
        None,
    ]
    theirs = [
        Observation(queues={"q": 0}, routed=False, nacked=False),
        Observation(queues={"q": 0}, got=("empty",)),
        Observation(queues={"q": 0, "gone": 3}),
        Observation(queues={"q": 9}),
    ]
    differences = compare(statements, ours, theirs)
    assert [(d.statement.at.line, d.what, d.in_process, d.live) for d in differences] == [
        (1, "routed", "yes", "no"),
        (1, "queue q", "1", "0"),
        (2, "get", '"m" x-death q/rejected x1 first death q/rejected', "no message"),
        (3, "queue gone", "absent", "3"),
    ]


def test_compare_an_error_on_one_side_only() -> None:
    statements = parse("publish x k m")
    differences = compare(statements, [Observation(error=404)], [Observation(routed=True, queues={"q": 1})])
    assert [(d.what, d.in_process, d.live) for d in differences] == [("error", "failed with 404", "succeeded")]
