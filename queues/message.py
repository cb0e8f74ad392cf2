"""A published message, shared by every queue it was routed to.

`properties` is the decoded content header (pamqp's Basic.Properties), read to
route and to apply TTL/priority. `raw_properties` holds the publisher's own
encoding of the property flags and list, forwarded unchanged on delivery
(pamqp does not round-trip every table value); it is None once the broker has
changed the properties (dead-lettering, BCC removal) and they must be encoded
anew.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pamqp.commands import Basic

Properties = Basic.Properties


@dataclass(slots=True, eq=False)
class Message:
    exchange: str
    routing_key: str
    properties: Properties
    body: bytes
    raw_properties: bytes | None = None
    # Every key the message was published with: routing_key, then CC, then BCC.
    # Dead-lettering without x-dead-letter-routing-key re-routes with all of them.
    routing_keys: tuple[str, ...] = ()
    # Set by the broker: a persistent message bound for durable storage.
    message_id: int = 0
    # The frontend's encodings, made on first delivery and reused by every
    # queue and redelivery (a message is never changed in place).
    wire_route: bytes | None = None  # exchange and routing key as shortstrs
    wire_header: bytes | None = None  # the content-header frame payload

    def __post_init__(self) -> None:
        if not self.routing_keys:
            self.routing_keys = (self.routing_key,)

    @property
    def headers(self) -> dict[str, Any]:
        return self.properties.headers or {}

    @property
    def persistent(self) -> bool:
        return self.properties.delivery_mode == 2

    @property
    def body_size(self) -> int:
        return len(self.body)
