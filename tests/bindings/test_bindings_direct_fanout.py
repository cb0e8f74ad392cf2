"""Direct and fanout binding indexes: equality, every destination, counts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from leveret.bindings.direct import DirectIndex
from leveret.bindings.fanout import FanoutIndex
from leveret.bindings.model import Binding, Destination, Verdict

Q1, Q2, E1 = Destination.queue("q1"), Destination.queue("q2"), Destination.exchange("e1")


def bind(key: str, destination: Destination = Q1, **arguments: object) -> Binding:
    return Binding.make("x", destination, key, arguments)


DIRECT = [
    ("a", "a", True),
    ("a", "b", False),
    ("", "", True),
    ("", ".", False),
    ("a.b", "a.b", True),
    ("a.*", "a.b", False),  # no wildcards in a direct exchange
    ("#", "", False),
    ("A", "a", False),
    ("é", "é", True),
]


@pytest.mark.parametrize(("binding_key", "routing_key", "matched"), DIRECT)
def test_direct_golden(binding_key: str, routing_key: str, matched: bool) -> None:
    index = DirectIndex()
    index.add(bind(binding_key))
    assert index.match(routing_key, None) == ([Q1] if matched else [])
    assert index.explain(bind(binding_key), routing_key, None).matched is matched


def test_direct_counts_bindings_per_destination() -> None:
    index = DirectIndex()
    plain, tagged = bind("k"), bind("k", tag="x")
    index.add(plain)
    index.add(tagged)
    index.add(bind("k", Q2))
    index.add(bind("k", E1))
    assert len(index) == 4
    assert index.match("k", None) == [Q1, Q2, E1]
    index.remove(plain)
    assert index.match("k", None) == [Q1, Q2, E1]
    index.remove(tagged)
    assert index.match("k", None) == [Q2, E1]
    index.remove(tagged)  # unknown now: ignored
    index.remove(bind("k", Q2))
    index.remove(bind("k", E1))
    assert index.match("k", None) == []
    assert len(index) == 0


def test_direct_add_twice_is_a_no_op() -> None:
    index = DirectIndex()
    index.add(bind("k"))
    index.add(bind("k"))
    index.remove(bind("k"))
    assert index.match("k", None) == []


def test_direct_miss_allocates_nothing() -> None:
    index = DirectIndex()
    index.add(bind("k"))
    index.match("other", None)
    assert list(index._by_key) == ["k"]


def test_direct_explain() -> None:
    index = DirectIndex()
    assert index.explain(bind("a"), "a", None) == Verdict(
        True, "binding key 'a' equals the routing key"
    )
    assert index.explain(bind("a"), "b", None) == Verdict(
        False, "routing key 'b' is not binding key 'a'"
    )


def test_fanout_delivers_everywhere_once() -> None:
    index = FanoutIndex()
    first, second = bind("a"), bind("b")
    index.add(first)
    index.add(second)
    index.add(bind("", Q2, tag=1))
    assert index.match("anything", {"h": 1}) == [Q1, Q2]
    assert index.match("", None) == [Q1, Q2]
    index.remove(first)
    assert index.match("", None) == [Q1, Q2]
    index.remove(second)
    assert index.match("", None) == [Q2]
    assert len(index) == 1
    assert index.explain(bind("a"), "zzz", None) == Verdict(
        True, "fanout: every binding matches, the routing key is ignored"
    )


operations = st.lists(
    st.tuples(
        st.booleans(),
        st.sampled_from(["a", "b", ""]),
        st.sampled_from([Q1, Q2, E1]),
        st.sampled_from([None, 1]),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(ops=operations)
def test_indexes_agree_with_a_set_of_bindings(
    ops: list[tuple[bool, str, Destination, int | None]],
) -> None:
    direct, fanout = DirectIndex(), FanoutIndex()
    live: set[Binding] = set()
    for adding, key, destination, tag in ops:
        binding = Binding.make("x", destination, key, None if tag is None else {"tag": tag})
        for index in (direct, fanout):
            (index.add if adding else index.remove)(binding)
        (live.add if adding else live.discard)(binding)
    assert len(direct) == len(fanout) == len(live)
    assert set(fanout.match("", None)) == {b.destination for b in live}
    assert len(fanout.match("", None)) == len({b.destination for b in live})
    for key in ("a", "b", ""):
        got = direct.match(key, None)
        assert len(got) == len(set(got))
        assert set(got) == {b.destination for b in live if b.binding_key == key}
    assert set(direct._by_key) == {b.binding_key for b in live}
