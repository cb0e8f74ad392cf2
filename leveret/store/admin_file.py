"""Users, vhosts, permissions, limits and parameters on disk: one JSON snapshot.

Theory of operation. These change rarely (an operator's command, not a
message), so each change rewrites the whole snapshot, in RabbitMQ's
definitions format, before the change is acknowledged: written to a
temporary file, fsynced, renamed over `admin.json`, and the directory
fsynced. A crash at any point leaves either the old snapshot or the new one,
never a torn one, and never an acknowledged change that is missing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FILE_NAME = "admin.json"


class AdminFile:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.path = Path(directory) / FILE_NAME

    def load(self) -> dict[str, Any] | None:
        """The last snapshot saved, None when there is none yet."""
        try:
            with open(self.path, encoding="utf-8") as file:
                data = json.load(file)
        except FileNotFoundError:
            return None
        return data if isinstance(data, dict) else None

    def save(self, data: dict[str, Any]) -> None:
        """Replace the snapshot; returns once it is on disk (OSError if it cannot be)."""
        temporary = self.path.with_name(FILE_NAME + ".tmp")
        with open(temporary, "w", encoding="utf-8") as file:
            json.dump(data, file, sort_keys=True)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
