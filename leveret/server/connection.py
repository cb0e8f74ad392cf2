"""One AMQP connection, sans-IO: bytes in (`receive_data`), bytes out (`data_to_send`).

Theory of operation. The connection walks an enum of states through the
handshake (protocol header, start/start-ok, tune/tune-ok, open) to OPEN, then
hands channel frames to `Channel` objects. The state table `ALLOWED` says which
connection-class methods each state accepts; anything else is a lookup miss
that becomes the close code RabbitMQ sends. Once we have sent connection.close
(CLOSING), every frame but close/close-ok is discarded until close-ok arrives.

Output is a list of byte strings; `on_output` tells the shell there is some,
so it can write once per event-loop pass. No exception escapes `receive_data`:
protocol errors become closes, and a bug becomes 541 INTERNAL_ERROR for this
connection only.
"""

from __future__ import annotations

import enum
import importlib.metadata
import logging
import platform
import socket
import time
from collections.abc import Callable
from typing import Any

from pamqp import commands, decode, exceptions
from pamqp import frame as pamqp_frame

from leveret.amqp_wire import framing, replies
from leveret.amqp_wire.errors import closing_for, frame_snippet
from leveret.amqp_wire.methods import PUBLISH_INDEX, decode_method
from leveret.broker.auth import VhostAccess
from leveret.broker.broker import Broker
from leveret.broker.limits import MEMORY_ALARM_REASON, NO_USER_LIMITS, NO_VHOST_LIMITS
from leveret.server.channel import AWAIT_HEADER, Channel
from leveret.version import RABBITMQ_VERSION

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


ALLOWED: dict[State, tuple[type, ...]] = {
    State.AWAIT_START_OK: (commands.Connection.StartOk,),
    State.AWAIT_SECURE_OK: (commands.Connection.SecureOk,),
    State.AWAIT_TUNE_OK: (commands.Connection.TuneOk,),
    State.AWAIT_OPEN: (commands.Connection.Open,),
    State.OPEN: (commands.Connection.Close, commands.Connection.UpdateSecret),
    State.CLOSING: (commands.Connection.Close, commands.Connection.CloseOk),
}

# channel.open-ok with RabbitMQ's empty reserved long string (pamqp insists on "0").
CHANNEL_OPEN_OK = b"\x00\x14\x00\x0b\x00\x00\x00\x00"
_BEFORE_TUNE_OK = frozenset((State.AWAIT_START_OK, State.AWAIT_SECURE_OK, State.AWAIT_TUNE_OK))
# How RabbitMQ names the states in which it answers an out-of-place method with 504.
_PHASES = {State.AWAIT_OPEN: "opening", State.OPEN: "running"}

CAPABILITIES = {
    "publisher_confirms": True,
    "exchange_exchange_bindings": True,
    "basic.nack": True,
    "consumer_cancel_notify": True,
    "connection.blocked": True,
    "consumer_priorities": True,
    "authentication_failure_close": True,
    "per_consumer_qos": True,
    "direct_reply_to": True,
}


def _version() -> str:
    try:
        return importlib.metadata.version("leveret")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


# Clients branch on product and version to pick RabbitMQ's semantics (kombu
# and Celery choose the basic.qos `global` flag this way). leveret implements
# RabbitMQ 3.10's semantics, so it says so there and names itself elsewhere.
COMPATIBLE_PRODUCT = "RabbitMQ"


def server_properties() -> dict[str, Any]:
    return {
        "capabilities": CAPABILITIES,
        "cluster_name": f"leveret@{socket.gethostname()}",
        "copyright": "Copyright (c) the leveret authors",
        "information": f"leveret {_version()}: a RabbitMQ-compatible AMQP 0-9-1 broker in Python",
        "platform": f"leveret {_version()} on Python {platform.python_version()}",
        "product": COMPATIBLE_PRODUCT,
        "version": RABBITMQ_VERSION,
    }


class Connection:
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
        self._out: list[bytes] = []
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
        self._dispatch_pending: dict[Channel, None] = {}
        # Channels with publisher confirms to send at the end of this read.
        self._confirm_pending: dict[Channel, None] = {}
        # Queues that asked this publisher to pause (flow control), and when
        # the pause ends regardless (monotonic seconds).
        self._flow_queues: set[Any] = set()
        self.flow_deadline: float | None = None
        settings = broker.settings
        self.channel_max = settings.channel_max
        self.frame_max = settings.frame_max
        self.heartbeat = 0
        self.client_properties: dict[str, Any] = {}
        self.user = ""
        self.vhost = None  # set by connection.open
        self._last_received = monotonic()
        self._last_sent = monotonic()
        self.name = f"{peer_host}"  # the server shell sets "peer:port -> host:port"
        self.connected_at = broker.now_ms()
        self.close_reason: str | None = None  # for the log line when the socket goes
        broker.counters.connections_opened += 1

    # ----------------------------------------------------------- output
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

    def send_method(self, channel: int, method: Any) -> None:
        self.send(pamqp_frame.marshal(method, channel))

    def data_to_send(self) -> bytes:
        if self._held_frames is not None and not self._write_paused and not self.resource_blocked:
            self._resume_input()  # the shell is about to write: the next part of the input may go
        if not self._out:
            return b""
        data = b"".join(self._out)
        self._out.clear()
        self._last_sent = self.monotonic()
        self._out_bytes = 0
        if self.output_blocked and not self._write_paused:
            self._resume_deliveries()
        if self._held_frames is not None and not self._write_paused and not self.resource_blocked:
            self.on_output()  # input is waiting: another pass once this output is written
        return data

    # ------------------------------------------------------ back-pressure
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
                handler._dispatch_consumed_queues()

    def _block_publisher(self) -> None:
        """A publish arrived while the memory alarm is set: stop reading this connection
        (rabbit_reader's `blocked`), telling clients that understand connection.blocked."""
        if self.resource_blocked or self.state is not State.OPEN:
            return
        self.resource_blocked = True
        self._resources.block(self)
        if self.capabilities.get("connection.blocked") and not self._blocked_sent:
            self._blocked_sent = True
            self.send_method(0, commands.Connection.Blocked(reason=MEMORY_ALARM_REASON))
        log.info("connection blocked", extra={
            "event": "connection_blocked", "connection": self.name, "reason": MEMORY_ALARM_REASON,
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

    @property
    def capabilities(self) -> dict[str, Any]:
        caps = self.client_properties.get("capabilities")
        return caps if isinstance(caps, dict) else {}

    # ------------------------------------------------------------ input
    def receive_data(self, data: bytes) -> None:
        if self.state is State.CLOSED or self.want_close or self._dropping:
            return
        self._last_received = self.monotonic()
        self.reader.feed(data)
        if self._held_frames is None:
            self._process_input()
        # else: frames read earlier wait their turn; these bytes wait behind them

    def _process_input(self, held: list[tuple[int, int, bytes]] | None = None) -> None:
        try:
            if self.state is State.AWAIT_HEADER and not self._read_protocol_header():
                return
            if held is None or self._run_frames(held):
                self._run_frames(self.reader.frames())
            if self._confirm_pending:
                confirming, self._confirm_pending = self._confirm_pending, {}
                for handler in confirming:
                    if self.channels.get(handler.number) is handler:
                        handler.flush_confirms()
            if self._dispatch_pending:
                pending, self._dispatch_pending = self._dispatch_pending, {}
                for handler in pending:
                    if self.channels.get(handler.number) is handler:
                        handler._dispatch_consumed_queues()
        except exceptions.AMQPError as error:
            self.close_with(error, *getattr(error, "method_ids", (0, 0)))
            if framing.lost_sync(error) and self.state is State.CLOSING:
                self._dropping = True
                self._closing_limit = NORMAL_TIMEOUT
            if self.reader.buffered:
                # Already closing: bytes that failed to frame would fail again with
                # every read and pile up; the peer has lost sync, stop reading it.
                self.reader = framing.FrameReader(self.frame_max)
                if not self._dropping:  # (a drop already waits for its timeout)
                    self.want_close = True
        except Exception as error:  # a bug must cost one connection, not the broker
            log.exception("internal error on connection %s", self.name)
            self.close_with(exceptions.AMQPInternalError(f"{type(error).__name__}: {error}"))

    def _run_frames(self, frames: list[tuple[int, int, bytes]]) -> bool:
        """Handle `frames` in order; False when the rest must wait (kept in _held_frames)."""
        for index, (frame_type, channel, payload) in enumerate(frames):
            self._handle_frame(frame_type, channel, payload)
            if self.want_close or self.state is State.CLOSED:
                return False
            if frame_type != framing.FRAME_METHOD and self._resources.memory_alarm and channel:
                self._block_publisher()  # a content frame is a publish (rabbit_reader)
            if self.resource_blocked or self._out_bytes > OUTPUT_LIMIT:
                # Blocked, or the answers to this read already fill the output: the
                # frames after this one wait until the output has gone out, so a
                # peer that asks without reading cannot make us buffer without bound.
                rest = frames[index + 1:]
                if rest:
                    self._held_frames = rest
                    return False
        return True

    def _resume_input(self) -> None:
        held, self._held_frames = self._held_frames, None
        self._process_input(held)

    # ------------------------------------------------------- flow control
    def flow_block(self, queue: Any) -> None:
        """A queue we publish to is falling behind its consumers: stop reading for now."""
        if queue not in self._flow_queues:
            self._flow_queues.add(queue)
            queue.flow_waiters.add(self)
        if self.flow_deadline is None:
            self.flow_deadline = self.monotonic() + FLOW_MAX_PAUSE
        self.reading_paused = True

    def flow_resume(self, queue: Any) -> None:
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

    def confirm_later(self, channel: Channel) -> None:
        self._confirm_pending[channel] = None

    def dispatch_later(self, channel: Channel) -> None:
        """Deliver with the credit `channel` freed once the current read is done."""
        self._dispatch_pending[channel] = None

    def _read_protocol_header(self) -> bool:
        header = self.reader.take(8)
        if header is None:
            return False
        if header != framing.PROTOCOL_HEADER:
            # RabbitMQ answers an unsupported header with the one it speaks, then closes.
            self.send(framing.PROTOCOL_HEADER)
            self.want_close = True
            return False
        self.state = State.AWAIT_START_OK
        self.send_method(
            0,
            commands.Connection.Start(
                version_major=0,
                version_minor=9,
                server_properties=server_properties(),
                mechanisms="PLAIN AMQPLAIN",
                locales="en_US",
            ),
        )
        return True

    def _handle_frame(self, frame_type: int, channel: int, payload: bytes) -> None:
        # The common case first: a frame for an open channel. Channels exist
        # only while the connection is open, and never on channel 0.
        handler = self.channels.get(channel)
        if handler is not None and 1 <= frame_type <= 3 and (payload or frame_type != framing.FRAME_METHOD):
            handler.handle_frame(frame_type, payload)
            return
        if frame_type == framing.FRAME_HEARTBEAT:
            if payload:
                raise exceptions.AMQPFrameError(f"{frame_snippet(frame_type, payload)}: unknown_frame")
            if channel != 0:
                raise exceptions.AMQPUnexpectedFrame(frame_snippet(frame_type, payload))
            return
        if frame_type not in (framing.FRAME_METHOD, framing.FRAME_HEADER, framing.FRAME_BODY) or (
            frame_type == framing.FRAME_METHOD and not payload
        ):
            raise exceptions.AMQPFrameError(f"{frame_snippet(frame_type, payload)}: unknown_frame")
        if channel == 0:
            if frame_type != framing.FRAME_METHOD:
                raise exceptions.AMQPUnexpectedFrame(frame_snippet(frame_type, payload))
            method = decode_method(payload)
            try:
                self._handle_connection_method(method)
            except exceptions.AMQPError as error:
                self.close_with(error, method.index >> 16, method.index & 0xFFFF)
            return
        if self.state is State.CLOSING:
            return  # discarded until close-ok (spec 2.2.4)
        if self.state is not State.OPEN:
            raise exceptions.AMQPUnexpectedFrame(frame_snippet(frame_type, payload))
        if channel in self.closing_channels:
            self._handle_closing_channel(channel, frame_type, payload)
            return
        handler = self.channels.get(channel)
        if handler is None:
            if frame_type != framing.FRAME_METHOD:
                raise exceptions.AMQPUnexpectedFrame("expected method frame, got non method frame instead")
            method = decode_method(payload)
            if not isinstance(method, commands.Channel.Open):
                failure = exceptions.AMQPChannelError("expected 'channel.open'")
                failure.method_ids = (method.index >> 16, method.index & 0xFFFF)  # type: ignore[attr-defined]
                raise failure
            if len(self.channels) + len(self.closing_channels) >= self.channel_max:
                # RabbitMQ limits how many channels are open, not their numbers.
                count = len(self.channels) + len(self.closing_channels)
                raise exceptions.AMQPNotAllowed(
                    f"number of channels opened ({count}) has reached the negotiated channel_max ({self.channel_max})"
                )
            self._resources.channel_opening(self.user, self.user_limits)
            self.channels[channel] = Channel(self, channel)
            self._resources.channel_opened(self.user)
            self.send(framing.frame(framing.FRAME_METHOD, channel, CHANNEL_OPEN_OK))
            return
        handler.handle_frame(frame_type, payload)

    def _handle_closing_channel(self, channel: int, frame_type: int, payload: bytes) -> None:
        """After our channel.close, only close/close-ok matter on that channel."""
        expected = self.closing_channels[channel]
        if frame_type != framing.FRAME_METHOD:
            if frame_type == framing.FRAME_HEADER and expected == AWAIT_HEADER:
                self.closing_channels[channel] = framing.parse_content_header(payload)[1]
            elif frame_type == framing.FRAME_BODY and expected > 0:
                self.closing_channels[channel] = max(0, expected - len(payload))
            else:
                raise exceptions.AMQPUnexpectedFrame("expected method frame, got non method frame instead")
            return
        self.closing_channels[channel] = AWAIT_HEADER if payload[:4] == PUBLISH_INDEX else 0
        method = decode_method(payload)
        if isinstance(method, commands.Channel.CloseOk):
            self.closing_channels.pop(channel, None)
        elif isinstance(method, commands.Channel.Close):
            self.send_method(channel, commands.Channel.CloseOk())

    # ------------------------------------------------- connection class
    def _handle_connection_method(self, method: Any) -> None:
        allowed = ALLOWED.get(self.state, ())
        if not isinstance(method, allowed):
            if self.state is State.CLOSING:
                return
            phase = _PHASES.get(self.state)
            if phase is not None:  # rabbit_reader's words, any class of method
                raise exceptions.AMQPChannelError(f"unexpected method in connection state {phase}")
            if isinstance(method, commands.Channel.Open) or method.name.split(".")[0] != "Connection":
                raise exceptions.AMQPCommandInvalid(f"unexpected method {_method_name(method)} on channel 0")
            raise exceptions.AMQPCommandInvalid(
                f"unexpected {_method_name(method)} in state '{self.state.value}'"
            )
        if isinstance(method, commands.Connection.StartOk):
            self._start_ok(method)
        elif isinstance(method, commands.Connection.TuneOk):
            self._tune_ok(method)
        elif isinstance(method, commands.Connection.Open):
            self._open(method)
        elif isinstance(method, commands.Connection.Close):
            if self.close_reason is None:
                self.close_reason = f"client closed: {method.reply_code} {method.reply_text}"
            self._shutdown_channels()
            self.send_method(0, commands.Connection.CloseOk())
            # The client closes the socket, as with RabbitMQ, which drops it itself
            # only after the closing timeout (and answers another close meanwhile):
            # a client still finishing its own close must not see the socket go first.
            self.state = State.CLOSING
            if self.closing_since is None:
                self.closing_since = self.monotonic()
        elif isinstance(method, commands.Connection.CloseOk):
            self.want_close = True
        elif isinstance(method, commands.Connection.UpdateSecret):
            # RabbitMQ's extension for refreshing OAuth tokens; with passwords
            # there is nothing to re-check, so it is acknowledged.
            self.send_method(0, commands.Connection.UpdateSecretOk())

    def _start_ok(self, method: commands.Connection.StartOk) -> None:
        self.client_properties = dict(method.client_properties or {})
        mechanism = method.mechanism
        user, password = _credentials(mechanism, method.response)
        if user is None or password is None:
            # An unknown mechanism or a response it cannot read: RabbitMQ sends no
            # frame, whatever the client's capabilities (observed).
            self.close_reason = f"cannot read a {mechanism} login"
            self._drop_later()
            return
        if self.broker.access.authenticate(user, password) is None:
            self._refuse_login(mechanism)
            return
        if user in self.broker.settings.loopback_users and not _is_loopback(self.peer_host):
            self._refuse_login(mechanism, loopback=user)
            return
        self.user = user
        self.auth_mechanism = mechanism
        self.state = State.AWAIT_TUNE_OK
        settings = self.broker.settings
        self.send_method(
            0,
            commands.Connection.Tune(
                channel_max=settings.channel_max, frame_max=settings.frame_max, heartbeat=settings.heartbeat
            ),
        )

    def _drop_later(self) -> None:
        """Read nothing more; the tick drops the socket after NORMAL_TIMEOUT, with
        an RST as RabbitMQ's does (its listeners set {linger, {true, 0}}; observed)."""
        self.reset_on_close = True
        self.state = State.CLOSING
        self.closing_since = self.monotonic()
        self._dropping = True

    def _refuse_login(self, mechanism: str, loopback: str | None = None) -> None:
        if loopback is not None:
            text = f"User '{loopback}' can only connect via localhost"
        else:
            text = (
                f"Login was refused using authentication mechanism {mechanism}. "
                "For details see the broker logfile."
            )
        self.close_reason = text
        if self.capabilities.get("authentication_failure_close"):
            self.close_with(exceptions.AMQPAccessRefused(text), with_frame=True)
        else:
            self._drop_later()  # without the capability RabbitMQ drops the socket, 3 s on

    def _tune_ok(self, method: commands.Connection.TuneOk) -> None:
        settings = self.broker.settings
        if method.frame_max and method.frame_max < FRAME_MIN_SIZE:
            raise exceptions.AMQPNotAllowed(
                f"frame_max={method.frame_max} < {FRAME_MIN_SIZE} min size"
            )
        # 0 ("no limit") is over any limit the server has (rabbit_reader's
        # validate_negotiated_integer_value): RabbitMQ refuses it too.
        if method.frame_max == 0 or method.frame_max > settings.frame_max:
            raise exceptions.AMQPNotAllowed(
                f"frame_max={method.frame_max} > {settings.frame_max} max size"
            )
        if method.channel_max == 0 or method.channel_max > settings.channel_max:
            raise exceptions.AMQPNotAllowed(
                f"channel_max={method.channel_max} > {settings.channel_max} max"
            )
        self.frame_max = method.frame_max
        self.channel_max = method.channel_max
        self.heartbeat = method.heartbeat
        self.reader.frame_max = self.frame_max
        self.state = State.AWAIT_OPEN
        self._tuned = True

    def _open(self, method: commands.Connection.Open) -> None:
        # RabbitMQ's order: the node's connection limit, the vhost's and the
        # user's, the vhost, the user's access to it.
        name = method.virtual_host
        known = self.broker.vhosts.get(name)
        user = self.broker.access.users.get(self.user)
        self._resources.connection_opening(
            self.broker.settings.connection_max, name, self.user,
            known.limits if known is not None else NO_VHOST_LIMITS,
            user.limits if user is not None else NO_USER_LIMITS,
        )
        vhost = self.broker.vhost(name)
        self.access = self.broker.access.vhost_access(self.user, name)
        self.vhost = vhost  # type: ignore[assignment]
        self.user_limits = user.limits if user is not None else NO_USER_LIMITS
        self._resources.connection_opened(name, self.user)
        self._open_vhost = name
        self._counted_open = True
        self.state = State.OPEN
        self.send_method(0, commands.Connection.OpenOk())
        log.info("connection opened", extra={
            "event": "connection_opened", "connection": self.name, "user": self.user,
            "vhost": method.virtual_host, "client": _client_name(self.client_properties),
        })

    # ------------------------------------------------------------ closing
    def close_with(
        self, error: exceptions.AMQPError, class_id: int = 0, method_id: int = 0, *, with_frame: bool = False,
    ) -> None:
        """Send connection.close for `error` and stop taking frames.

        Before tune-ok RabbitMQ sends nothing: it stops reading and drops the
        socket NORMAL_TIMEOUT later (rabbit_reader); `with_frame` is the one
        exception, a refused login whose client asked for a close frame."""
        if self.state in (State.CLOSING, State.CLOSED) or self.want_close:
            return
        closing = closing_for(error)
        self.close_reason = closing.reply_text
        if self.state in _BEFORE_TUNE_OK and not with_frame:
            self._drop_later()
            return
        self._shutdown_channels()
        if self.resource_blocked:
            # We must read the peer's close-ok; it publishes nothing more.
            self.resource_blocked = False
            self._resources.forget(self)
        if self.state is State.AWAIT_HEADER:
            self.want_close = True
            return
        self.send_method(
            0,
            replies.ConnectionClose(
                reply_code=closing.reply_code, reply_text=closing.reply_text,
                class_id=class_id, method_id=method_id,
            ),
        )
        self.state = State.CLOSING
        self.closing_since = self.monotonic()
        if self.reader.buffered > 0:
            self.reader = framing.FrameReader(self.frame_max)
        log.info("closing connection", extra={
            "event": "connection_error", "connection": self.name, "code": closing.reply_code,
            "text": closing.reply_text, "class_id": class_id, "method_id": method_id,
        })

    def channel_error(self, channel: int, error: exceptions.AMQPError, class_id: int, method_id: int) -> None:
        """A soft error: close this channel only (hard ones close the connection)."""
        closing = closing_for(error)
        if closing.connection:
            self.close_with(error, class_id, method_id)
            return
        log.info("closing channel", extra={
            "event": "channel_error", "connection": self.name, "channel": channel,
            "code": closing.reply_code, "text": closing.reply_text, "class_id": class_id, "method_id": method_id,
        })
        handler = self.channels.pop(channel, None)
        if handler is not None:
            self._resources.channels_closed(self.user)
            handler.flush_confirms()  # publishes before the error were confirmed
            handler.release()
        self.closing_channels[channel] = handler.content_expected() if handler is not None else 0
        self.send_method(
            channel,
            replies.ChannelClose(
                reply_code=closing.reply_code, reply_text=closing.reply_text,
                class_id=class_id, method_id=method_id,
            ),
        )

    def channel_closed_by_client(self, channel: int) -> None:
        handler = self.channels.pop(channel, None)
        if handler is not None:
            self._resources.channels_closed(self.user)
            handler.flush_confirms()
            handler.release()
        self.send_method(channel, commands.Channel.CloseOk())

    def _shutdown_channels(self) -> None:
        channels = list(self.channels.values())
        self.channels.clear()
        self._resources.channels_closed(self.user, len(channels))
        for handler in channels:
            handler.release()
        if self.vhost is not None:
            self.vhost.owner_closed(self)

    def connection_lost(self) -> None:
        for queue in self._flow_queues:
            queue.flow_waiters.discard(self)
        self._flow_queues.clear()
        if self.state is State.CLOSED:
            return
        self._shutdown_channels()
        self.state = State.CLOSED
        self._out.clear()
        self._closed(self.close_reason or "client unexpectedly closed TCP connection")

    def _closed(self, reason: str) -> None:
        self._resources.forget(self)
        if self._counted_open:
            self._counted_open = False
            self._resources.connection_closed(self._open_vhost, self.user)
        self.broker.counters.connections_closed += 1
        log.info("connection closed", extra={
            "event": "connection_closed", "connection": self.name, "user": self.user, "reason": reason,
        })

    def server_shutdown(self) -> None:
        if self.state is State.OPEN:
            self.close_with(exceptions.AMQPConnectionForced("broker forced connection closure with reason 'shutdown'"))
        else:
            self.want_close = True
            self.on_output()

    # ---------------------------------------------------------- heartbeats
    def heartbeat_interval(self) -> float | None:
        return float(self.heartbeat) if self.heartbeat else None

    def heartbeat_tick(self, now: float) -> None:
        if not self.heartbeat or self.state is State.CLOSED:
            return
        if self.reading_paused:
            # We are not reading: the peer's heartbeats wait in the socket (RabbitMQ
            # pauses its heartbeat monitor while a connection is blocked).
            self._last_received = now
        elif now - self._last_received >= 3 * self.heartbeat:  # RabbitMQ: 3 intervals (observed)
            self._shutdown_channels()
            self.state = State.CLOSED
            self._closed(f"missed heartbeats from client, timeout: {self.heartbeat}s")
            self.want_close = True
            self.on_output()
            return
        if now - self._last_sent >= self.heartbeat / 2:
            self.send(framing.HEARTBEAT_FRAME)

    # --------------------------------------------------------- housekeeping
    def tick(self, now: float) -> None:
        """The shell's periodic tick (BrokerSettings.tick_interval): handshake and
        closing timeouts, and the delivery acknowledgement timeout."""
        self.tick_now = now
        state = self.state
        if state is State.CLOSED or self.want_close:
            return
        if state is State.CLOSING:
            since = self.closing_since if self.closing_since is not None else now
            if now - since >= self._closing_timeout():
                self.want_close = True  # no close-ok came: drop the socket
                self.on_output()
            return
        if state is not State.OPEN:
            if now - self.created_at >= self.broker.settings.handshake_timeout:
                self.close_reason = "handshake_timeout"
                self.want_close = True  # RabbitMQ closes the socket with no frame
                self.on_output()
            return
        settings = self.broker.settings
        timeout = settings.consumer_timeout
        if timeout:
            # Deliveries are stamped with the tick before them: one tick of slack
            # so that the timeout is never early (RabbitMQ's, checked once a minute, is late).
            limit = timeout + settings.tick_interval * 1000
            for handler in list(self.channels.values()):
                if handler.ack_timed_out(now, limit):
                    self.channel_error(handler.number, exceptions.AMQPPreconditionFailed(
                        f"delivery acknowledgement on channel {handler.number} timed out. "
                        f"Timeout value used: {timeout} ms. "
                        "This timeout value can be configured, see consumers doc guide to learn more"
                    ), 0, 0)
                    self.on_output()

    @property
    def close_deadline(self) -> float | None:
        """When a timeout drops the socket: the closing one while we wait for the
        peer, or the handshake's (the shell times it; `tick` checks it too)."""
        if self.want_close or self.state is State.CLOSED or self.state is State.OPEN:
            return None
        if self.state is State.CLOSING:
            return None if self.closing_since is None else self.closing_since + self._closing_timeout()
        return self.created_at + self.broker.settings.handshake_timeout

    def _closing_timeout(self) -> float:
        if self._closing_limit is not None:
            return self._closing_limit
        if not self._tuned:  # rabbit_reader: the short timeout only before tune-ok
            return NORMAL_TIMEOUT
        if 0 < self.heartbeat < CLOSING_TIMEOUT:
            return float(self.heartbeat)
        return CLOSING_TIMEOUT


def _client_name(properties: dict[str, Any]) -> str:
    """What the client calls itself: its connection_name, else its product."""
    for key in ("connection_name", "product"):
        value = properties.get(key)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str) and value:
            return value
    return ""


def _method_name(method: Any) -> str:
    name: str = method.name
    cls, _, meth = name.partition(".")
    return f"'{cls.lower()}.{_snake(meth)}'"


def _snake(name: str) -> str:
    out: list[str] = []
    for char in name:
        if char.isupper() and out:
            out.append("_")
        out.append(char.lower())
    return "".join(out)


def _credentials(mechanism: str, response: Any) -> tuple[str | None, str | None]:
    raw = response.encode("latin-1") if isinstance(response, str) else bytes(response or b"")
    if mechanism == "PLAIN":
        parts = raw.split(b"\x00")
        if len(parts) != 3 or parts[0]:  # RabbitMQ takes no authorization identity
            return None, None
        return parts[1].decode("utf-8", "replace"), parts[2].decode("utf-8", "replace")
    if mechanism == "AMQPLAIN":
        table = decode_amqplain(raw)
        login, password = table.get("LOGIN"), table.get("PASSWORD")
        if isinstance(login, bytes):
            login = login.decode("utf-8", "replace")
        if isinstance(password, bytes):
            password = password.decode("utf-8", "replace")
        return (login if isinstance(login, str) else None), (password if isinstance(password, str) else None)
    return None, None


def decode_amqplain(raw: bytes) -> dict[str, Any]:
    """AMQPLAIN's response is a field table without its length prefix."""
    try:
        return decode.field_table(len(raw).to_bytes(4, "big") + raw)[1]
    except Exception:
        return {}


def _is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.") or host.startswith("::ffff:127.")

