"""Wildcard and headers matching as RabbitMQ does it, for tests of your bindings.

    from leveret.matching import topic_matches, explain_topic, headers_match

    assert topic_matches("*.error", "kern.error")
    explain_topic("app.*.error", "app.db.warn").reason
    # "word 3 is 'warn', pattern wants 'error'"
    assert headers_match({"x-match": "any", "kind": "pdf"}, {"kind": "pdf", "v": 2})

The same code routes messages in the broker and draws the playground's
explanations, so an answer here is the broker's answer. Each `explain_*`
returns a `Verdict`: `.matched` and `.reason`, the sentence the playground
prints. pytest helpers that use them: `leveret.testing.assert_topic_routes`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from leveret.bindings import headers as _headers
from leveret.bindings import topic as _topic
from leveret.bindings.model import Verdict

__all__ = ["Verdict", "explain_headers", "explain_topic", "headers_match", "topic_matches"]


def topic_matches(pattern: str, routing_key: str) -> bool:
    """Whether a topic binding key ('*' one word, '#' zero or more) matches `routing_key`."""
    return _topic.topic_matches(pattern, routing_key)


def explain_topic(pattern: str, routing_key: str) -> Verdict:
    """Whether `pattern` matches `routing_key`, and why (or where it stops matching)."""
    return _topic.explain_topic(pattern, routing_key)


def headers_match(binding_arguments: Mapping[str, Any], headers: Mapping[str, Any]) -> bool:
    """Whether a headers-exchange binding (its arguments, x-match and the values
    to compare) matches a message's headers. A bad x-match raises pamqp's
    AMQPPreconditionFailed with RabbitMQ's text, as binding it would."""
    return explain_headers(binding_arguments, headers).matched


def explain_headers(binding_arguments: Mapping[str, Any], headers: Mapping[str, Any]) -> Verdict:
    """`headers_match` with the reason, e.g. "x-match all: header 'kind' is missing"."""
    return _headers.explain_rule(_headers.parse_rule(binding_arguments), headers)
