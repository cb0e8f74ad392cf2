"""One AMQP connection, sans-IO: bytes in (`receive_data`), bytes out (`data_to_send`).

Theory of operation. The connection walks an enum of states through the
handshake (protocol header, start/start-ok, tune/tune-ok, open) to OPEN, then
hands channel frames to `Channel` objects. The state table `ALLOWED` says which
connection-class methods each state accepts; anything else is a lookup miss
that becomes the close code RabbitMQ sends. Once we have sent connection.close
(CLOSING), every frame but close/close-ok is discarded until close-ok arrives.

The parts: connection_handshake (up to OPEN), connection_closing (errors,
closes, heartbeats, timeouts), connection_backpressure (flow control, the
memory alarm, slow readers); connection_state holds what they share. No exception escapes `receive_data`:
protocol errors become closes, and a bug becomes 541 INTERNAL_ERROR for this
connection only.
"""

from __future__ import annotations

from pamqp import commands, exceptions
from pamqp.base import Frame

from leveret.amqp_wire import framing
from leveret.amqp_wire.errors import frame_snippet
from leveret.amqp_wire.methods import PUBLISH_INDEX, decode_method
from leveret.server.channel import Channel
from leveret.server.channel_host import PendingWork
from leveret.server.channel_state import AWAIT_HEADER
from leveret.server.connection_backpressure import Backpressure
from leveret.server.connection_closing import Closing
from leveret.server.connection_handshake import Handshake
from leveret.server.connection_state import NORMAL_TIMEOUT, OUTPUT_LIMIT, State, log

__all__ = ["Connection"]

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
# How RabbitMQ names the states in which it answers an out-of-place method with 504.
_PHASES = {State.AWAIT_OPEN: "opening", State.OPEN: "running"}


class Connection(Handshake, Backpressure, Closing):
    def data_to_send(self) -> bytes:
        return b"".join(self.buffers_to_send())

    def buffers_to_send(self) -> list[bytes | memoryview]:
        """What to write, in order: one bytes object, or with a large body among
        them several buffers for the transport to gather (`writelines`)."""
        if self._held_frames is not None and not self._write_paused and not self.resource_blocked:
            self._resume_input()  # the shell is about to write: the next part of the input may go
        if not self._out:
            return []
        out = self._out
        if self._out_views:
            buffers = out.copy()
            self._out_views = False
        else:
            buffers = [b"".join(out)]
        out.clear()
        self._last_sent = self.monotonic()
        self._out_bytes = 0
        if self.output_blocked and not self._write_paused:
            self._resume_deliveries()
        if self._held_frames is not None and not self._write_paused and not self.resource_blocked:
            self.on_output()  # input is waiting: another pass once this output is written
        return buffers

    def receive_data(self, data: bytes) -> None:
        if self.state is State.CLOSED or self.want_close or self._dropping:
            return
        self._last_received = self.monotonic()
        self.reader.feed(data)
        if self._held_frames is None:
            self._process_input()

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
                        handler.dispatch_consumed_queues()
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
            if frame_type != framing.FRAME_METHOD and self._resources.alarm and channel:
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

    def confirm_later(self, channel: PendingWork) -> None:
        self._confirm_pending[channel] = None

    def dispatch_later(self, channel: PendingWork) -> None:
        """Deliver with the credit `channel` freed once the current read is done."""
        self._dispatch_pending[channel] = None

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

    def _handle_connection_method(self, method: Frame) -> None:
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


def _method_name(method: Frame) -> str:
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
