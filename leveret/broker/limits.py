"""Limits every connection shares: the memory alarm, the number of connections,
and RabbitMQ's per-vhost (max-connections, max-queues) and per-user
(max-connections, max-channels) limits.

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

Vhost and user limits come from definitions, as RabbitMQ exports them: a
vhost's in a "vhost-limits" parameter, a user's in its "limits"; a negative
value (or none) is no limit, 0 allows nothing. They are checked where RabbitMQ
checks them (3.10, observed): connection.open (the vhost's, then the user's
connection count), channel.open (the user's channels on all its
connections), and the declaration of a new queue.

No I/O here: the measuring lives in leveret.server.memory.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pamqp import exceptions

# RabbitMQ's default vm_memory_high_watermark.relative.
DEFAULT_WATERMARK = 0.4
MEMORY_ALARM_REASON = "low on memory"
# RabbitMQ's default disk_free_limit.absolute (50 MB): with paging, the disk is
# where backlogs go, so it is the disk that blocks publishers.
DEFAULT_DISK_FREE_LIMIT = 50_000_000

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


def _limit(value: Any, key: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} must be an integer, not {value!r}")
    return None if value < 0 else value


@dataclass(frozen=True, slots=True)
class VhostLimits:
    max_connections: int | None = None
    max_queues: int | None = None

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> VhostLimits:
        """From {"max-connections": 10, "max-queues": 100}; ValueError for unknown keys or bad values."""
        unknown = set(value) - {"max-connections", "max-queues"}
        if unknown:
            raise ValueError(f"unknown vhost limit {sorted(unknown)[0]!r}")
        return cls(
            _limit(value.get("max-connections"), "max-connections"),
            _limit(value.get("max-queues"), "max-queues"),
        )

    def to_json(self) -> dict[str, int]:
        pairs = (("max-connections", self.max_connections), ("max-queues", self.max_queues))
        return {key: limit for key, limit in pairs if limit is not None}


@dataclass(frozen=True, slots=True)
class UserLimits:
    max_connections: int | None = None
    max_channels: int | None = None

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> UserLimits:
        """From {"max-connections": 10, "max-channels": 100}; ValueError for unknown keys or bad values."""
        unknown = set(value) - {"max-connections", "max-channels"}
        if unknown:
            raise ValueError(f"unknown user limit {sorted(unknown)[0]!r}")
        return cls(
            _limit(value.get("max-connections"), "max-connections"),
            _limit(value.get("max-channels"), "max-channels"),
        )

    def to_json(self) -> dict[str, int]:
        pairs = (("max-channels", self.max_channels), ("max-connections", self.max_connections))
        return {key: limit for key, limit in pairs if limit is not None}


NO_VHOST_LIMITS = VhostLimits()
NO_USER_LIMITS = UserLimits()


class Blockable(Protocol):
    def resource_alarm_cleared(self) -> None: ...


class ResourceAlarms:
    """The broker's memory alarm, and its counts of open connections and channels."""

    def __init__(self) -> None:
        self.memory_alarm = False
        self.memory_used = 0
        self.memory_limit = 0
        self.blocked: set[Blockable] = set()
        self.open_connections = 0
        self.vhost_connections: Counter[str] = Counter()
        self.user_connections: Counter[str] = Counter()
        self.user_channels: Counter[str] = Counter()
        self.alarms_raised = 0  # for metrics and tests
        self.disk_alarm = False
        self.disk_free = 0
        self.disk_free_limit = DEFAULT_DISK_FREE_LIMIT

    @property
    def alarm(self) -> bool:
        """Publishers are to be blocked (memory or disk)."""
        return self.memory_alarm or self.disk_alarm

    @property
    def reason(self) -> str:
        """connection.blocked's reason, as rabbit_reader words the alarms in effect."""
        kinds = [kind for kind, on in (("memory", self.memory_alarm), ("disk", self.disk_alarm)) if on]
        return "low on " + " & ".join(kinds) if kinds else MEMORY_ALARM_REASON

    # ------------------------------------------------------------ memory
    def update_memory(self, used: int, limit: int) -> bool:
        """A new measurement; True when the alarm was set or cleared by it."""
        self.memory_used, self.memory_limit = used, limit
        alarm = used > limit
        if alarm == self.memory_alarm:
            return False
        self.memory_alarm = alarm
        self._changed(alarm)
        return True

    def update_disk(self, free: int, limit: int) -> bool:
        """A new free-space figure for the data directory; True when the alarm moved."""
        self.disk_free, self.disk_free_limit = free, limit
        alarm = free < limit
        if alarm == self.disk_alarm:
            return False
        self.disk_alarm = alarm
        self._changed(alarm)
        return True

    def _changed(self, raised: bool) -> None:
        if raised:
            self.alarms_raised += 1
        elif not self.alarm:
            blocked, self.blocked = self.blocked, set()
            for connection in blocked:
                connection.resource_alarm_cleared()

    def block(self, connection: Blockable) -> None:
        self.blocked.add(connection)

    def forget(self, connection: Blockable) -> None:
        self.blocked.discard(connection)

    # ------------------------------------------------------- connections
    def connection_opening(
        self,
        limit: int | None,
        vhost: str,
        user: str,
        vhost_limits: VhostLimits = NO_VHOST_LIMITS,
        user_limits: UserLimits = NO_USER_LIMITS,
    ) -> None:
        """connection.open: 530 when `limit` connections are open on the node
        (RabbitMQ's connection_max), then the vhost's, then the user's limit."""
        if limit is not None and self.open_connections >= limit:
            raise exceptions.AMQPNotAllowed(f"connection refused: node connection limit ({limit}) is reached")
        most = vhost_limits.max_connections
        if most is not None and self.vhost_connections[vhost] >= most:
            raise exceptions.AMQPNotAllowed(
                f"access to vhost '{vhost}' refused for user '{user}': connection limit ({most}) is reached"
            )
        most = user_limits.max_connections
        if most is not None and self.user_connections[user] >= most:
            raise exceptions.AMQPNotAllowed(
                f"connection refused for user '{user}': user connection limit ({most}) is reached"
            )

    def connection_opened(self, vhost: str, user: str) -> None:
        self.open_connections += 1
        self.vhost_connections[vhost] += 1
        self.user_connections[user] += 1

    def connection_closed(self, vhost: str, user: str) -> None:
        self.open_connections = max(0, self.open_connections - 1)
        _decrement(self.vhost_connections, vhost)
        _decrement(self.user_connections, user)

    # ---------------------------------------------------------- channels
    def channel_opening(self, user: str, user_limits: UserLimits) -> None:
        """channel.open: 530 when the user has its limit of channels open, on all its connections."""
        most = user_limits.max_channels
        if most is not None and self.user_channels[user] >= most:
            raise exceptions.AMQPNotAllowed(
                f"number of channels opened for user '{user}' has reached the maximum allowed user limit of ({most})"
            )

    def channel_opened(self, user: str) -> None:
        self.user_channels[user] += 1

    def channels_closed(self, user: str, count: int = 1) -> None:
        _decrement(self.user_channels, user, count)


def _decrement(counts: Counter[str], key: str, by: int = 1) -> None:
    left = counts[key] - by
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)
