"""One AMQP channel: method dispatch, content assembly, consumers, acks, confirms, tx.

Theory of operation. A channel expects a method frame; basic.publish makes it
expect a content header and then body frames until the declared size has
arrived (frames of other channels may interleave). Any other frame in those
states is 505 UNEXPECTED_FRAME, as RabbitMQ closes the connection for it.

Deliveries to this channel's consumers come from queues (`ChannelConsumer.deliver`)
and get channel-wide delivery tags; unacked ones are kept in tag order in an
OrderedDict, so `multiple` acks pop from the front without scanning the rest.
Prefetch: per consumer (`basic.qos` global=false, for consumers created after
it, as RabbitMQ does) and per channel (global=true, shared by all consumers).

Errors raised by the core are pamqp reply-code exceptions; `handle_frame`
passes them to the connection, which closes this channel (soft) or the whole
connection (hard) with the failing method's class and method ids.
"""

from __future__ import annotations

import base64
import os
import struct
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pamqp import commands, exceptions

from leveret.amqp_wire import framing, methods, replies
from leveret.amqp_wire.fieldtable import Field, FieldTableError, TypedTable
from leveret.amqp_wire.properties import (
    RawProperties,
    decode_properties,
    encode_properties,
    encode_property,
    replace_headers,
)
from leveret.bindings.model import Destination
from leveret.exchanges import base as exchange_types
from leveret.exchanges.router import publish_routing_keys
from leveret.queues.arguments import type_name
from leveret.queues.message import Message
from leveret.queues.queue import Entry, Queue, parse_expiration
from leveret.queues.stream import StreamQueue, check_consume, not_supported
from leveret.store.store import ACK, COMMIT_OK, NACK, ReplyGate, Store

if TYPE_CHECKING:
    from leveret.broker.auth import VhostAccess
    from leveret.broker.vhost import VirtualHost
    from leveret.server.connection import Connection

_SHORT = struct.Struct(">B")
_DELIVER_PREFIX = struct.pack(">HH", 60, 60)
_TAG = struct.Struct(">Q")
_BASIC = commands.Basic

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
AWAIT_HEADER = -1  # Channel.content_expected: the content header is still to come


def _shortstr(value: str) -> bytes:
    # Surrogate escapes are a publisher's non-UTF-8 bytes: they go back as they came.
    data = value.encode("utf-8", "surrogateescape")
    return _SHORT.pack(len(data)) + data


class ChannelConsumer:
    """A basic.consume subscription; the queue delivers to it while it has credit."""

    __slots__ = ("channel", "consumer_tag", "wire_tag", "queue", "no_ack", "priority", "prefetch", "unacked",
                 "exclusive", "leaving")

    def __init__(self, channel: Channel, consumer_tag: str, queue: Queue, no_ack: bool,
                 priority: int, prefetch: int, exclusive: bool) -> None:
        self.channel = channel
        self.consumer_tag = consumer_tag
        self.wire_tag = _shortstr(consumer_tag)
        self.queue = queue
        self.no_ack = no_ack
        self.priority = priority
        self.prefetch = prefetch
        self.unacked = 0
        self.exclusive = exclusive
        self.leaving = False  # cancelled while holding unacked messages

    def has_credit(self) -> bool:
        if self.channel.connection.output_blocked:
            return False  # the client is not reading fast enough: hold deliveries back
        if self.no_ack:
            return True
        if self.prefetch and self.unacked >= self.prefetch:
            return False
        channel = self.channel
        return not channel.global_prefetch or len(channel.unacked) < channel.global_prefetch

    def deliver(self, queue: Queue, entry: Entry) -> None:
        self.channel.deliver(self, queue, entry)

    def queue_deleted(self, queue: Queue) -> None:
        self.channel.consumer_cancelled_by_server(self)


class Channel:
    def __init__(self, connection: Connection, number: int) -> None:
        self.connection = connection
        self.number = number
        self.vhost: VirtualHost = connection.vhost  # type: ignore[assignment]
        self.consumers: dict[str, ChannelConsumer] = {}
        self.unacked: OrderedDict[int, tuple[Queue, Entry, ChannelConsumer | None]] = OrderedDict()
        self.delivery_tag = 0
        self.consumer_prefetch = 0
        self.global_prefetch = 0
        self.confirm = False
        self.publish_seq = 0
        self.ack_upto = 0  # highest publish confirmed...
        self.acked_upto = 0  # ...and the highest the client has been told of
        # Confirms (and tx.commit-ok) waiting for the store's fsync, in order.
        self.held_replies: ReplyGate | None = None
        # Counts for management; folded into the broker's totals on release.
        self.published = 0
        self.returned_unroutable = 0
        self.dropped_unroutable = 0
        connection.broker.counters.channels_opened += 1
        # tx mode: publishes and settlements wait here for tx.commit.
        self.tx: list[Callable[[], None]] | None = None
        self.tx_settled: list[tuple[int, Queue, Entry, ChannelConsumer | None]] = []
        self.last_queue: str | None = None
        self.reply_to_token: str | None = None
        self.access = connection.access  # the user's permissions in this vhost
        # (first delivery tag, tick time) whenever the tick time moved: when the
        # oldest unacked delivery was made, for the delivery acknowledgement timeout.
        self._stamps: deque[tuple[int, float]] = deque()
        self._stamp_time = -1.0
        # content assembly
        self._publish: Any = None
        self._properties: Any = None
        self._raw_properties = b""
        self._body_size = 0
        self._body: list[bytes] = []
        self._received = 0
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

    # -------------------------------------------------------------- frames
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

    def _content_frame(self, frame_type: int, payload: bytes) -> None:
        if self._properties is None:
            # A content header with a weight is no content header to RabbitMQ.
            if frame_type != framing.FRAME_HEADER or payload[2:4] != b"\x00\x00":
                raise _publish_error("expected content header for class 60, got non content header frame instead")
            class_id, body_size, raw = framing.parse_content_header(payload)
            if class_id != 60:
                raise _publish_error(f"expected content header for class 60, got one for class {class_id} instead")
            try:
                self._properties = decode_properties(raw)
            except FieldTableError:
                # RabbitMQ's channel crashes on properties it cannot decode: 541, no explanation.
                raise exceptions.AMQPInternalError() from None
            self._raw_properties = raw
            self._body_size = body_size
            limit = self.connection.broker.settings.max_message_size
            if body_size > limit:
                # Closed mid-content: the body frames still to come are discarded.
                self.connection.channel_error(
                    self.number,
                    exceptions.AMQPPreconditionFailed(
                        f"message size {body_size} is larger than configured max size {limit}"
                    ),
                    60, 40,
                )
                self._reset_content()
                return
        else:
            if frame_type != framing.FRAME_BODY:
                raise _publish_error("expected content body, got non content body frame instead")
            self._body.append(payload)
            self._received += len(payload)
            if self._received > self._body_size:
                raise exceptions.AMQPFrameError(
                    f"content body exceeds the declared size of {self._body_size} bytes"
                )
        if self._received >= self._body_size:
            method, properties, raw = self._publish, self._properties, self._raw_properties
            body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
            self._reset_content()
            try:
                self._publish_complete(method, properties, raw, body)
            except exceptions.AMQPError as error:
                self.connection.channel_error(self.number, error, 60, 40)

    def content_expected(self) -> int:
        """What a pending basic.publish still waits for: AWAIT_HEADER, the body
        bytes still to come, or 0 when none is pending."""
        if self._publish is None:
            return 0
        if self._properties is None:
            return AWAIT_HEADER
        return max(0, self._body_size - self._received)

    def _reset_content(self) -> None:
        self._publish = None
        self._properties = None
        self._raw_properties = b""
        self._body = []
        self._received = 0
        self._body_size = 0

    # ------------------------------------------------------------- helpers
    def send(self, method: Any) -> None:
        self.connection.send_method(self.number, method)

    def now(self) -> int:
        return self.connection.broker.now_ms()

    def _queue_name(self, name: str) -> str:
        """The empty name means the channel's last declared queue (AMQP 0-9-1)."""
        if name:
            return name
        if self.last_queue is None:
            raise exceptions.AMQPNotFound("no previously declared queue")
        return self.last_queue

    # ------------------------------------------------------------- channel
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
        self._requeue_all(now)
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

    def _drop_consumer(self, consumer: ChannelConsumer, now: int, holding: bool = False) -> None:
        self.vhost.forget_observer(consumer.queue, consumer)
        if consumer.queue.deleted:
            return
        self.vhost.cancel(consumer.queue, consumer, now, holding)

    def _hand_over(self, settled: Iterable[ChannelConsumer | None], now: int) -> None:
        """After settling: a cancelled consumer with nothing left unacked lets the
        next single active consumer take over (Queue.remove_consumer)."""
        for consumer in settled:
            if consumer is not None and consumer.leaving and not consumer.unacked:
                consumer.leaving = False
                self.vhost.handover(consumer.queue, now)

    def _requeue_all(self, now: int) -> None:
        by_queue: dict[Queue, list[Entry]] = {}
        settled = []
        for queue, entry, consumer in self.unacked.values():
            by_queue.setdefault(queue, []).append(entry)
            if consumer is not None:
                consumer.unacked -= 1
                settled.append(consumer)
        self.unacked.clear()
        for queue, entries in by_queue.items():
            self.vhost.requeue(queue, entries, now)
        self._hand_over(settled, now)

    # ------------------------------------------------------------ exchange
    def _exchange_declare(self, method: commands.Exchange.Declare) -> None:
        if self.access is not None and not method.passive:
            self._authorize_exchange_declare(method)
        self.vhost.declare_exchange(
            method.exchange, method.exchange_type, passive=method.passive, durable=method.durable,
            auto_delete=method.auto_delete, internal=method.internal, arguments=method.arguments,
        )
        if not method.nowait:
            self.send(commands.Exchange.DeclareOk())

    def _exchange_delete(self, method: commands.Exchange.Delete) -> None:
        if self.access is not None and method.exchange and not method.exchange.startswith("amq."):
            self.access.check("configure", "exchange", method.exchange)  # after the 403s for '' and amq.*
        self.vhost.delete_exchange(method.exchange, if_unused=method.if_unused)
        if not method.nowait:
            self.send(commands.Exchange.DeleteOk())

    def _exchange_bind(self, method: commands.Exchange.Bind) -> None:
        self._authorize_bind(method.source, Destination.exchange(method.destination), method.routing_key)
        self.vhost.bind(method.source, Destination.exchange(method.destination), method.routing_key, method.arguments)
        if not method.nowait:
            self.send(commands.Exchange.BindOk())

    def _exchange_unbind(self, method: commands.Exchange.Unbind) -> None:
        self._authorize_bind(method.source, Destination.exchange(method.destination), method.routing_key)
        self.vhost.unbind(method.source, Destination.exchange(method.destination), method.routing_key, method.arguments)
        if not method.nowait:
            self.send(commands.Exchange.UnbindOk())

    # --------------------------------------------------------------- queue
    def _queue_declare(self, method: commands.Queue.Declare) -> None:
        if method.queue == DIRECT_REPLY_TO or method.queue.startswith(DIRECT_REPLY_TO + "."):
            self._declare_direct_reply_to(method)
            return
        # RabbitMQ never makes an exclusive queue durable, so it ignores the flag.
        durable = method.durable and not method.exclusive
        queue = self.vhost.declare_queue(
            method.queue, passive=method.passive, durable=durable, exclusive=method.exclusive,
            auto_delete=method.auto_delete, arguments=method.arguments, owner=self.connection, now_ms=self.now(),
            authorize=None if self.access is None else self._authorize_queue_declare,
            authorize_new=None if self.access is None else lambda name: self._authorize_new_queue(
                name, method.arguments or {}),
        )
        self.last_queue = queue.name
        if not method.nowait:
            self.send(replies.QueueDeclareOk(
                queue=queue.name, message_count=queue.message_count, consumer_count=queue.consumer_count,
            ))

    def _queue_bind(self, method: commands.Queue.Bind) -> None:
        name = self._queue_name(method.queue)
        routing_key = method.routing_key if (method.queue or method.routing_key) else name
        self._authorize_bind(method.exchange, Destination.queue(name), routing_key)
        self.vhost.bind(method.exchange, Destination.queue(name), routing_key, method.arguments, owner=self.connection)
        if not method.nowait:
            self.send(commands.Queue.BindOk())

    def _queue_unbind(self, method: commands.Queue.Unbind) -> None:
        name = self._queue_name(method.queue)
        self._authorize_bind(method.exchange, Destination.queue(name), method.routing_key)
        self.vhost.unbind(method.exchange, Destination.queue(name), method.routing_key, method.arguments, owner=self.connection)
        self.send(commands.Queue.UnbindOk())

    def _queue_purge(self, method: commands.Queue.Purge) -> None:
        name = self._queue_name(method.queue)
        if self.access is not None:
            self.access.check("read", "queue", name)
        count = self.vhost.purge_queue(name, owner=self.connection)
        if not method.nowait:
            self.send(commands.Queue.PurgeOk(message_count=count))

    def _queue_delete(self, method: commands.Queue.Delete) -> None:
        name = self._queue_name(method.queue)
        if self.access is not None:
            self.access.check("configure", "queue", name)
        count = self.vhost.delete_queue(
            name, if_unused=method.if_unused, if_empty=method.if_empty, owner=self.connection,
        )
        if not method.nowait:
            self.send(commands.Queue.DeleteOk(message_count=count))

    # --------------------------------------------------------------- basic
    def _basic_qos(self, method: _BASIC.Qos) -> None:
        if method.prefetch_size:
            raise exceptions.AMQPNotImplemented(f"prefetch_size!=0 ({method.prefetch_size})")
        lifted = False
        if method.global_:
            self.global_prefetch = method.prefetch_count
        else:
            self.consumer_prefetch = method.prefetch_count
            # RabbitMQ (rabbit_channel, unlimit_prefetch): a per-consumer qos
            # lifts an earlier channel-wide limit.
            lifted, self.global_prefetch = bool(self.global_prefetch), 0
        self.send(_BASIC.QosOk())
        if method.global_ or lifted:
            self._dispatch_consumed_queues()

    def _basic_consume(self, method: _BASIC.Consume) -> None:
        queue_name = self._queue_name(method.queue)
        if queue_name == DIRECT_REPLY_TO:
            self._consume_direct_reply_to(method)
            return
        tag = method.consumer_tag or "amq.ctag-" + base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        if tag in self.consumers:
            raise exceptions.AMQPNotAllowed(f"attempt to reuse consumer tag '{tag}'")
        if self.access is not None:
            self.access.check("read", "queue", queue_name)
        arguments = method.arguments or {}
        # The queue first: a missing one is 404 whatever the arguments (as RabbitMQ).
        queue = self.vhost.queue(queue_name, owner=self.connection)
        if isinstance(queue, StreamQueue):
            self._consume_stream(method, tag, queue, arguments)
            return
        priority = arguments.get("x-priority", 0)
        if isinstance(priority, bool) or not isinstance(priority, int):
            got = {"longstr": "longstr", "double": "float", "bool": "bool"}.get(type_name(priority), type_name(priority))
            raise exceptions.AMQPPreconditionFailed(
                f"invalid arg 'x-priority' for queue '{queue_name}' in vhost '{self.vhost.name}': "
                f'"expected integer, got {got}"'
            )
        if self.global_prefetch and queue.args.queue_type == "quorum":
            raise exceptions.AMQPNotImplemented(
                f"queue '{queue_name}' in vhost '{self.vhost.name}' does not support global qos"
            )
        consumer = ChannelConsumer(self, tag, queue, method.no_ack, priority, self.consumer_prefetch, method.exclusive)
        self.vhost.consume(
            queue_name, consumer, exclusive=method.exclusive, owner=self.connection,
            observer=consumer, now_ms=self.now(), dispatch=False,
        )
        self.consumers[tag] = consumer
        if not method.nowait:
            self.send(_BASIC.ConsumeOk(consumer_tag=tag))
        self.vhost.dispatch(queue, self.now())

    def _consume_stream(self, method: _BASIC.Consume, tag: str, queue: StreamQueue, arguments: Mapping[str, Any]) -> None:
        """A stream consumer starts where x-stream-offset says; `exclusive` is
        ignored on streams (RabbitMQ 3.10 as observed)."""
        spec = check_consume(
            queue.name, self.vhost.name, arguments, prefetch=self.consumer_prefetch,
            global_prefetch=self.global_prefetch, no_ack=method.no_ack, now_ms=self.now(),
        )
        consumer = ChannelConsumer(self, tag, queue, False, 0, self.consumer_prefetch, False)
        queue.subscribe(consumer, spec)
        self.vhost.consume(
            queue.name, consumer, exclusive=False, owner=self.connection,
            observer=consumer, now_ms=self.now(), dispatch=False,
        )
        self.consumers[tag] = consumer
        if not method.nowait:
            self.send(_BASIC.ConsumeOk(consumer_tag=tag))
        self.vhost.dispatch(queue, self.now())

    def _basic_cancel(self, method: _BASIC.Cancel) -> None:
        if self.reply_to_token is not None and method.consumer_tag == self.reply_to_token:
            self.connection.broker.direct_reply_to.pop(self.reply_to_token, None)
            self.reply_to_token = None
        consumer = self.consumers.pop(method.consumer_tag or "", None)
        if consumer is not None:
            consumer.leaving = consumer.unacked > 0
            self._drop_consumer(consumer, self.now(), holding=consumer.leaving)
        if not method.nowait:
            self.send(_BASIC.CancelOk(consumer_tag=method.consumer_tag))

    def consumer_cancelled_by_server(self, consumer: ChannelConsumer) -> None:
        """Its queue was deleted: tell the client if it understands basic.cancel."""
        if self.consumers.pop(consumer.consumer_tag, None) is None:
            return
        if self.connection.capabilities.get("consumer_cancel_notify"):
            self.send(_BASIC.Cancel(consumer_tag=consumer.consumer_tag, nowait=True))

    def _basic_publish(self, method: _BASIC.Publish) -> None:
        if method.immediate:
            raise exceptions.AMQPNotImplemented("immediate=true")
        self._publish = method

    def _publish_complete(self, method: _BASIC.Publish, properties: Any, raw: bytes, body: bytes) -> None:
        access = self.access
        if access is not None:
            if not access.write_all:
                access.check("write", "exchange", method.exchange)
            if access.topics:
                self._authorize_topic(access, "write", method.exchange, method.routing_key)
        self._validate_properties(properties)
        headers = properties.headers
        routing_keys = publish_routing_keys(method.routing_key, headers)
        if headers and len(routing_keys) > 1:
            if "BCC" in headers:
                raw = replace_headers(raw, lambda table: table.keydelete("BCC") if table is not None else None)
                properties = decode_properties(raw)
        if properties.reply_to == DIRECT_REPLY_TO:
            if self.reply_to_token is None:
                raise exceptions.AMQPPreconditionFailed("fast reply consumer does not exist")
            raw = RawProperties.parse(raw).replace(
                reply_to=encode_property("reply_to", f"{DIRECT_REPLY_TO}.{self.reply_to_token}")
            ).to_bytes()
            properties = decode_properties(raw)
        message = Message(method.exchange, method.routing_key, properties, body, raw, routing_keys)
        if self.confirm:
            self.publish_seq += 1
        if self.tx is not None:
            self.vhost.exchange(method.exchange)  # a missing exchange fails now, not at commit
            self.tx.append(lambda: self._route(method, message))
            return
        self._route(method, message)

    def _validate_properties(self, properties: Any) -> None:
        """What RabbitMQ checks on every publish (rabbit_channel:check_user_id_header, rabbit_basic)."""
        user_id = properties.user_id
        if user_id and user_id != self.connection.user:
            raise exceptions.AMQPPreconditionFailed(
                f"user_id property set to '{user_id}' but authenticated user was '{self.connection.user}'"
            )
        if properties.delivery_mode not in (None, 0, 1, 2):
            raise exceptions.AMQPPreconditionFailed(
                f"invalid message: {{delivery_mode_unknown,{properties.delivery_mode}}}"
            )
        if properties.expiration is not None:
            parse_expiration(properties.expiration)

    def _route(self, method: _BASIC.Publish, message: Message) -> None:
        self.published += 1
        vhost = self.vhost
        store = self.connection.broker.store
        before = store.position if store is not None else 0
        if method.exchange == "" and method.routing_key.startswith(DIRECT_REPLY_TO + "."):
            routed = self.connection.broker.deliver_direct_reply(method.routing_key, message)
            rejected = False
        else:
            outcome = vhost.publish(method.exchange, message, self.now())
            routed, rejected = outcome.routed, outcome.rejected
            for name in outcome.queues:
                queue = vhost.queues.get(name)
                if queue is not None and queue.wants_flow_control():
                    self.connection.flow_block(queue)
        if not routed and method.mandatory:
            self.returned_unroutable += 1
            self.connection.send_method(self.number, replies.BasicReturn(
                reply_code=312, reply_text="NO_ROUTE", exchange=method.exchange, routing_key=method.routing_key,
            ))
            self._send_content(message)
        elif not routed:
            self.dropped_unroutable += 1
        if self.confirm and self.tx is None:
            tag = self.publish_seq
            if store is not None and (store.position != before or self._replies_held()):
                # Persistent and in a durable queue (or behind one that is): after fsync.
                self.flush_confirms()
                self._hold_reply(store, NACK if rejected else ACK, tag)
            elif rejected:
                self.flush_confirms()
                self.send(_BASIC.Nack(delivery_tag=tag))
            else:
                # Acks are coalesced into one per read (multiple=true), as RabbitMQ does.
                self.ack_upto = tag
                self.connection.confirm_later(self)

    def flush_confirms(self) -> None:
        """Send the coalesced ack for every publish confirmed so far."""
        upto, acked = self.ack_upto, self.acked_upto
        if upto > acked:
            self.acked_upto = upto
            self.send(_BASIC.Ack(delivery_tag=upto, multiple=upto - acked > 1))

    def _replies_held(self) -> bool:
        return self.held_replies is not None and bool(self.held_replies.held)

    def _hold_reply(self, store: Store, kind: int, tag: int) -> None:
        if self.held_replies is None:
            self.held_replies = ReplyGate(store, self._send_held_reply)
        self.held_replies.hold(store.position, kind, tag)

    def _send_held_reply(self, kind: int, tag: int, multiple: bool) -> None:
        if self.connection.channels.get(self.number) is not self:
            return  # closed while its replies waited for the disk
        if kind == COMMIT_OK:
            self.send(commands.Tx.CommitOk())
            return
        self.acked_upto = max(self.acked_upto, tag)  # a later coalesced ack starts after it
        if kind == NACK:
            self.send(_BASIC.Nack(delivery_tag=tag, multiple=multiple))
        else:
            self.send(_BASIC.Ack(delivery_tag=tag, multiple=multiple))

    def _send_content(self, message: Message, delivery_count: int | None = None) -> None:
        raw = message.raw_properties
        if raw is None:
            raw = encode_properties(message.properties)
        if delivery_count is not None:
            raw = replace_headers(raw, lambda table: _with_delivery_count(table, delivery_count))
        for data in framing.content_frames(self.number, raw, message.body, self.connection.frame_max):
            self.connection.send(data)

    def deliver(self, consumer: ChannelConsumer | None, queue: Queue | None, entry: Entry, consumer_tag: str = "") -> None:
        self.delivery_tag += 1
        tag = self.delivery_tag
        if consumer is not None and queue is not None and not consumer.no_ack:
            self.unacked[tag] = (queue, entry, consumer)
            consumer.unacked += 1
            if self._stamp_time != self.connection.tick_now:
                self._stamp(tag)
        message = entry.message
        route = message.wire_route
        if route is None:
            route = message.wire_route = _shortstr(message.exchange) + _shortstr(message.routing_key)
        tag_bytes = consumer.wire_tag if consumer is not None else _shortstr(consumer_tag)
        payload = b"".join((_DELIVER_PREFIX, tag_bytes, _TAG.pack(tag), b"\x01" if entry.redelivered else b"\x00", route))
        delivery_count = _quorum_delivery_count(queue, entry)
        if delivery_count is not None:
            self.connection.send(framing.frame(framing.FRAME_METHOD, self.number, payload))
            self._send_content(message, delivery_count)
            return
        # The common case: method, header and body frames in one write.
        header = message.wire_header
        if header is None:
            raw = message.raw_properties
            if raw is None:
                raw = encode_properties(message.properties)
            header = message.wire_header = framing.content_header_payload(raw, len(message.body))
        self.connection.send(framing.delivery_frames(
            self.number, payload, header, message.body, self.connection.frame_max))

    def _basic_get(self, method: _BASIC.Get) -> None:
        name = self._queue_name(method.queue)
        if self.access is not None:
            self.access.check("read", "queue", name)
        outcome = self.vhost.get(name, no_ack=method.no_ack, owner=self.connection, now_ms=self.now())
        entry = outcome.entry
        if entry is None:
            self.send(_BASIC.GetEmpty())
            return
        self.delivery_tag += 1
        tag = self.delivery_tag
        queue = self.vhost.queues.get(name)
        if not method.no_ack:
            self.unacked[tag] = (queue or _gone(name), entry, None)
            if self._stamp_time != self.connection.tick_now:
                self._stamp(tag)
        message = entry.message
        self.send(replies.BasicGetOk(
            delivery_tag=tag, redelivered=entry.redelivered, exchange=message.exchange,
            routing_key=message.routing_key, message_count=outcome.message_count,
        ))
        self._send_content(message, _quorum_delivery_count(queue, entry, basic_get=True))

    def _take(self, delivery_tag: int, multiple: bool) -> list[tuple[int, Queue, Entry, ChannelConsumer | None]]:
        unacked = self.unacked
        if multiple and delivery_tag == 0:
            taken = [(tag, *item) for tag, item in unacked.items()]
            unacked.clear()
        elif delivery_tag not in unacked:
            raise exceptions.AMQPPreconditionFailed(f"unknown delivery tag {delivery_tag}")
        elif multiple:
            taken = []
            while unacked:
                tag, item = unacked.popitem(last=False)
                taken.append((tag, *item))
                if tag == delivery_tag:
                    break
        else:
            taken = [(delivery_tag, *unacked.pop(delivery_tag))]
        for _, _, _, consumer in taken:
            if consumer is not None:
                consumer.unacked -= 1
        return taken

    def _settle(self, delivery_tag: int, multiple: bool, action: str) -> None:
        taken = self._take(delivery_tag, multiple)
        if action != "ack":
            for _, queue, _, _ in taken:
                if isinstance(queue, StreamQueue):
                    raise not_supported("basic.nack and basic.reject", queue.name, queue.vhost)
        if self.tx is not None:
            # As RabbitMQ: the tags leave `unacked` now; rollback puts them back.
            self.tx_settled.extend(taken)
            self.tx.append(lambda: self._apply_settlement(taken, action))
            return
        self._apply_settlement(taken, action)

    def _apply_settlement(self, taken: list[tuple[int, Queue, Entry, ChannelConsumer | None]], action: str) -> None:
        now = self.now()
        by_queue: dict[Queue, list[Entry]] = {}
        for _, queue, entry, _ in taken:
            by_queue.setdefault(queue, []).append(entry)
        for queue, entries in by_queue.items():
            if action == "ack":
                self.vhost.ack(queue, entries)
            elif action == "requeue":
                self.vhost.requeue(queue, entries, now)
            else:
                self.vhost.reject(queue, entries, now)
        self._hand_over((consumer for _, _, _, consumer in taken), now)
        # Freed credit is used once per read, not once per ack frame.
        self.connection.dispatch_later(self)

    def _dispatch_consumed_queues(self) -> None:
        now = self.now()
        seen: set[Queue] = set()
        for consumer in list(self.consumers.values()):
            queue = consumer.queue
            if queue not in seen and queue.message_count and not queue.deleted:
                seen.add(queue)
                self.vhost.dispatch(queue, now)

    def _basic_ack(self, method: _BASIC.Ack) -> None:
        if method.multiple or self.tx is not None:
            self._settle(method.delivery_tag, method.multiple, "ack")
            return
        # The common case, one ack outside a transaction, without the batching.
        item = self.unacked.pop(method.delivery_tag, None)
        if item is None:
            raise exceptions.AMQPPreconditionFailed(f"unknown delivery tag {method.delivery_tag}")
        queue, entry, consumer = item
        self.vhost.ack(queue, [entry])
        if consumer is not None:
            consumer.unacked -= 1
            if consumer.leaving and not consumer.unacked:
                self._hand_over((consumer,), self.now())
        self.connection.dispatch_later(self)

    def _basic_nack(self, method: _BASIC.Nack) -> None:
        self._settle(method.delivery_tag, method.multiple, "requeue" if method.requeue else "reject")

    def _basic_reject(self, method: _BASIC.Reject) -> None:
        self._settle(method.delivery_tag or 0, False, "requeue" if method.requeue else "reject")

    def _basic_recover(self, method: _BASIC.Recover) -> None:
        self._recover(method.requeue)
        self.send(_BASIC.RecoverOk())

    def _basic_recover_async(self, method: _BASIC.RecoverAsync) -> None:
        self._recover(method.requeue)

    def _recover(self, requeue: bool) -> None:
        # RabbitMQ implements requeue=true only (redelivery to the same consumer is not offered).
        if not requeue:
            raise exceptions.AMQPNotImplemented("requeue=false")
        self._requeue_all(self.now())
        self._dispatch_consumed_queues()

    # ------------------------------------------------------ confirm and tx
    def _confirm_select(self, method: commands.Confirm.Select) -> None:
        if self.tx is not None:
            raise exceptions.AMQPPreconditionFailed("cannot switch from tx to confirm mode")
        self.confirm = True
        if not method.nowait:
            self.send(commands.Confirm.SelectOk())

    def _tx_select(self, method: commands.Tx.Select) -> None:
        if self.confirm:
            raise exceptions.AMQPPreconditionFailed("cannot switch from confirm to tx mode")
        if self.tx is None:
            self.tx = []
        self.send(commands.Tx.SelectOk())

    def _tx_commit(self, method: commands.Tx.Commit) -> None:
        if self.tx is None:
            raise exceptions.AMQPPreconditionFailed("channel is not transactional")
        pending, self.tx = self.tx, None
        self.tx_settled = []
        store = self.connection.broker.store
        before = store.position if store is not None else 0
        try:
            for action in pending:
                action()
        finally:
            self.tx = []
        if store is not None and (store.position != before or self._replies_held()):
            self._hold_reply(store, COMMIT_OK, 0)  # as RabbitMQ: commit-ok once on disk
        else:
            self.send(commands.Tx.CommitOk())

    def _tx_rollback(self, method: commands.Tx.Rollback) -> None:
        if self.tx is None:
            raise exceptions.AMQPPreconditionFailed("channel is not transactional")
        self.tx = []
        self._restore_tx_settled()
        self.send(commands.Tx.RollbackOk())

    def _restore_tx_settled(self) -> None:
        """Uncommitted acks/nacks are undone: their deliveries are unacked again, in tag order."""
        if not self.tx_settled:
            return
        merged = sorted([(tag, *item) for tag, item in self.unacked.items()] + self.tx_settled, key=lambda t: t[0])
        self.unacked = OrderedDict((tag, (queue, entry, consumer)) for tag, queue, entry, consumer in merged)
        for _, _, _, consumer in self.tx_settled:
            if consumer is not None:
                consumer.unacked += 1
        self.tx_settled = []

    # ------------------------------------------------------- permissions
    def _authorize_exchange_declare(self, method: commands.Exchange.Declare) -> None:
        """rabbit_channel's order: an unknown type (503) and the default exchange (403)
        fail first; then configure; a new exchange naming an alternate exchange also
        needs read on itself and write on the alternate."""
        access, name = self.access, method.exchange
        if access is None or not name or method.exchange_type not in exchange_types.REGISTRY:
            return
        access.check("configure", "exchange", name)
        if name in self.vhost.exchanges or name.startswith("amq."):
            return
        alternate = _text((method.arguments or {}).get("alternate-exchange"))
        if alternate is not None:
            access.check("read", "exchange", name)
            access.check("write", "exchange", alternate)

    def _authorize_queue_declare(self, name: str) -> None:
        """Configure on the queue (a server-named one too)."""
        if self.access is not None:
            self.access.check("configure", "queue", name)

    def _authorize_new_queue(self, name: str, arguments: Mapping[str, Any]) -> None:
        """A new queue with a dead-letter exchange also needs read on itself and write on that exchange."""
        access = self.access
        if access is None:
            return
        dead_letter_exchange = _text(arguments.get("x-dead-letter-exchange"))
        if dead_letter_exchange is not None:
            access.check("read", "queue", name)
            access.check("write", "exchange", dead_letter_exchange)

    def _authorize_bind(self, source: str, destination: Destination, routing_key: str) -> None:
        """Write on the destination, then (past the default-exchange 403) read on
        the source, then the topic read permission on the binding key."""
        access = self.access
        if access is None:
            return
        access.check("write", destination.kind, destination.name)
        if source and (destination.kind == "queue" or destination.name):
            access.check("read", "exchange", source)
            if access.topics:
                self._authorize_topic(access, "read", source, routing_key)

    def _authorize_topic(self, access: VhostAccess, permission: str, name: str, routing_key: str) -> None:
        """Topic permissions, on exchanges of type topic only; a missing (404) or,
        for publishes, internal (403) exchange fails later with its own error,
        as in RabbitMQ where those come first."""
        exchange = self.vhost.exchanges.get(name)
        if exchange is None or exchange.type.name != "topic":
            return
        if permission == "write" and exchange.internal:
            return
        access.check_topic(permission, name, routing_key)

    # ---------------------------------------------- acknowledgement timeout
    def _stamp(self, tag: int) -> None:
        now = self._stamp_time = self.connection.tick_now
        self._stamps.append((tag, now))

    def ack_timed_out(self, now: float, timeout_ms: float) -> bool:
        """Has the oldest unacked delivery waited longer than `timeout_ms`? (rabbit_channel's
        consumer_timeout looks at the oldest pending ack, basic.get included.)"""
        if not self.unacked:
            self._stamps.clear()
            self._stamp_time = -1.0  # the next delivery starts a stamp again
            return False
        oldest = next(iter(self.unacked))
        stamps = self._stamps
        while len(stamps) > 1 and stamps[1][0] <= oldest:
            stamps.popleft()
        # A stamp is the tick before its deliveries: the caller adds a tick of slack.
        return bool(stamps) and (now - stamps[0][1]) * 1000 > timeout_ms

    # ---------------------------------------------------------- reply-to
    def _declare_direct_reply_to(self, method: commands.Queue.Declare) -> None:
        """The pseudo-queue always "exists" with one consumer, as RabbitMQ answers."""
        token = method.queue[len(DIRECT_REPLY_TO) + 1:]
        if token and token not in self.connection.broker.direct_reply_to:
            raise exceptions.AMQPNotFound(f"no queue '{method.queue}' in vhost '{self.vhost.name}'")
        if not method.nowait:
            self.send(replies.QueueDeclareOk(queue=method.queue, message_count=0, consumer_count=1))

    def _consume_direct_reply_to(self, method: _BASIC.Consume) -> None:
        if not method.no_ack:
            raise exceptions.AMQPPreconditionFailed("reply consumer cannot acknowledge")
        if self.reply_to_token is not None:
            raise exceptions.AMQPPreconditionFailed("reply consumer already set")
        token = base64.urlsafe_b64encode(os.urandom(18)).decode()
        tag = method.consumer_tag or token
        self.reply_to_token = tag if method.consumer_tag else token
        self.connection.broker.direct_reply_to[self.reply_to_token] = (self, tag)
        if not method.nowait:
            self.send(_BASIC.ConsumeOk(consumer_tag=tag))


def _publish_error(text: str) -> exceptions.AMQPUnexpectedFrame:
    """505 for content that does not follow basic.publish; RabbitMQ names the publish."""
    failure = exceptions.AMQPUnexpectedFrame(text)
    failure.method_ids = (60, 40)  # type: ignore[attr-defined]
    return failure


def _quorum_delivery_count(queue: Queue | None, entry: Entry, *, basic_get: bool = False) -> int | None:
    """Quorum queues tell consumers how often a message was returned (x-delivery-count).
    RabbitMQ 3.10 says 0 in basic.get-ok only: a consumer's first delivery has no header."""
    if queue is not None and queue.args.queue_type == "quorum" and (basic_get or entry.delivery_count):
        return entry.delivery_count
    return None


def _with_delivery_count(table: TypedTable | None, count: int) -> TypedTable:
    # rabbit_basic:add_header -> set_table_value: a long, then the table sorted by name.
    return (table or TypedTable()).keystore("x-delivery-count", Field("l", count)).sorted()


def _text(value: Any) -> str | None:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def _gone(name: str) -> Queue:
    raise exceptions.AMQPNotFound(f"no queue '{name}'")


