"""One AMQP channel: method dispatch over its parts, and its release.

Theory of operation. A channel expects a method frame, unless a basic.publish
is waiting for its content (channel_publish). `handle_frame` decodes the two
hot methods (basic.publish, basic.ack) with the fast decoders and the rest with
pamqp, and calls the handler the table names. The handlers live in the parts:
channel_publish (publishes, confirms), channel_delivery (consumers, deliveries,
basic.get), channel_settle (acks, nacks, recover, tx) and channel_topology
(exchanges, queues, permissions); channel_state holds what they share.

Errors raised by the core are pamqp reply-code exceptions; `handle_frame`
passes them to the connection, which closes this channel (soft) or the whole
connection (hard) with the failing method's class and method ids.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pamqp import commands, exceptions

from leveret.amqp_wire import framing, methods
from leveret.server.channel_delivery import Delivery
from leveret.server.channel_host import ChannelHost
from leveret.server.channel_publish import Publishing
from leveret.server.channel_settle import Settlement
from leveret.server.channel_topology import Topology

__all__ = ["Channel"]

_BASIC = commands.Basic


class Channel(Publishing, Delivery, Settlement, Topology):
    def __init__(self, connection: ChannelHost, number: int) -> None:
        super().__init__(connection, number)
        self._handlers: dict[type, Callable[[Any], None]] = {
            commands.Channel.Close: self._channel_close,
            commands.Channel.Flow: self._channel_flow,
            commands.Exchange.Declare: self._exchange_declare,
            commands.Exchange.Delete: self._exchange_delete,
            commands.Exchange.Bind: self._exchange_bind,
            commands.Exchange.Unbind: self._exchange_unbind,
            commands.Queue.Declare: self._queue_declare,
            commands.Queue.Bind: self._queue_bind,
            commands.Queue.Unbind: self._queue_unbind,
            commands.Queue.Purge: self._queue_purge,
            commands.Queue.Delete: self._queue_delete,
            _BASIC.Qos: self._basic_qos,
            _BASIC.Consume: self._basic_consume,
            _BASIC.Cancel: self._basic_cancel,
            _BASIC.Publish: self._basic_publish,
            methods.Publish: self._basic_publish,
            methods.Ack: self._basic_ack,
            _BASIC.Get: self._basic_get,
            _BASIC.Ack: self._basic_ack,
            _BASIC.Nack: self._basic_nack,
            _BASIC.Reject: self._basic_reject,
            _BASIC.Recover: self._basic_recover,
            _BASIC.RecoverAsync: self._basic_recover_async,
            commands.Confirm.Select: self._confirm_select,
            commands.Tx.Select: self._tx_select,
            commands.Tx.Commit: self._tx_commit,
            commands.Tx.Rollback: self._tx_rollback,
        }

    def handle_frame(self, frame_type: int, payload: bytes) -> None:
        if self._publish is not None:
            self._content_frame(frame_type, payload)
            return
        if frame_type != framing.FRAME_METHOD:
            raise exceptions.AMQPUnexpectedFrame(
                "expected method frame, got non method frame instead"
            )
        prefix = payload[:4]
        if prefix == methods.PUBLISH_INDEX:
            method: Any = methods.decode_publish(payload)
        elif prefix == methods.ACK_INDEX:
            method = methods.decode_ack(payload)
        elif prefix == methods.ACCESS_REQUEST_INDEX:
            # Old clients still ask for an access ticket (pamqp has no access class);
            # RabbitMQ grants ticket 1.
            self.connection.send(framing.frame(framing.FRAME_METHOD, self.number, methods.ACCESS_REQUEST_OK))
            return
        else:
            method = methods.decode_method(payload)
        handler = self._handlers.get(type(method))
        if handler is None:  # RabbitMQ's texts; a connection error naming the method
            failure: exceptions.AMQPError = (
                exceptions.AMQPChannelError("second 'channel.open' seen")
                if isinstance(method, commands.Channel.Open)
                else exceptions.AMQPCommandInvalid("unimplemented method")
            )
            failure.method_ids = (method.index >> 16, method.index & 0xFFFF)  # type: ignore[attr-defined]
            raise failure
        try:
            handler(method)
        except exceptions.AMQPError as error:
            index = method.index
            self.connection.channel_error(self.number, error, index >> 16, index & 0xFFFF)

    def _channel_close(self, method: commands.Channel.Close) -> None:
        self.connection.channel_closed_by_client(self.number)

    def _channel_flow(self, method: commands.Channel.Flow) -> None:
        if not method.active:
            raise exceptions.AMQPNotImplemented("active=false")
        self.send(commands.Channel.FlowOk(active=True))

    def release(self) -> None:
        """The channel is closing: cancel its consumers and requeue what it holds."""
        now = self.now()
        self._restore_tx_settled()
        # As RabbitMQ: the unacked return to their places before another consumer
        # (the next single active one) takes over, so it gets them first. The
        # consumers leave their queues before the requeue delivers, so none of it
        # comes back here; the cancels after it do the rest (auto-delete, handover).
        for consumer in self.consumers.values():
            consumer.queue.remove_consumer(consumer, now)
        self._requeue_all(now, consumer_gone=True)
        for consumer in list(self.consumers.values()):
            self._drop_consumer(consumer, now)
        self.consumers.clear()
        if self.reply_to_token is not None:
            self.connection.broker.direct_reply_to.pop(self.reply_to_token, None)
            self.reply_to_token = None
        self.tx = None
        counters = self.connection.broker.counters
        counters.channels_closed += 1
        counters.published += self.published
        counters.confirmed += self.publish_seq if self.confirm else 0
        counters.returned_unroutable += self.returned_unroutable
        counters.dropped_unroutable += self.dropped_unroutable
        # The handler table and the reply gate hold bound methods of this channel: a
        # reference cycle that would keep it (and its connection and socket objects)
        # until a full garbage collection, which the broker's GC tuning makes rare.
        self._handlers = {}
        self.held_replies = None
