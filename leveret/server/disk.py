"""Free disk space under the data directory, against RabbitMQ's disk_free_limit.

With paging (issue 19) a backlog goes to disk, not memory, so it is the disk
that runs short: below `disk_free_limit` free bytes the broker's disk alarm
is set and publishers block as under the memory alarm (connection.blocked
"low on disk"); consumers go on draining, and the alarm clears when space
comes back. `DiskMonitor.check` is called by the server shell every
housekeeping tick, as the memory monitor is.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from leveret.broker.limits import ResourceAlarms

log = logging.getLogger("leveret.memory")


def free_bytes(path: str | os.PathLike[str]) -> int:
    return shutil.disk_usage(path).free


class DiskMonitor:
    """Measures free space where the broker writes and sets or clears the disk alarm."""

    def __init__(
        self,
        alarms: ResourceAlarms,
        directory: Callable[[], Path | None],
        limit: Callable[[], int],
        *,
        measure: Callable[[str | os.PathLike[str]], int] = free_bytes,
    ) -> None:
        self.alarms = alarms
        self.directory = directory  # the data directory (None: the temporary one pages go to)
        self.limit = limit
        self.measure = measure

    def check(self) -> bool:
        """Measure once; True when the alarm changed."""
        where = self.directory() or Path(tempfile.gettempdir())
        try:
            free = self.measure(where)
        except OSError as error:
            log.warning("cannot measure free disk space under %s: %s", where, error)
            return False
        limit = self.limit()
        changed = self.alarms.update_disk(free, limit)
        if changed:
            if self.alarms.disk_alarm:
                log.warning("disk resource limit alarm set: %d bytes free under %s, limit %d; "
                            "publishing connections are blocked", free, where, limit)
            else:
                log.warning("disk resource limit alarm cleared: %d bytes free under %s, limit %d",
                            free, where, limit)
        return changed
