"""The topic index's shape tables: shapes, the planning policy, and agreement
with the trie at sizes where the tables are in use. The matching rules
themselves are checked for every index in test_bindings_topic.py."""

from __future__ import annotations

import random

import pytest
from leveret.bindings.model import Binding, Destination
from leveret.bindings.topic import TopicTrie
from leveret.bindings.topic_index import TopicIndex, shape_of

QUEUES = [Destination.queue(f"q{n}") for n in range(5)] + [Destination.exchange("e")]


def bind(key: str, destination: Destination = QUEUES[0], **arguments: object) -> Binding:
    return Binding.make("x", destination, key, arguments)


SHAPES = [
    # binding key, (words other than '#', has '#', literal positions), lookup key
    ("a.b.c", (3, False, (0, 1, 2)), "a.b.c"),  # all literal: the routing key itself
    ("", (0, False, ()), ""),
    ("a.*.c", (3, False, (0, 2)), ("a", "c")),
    ("*.b", (2, False, (1,)), "b"),
    ("*.*", (2, False, ()), ()),
    ("a..*", (3, False, (0, 1)), ("a", "")),
    ("a.#.c", (2, True, (0, -1)), ("a", "c")),  # after '#': counted from the end
    ("#.b.*", (2, True, (-2,)), "b"),
    ("a.*.#", (2, True, (0,)), "a"),
    ("#", (0, True, ()), ()),
    ("*.#.*", (2, True, ()), ()),
    ("a#.b*", (2, False, (0, 1)), "a#.b*"),  # '#' and '*' inside a word are literal
]


@pytest.mark.parametrize(("key", "shape", "lookup"), SHAPES)
def test_shape_of(key: str, shape: tuple[int, bool, tuple[int, ...]], lookup: object) -> None:
    assert shape_of(key) == (shape, lookup)


@pytest.mark.parametrize("key", ["#.#", "a.#.b.#", "#.*.#"])
def test_two_hashes_have_no_shape(key: str) -> None:
    assert shape_of(key) is None


def test_a_large_shape_gets_a_table_and_loses_it_when_it_shrinks() -> None:
    index = TopicIndex()
    bindings = [bind(f"k{n}.*.end", QUEUES[n % 3]) for n in range(300)]
    for binding in bindings:
        index.add(binding)
    assert index.tables() == 1
    assert index.trie_node_count() == 1, "the tabled shape left bindings in the trie"
    assert index.match("k7.x.end", None) == [QUEUES[1]]
    assert index.match("k7.x.y.end", None) == []
    for binding in bindings[3:]:
        index.remove(binding)
    assert len(index) == 3
    # Plans come after as many changes as the index held at the last one.
    for _ in range(50):
        index.add(bind("other.#.#"))
        index.remove(bind("other.#.#"))
    assert index.tables() == 0, "three bindings kept their table"
    assert sorted(index.match(f"k{n}.x.end", None)[0].name for n in range(3)) == [
        "q0",
        "q1",
        "q2",
    ]
    assert index.match("k9.x.end", None) == []


def test_no_tables_when_most_keys_would_stay_in_the_trie() -> None:
    index = TopicIndex()
    for n in range(100):
        index.add(bind(f"k{n}.*"))
    for n in range(300):
        index.add(bind(f"#.k{n}.#"))  # two '#': trie only
    assert index.tables() == 0
    assert index.match("k5.x", None) == [QUEUES[0]]


def test_copies_differing_in_arguments_share_an_entry_until_the_last_goes() -> None:
    index = TopicIndex(table_min=1, table_cover=0, plan_every=1)
    first, second = bind("a.*", QUEUES[1], v=1), bind("a.*", QUEUES[1], v=2)
    index.add(bind("a.*", QUEUES[0]))
    index.add(first)
    index.add(second)
    assert index.tables() == 1
    assert sorted(d.name for d in index.match("a.z", None)) == ["q0", "q1"]
    index.remove(first)
    assert sorted(d.name for d in index.match("a.z", None)) == ["q0", "q1"]
    index.remove(second)
    assert index.match("a.z", None) == [QUEUES[0]]
    assert len(index) == 1


def random_key(rng: random.Random, words: list[str], wildcards: bool) -> str:
    tokens = []
    for _ in range(rng.randint(0, 5)):
        roll = rng.random()
        if wildcards and roll < 0.2:
            tokens.append("*")
        elif wildcards and roll < 0.3:
            tokens.append("#")
        else:
            tokens.append(rng.choice(words))
    return ".".join(tokens)


@pytest.mark.parametrize("seed", range(4))
def test_agrees_with_the_trie_while_tables_come_and_go(seed: int) -> None:
    """Thousands of bindings, added and removed in waves so shapes gain and
    lose tables, against the trie (itself checked against the definition)."""
    rng = random.Random(seed)
    words = ["", "a", "b", "c", "d", "e", "f", "g"]
    index, trie = TopicIndex(), TopicTrie()
    live: list[Binding] = []
    probes = [random_key(rng, words, wildcards=False) for _ in range(300)]
    for wave in range(6):
        for _ in range(rng.randint(200, 1500)):
            binding = bind(random_key(rng, words, wildcards=True), rng.choice(QUEUES))
            index.add(binding)
            trie.add(binding)
            live.append(binding)
        rng.shuffle(live)
        for binding in live[: len(live) * rng.randint(1, 9) // 10]:
            index.remove(binding)
            trie.remove(binding)
        live = list(trie)
        assert len(index) == len(trie)
        assert set(index) == set(trie)
        for key in probes:
            got = index.match(key, None)
            assert len(got) == len(set(got)), "a destination was yielded twice"
            assert set(got) == set(trie.match(key, None)), (wave, key)


def test_keys_longer_than_every_table_are_probed_by_the_hash_tables() -> None:
    index = TopicIndex(table_min=1, table_cover=0, plan_every=1)
    index.add(bind("a.#.z", QUEUES[0]))
    index.add(bind("a.b.c", QUEUES[1]))
    index.add(bind("*.b.*", QUEUES[2]))
    assert index.tables() == 3
    assert index.trie_node_count() == 1, "every binding should be in a table"
    assert index.match("a.z", None) == [QUEUES[0]]
    assert sorted(d.name for d in index.match("a.b.c", None)) == ["q1", "q2"]
    assert index.match("a.b.c.d.e.f.z", None) == [QUEUES[0]]
    assert index.match("a.b.c.d.e.f.y", None) == []


@pytest.mark.parametrize(("first", "second", "probe"), [
    ("*.*.#", "*.#.*", "."),
    ("a.*.#", "a.#.*", "a.b"),
])
def test_keys_that_share_an_entry_keep_it_until_the_last_goes(first: str, second: str, probe: str) -> None:
    # Different binding keys, one table entry: the wildcards match alike (found by hypothesis).
    index = TopicIndex(table_min=1, table_cover=0, plan_every=1)
    index.add(bind(first, QUEUES[1]))
    index.add(bind(second, QUEUES[1]))
    assert index.tables() == 1
    index.remove(bind(first, QUEUES[1]))
    assert index.match(probe, None) == [QUEUES[1]]
    index.remove(bind(second, QUEUES[1]))
    assert index.match(probe, None) == []
    assert len(index) == 0
