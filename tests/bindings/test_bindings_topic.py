"""Topic binding index: golden table, a reference matcher, properties, shape."""

from __future__ import annotations

import time
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from leveret.bindings.model import Binding, Destination, Verdict
from leveret.bindings.topic import TopicTrie, split_words, topic_matches
from leveret.bindings.topic_index import TopicIndex

from tests.bindings.bindings_golden import TOPIC

Q1, Q2, Q3 = (Destination.queue(n) for n in ("q1", "q2", "q3"))


# The trie alone; the exchange's index as it is; and that index planning
# after every change with tables for every shape, so the tables and the moves
# between them and the trie meet every rule below.
INDEXES = {
    "trie": TopicTrie,
    "index": TopicIndex,
    "tables": lambda: TopicIndex(table_min=1, table_cover=0, plan_every=1),
}
each_index = pytest.mark.parametrize("make", INDEXES.values(), ids=INDEXES.keys())


def bind(key: str, destination: Destination = Q1, **arguments: object) -> Binding:
    return Binding.make("x", destination, key, arguments)


def reference(pattern: tuple[str, ...], key: tuple[str, ...]) -> bool:
    """Topic matching written straight from the definition, on word lists."""

    @cache
    def go(p: int, k: int) -> bool:
        if p == len(pattern):
            return k == len(key)
        if pattern[p] == "#":
            return go(p + 1, k) or (k < len(key) and go(p, k + 1))
        if k == len(key):
            return False
        return (pattern[p] == "*" or pattern[p] == key[k]) and go(p + 1, k + 1)

    return go(0, 0)


def reference_match(pattern: str, key: str) -> bool:
    return reference(tuple(split_words(pattern)), tuple(split_words(key)))


# ------------------------------------------------------------------ golden


@each_index
@pytest.mark.parametrize(("pattern", "key", "matched"), TOPIC)
def test_golden_table(make: type[TopicTrie], pattern: str, key: str, matched: bool) -> None:
    trie = make()
    trie.add(bind(pattern))
    assert trie.match(key, None) == ([Q1] if matched else [])
    assert topic_matches(pattern, key) is matched
    assert trie.explain(bind(pattern), key, None).matched is matched
    assert reference_match(pattern, key) is matched


def test_split_words() -> None:
    assert split_words("") == []
    assert split_words(".") == ["", ""]
    assert split_words("a..b") == ["a", "", "b"]
    assert split_words("a.") == ["a", ""]


# -------------------------------------------------------------- properties

PATTERN_WORDS = st.sampled_from(["", "a", "b", "*", "#"])
KEY_WORDS = st.sampled_from(["", "a", "b", "c", "*"])
patterns = st.lists(PATTERN_WORDS, max_size=6).map(".".join)
keys = st.lists(KEY_WORDS, max_size=6).map(".".join)
destinations = st.sampled_from([Q1, Q2, Q3, Destination.exchange("e")])


@each_index
@settings(max_examples=300, deadline=None)
@given(pattern=patterns, key=keys)
def test_single_binding_agrees_with_reference(
    make: type[TopicTrie], pattern: str, key: str
) -> None:
    trie = make()
    trie.add(bind(pattern))
    expected = reference_match(pattern, key)
    assert bool(trie.match(key, None)) is expected
    assert trie.explain(bind(pattern), key, None).matched is expected


@each_index
@settings(max_examples=300, deadline=None)
@given(
    bindings=st.lists(
        st.tuples(patterns, destinations, st.sampled_from([None, 1, 2])), max_size=12
    ),
    removals=st.lists(st.integers(min_value=0, max_value=11), max_size=8),
    probe_keys=st.lists(keys, min_size=1, max_size=8),
)
def test_many_bindings_and_removals_agree_with_reference(
    make: type[TopicTrie],
    bindings: list[tuple[str, Destination, int | None]],
    removals: list[int],
    probe_keys: list[str],
) -> None:
    trie = make()
    live: set[Binding] = set()
    made = [Binding.make("x", d, p, None if a is None else {"a": a}) for p, d, a in bindings]
    for binding in made:
        trie.add(binding)
        live.add(binding)
    for index in removals:
        if index < len(made):
            trie.remove(made[index])
            live.discard(made[index])
    assert len(trie) == len(live)
    for key in probe_keys:
        got = trie.match(key, None)
        assert len(got) == len(set(got)), "a destination was yielded twice"
        expected = {b.destination for b in live if reference_match(b.binding_key, key)}
        assert set(got) == expected
    for binding in made:
        trie.remove(binding)
    assert len(trie) == 0
    assert list(trie) == []
    for key in probe_keys:
        assert trie.match(key, None) == []
    if isinstance(trie, TopicTrie):
        assert trie.node_count() == 1, "remove left empty nodes behind"


@settings(max_examples=200, deadline=None)
@given(bindings=st.lists(patterns, max_size=10), probe_keys=st.lists(keys, max_size=10))
def test_lookups_do_not_grow_the_trie(bindings: list[str], probe_keys: list[str]) -> None:
    trie = TopicTrie()
    for pattern in bindings:
        trie.add(bind(pattern))
    nodes = trie.node_count()
    for key in probe_keys:
        trie.match(key, None)
        trie.explain(bind("a.#.b"), key, None)
    assert trie.node_count() == nodes


# ------------------------------------------------------------------- shape


@each_index
def test_two_bindings_one_destination_deliver_once_and_remove_separately(make: type[TopicTrie]) -> None:
    trie = make()
    first, second = bind("a.*", Q1, v=1), bind("a.*", Q1, v=2)
    trie.add(first)
    trie.add(second)
    assert trie.match("a.b", None) == [Q1]
    trie.remove(first)
    assert trie.match("a.b", None) == [Q1]
    trie.remove(second)
    assert trie.match("a.b", None) == []
    assert len(trie) == 0


@each_index
def test_overlapping_patterns_yield_each_destination_once(make: type[TopicTrie]) -> None:
    trie = make()
    for pattern in ("#", "a.#", "*", "a", "#.a.#"):
        trie.add(bind(pattern, Q1))
    trie.add(bind("a", Q2))
    got = trie.match("a", None)
    assert sorted(got, key=str) == [Q1, Q2]


@each_index
def test_adding_twice_is_a_no_op_and_unknown_removal_is_ignored(make: type[TopicTrie]) -> None:
    trie = make()
    trie.add(bind("a.b"))
    trie.add(bind("a.b"))
    assert len(trie) == 1
    trie.remove(bind("c"))
    trie.remove(bind("a.b", Q2))
    assert trie.match("a.b", None) == [Q1]
    trie.remove(bind("a.b"))
    assert trie.match("a.b", None) == []
    assert len(trie) == 0


def test_remove_prunes_only_what_is_no_longer_used() -> None:
    trie = TopicTrie()
    trie.add(bind("a.b.c"))
    trie.add(bind("a.#"))
    trie.add(bind("a.*.d"))
    before = trie.node_count()  # root, a, b, c, #, *, d
    assert before == 7
    trie.remove(bind("a.b.c"))
    assert trie.node_count() == 5
    assert trie.match("a.b.c", None) == [Q1]  # still through a.#
    trie.remove(bind("a.#"))
    trie.remove(bind("a.*.d"))
    assert trie.node_count() == 1


def test_a_miss_allocates_no_nodes() -> None:
    trie = TopicTrie()
    trie.add(bind("a.b"))
    trie.match("x.y.z", None)
    trie.match("a.b.c.d", None)
    trie.match("", None)
    assert trie.node_count() == 3


@each_index
def test_many_hashes_do_not_blow_up(make: type[TopicTrie]) -> None:
    # Without memoising '#' states this is exponential in the number of '#'.
    trie = make()
    pattern = ".".join(["#"] * 40 + ["z"])
    trie.add(bind(pattern))
    trie.add(bind(".".join(["#", "*"] * 20 + ["#"]), Q2))
    key = ".".join(["a"] * 60)
    started = time.perf_counter()
    assert trie.match(key, None) == [Q2]
    assert trie.explain(bind(pattern), key, None).matched is False
    assert time.perf_counter() - started < 2.0


@each_index
def test_headers_are_ignored(make: type[TopicTrie]) -> None:
    trie = make()
    trie.add(bind("a"))
    assert trie.match("a", {"a": 1}) == [Q1]


# ----------------------------------------------------------------- explain

EXPLAIN = [
    ("a.*", "a.b", Verdict(True, "pattern 'a.*' matches 'a.b'")),
    ("#", "", Verdict(True, "pattern '#' matches ''")),
    ("a.*", "a", Verdict(False, "'*' needs exactly one word at position 2, key has none left")),
    ("*", "", Verdict(False, "'*' needs exactly one word at position 1, key has none left")),
    ("a.b", "a", Verdict(False, "'b' needs a word at position 2, key has none left")),
    ("a.b.c", "a.x.c", Verdict(False, "word 2 is 'x', pattern wants 'b'")),
    ("a..b", "a.b", Verdict(False, "word 2 is 'b', pattern wants ''")),
    ("a", "a.b.c", Verdict(False, "pattern ends after 1 word, key has 2 more: 'b.c'")),
    ("a.b", "a.b.", Verdict(False, "pattern ends after 2 words, key has 1 more: ''")),
    ("", ".", Verdict(False, "pattern ends after 0 words, key has 2 more: '.'")),
    # with '#', the reason is about the furthest the key could be matched
    ("a.#.c", "a.b.d", Verdict(False, "word 3 is 'd', pattern wants 'c'")),
    ("#.*.#", "", Verdict(False, "'*' needs exactly one word at position 1, key has none left")),
    ("#.b", "a.c", Verdict(False, "word 2 is 'c', pattern wants 'b'")),
]


@pytest.mark.parametrize(("pattern", "key", "verdict"), EXPLAIN)
def test_explain_reasons(pattern: str, key: str, verdict: Verdict) -> None:
    assert TopicTrie().explain(bind(pattern), key, None) == verdict
