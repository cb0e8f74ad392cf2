"""The fanout exchange's binding index: every destination, keys ignored.

Theory of operation. A count of bindings per destination: bindings to one
queue that differ in key or arguments deliver once, and removing one keeps
the others. A destination leaves the index with its last binding.
"""

from __future__ import annotations

from leveret.bindings.model import Binding, BindingSet, Destination, Headers, Verdict

__all__ = ["FanoutIndex"]


class FanoutIndex(BindingSet):
    """BindingIndex for fanout exchanges (see the module docstring)."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        super().__init__()
        self._counts: dict[Destination, int] = {}

    def add(self, binding: Binding) -> None:
        """Add a binding; adding one that is already there changes nothing."""
        if binding in self._bindings:
            return
        self._bindings.add(binding)
        self._counts[binding.destination] = self._counts.get(binding.destination, 0) + 1

    def remove(self, binding: Binding) -> None:
        """Remove a binding; unknown ones are ignored."""
        if binding not in self._bindings:
            return
        self._bindings.discard(binding)
        left = self._counts[binding.destination] - 1
        if left:
            self._counts[binding.destination] = left
        else:
            del self._counts[binding.destination]

    def match(self, routing_key: str, headers: Headers | None = None) -> list[Destination]:
        return list(self._counts)

    def explain(
        self, binding: Binding, routing_key: str, headers: Headers | None = None
    ) -> Verdict:
        return Verdict(True, "fanout: every binding matches, the routing key is ignored")
