"""The topology journal: durable exchanges, queues and bindings as records.

`Topology` keeps, on the loop thread, the records that would recreate what is
durable now: one per exchange, per queue (with its queue id, the `qid` that
message records name), per binding, and per vhost's delay pseudo-queue (the
qid that holds messages waiting on x-delayed-message exchanges). Each change
returns the record to append to topology.log, or None when there is nothing
to write (a binding already kept, a delete of something never kept).

topology.log is replayed in order at boot (`replay`); a delete record undoes
its declare. Declare/delete churn makes the log mostly history, so it is
rewritten as a `snapshot` at boot and whenever it holds more than
`TOPOLOGY_COMPACT_MIN` records and twice as many as the topology.

A record is a type byte, then u32-length-prefixed fields (text as UTF-8 with
surrogateescape, arguments as an AMQP field table).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from leveret.amqp_wire.fieldtable import decode_table_plain, encode_table
from leveret.bindings.model import Binding
from leveret.exchanges.base import Exchange
from leveret.exchanges.delayed import DelayedMessage
from leveret.queues.queue import DeadLetter, Entry, Queue
from leveret.store.frames import MAGIC_TOPOLOGY, frame, header, payload

TOPOLOGY_COMPACT_MIN = 10_000  # topology.log is rewritten when twice as long as the topology, and this

_EXCHANGE, _EXCHANGE_DELETED = 0x58, 0x78  # X x
_QUEUE, _QUEUE_DELETED = 0x51, 0x71  # Q q
_BINDING, _UNBINDING = 0x42, 0x62  # B b
_DELAY_QUEUE = 0x44  # D: the qid that holds a vhost's delayed messages (x-delayed-message)
_U32 = struct.Struct("<I")


class TopologyJournal(Protocol):
    """What a VirtualHost tells about durable topology (leveret.broker.vhost calls it)."""

    def exchange_declared(self, vhost: str, exchange: Exchange) -> None: ...
    def exchange_deleted(self, vhost: str, exchange: Exchange) -> None: ...
    def queue_declared(self, vhost: str, queue: Queue) -> None: ...
    def queue_deleted(self, vhost: str, queue: Queue) -> None: ...
    def bound(self, vhost: str, binding: Binding) -> None: ...
    def unbound(self, vhost: str, binding: Binding) -> None: ...
    def attach_queue(self, vhost: str, queue: Queue, now_ms: int) -> list[DeadLetter]: ...
    def delayed(self, vhost: str, entry: DelayedMessage) -> None: ...
    def released(self, vhost: str, entry: DelayedMessage) -> None: ...
    def recovered_delayed(self, vhost: str) -> list[Entry]: ...


class Topology:
    """The durable topology of one store, as the records that would recreate it."""

    def __init__(self) -> None:
        self.exchanges: dict[tuple[str, str], bytes] = {}
        self.queues: dict[tuple[str, str], tuple[int, bytes]] = {}  # (vhost, name) -> (qid, record)
        self.bindings: dict[bytes, bytes] = {}  # the record without its type byte -> record
        self.delay_queues: dict[str, tuple[int, bytes]] = {}  # vhost -> (qid, record)
        self.next_qid = 1
        self.log_records = 0  # records in topology.log, to know when to compact it

    # -------------------------------------------------------------- changes
    def exchange_declared(self, vhost: str, exchange: Exchange) -> bytes:
        record = _fields(_EXCHANGE, _text(vhost), _text(exchange.name), _text(exchange.type_name),
                         _flags(exchange.auto_delete, exchange.internal), _table(exchange.arguments))
        self.exchanges[(vhost, exchange.name)] = record
        return record

    def exchange_deleted(self, vhost: str, exchange: Exchange) -> bytes | None:
        if self.exchanges.pop((vhost, exchange.name), None) is None:
            return None
        return _fields(_EXCHANGE_DELETED, _text(vhost), _text(exchange.name))

    def queue_declared(self, vhost: str, queue: Queue) -> tuple[int, bytes]:
        qid = self._new_qid()
        record = _fields(_QUEUE, _text(vhost), _text(queue.name), _U32.pack(qid),
                         _flags(queue.auto_delete), _table(queue.arguments))
        self.queues[(vhost, queue.name)] = (qid, record)
        return qid, record

    def queue_deleted(self, vhost: str, queue: Queue) -> bytes | None:
        known = self.queues.pop((vhost, queue.name), None)
        if known is None:
            return None
        return _fields(_QUEUE_DELETED, _text(vhost), _text(queue.name), _U32.pack(known[0]))

    def bound(self, vhost: str, binding: Binding) -> bytes | None:
        record = _binding_record(_BINDING, vhost, binding)
        if record[1:] in self.bindings:
            return None
        self.bindings[record[1:]] = record
        return record

    def unbound(self, vhost: str, binding: Binding) -> bytes | None:
        record = _binding_record(_UNBINDING, vhost, binding)
        return record if self.bindings.pop(record[1:], None) is not None else None

    def delay_queue(self, vhost: str) -> tuple[int, bytes | None]:
        """The qid of `vhost`'s delay pseudo-queue, and its record if it is new."""
        known = self.delay_queues.get(vhost)
        if known is not None:
            return known[0], None
        qid = self._new_qid()
        record = _fields(_DELAY_QUEUE, _text(vhost), _U32.pack(qid))
        self.delay_queues[vhost] = (qid, record)
        return qid, record

    def _new_qid(self) -> int:
        qid = self.next_qid
        self.next_qid += 1
        return qid

    # ----------------------------------------------------------- the log
    def logged(self) -> bool:
        """Count one record appended to the log; True if the log should be compacted now."""
        self.log_records += 1
        live = len(self.exchanges) + len(self.queues) + len(self.bindings) + len(self.delay_queues)
        return self.log_records > max(TOPOLOGY_COMPACT_MIN, 2 * live)

    def snapshot(self, salt: int) -> bytes:
        """A whole new topology.log (header included) holding just what is durable now."""
        records = [*self.exchanges.values(), *(r for _, r in self.queues.values()), *self.bindings.values(),
                   *(r for _, r in self.delay_queues.values())]
        self.log_records = len(records)
        return header(MAGIC_TOPOLOGY, salt) + b"".join(frame(r, salt) for r in records)

    def replay(self, data: bytes, starts: list[int], dropped: Callable[[str], None]) -> None:
        """Apply the verified records of a topology.log, in order."""
        for start in starts:
            record = payload(data, start)
            kind = record[0]
            values = _unfields(record)
            try:
                if kind == _EXCHANGE:
                    self.exchanges[(_str(values[0]), _str(values[1]))] = record
                elif kind == _EXCHANGE_DELETED:
                    self.exchanges.pop((_str(values[0]), _str(values[1])), None)
                elif kind == _QUEUE:
                    qid = _U32.unpack(values[2])[0]
                    self.queues[(_str(values[0]), _str(values[1]))] = (qid, record)
                    self.next_qid = max(self.next_qid, qid + 1)
                elif kind == _QUEUE_DELETED:
                    qid = _U32.unpack(values[2])[0]
                    key = (_str(values[0]), _str(values[1]))
                    if key in self.queues and self.queues[key][0] == qid:
                        del self.queues[key]
                elif kind == _BINDING:
                    self.bindings[record[1:]] = record
                elif kind == _UNBINDING:
                    self.bindings.pop(record[1:], None)
                elif kind == _DELAY_QUEUE:
                    qid = _U32.unpack(values[1])[0]
                    self.delay_queues[_str(values[0])] = (qid, record)
                    self.next_qid = max(self.next_qid, qid + 1)
            except (IndexError, struct.error):
                dropped(f"topology.log: malformed record of type {kind:#x}")

    def queue_ids(self) -> set[int]:
        """Every qid messages may still belong to (queues and delay pseudo-queues)."""
        return {qid for qid, _ in (*self.queues.values(), *self.delay_queues.values())}

    def definitions(self) -> dict[str, Any]:
        """The topology in RabbitMQ's definitions format (typed arguments)."""
        exchanges, queues, bindings = [], [], []
        for record in self.exchanges.values():
            vhost, name, kind, flags, args = _unfields(record)
            exchanges.append({
                "name": _str(name), "vhost": _str(vhost), "type": _str(kind), "durable": True,
                "auto_delete": bool(flags[0] & 1), "internal": bool(flags[0] & 2),
                "arguments": decode_table_plain(args),
            })
        for _, record in self.queues.values():
            vhost, name, _, flags, args = _unfields(record)
            queues.append({
                "name": _str(name), "vhost": _str(vhost), "durable": True,
                "auto_delete": bool(flags[0] & 1), "arguments": decode_table_plain(args),
            })
        for record in self.bindings.values():
            vhost, source, kind, destination, key, args = _unfields(record)
            bindings.append({
                "source": _str(source), "vhost": _str(vhost), "destination": _str(destination),
                "destination_type": _str(kind), "routing_key": _str(key),
                "arguments": decode_table_plain(args),
            })
        return {"exchanges": exchanges, "queues": queues, "bindings": bindings}


def _fields(kind: int, *values: bytes) -> bytes:
    return bytes((kind,)) + b"".join(_U32.pack(len(v)) + v for v in values)


def _unfields(payload: bytes) -> list[bytes]:
    values, pos, end = [], 1, len(payload)
    while pos < end:
        (size,) = _U32.unpack_from(payload, pos)
        pos += 4
        values.append(payload[pos : pos + size])
        pos += size
    return values


def _text(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape")


def _str(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape")


def _flags(*bits: bool) -> bytes:
    return bytes((sum(1 << i for i, bit in enumerate(bits) if bit),))


def _table(arguments: Mapping[str, Any]) -> bytes:
    return encode_table(arguments or {})


def _binding_record(kind: int, vhost: str, binding: Binding) -> bytes:
    destination = binding.destination
    return _fields(kind, _text(vhost), _text(binding.source), _text(destination.kind),
                   _text(destination.name), _text(binding.binding_key), _table(binding.arguments_dict))
