"""Durable state on disk: message segments and the topology journal.

`Store.open(path)` is the documented entry point; a broker persists through
`broker.attach_store(store)`.
"""

from leveret.store.store import Store, StoreLocked

__all__ = ["Store", "StoreLocked"]
