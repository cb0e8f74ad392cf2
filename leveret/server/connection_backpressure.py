"""When a connection stops reading or delivering: flow control, the memory alarm, slow readers.

Theory of operation. The shell stops reading the socket while `reading_paused`
holds: a queue we publish to asked for a pause (flow control, never longer than
FLOW_MAX_PAUSE), the memory alarm blocked this publisher (connection.blocked for
clients that understand it), or frames read earlier still wait their turn.
Deliveries to this connection stop while `output_blocked` holds: the socket's
write buffer is over its watermark, or this pass has queued OUTPUT_LIMIT bytes;
when it clears, its channels' consumers get what waited.
"""

from __future__ import annotations

from pamqp import commands

from leveret.queues.queue import Queue
from leveret.server.connection_state import (
    FLOW_MAX_PAUSE,
    OUTPUT_LIMIT,
    ConnectionState,
    State,
    log,
)


class Backpressure(ConnectionState):
    @property
    def reading_paused(self) -> bool:
        """The shell stops reading the socket while this holds."""
        return self._flow_paused or self.resource_blocked or self._held_frames is not None

    @reading_paused.setter
    def reading_paused(self, paused: bool) -> None:
        self._flow_paused = paused

    def writing_paused(self, paused: bool) -> None:
        """The shell: the socket's write buffer went over its high watermark (True)
        or back under its low one (False). Deliveries to this connection wait meanwhile."""
        self._write_paused = paused
        if paused:
            self.output_blocked = True
            return
        if self.output_blocked and self._out_bytes <= OUTPUT_LIMIT:
            self._resume_deliveries()
        if self._held_frames is not None:
            self.on_output()  # the next flush resumes the input

    def _resume_deliveries(self) -> None:
        """This connection is a delivery target again: hand its consumers what waited."""
        self.output_blocked = False
        for handler in list(self.channels.values()):
            if self.output_blocked:
                break  # this pass is full again
            if self.channels.get(handler.number) is handler:
                handler.dispatch_consumed_queues()

    def _block_publisher(self) -> None:
        """A publish arrived while the memory alarm is set: stop reading this connection
        (rabbit_reader's `blocked`), telling clients that understand connection.blocked."""
        if self.resource_blocked or self.state is not State.OPEN:
            return
        self.resource_blocked = True
        self._resources.block(self)
        if self.capabilities.get("connection.blocked") and not self._blocked_sent:
            self._blocked_sent = True
            self.send_method(0, commands.Connection.Blocked(reason=self._resources.reason))
        log.info("connection blocked", extra={
            "event": "connection_blocked", "connection": self.name, "reason": self._resources.reason,
        })

    def resource_alarm_cleared(self) -> None:
        if not self.resource_blocked:
            return
        self.resource_blocked = False
        self._last_received = self.monotonic()  # heartbeats were not read while blocked
        if self._blocked_sent and self.state is State.OPEN:
            self._blocked_sent = False
            self.send_method(0, commands.Connection.Unblocked())
        self.on_output()  # the shell resumes reading when it flushes

    def flow_block(self, queue: Queue) -> None:
        """A queue we publish to is falling behind its consumers: stop reading for now."""
        if queue not in self._flow_queues:
            self._flow_queues.add(queue)
            queue.flow_waiters.add(self)
        if self.flow_deadline is None:
            self.flow_deadline = self.monotonic() + FLOW_MAX_PAUSE
        self.reading_paused = True

    def flow_resume(self, queue: Queue) -> None:
        self._flow_queues.discard(queue)
        if not self._flow_queues:
            self._end_flow_pause()

    def flow_expired(self, now: float) -> None:
        """The shell's timer: a pause never outlasts FLOW_MAX_PAUSE."""
        if self.flow_deadline is not None and now >= self.flow_deadline:
            for queue in self._flow_queues:
                queue.flow_waiters.discard(self)
            self._flow_queues.clear()
            self._end_flow_pause()

    def _end_flow_pause(self) -> None:
        self.flow_deadline = None
        if self.reading_paused:
            self.reading_paused = False
            self.on_output()  # the shell resumes reading when it flushes
