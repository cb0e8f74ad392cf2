"""Server replies that carry names the client chose, built without pamqp's name check.

pamqp checks queue and exchange names against the spec's narrow domain
(`^[a-zA-Z0-9-_.:@#,/+ ]*$`) whenever such a method is built or marshalled;
RabbitMQ takes any name a shortstr holds (UTF-8, control characters), so a
reply naming such a queue or exchange must not fail to encode (it used to end
the connection with 541). The wire format is pamqp's, unchanged.
"""

from __future__ import annotations

import struct

from pamqp import commands

_SHORT = struct.Struct(">B")


def _shortstr(value: str) -> bytes:
    # A published exchange or routing key may hold a client's non-UTF-8 bytes.
    data = value.encode("utf-8", "surrogateescape")
    return _SHORT.pack(len(data)) + data


class QueueDeclareOk(commands.Queue.DeclareOk):
    def validate(self) -> None:
        return None


class BasicGetOk(commands.Basic.GetOk):
    def validate(self) -> None:
        return None

    def marshal(self) -> bytes:
        return b"".join((
            struct.pack(">QB", self.delivery_tag, 1 if self.redelivered else 0),
            _shortstr(self.exchange or ""), _shortstr(self.routing_key or ""),
            struct.pack(">I", self.message_count or 0),
        ))


class BasicReturn(commands.Basic.Return):
    def validate(self) -> None:
        return None

    def marshal(self) -> bytes:
        return b"".join((
            struct.pack(">H", self.reply_code), _shortstr(self.reply_text or ""),
            _shortstr(self.exchange or ""), _shortstr(self.routing_key or ""),
        ))


def _close_payload(close: commands.Connection.Close | commands.Channel.Close) -> bytes:
    # The reply text may carry a name's raw bytes (errors.reply_text).
    return b"".join((
        struct.pack(">H", close.reply_code), _shortstr(close.reply_text or ""),
        struct.pack(">HH", close.class_id or 0, close.method_id or 0),
    ))


class ConnectionClose(commands.Connection.Close):
    def validate(self) -> None:
        return None

    def marshal(self) -> bytes:
        return _close_payload(self)


class ChannelClose(commands.Channel.Close):
    def validate(self) -> None:
        return None

    def marshal(self) -> bytes:
        return _close_payload(self)
