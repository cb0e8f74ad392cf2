"""What every part of a channel shares: its state, and how it answers.

Theory of operation. A channel is one object whose behaviour is written in a
few parts (channel_publish, channel_delivery, channel_settle, channel_topology),
each a class over this one: they share these attributes directly rather than
through collaborator objects, because publish and deliver are the hot path and
an attribute hop per message is measurable. Each part names, under
TYPE_CHECKING, the few methods it borrows from another part.
"""

from __future__ import annotations

import struct
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from pamqp import commands, exceptions
from pamqp.base import Frame

from leveret.amqp_wire import methods
from leveret.queues.queue import Entry, Queue
from leveret.server.channel_host import ChannelHost
from leveret.store import ReplyGate

if TYPE_CHECKING:
    from leveret.broker.vhost import VirtualHost

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
_SHORT = struct.Struct(">B")
AWAIT_HEADER = -1  # Channel.content_expected: the content header is still to come
PublishMethod = commands.Basic.Publish | methods.Publish  # pamqp's, or the fast decoder's

# What a delivery tag holds until it is settled: its queue, its entry, and the
# consumer it went to (None for basic.get).
Unacked = tuple[Queue, Entry, "ChannelConsumer | None"]


def shortstr(value: str) -> bytes:
    # Surrogate escapes are a publisher's non-UTF-8 bytes: they go back as they came.
    data = value.encode("utf-8", "surrogateescape")
    return _SHORT.pack(len(data)) + data


class ChannelConsumer:
    """A basic.consume subscription; the queue delivers to it while it has credit."""

    __slots__ = ("channel", "consumer_tag", "wire_tag", "queue", "no_ack", "priority", "prefetch", "unacked",
                 "exclusive", "leaving")

    def __init__(self, channel: ChannelState, consumer_tag: str, queue: Queue, no_ack: bool,
                 priority: int, prefetch: int, exclusive: bool) -> None:
        self.channel = channel
        self.consumer_tag = consumer_tag
        self.wire_tag = shortstr(consumer_tag)
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


class ChannelState:
    if TYPE_CHECKING:  # what the connection calls at the end of a read (channel_host.PendingWork)
        def flush_confirms(self) -> None: ...

        def dispatch_consumed_queues(self) -> None: ...

        # and what a consumer calls (channel_delivery)
        def deliver(self, consumer: ChannelConsumer | None, queue: Queue | None, entry: Entry,
                    consumer_tag: str = "") -> None: ...

        def consumer_cancelled_by_server(self, consumer: ChannelConsumer) -> None: ...

    def __init__(self, connection: ChannelHost, number: int) -> None:
        self.connection = connection
        self.number = number
        vhost = connection.vhost
        assert vhost is not None, "channels open only on an open connection"
        self.vhost: VirtualHost = vhost
        self.consumers: dict[str, ChannelConsumer] = {}
        self.unacked: OrderedDict[int, Unacked] = OrderedDict()
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
        # Consumer tags cancelled by this channel's own queue.delete: as RabbitMQ,
        # their basic.cancel follows the delete-ok (py-amqp raises otherwise).
        self.cancels_after_reply: list[str] | None = None
        self.reply_to_token: str | None = None
        self.access = connection.access  # the user's permissions in this vhost
        # (first delivery tag, tick time) whenever the tick time moved: when the
        # oldest unacked delivery was made, for the delivery acknowledgement timeout.
        self._stamps: deque[tuple[int, float]] = deque()
        self._stamp_time = -1.0
        # content assembly (channel_publish)
        self._publish: PublishMethod | None = None
        self._properties: commands.Basic.Properties | None = None
        self._raw_properties = b""
        self._body_size = 0
        self._body: list[bytes] = []
        self._received = 0

    def send(self, method: Frame) -> None:
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
