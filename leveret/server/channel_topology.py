"""A channel's exchange and queue methods, and the permission checks they make.

Theory of operation. Each method checks the user's permissions in RabbitMQ's
order (rabbit_channel), then asks the vhost, which raises the reply-code
errors; the channel answers unless nowait. The empty queue name means the
channel's last declared queue. The direct reply-to pseudo-queue is answered
here without the vhost.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pamqp import commands, exceptions

from leveret.amqp_wire import replies
from leveret.bindings.model import Destination
from leveret.broker.auth import VhostAccess
from leveret.exchanges import registry as exchange_types
from leveret.server.channel_state import DIRECT_REPLY_TO, ChannelState


class Topology(ChannelState):
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
        self.cancels_after_reply = []
        try:
            count = self.vhost.delete_queue(
                name, if_unused=method.if_unused, if_empty=method.if_empty, owner=self.connection,
            )
        finally:
            cancelled, self.cancels_after_reply = self.cancels_after_reply, None
        if not method.nowait:
            self.send(commands.Queue.DeleteOk(message_count=count))
        for tag in cancelled:
            self.send(commands.Basic.Cancel(consumer_tag=tag, nowait=True))

    def _declare_direct_reply_to(self, method: commands.Queue.Declare) -> None:
        """The pseudo-queue always "exists" with one consumer, as RabbitMQ answers."""
        token = method.queue[len(DIRECT_REPLY_TO) + 1:]
        if token and token not in self.connection.broker.direct_reply_to:
            raise exceptions.AMQPNotFound(f"no queue '{method.queue}' in vhost '{self.vhost.name}'")
        if not method.nowait:
            self.send(replies.QueueDeclareOk(queue=method.queue, message_count=0, consumer_count=1))

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


def _text(value: object) -> str | None:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return value if isinstance(value, str) else None

