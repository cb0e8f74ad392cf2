"""The direct exchange's binding index: routing key == binding key.

Theory of operation. A dict from binding key to the destinations bound with
it, each with a count of bindings: two bindings from one exchange to one
queue with the same key (they differ in their arguments, which a direct
exchange ignores) deliver once, and removing one keeps the other. Keys with
no destinations left are dropped, and a lookup never inserts one.
"""

from __future__ import annotations

from leveret.bindings.model import Binding, BindingSet, Destination, Headers, Verdict

__all__ = ["DirectIndex"]


class DirectIndex(BindingSet):
    """BindingIndex for direct exchanges (see the module docstring)."""

    __slots__ = ("_by_key",)

    def __init__(self) -> None:
        super().__init__()
        self._by_key: dict[str, dict[Destination, int]] = {}

    def add(self, binding: Binding) -> None:
        """Add a binding; adding one that is already there changes nothing."""
        if binding in self._bindings:
            return
        self._bindings.add(binding)
        counts = self._by_key.setdefault(binding.binding_key, {})
        counts[binding.destination] = counts.get(binding.destination, 0) + 1

    def remove(self, binding: Binding) -> None:
        """Remove a binding; unknown ones are ignored."""
        if binding not in self._bindings:
            return
        self._bindings.discard(binding)
        counts = self._by_key[binding.binding_key]
        left = counts[binding.destination] - 1
        if left:
            counts[binding.destination] = left
        else:
            del counts[binding.destination]
            if not counts:
                del self._by_key[binding.binding_key]

    def match(self, routing_key: str, headers: Headers | None = None) -> list[Destination]:
        counts = self._by_key.get(routing_key)
        return list(counts) if counts else []

    def explain(
        self, binding: Binding, routing_key: str, headers: Headers | None = None
    ) -> Verdict:
        if binding.binding_key == routing_key:
            return Verdict(True, f"binding key '{binding.binding_key}' equals the routing key")
        return Verdict(
            False, f"routing key '{routing_key}' is not binding key '{binding.binding_key}'"
        )
