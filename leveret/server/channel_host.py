"""What a channel needs from the connection it lives on.

Theory of operation. `Channel` is written against this Protocol, not against
`Connection`: the connection creates channels and so imports them, and a
channel importing the connection back would make the two files a loop.
`Connection` satisfies it structurally (mypy checks that where it creates a
channel). The channel calls back for output, for errors and closes, and to
queue work for the end of the current read (`confirm_later`, `dispatch_later`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from pamqp import exceptions
from pamqp.base import Frame

from leveret.broker.auth import VhostAccess
from leveret.broker.broker import Broker
from leveret.broker.vhost import VirtualHost
from leveret.queues.queue import Queue


class PendingWork(Protocol):
    """A channel as the connection sees it at the end of a read."""

    @property
    def number(self) -> int: ...

    def flush_confirms(self) -> None: ...

    def dispatch_consumed_queues(self) -> None: ...


class ChannelHost(Protocol):
    @property
    def broker(self) -> Broker: ...

    @property
    def vhost(self) -> VirtualHost | None: ...

    @property
    def access(self) -> VhostAccess | None: ...

    @property
    def user(self) -> str: ...

    @property
    def capabilities(self) -> dict[str, Any]: ...

    @property
    def channels(self) -> Mapping[int, object]: ...

    @property
    def frame_max(self) -> int: ...

    @property
    def output_blocked(self) -> bool:
        """Deliveries wait: the client is not reading its output fast enough."""

    @property
    def tick_now(self) -> float:
        """The time of the last housekeeping tick (stamps deliveries for the consumer timeout)."""

    def send(self, data: bytes) -> None: ...

    def send_buffers(self, buffers: list[bytes | memoryview]) -> None: ...

    def send_method(self, channel: int, method: Frame) -> None: ...

    def channel_error(self, channel: int, error: exceptions.AMQPError, class_id: int, method_id: int) -> None: ...

    def channel_closed_by_client(self, channel: int) -> None: ...

    def confirm_later(self, channel: PendingWork) -> None: ...

    def dispatch_later(self, channel: PendingWork) -> None: ...

    def flow_block(self, queue: Queue) -> None: ...
