"""The topic exchange's binding index: binding keys grouped by shape, a trie for the rest.

A key's shape is the key with its literal words blanked out: `a.*.b` and
`c.*.d` share one. Every binding key of a shape is matched by one dict lookup:
take the routing key's words at the shape's literal positions and look them
up. A shape with one `#` is anchored at both ends: its literal positions before
the `#` count from the start of the routing key, those after it from the end
(negative indexes), and it applies to keys at least as long as its other
words. This is tuple space search, as packet classifiers do it: a key costs
one lookup per shape whatever the number of bindings, where a trie's cost
grows with how full its levels are (a full level has `*` and `#` branches to
follow beside the literal one).

A table pays only for a shape with many bindings, so a shape gets one once it
holds TABLE_MIN bindings and 1/64 of the index, at most MAX_TABLES of them, the
largest first; and tables are used at all only when they hold half of the
bindings, because a trie left about as full costs as much as before, and the
tables' lookups come on top. Keys with two or more `#` and the shapes without
a table stay in a TopicTrie. Which shapes have tables is re-planned after as many changes as
the index held at the last plan, so planning costs O(1) per change amortized.

A match asks the trie first: it holds the small shapes, which are the broad
ones ('#', '*.#', ...), and when they have found every destination there is,
no table needs a lookup.

A table entry's destinations are a dict shared by every entry that leads to
the same single destination (the common case), so 100 000 bindings to four
queues hold four such dicts, not 100 000: less memory and fewer cache misses.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from itertools import chain
from operator import itemgetter
from sys import intern

from leveret.bindings.model import Binding, Destination, Headers, Verdict
from leveret.bindings.topic import TopicTrie, explain_topic, split_words

__all__ = ["TopicIndex", "shape_of"]

TABLE_MIN = 8
TABLE_SHARE = 64  # a tabled shape holds at least 1/TABLE_SHARE of the bindings
TABLE_COVER = 0.5  # tables are used only when they hold at least this share of them
MAX_TABLES = 16
PLAN_MIN = 64  # changes before the first plan, and at least between two

# (words other than '#', whether there is a '#', literal word positions)
Shape = tuple[int, bool, tuple[int, ...]]
KeyOf = Callable[[list[str]], Hashable]
Entries = dict[Hashable, dict[Destination, None]]


def shape_of(binding_key: str) -> tuple[Shape, Hashable] | None:
    """A binding key's shape and its lookup key in the shape's table; None for
    keys with more than one `#`, which only the trie can match."""
    words = split_words(binding_key)
    hashes = words.count("#")
    if hashes > 1:
        return None
    if hashes:
        at = words.index("#")
        words = words[:at] + words[at + 1 :]
        # Words after the '#' are found from the end of the routing key.
        positions = tuple(
            i if i < at else i - len(words) for i, word in enumerate(words) if word != "*"
        )
    else:
        positions = tuple(i for i, word in enumerate(words) if word != "*")
    shape = (len(words), bool(hashes), positions)
    if _is_whole(shape):
        return shape, binding_key
    # Interned, so the tables of a big index share one copy of each word.
    return shape, _key_of(positions)([intern(word) for word in words])


def _is_whole(shape: Shape) -> bool:
    """All words literal and no '#': the lookup key is the routing key itself."""
    length, has_hash, positions = shape
    return not has_hash and len(positions) == length


def _no_words(words: list[str]) -> tuple[()]:
    return ()


def _key_of(positions: tuple[int, ...]) -> KeyOf:
    # itemgetter gives a bare word for one position, a tuple for more.
    return itemgetter(*positions) if positions else _no_words


class TopicIndex:
    """BindingIndex for topic exchanges (see the module docstring)."""

    __slots__ = (
        "_trie",
        "_tabled",
        "_tables",
        "_whole",
        "_probes",
        "_probes_beyond",
        "_shape_counts",
        "_destination_counts",
        "_singles",
        "_copies",
        "_changes",
        "_plan_after",
        "_table_min",
        "_table_cover",
        "_plan_every",
    )

    def __init__(
        self,
        *,
        table_min: int = TABLE_MIN,
        table_cover: float = TABLE_COVER,
        plan_every: int | None = None,
    ) -> None:
        """The defaults are the policy above; tests lower them (`plan_every`
        fixes the changes between plans) to put small indexes in tables."""
        self._trie = TopicTrie()
        self._tabled: set[Binding] = set()  # bindings held by tables, not the trie
        self._tables: dict[Shape, Entries] = {}
        # The tables as match reads them: whole-key ones by length, and for
        # each routing-key length the other tables that can match it (the
        # no-'#' ones of that length, those with a '#' no longer than it);
        # keys longer than every table are probed by all the '#' ones.
        self._whole: dict[int, Entries] = {}
        self._probes: list[list[tuple[KeyOf, Entries]]] = []
        self._probes_beyond: list[tuple[KeyOf, Entries]] = []
        self._shape_counts: dict[Shape, int] = {}
        self._destination_counts: dict[Destination, int] = {}
        self._singles: dict[Destination, dict[Destination, None]] = {}
        # (shape, lookup key, destination) -> tabled bindings that share that
        # entry (only when two or more: they differ in their arguments, or in
        # wildcards that match alike, as '*.*.#' and '*.#.*').
        self._copies: dict[tuple[Shape, Hashable, Destination], int] = {}
        self._changes = 0
        self._plan_after = plan_every or PLAN_MIN
        self._table_min = table_min
        self._table_cover = table_cover
        self._plan_every = plan_every

    def __len__(self) -> int:
        return len(self._tabled) + len(self._trie)

    def __iter__(self) -> Iterator[Binding]:
        return chain(self._tabled, self._trie)

    def __contains__(self, binding: object) -> bool:
        return binding in self._tabled or binding in self._trie

    def tables(self) -> int:
        """Shapes matched through a table (the others are in the trie)."""
        return len(self._tables)

    def trie_node_count(self) -> int:
        return self._trie.node_count()

    # ------------------------------------------------------------ changes

    def add(self, binding: Binding) -> None:
        """Add a binding; adding one that is already there changes nothing."""
        if binding in self:
            return
        shaped = shape_of(binding.binding_key)
        if shaped is None:
            self._trie.add(binding)
        else:
            shape, key = shaped
            self._shape_counts[shape] = self._shape_counts.get(shape, 0) + 1
            entries = self._tables.get(shape)
            if entries is None:
                self._trie.add(binding)
            else:
                self._table_add(shape, entries, key, binding)
        destination = binding.destination
        self._destination_counts[destination] = self._destination_counts.get(destination, 0) + 1
        self._changed()

    def remove(self, binding: Binding) -> None:
        """Remove a binding; unknown ones are ignored."""
        if binding in self._tabled:
            shaped = shape_of(binding.binding_key)
            assert shaped is not None, "a tabled binding has a shape"
            shape, key = shaped
            self._table_remove(shape, self._tables[shape], key, binding)
        elif binding in self._trie:
            self._trie.remove(binding)
            shaped = shape_of(binding.binding_key)
        else:
            return
        if shaped is not None:
            shape = shaped[0]
            left = self._shape_counts[shape] - 1
            if left:
                self._shape_counts[shape] = left
            else:
                del self._shape_counts[shape]
        destination = binding.destination
        left = self._destination_counts[destination] - 1
        if left:
            self._destination_counts[destination] = left
        else:
            del self._destination_counts[destination]
            self._singles.pop(destination, None)
        self._changed()

    def _single(self, destination: Destination) -> dict[Destination, None]:
        single = self._singles.get(destination)
        if single is None:
            single = self._singles[destination] = {destination: None}
        return single

    def _table_add(self, shape: Shape, entries: Entries, key: Hashable, binding: Binding) -> None:
        # An entry with one destination holds the shared dict, one with more
        # its own, so only the latter is ever changed in place.
        self._tabled.add(binding)
        destination = binding.destination
        current = entries.get(key)
        if current is None:
            entries[key] = self._single(destination)
        elif destination in current:
            copy = (shape, key, destination)
            self._copies[copy] = self._copies.get(copy, 1) + 1
        elif len(current) == 1:
            entries[key] = {**current, destination: None}
        else:
            current[destination] = None

    def _table_remove(self, shape: Shape, entries: Entries, key: Hashable, binding: Binding) -> None:
        self._tabled.discard(binding)
        destination = binding.destination
        copy = (shape, key, destination)
        copies = self._copies.get(copy)
        if copies is not None:  # another binding still leads there
            if copies > 2:
                self._copies[copy] = copies - 1
            else:
                del self._copies[copy]
            return
        current = entries[key]
        if len(current) == 1:
            del entries[key]
        elif len(current) == 2:
            (other,) = (d for d in current if d != destination)
            entries[key] = self._single(other)
        else:
            del current[destination]

    def _changed(self) -> None:
        self._changes += 1
        if self._changes >= self._plan_after:
            self._plan()

    def _plan(self) -> None:
        """Give tables to the largest shapes that earn one, move bindings between
        tables and trie to match, and rebuild what match reads."""
        threshold = max(self._table_min, len(self) // TABLE_SHARE)
        largest = sorted(self._shape_counts.items(), key=lambda item: -item[1])[:MAX_TABLES]
        wanted = {shape for shape, count in largest if count >= threshold}
        if sum(self._shape_counts[shape] for shape in wanted) < self._table_cover * len(self):
            # The trie would stay about as full: tables would only add lookups.
            wanted = set()
        dropped = self._tables.keys() - wanted
        added = wanted - self._tables.keys()
        if dropped:
            for binding in [b for b in self._tabled if _shape(b) in dropped]:
                shape, key = _shaped(binding)
                self._table_remove(shape, self._tables[shape], key, binding)
                self._trie.add(binding)
            for shape in dropped:
                del self._tables[shape]
        if added:
            for shape in added:
                self._tables[shape] = {}
            for binding in [b for b in self._trie if _shape(b) in added]:
                self._trie.remove(binding)
                shape, key = _shaped(binding)
                self._table_add(shape, self._tables[shape], key, binding)
        self._whole.clear()
        longest = max((shape[0] for shape in self._tables), default=-1)
        self._probes = [[] for _ in range(longest + 1)]
        self._probes_beyond = []
        # Larger tables first: they are likelier to end a match early.
        for shape in sorted(self._tables, key=lambda s: -self._shape_counts.get(s, 0)):
            entries = self._tables[shape]
            length, has_hash, positions = shape
            if _is_whole(shape):
                self._whole[length] = entries
                continue
            probe = (_key_of(positions), entries)
            if has_hash:
                for n in range(length, longest + 1):
                    self._probes[n].append(probe)
                self._probes_beyond.append(probe)
            else:
                self._probes[length].append(probe)
        self._changes = 0
        self._plan_after = self._plan_every or max(PLAN_MIN, len(self))

    # ------------------------------------------------------------- lookup

    def match(self, routing_key: str, headers: Headers | None = None) -> list[Destination]:
        """Destinations of the bindings whose key matches, each once."""
        words = routing_key.split(".") if routing_key else []
        n = len(words)
        total = len(self._destination_counts)
        found: dict[Destination, object] = {}
        # The trie first (see the module docstring).
        if len(self._trie):
            self._trie.match_into(words, found, total)
            if len(found) == total:
                return list(found)
        entries = self._whole.get(n)
        if entries is not None:
            hit = entries.get(routing_key)
            if hit is not None:
                found.update(hit)
                if len(found) == total:
                    return list(found)
        probes = self._probes
        for key_of, entries in probes[n] if n < len(probes) else self._probes_beyond:
            hit = entries.get(key_of(words))
            if hit is not None:
                found.update(hit)
                if len(found) == total:
                    return list(found)
        return list(found)

    def explain(
        self, binding: Binding, routing_key: str, headers: Headers | None = None
    ) -> Verdict:
        return explain_topic(binding.binding_key, routing_key)


def _shaped(binding: Binding) -> tuple[Shape, Hashable]:
    shaped = shape_of(binding.binding_key)
    assert shaped is not None, "only keys with a shape are tabled"
    return shaped


def _shape(binding: Binding) -> Shape | None:
    shaped = shape_of(binding.binding_key)
    return None if shaped is None else shaped[0]
