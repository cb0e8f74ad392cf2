"""Measuring the broker process: its resident memory, and the memory it may use.

RabbitMQ's vm_memory_calculation_strategy `rss`: the resident set size of the
process, against a watermark that is either absolute or a fraction of the
machine's memory (here also capped by a cgroup limit, so a container's broker
measures against its own ceiling). `MemoryMonitor.check` is called by the
server shell every housekeeping tick and moves the broker's memory alarm.

Python rarely gives freed memory back to the system by itself; while the alarm
is set, `check` asks glibc to return free heap pages (malloc_trim), so that a
drained broker's RSS can actually fall below the watermark again.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import resource
from collections.abc import Callable

from leveret.broker.limits import ResourceAlarms, Watermark

log = logging.getLogger("leveret.memory")

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def process_rss() -> int:
    """Resident set size of this process in bytes (Linux /proc; else the peak, which is what is known)."""
    try:
        with open("/proc/self/statm", "rb") as file:
            return int(file.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if os.uname().sysname == "Darwin" else peak * 1024


def total_memory() -> int:
    """The machine's memory, or the cgroup's limit when that is lower."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * _PAGE
    except (ValueError, OSError, AttributeError):
        total = 8 << 30
    for path in _CGROUP_LIMITS:
        try:
            with open(path, encoding="ascii") as file:
                text = file.read().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:
            total = int(text)
    return total


def _malloc_trim() -> Callable[[], None] | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0) and None


class MemoryMonitor:
    """Measures the process and sets or clears the broker's memory alarm."""

    def __init__(
        self,
        alarms: ResourceAlarms,
        watermark: Callable[[], str | float | int],
        *,
        measure: Callable[[], int] = process_rss,
        total: int | None = None,
    ) -> None:
        self.alarms = alarms
        self.watermark = watermark  # read at every check: it may be changed at run time
        self.measure = measure
        self.total = total if total is not None else total_memory()
        self._trim = _malloc_trim() if measure is process_rss else None
        self._last_watermark: tuple[type, str | float | int] | None = None
        self._parsed = Watermark()

    def limit(self) -> int:
        value = self.watermark()
        key = (type(value), value)  # 1 (a byte) and 1.0 (all memory) are equal in Python
        if key != self._last_watermark:
            self._parsed = Watermark.parse(value)
            self._last_watermark = key
        return self._parsed.limit(self.total)

    def check(self) -> bool:
        """Measure once; True when the alarm changed."""
        limit = self.limit()
        used = self.measure()
        if used > limit and self.alarms.memory_alarm and self._trim is not None:
            self._trim()
            used = self.measure()
        changed = self.alarms.update_memory(used, limit)
        if changed:
            if self.alarms.memory_alarm:
                log.warning("memory resource limit alarm set: %d bytes used, limit %d (%s); "
                            "publishing connections are blocked", used, limit, self._parsed)
            else:
                log.warning("memory resource limit alarm cleared: %d bytes used, limit %d", used, limit)
        return changed
