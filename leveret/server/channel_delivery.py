"""A channel's consumers and what it sends them: basic.deliver and basic.get-ok.

Theory of operation. basic.consume makes a `ChannelConsumer`, which the queue
delivers to while `has_credit` says so: not while the connection's output is
backed up, and within the consumer's prefetch (basic.qos global=false, taken
for consumers created after it, as RabbitMQ does) and the channel's (global=true,
shared by all its consumers). Each delivery gets the next channel-wide delivery
tag; unless no_ack, it waits in `unacked`, in tag order, for channel_settle.

The hot path is `deliver`: the method frame's route and the content header are
encoded once per message and cached on it, so a fan-out to many consumers only
packs the tag; method, header and body go out in one write.
"""

from __future__ import annotations

import base64
import os
import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pamqp import commands, exceptions

from leveret.amqp_wire import framing, replies
from leveret.amqp_wire.fieldtable import Field, TypedTable
from leveret.amqp_wire.properties import encode_properties, replace_headers
from leveret.queues.arguments import type_module, type_name
from leveret.queues.message import Message
from leveret.queues.queue import Entry, Queue
from leveret.queues.stream import StreamQueue, check_consume
from leveret.server.channel_state import DIRECT_REPLY_TO, ChannelConsumer, ChannelState, shortstr

if TYPE_CHECKING:
    from collections.abc import Iterable

_DELIVER_PREFIX = struct.pack(">HH", 60, 60)
_TAG = struct.Struct(">Q")
_BASIC = commands.Basic


class Delivery(ChannelState):
    if TYPE_CHECKING:  # from channel_settle
        def _hand_over(self, settled: Iterable[ChannelConsumer | None], now: int) -> None: ...

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
            self.dispatch_consumed_queues()

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
        if "x-stream-offset" in arguments:  # a stream's consumer argument, refused by the other types
            raise exceptions.AMQPPreconditionFailed(
                f"invalid arg 'x-stream-offset' for queue '{queue_name}' in vhost '{self.vhost.name}' "
                f"of queue type {type_module(queue.args.queue_type)}"
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
        if not self.connection.capabilities.get("consumer_cancel_notify"):
            return
        if self.cancels_after_reply is not None:
            self.cancels_after_reply.append(consumer.consumer_tag)
        else:
            self.send(_BASIC.Cancel(consumer_tag=consumer.consumer_tag, nowait=True))

    def _drop_consumer(self, consumer: ChannelConsumer, now: int, holding: bool = False) -> None:
        self.vhost.forget_observer(consumer.queue, consumer)
        if consumer.queue.deleted:
            return
        self.vhost.cancel(consumer.queue, consumer, now, holding)

    def dispatch_consumed_queues(self) -> None:
        now = self.now()
        seen: set[Queue] = set()
        for consumer in list(self.consumers.values()):
            queue = consumer.queue
            if queue not in seen and queue.message_count and not queue.deleted:
                seen.add(queue)
                self.vhost.dispatch(queue, now)

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
            route = message.wire_route = shortstr(message.exchange) + shortstr(message.routing_key)
        tag_bytes = consumer.wire_tag if consumer is not None else shortstr(consumer_tag)
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
        body = message.body
        if len(body) >= framing.LARGE_BODY:
            self.connection.send_buffers(framing.large_delivery_frames(
                self.number, payload, header, body, self.connection.frame_max))
            return
        self.connection.send(framing.delivery_frames(
            self.number, payload, header, body, self.connection.frame_max))

    def _send_content(self, message: Message, delivery_count: int | None = None) -> None:
        raw = message.raw_properties
        if raw is None:
            raw = encode_properties(message.properties)
        if delivery_count is not None:
            raw = replace_headers(raw, lambda table: _with_delivery_count(table, delivery_count))
        for data in framing.content_frames(self.number, raw, message.body, self.connection.frame_max):
            self.connection.send(data)

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


def _quorum_delivery_count(queue: Queue | None, entry: Entry, *, basic_get: bool = False) -> int | None:
    """Quorum queues tell consumers how often a message was returned (x-delivery-count).
    RabbitMQ 3.10 says 0 in basic.get-ok only: a consumer's first delivery has no header."""
    if queue is not None and queue.args.queue_type == "quorum" and (basic_get or entry.delivery_count):
        return entry.delivery_count
    return None


def _with_delivery_count(table: TypedTable | None, count: int) -> TypedTable:
    # rabbit_basic:add_header -> set_table_value: a long, then the table sorted by name.
    return (table or TypedTable()).keystore("x-delivery-count", Field("l", count)).sorted()


def _gone(name: str) -> Queue:
    raise exceptions.AMQPNotFound(f"no queue '{name}'")

