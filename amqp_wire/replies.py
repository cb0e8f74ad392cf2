"""Server replies that carry names the client chose, built without pamqp's name check.

pamqp checks queue and exchange names against the spec's narrow domain
(`^[a-zA-Z0-9-_.:@#,/+ ]*$`) whenever such a method is built or marshalled;
RabbitMQ takes any name a shortstr holds (UTF-8, control characters), so a
reply naming such a queue or exchange must not fail to encode (it used to end
the connection with 541). The wire format is pamqp's, unchanged.
"""

from __future__ import annotations

from pamqp import commands


class QueueDeclareOk(commands.Queue.DeclareOk):
    def validate(self) -> None:
        return None


class BasicGetOk(commands.Basic.GetOk):
    def validate(self) -> None:
        return None


class BasicReturn(commands.Basic.Return):
    def validate(self) -> None:
        return None
