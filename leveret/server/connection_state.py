"""What every part of a connection shares: its states, its state, and its output.

Theory of operation. A connection is one object whose behaviour is written in
a few parts (connection_handshake, connection_backpressure, connection_closing,
and the frame dispatch in connection), each a class over this one: they share
these attributes directly, as the frame path runs through them for every
message. Each part names, under TYPE_CHECKING, the few methods it borrows from
another part. Output is a list of byte strings; `on_output` tells the shell
there is some, so it can write once per event-loop pass.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pamqp import frame as pamqp_frame
from pamqp.base import Frame

from leveret.amqp_wire import framing
from leveret.broker.auth import VhostAccess
from leveret.broker.broker import Broker
from leveret.broker.limits import NO_USER_LIMITS
from leveret.broker.vhost import VirtualHost
from leveret.queues.queue import Queue
from leveret.server.channel import Channel
from leveret.server.channel_host import PendingWork

log = logging.getLogger("leveret.connection")

FRAME_MIN_SIZE = 4096  # frames before tune-ok may be this big (spec 4.2.3)
FLOW_MAX_PAUSE = 0.05  # seconds a flow-control pause lasts at most
# Bytes of output one pass may queue before deliveries to this connection stop
# (the shell's socket buffer has its own watermark): a consumer that does not
# read makes the broker hold at most about this much, plus one message.
OUTPUT_LIMIT = 1 << 20
# rabbit_reader: how long we wait for close-ok after our connection.close, in
# the handshake (NORMAL_TIMEOUT) and after it (the heartbeat, at most CLOSING_TIMEOUT).
NORMAL_TIMEOUT = 3.0
CLOSING_TIMEOUT = 30.0



class State(enum.Enum):
    AWAIT_HEADER = "await protocol header"
    AWAIT_START_OK = "await connection.start-ok"
    AWAIT_SECURE_OK = "await connection.secure-ok"
    AWAIT_TUNE_OK = "await connection.tune-ok"
    AWAIT_OPEN = "await connection.open"
    OPEN = "open"
    CLOSING = "closing"  # we sent connection.close, waiting for close-ok
    CLOSED = "closed"



class ConnectionState:
    if TYPE_CHECKING:  # from connection_backpressure: what the memory alarm calls (limits.Blockable)
        def resource_alarm_cleared(self) -> None: ...

    def __init__(
        self,
        broker: Broker,
        *,
        peer_host: str = "127.0.0.1",
        on_output: Callable[[], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.broker = broker
        self.peer_host = peer_host
        self.on_output = on_output or (lambda: None)
        self.monotonic = monotonic
        self.state = State.AWAIT_HEADER
        self.reader = framing.FrameReader(FRAME_MIN_SIZE)
        self._out: list[bytes | memoryview] = []
        self._out_views = False  # _out holds views of a large body: write them gathered
        self.want_close = False
        self._flow_paused = False  # see the reading_paused property
        self.resource_blocked = False  # blocked by the memory alarm (connection.blocked)
        self._blocked_sent = False
        # Deliveries stop while the socket's buffer is over its watermark or
        # this pass has queued OUTPUT_LIMIT bytes (ChannelConsumer.has_credit).
        self.output_blocked = False
        self._write_paused = False
        self._out_bytes = 0
        self._held_frames: list[tuple[int, int, bytes]] | None = None  # read, not yet handled
        self.access: VhostAccess | None = None  # set by connection.open
        self.user_limits = NO_USER_LIMITS  # the user's, set by connection.open
        self._counted_open = False
        self._open_vhost = ""
        self._resources = broker.resources
        self.created_at = monotonic()
        self.closing_since: float | None = None
        self._dropping = False  # reading nothing more while closing (see close_with)
        # The shell ends the socket with an RST, not a FIN (see _drop_later).
        self.reset_on_close = False
        self.auth_mechanism: str | None = None  # once logged in (the management API shows it)
        self._closing_limit: float | None = None  # a closing timeout set by the error
        self._tuned = False
        # The time of the last housekeeping tick: deliveries are stamped with it
        # (coarsely, to keep the delivery path cheap) for the consumer timeout.
        self.tick_now = self.created_at
        self.channels: dict[int, Channel] = {}
        # Channels we closed, awaiting close-ok, with the content a discarded
        # basic.publish still has to come (Channel.content_expected): RabbitMQ
        # discards that content, and answers content with no publish with 505.
        self.closing_channels: dict[int, int] = {}
        # Channels whose acks freed credit during this read (insertion-ordered).
        self._dispatch_pending: dict[PendingWork, None] = {}
        # Channels with publisher confirms to send at the end of this read.
        self._confirm_pending: dict[PendingWork, None] = {}
        # Queues that asked this publisher to pause (flow control), and when
        # the pause ends regardless (monotonic seconds).
        self._flow_queues: set[Queue] = set()
        self.flow_deadline: float | None = None
        settings = broker.settings
        self.channel_max = settings.channel_max
        self.frame_max = settings.frame_max
        self.heartbeat = 0
        self.client_properties: dict[str, Any] = {}
        self.user = ""
        self.vhost: VirtualHost | None = None  # set by connection.open
        self._last_received = monotonic()
        self._last_sent = monotonic()
        self.name = f"{peer_host}"  # the server shell sets "peer:port -> host:port"
        self.connected_at = broker.now_ms()
        self.close_reason: str | None = None  # for the log line when the socket goes
        broker.counters.connections_opened += 1

    def send(self, data: bytes) -> None:
        if self.state is State.CLOSED:
            return
        was_empty = not self._out
        self._out.append(data)
        self._out_bytes += len(data)
        if self._out_bytes > OUTPUT_LIMIT:
            self.output_blocked = True
        if was_empty:
            self.on_output()

    def send_buffers(self, buffers: list[bytes | memoryview]) -> None:
        """Several buffers to write in order (views of a large body among them)."""
        if self.state is State.CLOSED:
            return
        was_empty = not self._out
        self._out += buffers
        self._out_views = True
        self._out_bytes += sum(map(len, buffers))
        if self._out_bytes > OUTPUT_LIMIT:
            self.output_blocked = True
        if was_empty:
            self.on_output()

    def send_method(self, channel: int, method: Frame) -> None:
        self.send(pamqp_frame.marshal(method, channel))

    @property
    def capabilities(self) -> dict[str, Any]:
        caps = self.client_properties.get("capabilities")
        return caps if isinstance(caps, dict) else {}
