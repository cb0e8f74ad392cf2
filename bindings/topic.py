"""A trie of binding-key words: topic matching for any set of binding keys.

The topic exchange's index (leveret.bindings.topic_index) puts the keys of its
largest shapes in tables and the rest here.

Words are split on '.', empty words are real words and "" is zero words
(RabbitMQ 3.10: `*` does not match "", `a.*` matches "a.", `#` matches "").
A binding key word `*` matches exactly one routing-key word and `#` zero or
more; every other word, "a#" included, is a literal.

Theory of operation. Each trie node holds a dict of literal children, at most
one `*` child and one `#` child, and the destinations whose binding key ends
there, each with a count of bindings (two bindings to one queue that differ
only in their arguments share the leaf; removing one keeps the other). Both
dicts are None while empty: most nodes of a big trie need neither.
Nodes are created by `add` only and pruned by `remove` as soon as they hold
neither destinations nor children, so `len(index)` bindings give at most
that many nodes per word and a lookup never creates one.

Matching walks (node, position) states depth first with explicit stacks.
A `#` node state may also swallow the word at its position (stay, position
+ 1). Every other node is entered by consuming one word from its parent's
state, so only `#` states can be reached twice (think `#.#.#`); they are
memoised, which bounds a match by (trie nodes that can match) x (words + 1)
whatever the number of bindings, and keeps `#`-heavy patterns from blowing
up. A match stops as soon as it has found every destination of the index.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from leveret.bindings.model import Binding, Destination, Headers, Verdict

__all__ = ["TopicTrie", "split_words", "topic_matches"]


def split_words(key: str) -> list[str]:
    """Words of a routing or binding key; "" has none, "." has two empty ones."""
    return key.split(".") if key else []


class _Node:
    # None instead of empty dicts: less memory, and a match reads one object
    # fewer per node, which counts once a big trie no longer fits in cache.
    __slots__ = ("children", "star", "hash", "destinations", "is_hash")

    def __init__(self, is_hash: bool = False) -> None:
        self.children: dict[str, _Node] | None = None
        self.star: _Node | None = None
        self.hash: _Node | None = None
        self.destinations: dict[Destination, int] | None = None
        self.is_hash = is_hash

    def child(self, word: str) -> _Node | None:
        if word == "*":
            return self.star
        if word == "#":
            return self.hash
        return self.children.get(word) if self.children is not None else None

    def child_or_new(self, word: str) -> _Node:
        node = self.child(word)
        if node is None:
            node = _Node(is_hash=word == "#")
            if word == "*":
                self.star = node
            elif word == "#":
                self.hash = node
            elif self.children is None:
                self.children = {word: node}
            else:
                self.children[word] = node
        return node

    def drop_child(self, word: str) -> None:
        if word == "*":
            self.star = None
        elif word == "#":
            self.hash = None
        elif self.children is not None:
            del self.children[word]
            if not self.children:
                self.children = None

    def is_empty(self) -> bool:
        return not (self.destinations or self.children or self.star or self.hash)


class TopicTrie:
    """BindingIndex for topic exchanges (see the module docstring)."""

    __slots__ = ("_root", "_bindings", "_destination_counts")

    def __init__(self) -> None:
        self._root = _Node()
        self._bindings: set[Binding] = set()
        # destination -> bindings leading to it, so a match that has found
        # every destination there is can stop early.
        self._destination_counts: dict[Destination, int] = {}

    def __len__(self) -> int:
        return len(self._bindings)

    def __iter__(self) -> Iterator[Binding]:
        return iter(self._bindings)

    def node_count(self) -> int:
        """Trie nodes, the root included: 1 for an empty index."""
        count, stack = 0, [self._root]
        while stack:
            node = stack.pop()
            count += 1
            stack.extend(node.children.values() if node.children is not None else ())
            stack.extend(n for n in (node.star, node.hash) if n is not None)
        return count

    def add(self, binding: Binding) -> None:
        """Add a binding; adding one that is already there changes nothing."""
        if binding in self._bindings:
            return
        self._bindings.add(binding)
        node = self._root
        for word in split_words(binding.binding_key):
            node = node.child_or_new(word)
        destination = binding.destination
        if node.destinations is None:
            node.destinations = {}
        node.destinations[destination] = node.destinations.get(destination, 0) + 1
        self._destination_counts[destination] = self._destination_counts.get(destination, 0) + 1

    def remove(self, binding: Binding) -> None:
        """Remove a binding and prune the nodes left empty; unknown ones are ignored."""
        if binding not in self._bindings:
            return
        self._bindings.discard(binding)
        destination = binding.destination
        words = split_words(binding.binding_key)
        path = [self._root]
        for word in words:
            node = path[-1].child(word)
            assert node is not None, "trie lost a node of a known binding"
            path.append(node)
        leaf = path[-1]
        assert leaf.destinations is not None, "trie lost the leaf of a known binding"
        left = leaf.destinations[destination] - 1
        if left:
            leaf.destinations[destination] = left
        else:
            del leaf.destinations[destination]
            if not leaf.destinations:
                leaf.destinations = None
        left = self._destination_counts[destination] - 1
        if left:
            self._destination_counts[destination] = left
        else:
            del self._destination_counts[destination]
        for depth in range(len(words), 0, -1):
            if not path[depth].is_empty():
                break
            path[depth - 1].drop_child(words[depth - 1])

    def __contains__(self, binding: object) -> bool:
        return binding in self._bindings

    def match(self, routing_key: str, headers: Headers | None = None) -> list[Destination]:
        """Destinations of the bindings whose key matches, each once."""
        found: dict[Destination, object] = {}
        self.match_into(
            routing_key.split(".") if routing_key else [], found, len(self._destination_counts)
        )
        return list(found)

    def match_into(self, words: list[str], found: dict[Destination, object], total: int) -> None:
        """Add the destinations matching `words` to `found`; stop once it holds
        `total` (every destination there is, counted by the caller)."""
        n = len(words)
        if len(found) == total:
            return
        seen: set[tuple[int, int]] | None = None  # '#' states visited, made on first need
        # Pending (node, position) states as two parallel stacks: no tuple per state.
        nodes = [self._root]
        positions = [0]
        while nodes:
            node = nodes.pop()
            i = positions.pop()
            while True:  # follow one path, stacking the branches left behind
                if node.is_hash:
                    if seen is None:
                        seen = set()
                    state = (id(node), i)
                    if state in seen:
                        break
                    seen.add(state)
                    if i < n:  # '#' swallows word i
                        nodes.append(node)
                        positions.append(i + 1)
                hash_child = node.hash
                if hash_child is not None:  # '#' matching zero words so far
                    nodes.append(hash_child)
                    positions.append(i)
                if i == n:
                    destinations = node.destinations
                    if destinations is not None:
                        found.update(destinations)
                        if len(found) == total:
                            return  # every destination there is
                    break
                star = node.star
                children = node.children
                child = children.get(words[i]) if children is not None else None
                i += 1
                if star is not None:
                    if child is not None:
                        nodes.append(child)
                        positions.append(i)
                    node = star
                elif child is not None:
                    node = child
                else:
                    break

    def explain(
        self, binding: Binding, routing_key: str, headers: Headers | None = None
    ) -> Verdict:
        return explain_topic(binding.binding_key, routing_key)


def topic_matches(binding_key: str, routing_key: str) -> bool:
    """Whether one binding key matches one routing key (no index needed)."""
    return _Alignment(split_words(binding_key), split_words(routing_key)).run() is None


@dataclass(frozen=True, slots=True)
class _Failure:
    score: tuple[int, int, int]
    reason: str


class _Alignment:
    """Aligns pattern words with key words for `explain`, remembering the
    failure that got furthest into the key, so the reason names the word
    that broke the match rather than the first thing that was tried."""

    __slots__ = ("pattern", "key", "seen", "best")

    def __init__(self, pattern: list[str], key: list[str]) -> None:
        self.pattern = pattern
        self.key = key
        self.seen: set[tuple[int, int]] = set()
        self.best: _Failure | None = None

    def run(self) -> str | None:
        """None if the pattern matches the key, else the reason it does not."""
        if self._walk(0, 0):
            return None
        assert self.best is not None
        return self.best.reason

    def _fail(self, score: tuple[int, int, int], reason: str) -> bool:
        if self.best is None or score > self.best.score:
            self.best = _Failure(score, reason)
        return False

    def _walk(self, p: int, k: int) -> bool:
        # Iterative over literal runs, recursive on '#': depth stays within
        # the number of '#' words; (p, k) memo keeps it polynomial.
        pattern, key = self.pattern, self.key
        while True:
            if (p, k) in self.seen:
                return False
            self.seen.add((p, k))
            if p == len(pattern):
                if k == len(key):
                    return True
                rest = ".".join(key[k:])
                more = len(key) - k
                return self._fail(
                    (k, 1, p),
                    f"pattern ends after {_words(p)}, key has {more} more: '{rest}'",
                )
            word = pattern[p]
            if word == "#":
                for swallowed in range(k, len(key) + 1):
                    if self._walk(p + 1, swallowed):
                        return True
                return False
            if k == len(key):
                needs = "exactly one word" if word == "*" else "a word"
                # Running out of key ranks below a mismatch at the last word.
                return self._fail(
                    (k - 1, 0, p),
                    f"'{word}' needs {needs} at position {k + 1}, key has none left",
                )
            if word != "*" and word != key[k]:
                return self._fail((k, 2, p), f"word {k + 1} is '{key[k]}', pattern wants '{word}'")
            p += 1
            k += 1


def _words(count: int) -> str:
    return "1 word" if count == 1 else f"{count} words"


def explain_topic(binding_key: str, routing_key: str) -> Verdict:
    reason = _Alignment(split_words(binding_key), split_words(routing_key)).run()
    if reason is None:
        return Verdict(True, f"pattern '{binding_key}' matches '{routing_key}'")
    return Verdict(False, reason)
