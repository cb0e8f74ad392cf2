"""The reference RabbitMQ that differential tests compare leveret with.

It listens on 127.0.0.1:5672 on developers' machines and in CI; a user's fresh
machine has none, so every differential test skips, with this reason, when it
cannot be reached. Its state is shared by every run: tests use unique names
and delete what they declare.
"""

from __future__ import annotations

import functools
import socket

import pytest

HOST, PORT = "127.0.0.1", 5672
URL = f"amqp://guest:guest@{HOST}:{PORT}/"
UNREACHABLE = f"no reference RabbitMQ on {HOST}:{PORT}"


@functools.cache
def reachable() -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=1):
            return True
    except OSError:
        return False


needs_reference = pytest.mark.skipif(not reachable(), reason=UNREACHABLE)
