"""Limits every connection shares: the memory alarm and the number of connections.

Theory of operation (RabbitMQ's vm_memory_high_watermark and rabbit_reader's
throttle). Something that can measure the process (the server shell's memory
monitor) reports the memory in use with `update_memory`; above the watermark
the alarm is set, below it the alarm clears (no hysteresis, as in
vm_memory_monitor). The alarm does not touch anyone by itself: a connection
that receives a publish while it is set blocks itself (stops reading, sends
connection.blocked "low on memory" if the client has that capability) and
registers here with `block`. Clearing the alarm tells every registered
connection (`resource_alarm_cleared`), so consumers, which never publish, keep
draining queues all along.

No I/O here: the measuring lives in amqp_wire.memory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from pamqp import exceptions

# RabbitMQ's default vm_memory_high_watermark.relative.
DEFAULT_WATERMARK = 0.4
MEMORY_ALARM_REASON = "low on memory"

# rabbit_resource_monitor_misc: k/K/kiB/KiB are 1024, kB/KB 1000, likewise M and G.
_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kib": 1024, "kb": 1000,
    "m": 1024**2, "mib": 1024**2, "mb": 1000**2,
    "g": 1024**3, "gib": 1024**3, "gb": 1000**3,
    "t": 1024**4, "tib": 1024**4, "tb": 1000**4,
}
_AMOUNT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


@dataclass(frozen=True, slots=True)
class Watermark:
    """The memory high watermark: absolute bytes, or a fraction of total memory."""

    absolute: int | None = None
    fraction: float = DEFAULT_WATERMARK

    @classmethod
    def parse(cls, value: str | float | int) -> Watermark:
        """0.4 or "0.4" (a fraction), 1073741824, "1GiB", "512MB", "800M" (bytes: k, M, G and
        kiB, MiB, GiB are powers of 1024, kB, MB, GB powers of 1000, any case, as in RabbitMQ)."""
        if isinstance(value, bool):
            raise ValueError(f"not a memory watermark: {value!r}")
        if isinstance(value, float):
            return cls._fraction(value)
        if isinstance(value, int):
            return cls._absolute(value)
        text = str(value).strip()
        match = _AMOUNT.match(text)
        if match is None:
            raise ValueError(f"not a memory watermark: {value!r}")
        number, unit = match.groups()
        if not unit and "." in number:
            return cls._fraction(float(number))
        factor = _UNITS.get(unit.lower())
        if factor is None:
            raise ValueError(f"unknown unit in memory watermark: {value!r}")
        return cls._absolute(int(float(number) * factor))

    @classmethod
    def _fraction(cls, fraction: float) -> Watermark:
        if not 0 <= fraction <= 1:
            raise ValueError(f"a relative memory watermark is between 0 and 1, not {fraction}")
        return cls(fraction=fraction)

    @classmethod
    def _absolute(cls, limit: int) -> Watermark:
        if limit < 0:
            raise ValueError(f"a memory watermark cannot be negative: {limit}")
        return cls(absolute=limit)

    def limit(self, total_memory: int) -> int:
        if self.absolute is not None:
            return self.absolute
        return int(total_memory * self.fraction)

    def __str__(self) -> str:
        return f"{self.absolute} bytes" if self.absolute is not None else f"{self.fraction:g} of memory"


class Blockable(Protocol):
    def resource_alarm_cleared(self) -> None: ...


class ResourceAlarms:
    """The broker's memory alarm and count of open connections."""

    def __init__(self) -> None:
        self.memory_alarm = False
        self.memory_used = 0
        self.memory_limit = 0
        self.blocked: set[Blockable] = set()
        self.open_connections = 0
        self.alarms_raised = 0  # for metrics and tests

    # ------------------------------------------------------------ memory
    def update_memory(self, used: int, limit: int) -> bool:
        """A new measurement; True when the alarm was set or cleared by it."""
        self.memory_used, self.memory_limit = used, limit
        alarm = used > limit
        if alarm == self.memory_alarm:
            return False
        self.memory_alarm = alarm
        if alarm:
            self.alarms_raised += 1
        else:
            blocked, self.blocked = self.blocked, set()
            for connection in blocked:
                connection.resource_alarm_cleared()
        return True

    def block(self, connection: Blockable) -> None:
        self.blocked.add(connection)

    def forget(self, connection: Blockable) -> None:
        self.blocked.discard(connection)

    # ------------------------------------------------------- connections
    def connection_opening(self, limit: int | None) -> None:
        """connection.open: 530 when `limit` connections are open (RabbitMQ's connection_max)."""
        if limit is not None and self.open_connections >= limit:
            raise exceptions.AMQPNotAllowed(f"connection refused: node connection limit ({limit}) is reached")

    def connection_opened(self) -> None:
        self.open_connections += 1

    def connection_closed(self) -> None:
        self.open_connections = max(0, self.open_connections - 1)
