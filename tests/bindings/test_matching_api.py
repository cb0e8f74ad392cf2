"""The public matching API (leveret.matching, re-exported from leveret) and its pytest helper."""

from __future__ import annotations

import pytest
from pamqp import exceptions

import leveret
from leveret.testing import assert_topic_routes


def test_topic_matching_from_the_package() -> None:
    assert leveret.topic_matches("*.error", "kern.error")
    assert leveret.topic_matches("db.#", "db")
    assert not leveret.topic_matches("*.error", "kern.disk.error")
    miss = leveret.explain_topic("app.*.error", "app.db.warn")
    assert (miss.matched, miss.reason) == (False, "word 3 is 'warn', pattern wants 'error'")
    assert leveret.explain_topic("*.error", "kern.error").matched


def test_headers_matching_from_the_package() -> None:
    assert leveret.headers_match({"x-match": "any", "kind": "pdf", "v": 1}, {"kind": "pdf"})
    assert not leveret.headers_match({"kind": "pdf", "v": 1}, {"kind": "pdf"})  # all is the default
    assert leveret.explain_headers({"x-match": "all", "kind": "pdf"}, {"v": 2}).reason == \
        "x-match all: header 'kind' is missing"
    with pytest.raises(exceptions.AMQPPreconditionFailed):
        leveret.headers_match({"x-match": "some"}, {})


def test_assert_topic_routes_passes_for_exactly_those_queues() -> None:
    assert_topic_routes({"errors": "*.error", "db": ["db.#"], "web": "web.*"}, "db.error", ["errors", "db"])


def test_assert_topic_routes_explains_a_miss_and_an_extra() -> None:
    with pytest.raises(AssertionError) as failure:
        assert_topic_routes({"errors": "*.error", "db": "app.db.*"}, "app.db.error", ["errors", "db"])
    assert str(failure.value) == (
        "routing key 'app.db.error' reached ['db'], expected ['db', 'errors']:\n"
        "  errors missed it: " + leveret.explain_topic("*.error", "app.db.error").reason
    )
