"""The runner: statements on an in-process broker with a virtual clock, and
expectations that pass exactly when they should."""

from __future__ import annotations

from pathlib import Path

import pytest

from leveret.playground.parser import parse
from leveret.playground.runner import (
    ErrorEvent,
    Event,
    ExpectEvent,
    GetEvent,
    PublishEvent,
    Runner,
    WaitEvent,
)


def run(text: str) -> tuple[Runner, list[Event]]:
    runner = Runner()
    return runner, runner.run_text(text)


def expectations(events: list[Event]) -> list[tuple[str, bool]]:
    return [(e.statement.at.source, e.passed) for e in events if isinstance(e, ExpectEvent)]


def errors(events: list[Event]) -> list[str]:
    return [e.reply_text for e in events if isinstance(e, ErrorEvent)]


TOPIC = """
exchange logs topic
queue errors
queue all
bind logs -> errors "*.error"
bind logs -> all "#"
"""


def test_publish_records_the_route_trace_and_the_queues() -> None:
    _, events = run(TOPIC + 'publish logs kern.error "disk full"\n')
    publish = events[-1]
    assert isinstance(publish, PublishEvent)
    assert sorted(publish.queues) == ["all", "errors"]
    assert publish.trace.root.exchange == "logs"
    assert sorted(b.binding.destination.name for b in publish.trace.root.matched) == ["all", "errors"]


@pytest.mark.parametrize(
    ("expectation", "passed"),
    [
        ('expect errors got "disk full"', True),
        ('expect errors got "disk ful"', False),
        ('expect errors got matching "disk *"', True),
        ('expect errors got matching "cpu*"', False),
        ('expect errors never got "cpu hot"', True),
        ('expect errors never got "disk full"', False),
        ("expect errors has 1 message", True),
        ("expect queue errors has 2 messages", False),
        ("expect all has 2 messages", True),
        ("expect errors is empty", False),
        ("expect routed", True),
        ("expect unroutable", False),
        ("expect routed to all", True),
        ("expect routed to all, errors", False),
        ("expect returned", False),
        ("expect nacked", False),
        ("expect queue errors exists", True),
        ("expect queue errors is deleted", False),
        ('expect nowhere got "disk full"', False),
        ("expect nowhere has 0 messages", False),
    ],
)
def test_queue_and_publish_expectations(expectation: str, passed: bool) -> None:
    text = TOPIC + 'publish logs kern.error "disk full"\npublish logs app.info "cpu hot"\n' + expectation
    _, events = run(text)
    assert expectations(events) == [(expectation, passed)]


def test_a_failing_expectation_says_what_was_expected_and_found() -> None:
    _, events = run(TOPIC + 'publish logs kern.error "disk full"\nexpect errors got "disk ful"')
    failure = events[-1]
    assert isinstance(failure, ExpectEvent) and not failure.passed
    assert failure.expected == 'errors got "disk ful"'
    assert failure.actual == 'errors got "disk full"'


def test_unroutable_mandatory_is_returned() -> None:
    _, events = run(TOPIC + 'publish logs "" "x" mandatory\nexpect unroutable\nexpect returned')
    assert expectations(events)[-2:] == [("expect unroutable", False), ("expect returned", False)]
    _, events = run("exchange e direct\npublish e k x mandatory\nexpect unroutable\nexpect returned")
    assert expectations(events) == [("expect unroutable", True), ("expect returned", True)]


def test_default_exchange_routes_by_queue_name() -> None:
    _, events = run('queue jobs\npublish "" jobs "j"\nexpect routed to jobs\npublish "" nope x\nexpect unroutable')
    assert all(passed for _, passed in expectations(events))


def test_wait_expires_messages_and_walks_deadline_by_deadline() -> None:
    # wait.1 (1s) dead-letters into wait.2 (1s) which dead-letters into done.
    # One `wait 2s` must let both TTLs run, the second starting at 1s.
    text = """
    queue done
    queue wait.2 ttl=1s dlx="" dlk=done
    queue wait.1 ttl=1s dlx="" dlk=wait.2
    publish "" wait.1 "m"
    wait 999ms
    expect wait.1 has 1 message
    wait 1s
    expect wait.2 has 1 message
    wait 1ms
    expect done got "m"
    """
    runner, events = run(text)
    assert all(passed for _, passed in expectations(events))
    waits = [e for e in events if isinstance(e, WaitEvent)]
    assert [w.elapsed_ms for w in waits] == [999, 1999, 2000]
    assert [w.expired for w in waits] == [0, 1, 1]
    hops = [hop.event for e in events for hop in e.dead_letters]
    assert [(h.reason, h.from_queue, h.queues) for h in hops] == [
        ("expired", "wait.1", ["wait.2"]), ("expired", "wait.2", ["done"]),
    ]


def test_one_long_wait_plays_a_chain_of_ttls_at_the_right_times() -> None:
    text = """
    queue done
    queue wait.2 ttl=1s dlx="" dlk=done
    queue wait.1 ttl=1s dlx="" dlk=wait.2
    publish "" wait.1 "m"
    wait 10s
    get done
    expect x-death count 1 reason expired queue wait.2
    """
    runner, events = run(text)
    assert all(passed for _, passed in expectations(events))
    get = next(e for e in events if isinstance(e, GetEvent))
    assert get.delivered is not None
    deaths = get.delivered.message.properties.headers["x-death"]
    times = sorted(d["time"] for d in deaths)
    start_seconds = runner.start_ms // 1000
    assert [t if isinstance(t, int) else int(t.timestamp()) for t in times] == [start_seconds + 1, start_seconds + 2]


def test_reject_dead_letters_and_x_death_counts_cycles_through_a_retry_queue() -> None:
    text = """
    exchange work direct
    exchange retry direct
    queue jobs dlx=retry
    queue jobs.wait ttl=5s dlx=work
    bind work -> jobs jobs
    bind retry -> jobs.wait jobs
    publish work jobs "charge"
    get jobs; reject; wait 5s
    get jobs; reject; wait 5s
    get jobs; reject; wait 5s
    get jobs
    expect x-death count 3
    expect x-death count 3 reason rejected queue jobs
    expect x-death count 3 reason expired queue jobs.wait
    expect x-death count 2
    expect x-death count 3 reason maxlen
    expect header x-first-death-reason = "rejected"
    expect header x-first-death-queue = "jobs"
    expect not redelivered
    """
    _, events = run(text)
    assert [passed for _, passed in expectations(events)] == [True, True, True, False, False, True, True, True]


def test_requeue_redelivers_and_ack_removes() -> None:
    text = """
    queue q
    publish "" q "a"
    get q
    expect not redelivered
    expect q has 1 unacked
    nack requeue
    expect q has 1 message
    get q
    expect redelivered
    expect body "a"
    expect property message-id = "none"
    ack
    expect q is empty
    expect q has 0 unacked
    get q
    expect no message
    """
    _, events = run(text)
    results = expectations(events)
    assert [passed for _, passed in results] == [True, True, True, True, True, False, True, True, True]


def test_reject_without_dead_letter_exchange_discards() -> None:
    _, events = run('queue q\npublish "" q a\nget q\nreject\nexpect q is empty\nexpect q has 0 unacked')
    assert all(passed for _, passed in expectations(events))
    assert not any(e.dead_letters for e in events)


def test_ack_all_and_per_queue_settling() -> None:
    text = """
    queue a
    queue b
    publish "" a "1"; publish "" a "2"; publish "" b "3"
    get a; get a; get b
    ack b
    expect b has 0 unacked
    expect a has 2 unacked
    nack a all
    expect a has 0 unacked
    """
    _, events = run(text)
    assert all(passed for _, passed in expectations(events))


def test_settling_without_a_message_is_an_error_with_a_hint() -> None:
    _, events = run("ack")
    error = events[-1]
    assert isinstance(error, ErrorEvent)
    assert error.text == "nothing to ack: no unacknowledged message"
    assert error.hint == "`get QUEUE` first (without no-ack)"


def test_get_no_ack_does_not_hold_the_message() -> None:
    _, events = run('queue q\npublish "" q a\nget q no-ack\nexpect q has 0 unacked\nack')
    assert expectations(events) == [("expect q has 0 unacked", True)]
    assert isinstance(events[-1], ErrorEvent)


def test_max_length_drop_head_dead_letters_and_reject_publish_nacks() -> None:
    text = """
    queue overflowed
    queue small max-length=2 dlx="" dlk=overflowed
    publish "" small "m{n}" repeat 3
    expect small has 2 messages
    expect overflowed got "m1"
    queue strict max-length=1 overflow=reject-publish
    publish "" strict "first"
    expect nacked
    publish "" strict "second"
    expect nacked
    expect strict never got "second"
    """
    _, events = run(text)
    assert [passed for _, passed in expectations(events)] == [True, True, False, True, True]
    publish = next(e for e in events if isinstance(e, PublishEvent))
    assert [(h.event.reason, h.event.queues) for h in publish.dead_letters] == [("maxlen", ["overflowed"])]


def test_priority_queue_delivers_highest_first() -> None:
    text = 'queue p priority=10\npublish "" p low priority=1\npublish "" p high priority=9\nget p\nexpect body "high"'
    _, events = run(text)
    assert expectations(events) == [('expect body "high"', True)]


def test_per_message_expiration_and_queue_expires() -> None:
    text = """
    queue q
    publish "" q "short" expiration=1s
    wait 1s
    expect q is empty
    queue temp expires=5s
    wait 4s
    expect queue temp exists
    wait 1s
    expect queue temp is deleted
    """
    _, events = run(text)
    assert all(passed for _, passed in expectations(events))
    assert [e.deleted_queues for e in events if isinstance(e, WaitEvent)] == [[], [], ["temp"]]


def test_delivery_limit_dead_letters_after_too_many_requeues() -> None:
    text = """
    queue dead
    queue q delivery-limit=1 dlx="" dlk=dead
    publish "" q "poison"
    get q; reject requeue
    get q; reject requeue
    expect dead got "poison"
    """
    _, events = run(text)
    assert all(passed for _, passed in expectations(events))


def test_cc_adds_routing_keys_and_bcc_is_removed() -> None:
    text = """
    exchange d direct
    queue a
    queue b
    queue c
    bind d -> a a
    bind d -> b b
    bind d -> c c
    publish d a "m" cc=[b] bcc=c
    expect routed to a, b, c
    get c
    expect header CC = ["b"]
    """
    _, events = run(text)
    assert all(passed for _, passed in expectations(events))
    get = next(e for e in events if isinstance(e, GetEvent))
    assert get.delivered is not None
    assert "BCC" not in get.delivered.message.properties.headers


def test_exchange_to_exchange_and_alternate_exchange_in_the_trace() -> None:
    text = """
    exchange unrouted fanout
    queue lost
    bind unrouted -> lost
    exchange front topic
    exchange back direct ae=unrouted
    bind front -> back "#"
    queue q
    bind back -> q k
    publish front k "hit"
    publish front other "miss"
    expect routed to lost
    """
    _, events = run(text)
    hit, miss = [e for e in events if isinstance(e, PublishEvent)]
    assert hit.queues == ["q"]
    assert [h.exchange for h in hit.trace.root.hops] == ["back"]
    back = miss.trace.root.hops[0]
    assert back.alternate is not None and back.alternate.exchange == "unrouted"
    assert back.alternate.queues == ["lost"]
    assert [b.binding.destination.name for b in back.unmatched] == ["q"]
    assert expectations(events) == [("expect routed to lost", True)]


def test_amqp_errors_become_events_and_expect_error_checks_them() -> None:
    text = """
    publish nope k x
    expect error 404
    expect error "no exchange 'nope'"
    exchange x direct
    exchange x fanout
    expect error "PRECONDITION_FAILED - inequivalent arg 'type'"
    queue q
    expect error
    exchange i topic internal
    publish i k x
    expect error 403
    expect error 404
    """
    _, events = run(text)
    assert [passed for _, passed in expectations(events)] == [True, True, True, False, True, False]
    assert errors(events)[0] == "NOT_FOUND - no exchange 'nope' in vhost '/'"


def test_binding_a_topic_exchange_without_a_key_explains_the_comment_trap() -> None:
    _, events = run("exchange t topic\nqueue q\nbind t -> q #.error\n")
    error = events[-1]
    assert isinstance(error, ErrorEvent)
    assert error.text == "a binding to the topic exchange 't' needs a key"
    assert error.hint is not None and "a bare # starts a comment" in error.hint


def test_binding_to_an_unknown_destination() -> None:
    _, events = run("exchange t topic\nbind t -> ghost k")
    error = events[-1]
    assert isinstance(error, ErrorEvent)
    assert error.text == "no queue or exchange named 'ghost'"


def test_headers_exchange_x_match_any_and_all() -> None:
    text = """
    exchange h headers
    queue any
    queue all
    bind h -> any where x-match=any a=1 b=2
    bind h -> all where a=1 b=2
    publish h "" "one" headers {a: 1}
    expect routed to any
    publish h "" "both" headers {a: 1, b: 2}
    expect routed to any, all
    """
    _, events = run(text)
    assert all(passed for _, passed in expectations(events))


def test_exclusive_queues_belong_to_the_runner() -> None:
    _, events = run('queue mine exclusive\npublish "" mine x\nget mine\nack\nexpect mine is empty')
    assert all(passed for _, passed in expectations(events))
    assert errors(events) == []


def test_load_definitions_statement(tmp_path: Path) -> None:
    (tmp_path / "defs.json").write_text(
        '{"exchanges": [{"name": "x", "vhost": "/", "type": "fanout", "durable": true,'
        ' "auto_delete": false, "internal": false, "arguments": {}}],'
        ' "queues": [{"name": "q", "vhost": "/", "durable": true, "auto_delete": false, "arguments": {}}],'
        ' "bindings": [{"source": "x", "vhost": "/", "destination": "q", "destination_type": "queue",'
        ' "routing_key": "", "arguments": {}}]}'
    )
    runner = Runner(base_dir=tmp_path)
    events = list(runner.run(parse('load "defs.json"\npublish x k m\nexpect routed to q\nload "missing.json"')))
    assert expectations(events) == [("expect routed to q", True)]
    assert isinstance(events[-1], ErrorEvent) and events[-1].text.startswith("cannot read")


def test_show_statements() -> None:
    from leveret.playground.runner import ShowEvent

    _, events = run(TOPIC + 'publish logs a.error "e"\nshow queues\nshow exchanges\nshow bindings\nshow errors\nshow logs\nshow nothing')
    shows = [e for e in events if isinstance(e, ShowEvent)]
    assert [s.what for s in shows] == ["queues", "exchanges", "bindings", "queue errors", "exchange logs (topic)"]
    assert ("errors", "1", "0", "") in shows[0].rows
    assert shows[3].rows == [("1", "e", "a.error", "")]
    assert isinstance(events[-1], ErrorEvent)


def test_dead_letter_hops_through_a_headers_exchange_are_traced_with_the_message_headers() -> None:
    text = """
    exchange dlx headers
    queue pdf.dead
    bind dlx -> pdf.dead where format=pdf
    queue q dlx=dlx
    publish "" q "doc" headers {format: "pdf"}
    get q
    reject
    """
    _, events = run(text)
    hop = events[-1].dead_letters[0]
    assert hop.event.queues == ["pdf.dead"]
    assert hop.trace is not None
    assert [b.binding.destination.name for b in hop.trace.root.matched] == ["pdf.dead"]
