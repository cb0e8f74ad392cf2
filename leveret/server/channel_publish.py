"""A channel's publishes: content assembly, the checks on a message, routing, confirms.

Theory of operation. basic.publish makes the channel expect a content header
and then body frames until the declared size has arrived (frames of other
channels may interleave); any other frame meanwhile is 505 UNEXPECTED_FRAME,
which closes the connection as in RabbitMQ. A complete message is checked as
rabbit_channel does (write and topic permissions, user_id, delivery_mode,
expiration, max message size), routed, returned if mandatory and unroutable,
and confirmed: acks that need no disk are coalesced into one per read
(`flush_confirms`); ones behind the store's fsync wait in a ReplyGate, in order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pamqp import commands, exceptions

from leveret.amqp_wire import framing, replies
from leveret.amqp_wire.fieldtable import FieldTableError
from leveret.amqp_wire.properties import (
    RawProperties,
    decode_properties,
    encode_property,
    replace_headers,
)
from leveret.exchanges.router import publish_routing_keys
from leveret.queues.message import Message
from leveret.queues.queue import parse_expiration
from leveret.server.channel_state import AWAIT_HEADER, DIRECT_REPLY_TO, ChannelState, PublishMethod
from leveret.store import ACK, COMMIT_OK, NACK, ReplyGate, Store

if TYPE_CHECKING:
    from leveret.broker.auth import VhostAccess

_BASIC = commands.Basic


class Publishing(ChannelState):
    if TYPE_CHECKING:  # from channel_delivery and channel_topology
        def _send_content(self, message: Message, delivery_count: int | None = None) -> None: ...

        def _authorize_topic(self, access: VhostAccess, permission: str, name: str, routing_key: str) -> None: ...

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
            assert method is not None and properties is not None  # both set on the way here
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

    def _basic_publish(self, method: PublishMethod) -> None:
        if method.immediate:
            raise exceptions.AMQPNotImplemented("immediate=true")
        self._publish = method

    def _publish_complete(self, method: PublishMethod, properties: commands.Basic.Properties, raw: bytes, body: bytes) -> None:
        access = self.access
        if access is not None:
            if not access.write_all:
                access.check("write", "exchange", method.exchange)
            else:
                access.last_write = method.exchange  # stays allowed if permissions are cleared
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

    def _validate_properties(self, properties: commands.Basic.Properties) -> None:
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

    def _route(self, method: PublishMethod, message: Message) -> None:
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

    def _confirm_select(self, method: commands.Confirm.Select) -> None:
        if self.tx is not None:
            raise exceptions.AMQPPreconditionFailed("cannot switch from tx to confirm mode")
        self.confirm = True
        if not method.nowait:
            self.send(commands.Confirm.SelectOk())


def _publish_error(text: str) -> exceptions.AMQPUnexpectedFrame:
    """505 for content that does not follow basic.publish; RabbitMQ names the publish."""
    failure = exceptions.AMQPUnexpectedFrame(text)
    failure.method_ids = (60, 40)  # type: ignore[attr-defined]
    return failure

