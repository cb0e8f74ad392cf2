"""How a connection and its channels close: errors, closes, heartbeats and timeouts.

Theory of operation. A hard error sends connection.close and moves to CLOSING,
where every frame but close/close-ok is discarded until close-ok arrives or the
closing timeout passes (rabbit_reader's: short before tune-ok, else the
heartbeat, at most CLOSING_TIMEOUT). Before tune-ok RabbitMQ sends no frame at
all and drops the socket NORMAL_TIMEOUT later. A soft error closes only its
channel, which then waits for close-ok in `closing_channels`. The shell's
periodic `tick` checks the handshake and closing timeouts and the consumer
acknowledgement timeout; `heartbeat_tick` sends heartbeats and drops a peer
that missed three.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pamqp import commands, exceptions

from leveret.amqp_wire import framing, replies
from leveret.amqp_wire.errors import closing_for
from leveret.server.connection_state import (
    CLOSING_TIMEOUT,
    NORMAL_TIMEOUT,
    ConnectionState,
    State,
    log,
)

_BEFORE_TUNE_OK = frozenset((State.AWAIT_START_OK, State.AWAIT_SECURE_OK, State.AWAIT_TUNE_OK))

class Closing(ConnectionState):
    if TYPE_CHECKING:  # from connection_backpressure
        @property
        def reading_paused(self) -> bool: ...

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

    def _drop_later(self) -> None:
        """Read nothing more; the tick drops the socket after NORMAL_TIMEOUT, with
        an RST as RabbitMQ's does (its listeners set {linger, {true, 0}}; observed)."""
        self.reset_on_close = True
        self.state = State.CLOSING
        self.closing_since = self.monotonic()
        self._dropping = True

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
