"""The policy model: validation texts (as RabbitMQ 3.10.8 gave them), matching,
precedence and the policy / operator policy merge. Texts here were probed on the
reference; tests/management/test_policies_rabbitmq.py compares live."""

from __future__ import annotations

from typing import Any

import pytest

from leveret.broker.erlang_text import format_error, pretty
from leveret.broker.policies import (
    PatternError,
    PolicyError,
    PolicySet,
    compile_pattern,
    effective_definition,
    parse_policy,
)


def refusal(body: dict[str, Any], operator: bool = False) -> str:
    with pytest.raises(PolicyError) as caught:
        parse_policy("/", "p", body, operator=operator)
    return caught.value.reason


def failed(*lines: str) -> str:
    return "Validation failed\n\n" + "".join(line + "\n" for line in lines)


@pytest.mark.parametrize(("definition", "text"), [
    ({"message-ttl": -1}, "-1 is not a valid message TTL"),
    ({"message-ttl": "60"}, '<<"60">> is not a valid message TTL'),
    ({"message-ttl": 1.5}, "1.5 is not a valid message TTL"),
    ({"message-ttl": 60000.0}, "6.0e4 is not a valid message TTL"),
    ({"message-ttl": 1e20}, "1.0e20 is not a valid message TTL"),
    ({"message-ttl": None}, "null is not a valid message TTL"),
    ({"message-ttl": True}, "true is not a valid message TTL"),
    ({"message-ttl": [1]}, "[1] is not a valid message TTL"),
    ({"message-ttl": {"a": 1}}, '#{<<"a">> => 1} is not a valid message TTL'),
    ({"expires": 0}, "0 is not a valid queue expiry"),
    ({"dead-letter-exchange": 5}, "5 is not a valid dead letter exchange name"),
    ({"dead-letter-routing-key": 1}, "1 is not a valid dead letter routing key"),
    ({"alternate-exchange": 1}, "1 is not a valid alternate exchange name"),
    ({"overflow": "nope"}, '<<"nope">> is not a valid overflow value'),
    ({"overflow": "café"}, '<<"café">> is not a valid overflow value'),
    ({"overflow": 'a"b\\c'}, '<<"a\\"b\\\\c">> is not a valid overflow value'),
    ({"queue-mode": "nope"}, '<<"nope">> is not a valid queue-mode value'),
    ({"max-length-bytes": -1}, "-1 is not a valid maximum length in bytes"),
    ({"delivery-limit": -1}, "-1 is not a valid delivery limit"),
    ({"max-in-memory-length": -1}, "-1 is not a valid maximum memory in bytes"),
    ({"queue-version": 3}, "3 is not a valid queue-version value"),
    ({"max-age": "1X"}, '<<"1X">> is not a valid max age'),
    ({"message-ttl": -1, "max-length": -2}, "-2 is not a valid maximum length"),
    ({"message-ttl": -1, "ha-mode": "bad"}, "-1 is not a valid message TTL"),
    ({"max-priority": 10}, '[{<<"max-priority">>,10}] are not recognised policy settings'),
    ({"max-priority": 10, "foo": "bar"},
     '[{<<"foo">>,<<"bar">>},{<<"max-priority">>,10}] are not recognised policy settings'),
    ({}, "no policy provided"),
    ({"ha-mode": "exactly"}, 'ha-mode="exactly" takes an integer, none given'),
    ({"ha-mode": "exactly", "ha-params": 0}, 'ha-mode="exactly" takes an integer, 0 given'),
    ({"ha-mode": "nodes", "ha-params": 2}, 'ha-mode="nodes" takes a list, 2 given'),
    ({"ha-mode": "all", "ha-params": 0}, 'ha-mode="all" does not take parameters'),
    ({"ha-mode": "bogus"}, '<<"bogus">> is not a valid ha-mode value'),
    ({"ha-params": 2}, "ha-mode must be specified to specify ha-params, ha-sync-mode or ha-promote-on-shutdown"),
    ({"queue-master-locator": "bogus"}, '<<"bogus">> invalid queue-master-locator value'),
])
def test_definition_refusals_carry_rabbitmqs_text(definition: dict[str, Any], text: str) -> None:
    assert refusal({"pattern": "x", "definition": definition}) == failed(text)


def test_all_complaints_in_rabbitmqs_order() -> None:
    body = {"pattern": "(", "definition": {"message-ttl": -1}, "priority": "a", "apply-to": "b"}
    assert refusal(body) == failed(
        "-1 is not a valid message TTL",
        "apply-to 'b' unrecognised; should be 'queues', 'exchanges' or 'all'",
        'pattern should be regular expression but is invalid: {"missing )",1}',
        'priority should be a number, actually was <<"a">>',
    )


def test_a_long_pattern_error_breaks_as_erlang_prints_it() -> None:
    assert refusal({"pattern": "[a", "definition": {"message-ttl": 1}}) == failed(
        'pattern should be regular expression but is invalid: {"missing terminating ] for character class",\n'
        + " " * 54 + "2}")


def test_pattern_must_be_a_string() -> None:
    assert refusal({"pattern": 5, "definition": {"message-ttl": 1}}) == failed(
        "pattern should be a binary but was 5")


def test_operator_policies_take_limits_only() -> None:
    assert refusal({"pattern": "x", "definition": {"dead-letter-exchange": "a"}}, operator=True) == failed(
        '[{<<"dead-letter-exchange">>,<<"a">>}] are not recognised policy settings')
    assert refusal({"pattern": "x", "definition": {"ha-mode": "all"}}, operator=True) == failed(
        '[{<<"ha-mode">>,<<"all">>}] are not recognised policy settings')
    policy = parse_policy("/", "op", {"pattern": "x", "definition": {"max-length": 3}}, operator=True)
    assert policy.definition == {"max-length": 3}


def test_defaults_and_accepted_values() -> None:
    policy = parse_policy("/", "p", {"pattern": "^a", "definition": {"message-ttl": 1, "ha-mode": "all",
                                                                       "queue-master-locator": "min-masters"}})
    assert (policy.priority, policy.apply_to) == (0, "all")
    assert list(policy.definition) == ["ha-mode", "message-ttl", "queue-master-locator"]
    assert parse_policy("/", "p", {"pattern": "x", "definition": {"max-length": 1}, "priority": 1.5}).priority == 1.5
    assert parse_policy("/", "p", {"pattern": "x", "definition": {"max-age": "1D"}}).definition == {"max-age": "1D"}


@pytest.mark.parametrize(("pattern", "message", "offset"), [
    (")", "unmatched parentheses", 0),
    ("a{2,1}", "numbers out of order in {} quantifier", 5),
    ("\\", "\\ at end of pattern", 1),
    ("(?<", "unrecognized character after (?<", 3),
    ("a**", "nothing to repeat", 2),
    ("[z-a]", "range out of order in character class", 3),
    ("(?P<n>a)(?P<n>b)", "two named subpatterns have the same name", 13),
    ("(?<=a+)b", "lookbehind assertion is not fixed length", 6),
    ("x{99999}", "number too big in {} quantifier", 7),
    ("(?z)", "unrecognized character after (? or (?-", 2),
    ("(?", "unrecognized character after (? or (?-", 2),
    ("((a)", "missing )", 4),
    ("[^]", "missing terminating ] for character class", 3),
    ("\\1", "reference to non-existent subpattern", 2),
    ("(?#abc", "missing ) after comment", 6),
])
def test_regex_errors_as_pcre_reports_them(pattern: str, message: str, offset: int) -> None:
    with pytest.raises(PatternError) as caught:
        compile_pattern(pattern)
    assert (caught.value.message, caught.value.offset) == (message, offset)


def test_pcre_syntax_python_spells_otherwise() -> None:
    assert compile_pattern("(?<n>ab)\\k<n>").search("xabab")
    assert compile_pattern("\\Qa.b\\E").search("a.b") and not compile_pattern("\\Qa.b\\E").search("axb")
    assert compile_pattern("a{,3}").search("a{,3}") and not compile_pattern("a{,3}").search("aa")
    assert compile_pattern("^bob\\.").search("bob.q") and not compile_pattern("^bob\\.").search("xbob.q")
    assert compile_pattern("bob").search("a.bob.b")  # unanchored: anywhere in the name


def test_erlang_pretty_breaks_long_lists_per_element() -> None:
    text = pretty([("a" * 30, 1), ("b" * 30, 2)])
    assert text == '[{<<"' + "a" * 30 + '">>,1},\n {<<"' + "b" * 30 + '">>,2}]'
    assert format_error("x ~p y", "é") == 'x <<"é">> y'


def policies(*bodies: tuple[str, dict[str, Any]], operator: bool = False) -> PolicySet:
    table = PolicySet()
    for name, body in bodies:
        table.table(operator)[name] = parse_policy("/", name, body, operator=operator)
    return table


def test_highest_priority_wins_and_ties_go_by_name() -> None:
    table = policies(
        ("low", {"pattern": "^q", "definition": {"max-length": 1}, "priority": 1}),
        ("high", {"pattern": "^q", "definition": {"max-length": 2}, "priority": 5}),
        ("b", {"pattern": "^z", "definition": {"max-length": 3}, "priority": 0}),
        ("a", {"pattern": "^z", "definition": {"max-length": 4}, "priority": 0}),
    )
    assert table.match("queue", "q1", "classic")[0].name == "high"  # type: ignore[union-attr]
    assert table.match("queue", "z1", "classic")[0].name == "a"  # type: ignore[union-attr]
    assert table.match("queue", "nothing", "classic") == (None, None)
    assert [p.name for p in table.listed()] == ["a", "b", "low", "high"]


def test_apply_to_and_queue_type_support() -> None:
    table = policies(
        ("ex", {"pattern": ".", "definition": {"alternate-exchange": "ae"}, "apply-to": "exchanges", "priority": 9}),
        ("dl", {"pattern": ".", "definition": {"delivery-limit": 3}, "apply-to": "queues", "priority": 8}),
        ("lazy", {"pattern": ".", "definition": {"queue-mode": "lazy"}, "priority": 7}),
        ("any", {"pattern": ".", "definition": {"max-length": 1}, "priority": 0}),
    )
    assert table.match("exchange", "x")[0].name == "ex"  # type: ignore[union-attr]
    # delivery-limit is not for classic queues: the next policy applies.
    assert table.match("queue", "q", "classic")[0].name == "lazy"  # type: ignore[union-attr]
    assert table.match("queue", "q", "quorum")[0].name == "dl"  # type: ignore[union-attr]
    typed = policies(("c", {"pattern": ".", "definition": {"max-length": 1}, "apply-to": "classic_queues"}))
    assert typed.match("queue", "q", "quorum")[0] is None
    assert typed.match("queue", "q", "classic")[0] is not None
    assert typed.match("exchange", "q")[0] is None
    streams = policies(("s", {"pattern": ".", "definition": {"max-age": "1h"}, "apply-to": "streams"}))
    assert streams.match("queue", "q", "stream")[0] is not None
    assert streams.match("queue", "q", "classic")[0] is None
    assert streams.match("queue", "q", "quorum")[0] is None


def test_operator_policy_merges_to_the_lower_limit() -> None:
    policy = parse_policy("/", "p", {"pattern": ".", "definition": {
        "max-length": 5, "message-ttl": 1000, "dead-letter-exchange": "dlx"}})
    operator = parse_policy("/", "op", {"pattern": ".", "definition": {
        "max-length": 3, "message-ttl": 5000, "expires": 100000}}, operator=True)
    assert effective_definition(policy, operator) == {
        "dead-letter-exchange": "dlx", "expires": 100000, "max-length": 3, "message-ttl": 1000}
    assert effective_definition(None, operator) == {"expires": 100000, "max-length": 3, "message-ttl": 5000}
    assert effective_definition(None, None) is None
