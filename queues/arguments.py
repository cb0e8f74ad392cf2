"""Queue arguments (`x-*`): parsed and validated once, at declare time.

Validation and equivalence follow RabbitMQ 3.10 (rabbit_amqqueue): a bad value
is a 406 naming the argument; on redeclare only the arguments RabbitMQ knows are
compared, and integer widths count as one type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pamqp import exceptions

OVERFLOW_MODES = ("drop-head", "reject-publish", "reject-publish-dlx")
QUEUE_TYPES = ("classic", "quorum")

# The arguments RabbitMQ compares when a queue is declared again.
EQUIVALENCE_CHECKED = (
    "x-expires",
    "x-message-ttl",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-overflow",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-queue-mode",
    "x-queue-type",
    "x-single-active-consumer",
    "x-delivery-limit",
    "x-message-deduplication",
)


def type_name(value: Any) -> str:
    """RabbitMQ's name for the wire type a pamqp client would send `value` as."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        if -128 <= value <= 127:
            return "byte"
        if -32768 <= value <= 32767:
            return "short"
        if -(2**31) <= value < 2**31:
            return "signedint"
        return "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, Decimal):
        return "decimal"
    if isinstance(value, (str, bytes)):
        return "longstr"
    if isinstance(value, Mapping):
        return "table"
    if isinstance(value, (list, tuple)):
        return "array"
    if value is None:
        return "void"
    return "timestamp"


def type_class(value: Any) -> str:
    name = type_name(value)
    return "int" if name in ("byte", "short", "signedint", "long") else name


def describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


@dataclass(frozen=True, slots=True)
class QueueArguments:
    message_ttl: int | None = None
    expires: int | None = None
    max_length: int | None = None
    max_length_bytes: int | None = None
    overflow: str = "drop-head"
    dead_letter_exchange: str | None = None
    dead_letter_routing_key: str | None = None
    max_priority: int | None = None
    single_active_consumer: bool = False
    delivery_limit: int | None = None
    queue_type: str = "classic"


def _invalid(name: str, queue: str, vhost: str, why: str) -> exceptions.AMQPPreconditionFailed:
    return exceptions.AMQPPreconditionFailed(
        f"invalid arg '{name}' for queue '{queue}' in vhost '{vhost}': {why}"
    )


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def parse_queue_arguments(
    arguments: Mapping[str, Any] | None, queue: str, vhost: str
) -> QueueArguments:
    args = dict(arguments or {})

    def integer(name: str, minimum: int) -> int | None:
        if name not in args:
            return None
        value = args[name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise _invalid(name, queue, vhost, f"{{unacceptable_type,{type_name(value)}}}")
        if value < minimum:
            kind = "value_negative" if value < 0 else "value_zero"
            raise _invalid(name, queue, vhost, f"{{{kind},{value}}}")
        return value

    parsed: dict[str, Any] = {
        "message_ttl": integer("x-message-ttl", 0),
        "expires": integer("x-expires", 1),
        "max_length": integer("x-max-length", 0),
        "max_length_bytes": integer("x-max-length-bytes", 0),
        "max_priority": integer("x-max-priority", 0),
        "delivery_limit": integer("x-delivery-limit", 0),
        "dead_letter_exchange": None,
        "dead_letter_routing_key": None,
    }
    if parsed["max_priority"] is not None and parsed["max_priority"] > 255:
        raise _invalid(
            "x-max-priority", queue, vhost, f"{{value_too_large,{parsed['max_priority']},255}}"
        )
    if "x-overflow" in args:
        overflow = _text(args["x-overflow"])
        if overflow not in OVERFLOW_MODES:
            raise _invalid(
                "x-overflow", queue, vhost, "invalid_overflow"
            )
        parsed["overflow"] = overflow
    for key, field in (
        ("x-dead-letter-exchange", "dead_letter_exchange"),
        ("x-dead-letter-routing-key", "dead_letter_routing_key"),
    ):
        if key in args:
            text = _text(args[key])
            if text is None:
                raise _invalid(key, queue, vhost, f"{{unacceptable_type,{type_name(args[key])}}}")
            parsed[field] = text
    if parsed["dead_letter_routing_key"] is not None and parsed["dead_letter_exchange"] is None:
        raise _invalid(
            "x-dead-letter-routing-key", queue, vhost, "routing_key_but_no_dlx_defined"
        )
    if "x-single-active-consumer" in args:
        value = args["x-single-active-consumer"]
        if not isinstance(value, bool):
            raise _invalid(
                "x-single-active-consumer", queue, vhost, f"{{unacceptable_type,{type_name(value)}}}"
            )
        parsed["single_active_consumer"] = value
    if "x-queue-type" in args:
        queue_type = _text(args["x-queue-type"])
        if queue_type not in QUEUE_TYPES:
            raise _invalid(
                "x-queue-type", queue, vhost, f"{{unacceptable_type,{describe(args['x-queue-type'])}}}"
            )
        parsed["queue_type"] = queue_type
    return QueueArguments(**parsed)


def assert_equivalent(
    current: Mapping[str, Any], received: Mapping[str, Any], queue: str, vhost: str
) -> None:
    for name in EQUIVALENCE_CHECKED:
        old, new = current.get(name), received.get(name)
        if name not in current and name not in received:
            continue
        if name in current and name in received and type_class(old) == type_class(new):
            if _text(old) == _text(new) if type_class(old) == "longstr" else old == new:
                continue
        if name in current and name in received:
            # Both present: RabbitMQ names the values only, not their types.
            detail = f"received '{describe(new)}' but current is '{describe(old)}'"
        else:
            detail = f"received {_value_text(received, name)} but current is {_value_text(current, name)}"
        raise exceptions.AMQPPreconditionFailed(
            f"inequivalent arg '{name}' for queue '{queue}' in vhost '{vhost}': {detail}"
        )


def _value_text(table: Mapping[str, Any], name: str) -> str:
    if name not in table:
        return "none"
    value = table[name]
    return f"the value '{describe(value)}' of type '{type_name(value)}'"
