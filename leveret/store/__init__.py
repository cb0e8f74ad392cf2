"""Durable state on disk: message segments and the topology journal.

`Store.open(path)` is the documented entry point; a broker persists through
`broker.attach_store(store)`. The parts, bottom up: frames (the file format),
records (message records), topology (the topology journal), writer (group
commit), segments (which segment holds what), recovery (reading back), gate
(replies held until durable), store (all of them together).
"""

from leveret.store.gate import ACK, COMMIT_OK, NACK, ReplyGate
from leveret.store.recovery import RecoveryReport
from leveret.store.store import Store, StoreLocked
from leveret.store.topology import TopologyJournal

__all__ = ["ACK", "COMMIT_OK", "NACK", "RecoveryReport", "ReplyGate", "Store", "StoreLocked", "TopologyJournal"]
