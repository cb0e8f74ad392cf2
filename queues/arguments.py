"""Queue arguments (`x-*`): parsed and validated once, at declare time.

Validation and equivalence follow RabbitMQ 3.10.8 (rabbit_amqqueue and
rabbit_channel), checked against the reference broker:

- a non-string `x-dead-letter-exchange` is refused first, by the channel
  ("invalid type 'T' for arg ..."); then `x-queue-type`; then each known
  argument in RabbitMQ's declare_args order, its error printed as Erlang's
  `~p` would (`{value_negative,-1}`, `invalid_overflow`, `"expected integer,
  got longstr"` with the quotes); then arguments another queue type owns
  ("... of queue type rabbit_classic_queue"). Unknown `x-foo` keys pass.
- on redeclare only the arguments of the queue's type are compared, integer
  widths count as one type, and a missing `x-queue-type` equals `classic`.

One deliberate difference: `x-delivery-limit` (quorum-only in RabbitMQ) is
accepted, validated and honoured on classic queues too. On quorum queues
RabbitMQ does not validate it: any integer is a limit (a negative one
dead-letters on the first return) and anything else means no limit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pamqp import exceptions

OVERFLOW_MODES = ("drop-head", "reject-publish", "reject-publish-dlx")
QUEUE_MODES = ("default", "lazy")
QUEUE_TYPES = ("classic", "quorum", "stream")
DEAD_LETTER_STRATEGIES = ("at-most-once", "at-least-once")
# rabbit_misc:check_expiry: TTLs and x-expires up to ten years (milliseconds).
MAX_EXPIRY_MS = 315_360_000_000
MAX_PRIORITY = 255

# rabbit_*_queue capabilities in 3.10.8: the arguments each type accepts
# (and compares on redeclare). x-delivery-limit on classic is ours.
TYPE_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "classic": (
        "x-expires", "x-message-ttl", "x-dead-letter-exchange", "x-dead-letter-routing-key",
        "x-max-length", "x-max-length-bytes", "x-max-priority", "x-overflow", "x-queue-mode",
        "x-queue-version", "x-single-active-consumer", "x-queue-type", "x-queue-master-locator",
        "x-delivery-limit",
    ),
    "quorum": (
        "x-expires", "x-message-ttl", "x-dead-letter-exchange", "x-dead-letter-routing-key",
        "x-max-length", "x-max-length-bytes", "x-max-in-memory-length", "x-max-in-memory-bytes",
        "x-overflow", "x-single-active-consumer", "x-queue-type", "x-quorum-initial-group-size",
        "x-delivery-limit", "x-dead-letter-strategy", "x-queue-leader-locator",
    ),
    "stream": (
        "x-max-length-bytes", "x-queue-type", "x-max-age", "x-stream-max-segment-size-bytes",
        "x-initial-cluster-size", "x-queue-leader-locator",
    ),
}
# Every argument some queue type owns, in RabbitMQ's declare_args order.
KNOWN_ARGUMENTS = (
    "x-expires", "x-message-ttl", "x-dead-letter-exchange", "x-dead-letter-routing-key",
    "x-dead-letter-strategy", "x-max-length", "x-max-length-bytes", "x-max-in-memory-length", "x-max-in-memory-bytes",
    "x-max-priority", "x-overflow", "x-queue-mode", "x-single-active-consumer", "x-queue-type",
    "x-quorum-initial-group-size", "x-max-age", "x-stream-max-segment-size-bytes",
    "x-initial-cluster-size", "x-queue-leader-locator", "x-queue-master-locator",
    "x-delivery-limit", "x-queue-version",
)
_MODULES = {"classic": "rabbit_classic_queue", "quorum": "rabbit_quorum_queue", "stream": "rabbit_stream_queue"}
QUEUE_LEADER_LOCATORS = ("client-local", "balanced", "random", "least-leaders")
# rabbit.hrl's MAX_STREAM_MAX_SEGMENT_SIZE.
MAX_STREAM_SEGMENT_SIZE = 3_000_000_000
# rabbit_amqqueue:unit_value_in_ms: the units of x-max-age (and of an x-stream-offset interval).
AGE_UNITS_MS = {
    "Y": 365 * 86_400_000, "M": 30 * 86_400_000, "D": 86_400_000,
    "h": 3_600_000, "m": 60_000, "s": 1000,
}

# Kept for callers that compare classic queues.
EQUIVALENCE_CHECKED = TYPE_ARGUMENTS["classic"]


def type_module(queue_type: str) -> str:
    """The Erlang module RabbitMQ names a queue type by in its errors."""
    return _MODULES.get(queue_type, queue_type)


def type_name(value: Any) -> str:
    """RabbitMQ's name for a value's wire type: the one it came with from a client,
    else the one a pamqp client would send `value` as."""
    wire = getattr(value, "type_name", None)
    if wire is not None:
        return str(wire)
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
        return "float"  # pamqp encodes a Python float as 'f'
    if isinstance(value, Decimal):
        return "decimal"
    if isinstance(value, (str, bytes)):
        return "longstr"
    if isinstance(value, bytearray):
        return "binary"
    if isinstance(value, Mapping):
        return "table"
    if isinstance(value, (list, tuple)):
        return "array"
    if value is None:
        return "void"
    return "timestamp"


_TYPE_CLASSES = {
    **dict.fromkeys(
        ("byte", "unsignedbyte", "short", "unsignedshort", "signedint", "unsignedint", "long"), "int"
    ),
    "float": "float", "double": "float",
    "binary": "longstr",  # a byte array redeclares a long string's value (3.10 as observed)
}


def type_class(value: Any) -> str:
    """The class RabbitMQ compares argument types by: widths of one kind are equal."""
    name = type_name(value)
    return _TYPE_CLASSES.get(name, name)


def describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
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
    dead_letter_strategy: str | None = None  # as declared; quorum queues read it
    # Streams: retention by age (ms) and the size a segment file grows to.
    max_age: int | None = None
    max_segment_size_bytes: int | None = None


def _invalid(name: str, queue: str, vhost: str, why: str) -> exceptions.AMQPPreconditionFailed:
    return exceptions.AMQPPreconditionFailed(
        f"invalid arg '{name}' for queue '{queue}' in vhost '{vhost}': {why}"
    )


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


# Validators return None when the value is fine, else RabbitMQ's error term as text.
Validator = Callable[[Any, Mapping[str, Any]], "str | None"]


def _integer(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f'"expected integer, got {type_name(value)}"'
    return None


def _non_negative(value: Any, _: Mapping[str, Any]) -> str | None:
    error = _integer(value)
    if error is None and value < 0:
        return f"{{value_negative,{value}}}"
    return error


def _expiry(value: int) -> str | None:
    if value < 0:
        return f"{{value_negative,{value}}}"
    if value > MAX_EXPIRY_MS:
        return f"{{value_too_large,{value}}}"
    return None


def _message_ttl(value: Any, _: Mapping[str, Any]) -> str | None:
    return _integer(value) or _expiry(value)


def _expires(value: Any, _: Mapping[str, Any]) -> str | None:
    error = _integer(value)
    if error is None and value == 0:
        return "{value_zero,0}"
    return error or _expiry(value)


def _max_priority(value: Any, args: Mapping[str, Any]) -> str | None:
    error = _non_negative(value, args)
    if error is None and value > MAX_PRIORITY:
        return f"{{max_value_exceeded,{value}}}"
    return error


def _longstr(value: Any) -> str | None:
    return None if _text(value) is not None else f"{{unacceptable_type,{type_name(value)}}}"


def _dead_letter_exchange(value: Any, _: Mapping[str, Any]) -> str | None:
    return _longstr(value)


def _dead_letter_routing_key(value: Any, args: Mapping[str, Any]) -> str | None:
    error = _longstr(value)
    if error is None and "x-dead-letter-exchange" not in args:
        return "routing_key_but_no_dlx_defined"
    return error


def _overflow(value: Any, _: Mapping[str, Any]) -> str | None:
    error = _longstr(value)
    if error is None and _text(value) not in OVERFLOW_MODES:
        return "invalid_overflow"
    return error


def _dead_letter_strategy(value: Any, _: Mapping[str, Any]) -> str | None:
    error = _longstr(value)
    if error is None and _text(value) not in DEAD_LETTER_STRATEGIES:
        return "invalid_dlx_strategy"
    return error


def _delivery_limit(value: Any, args: Mapping[str, Any]) -> str | None:
    if _text(args.get("x-queue-type")) == "quorum":
        return None  # RabbitMQ takes anything (rabbit_quorum_queue has no check)
    return _non_negative(value, args)  # ours on classic queues


def _queue_mode(value: Any, _: Mapping[str, Any]) -> str | None:
    error = _longstr(value)
    if error is None and _text(value) not in QUEUE_MODES:
        return f"\"unsupported queue mode '{_text(value)}'\""
    return error


def _queue_version(value: Any, args: Mapping[str, Any]) -> str | None:
    error = _non_negative(value, args)
    if error is None and value not in (1, 2):
        return f"\"unsupported queue version '{value}'\""
    return error


def _single_active_consumer(value: Any, _: Mapping[str, Any]) -> str | None:
    return None if isinstance(value, bool) else f"{{unacceptable_type,{type_name(value)}}}"


def _queue_type(value: Any, _: Mapping[str, Any]) -> str | None:
    error = _longstr(value)
    if error is None and _text(value) not in QUEUE_TYPES:
        return f"\"unsupported queue type '{_text(value)}'\""
    return error


def parse_age(text: str) -> int | None:
    """rabbit_amqqueue:check_max_age: leading digits, then one unit of Y M D h m s;
    the age in ms, or None for `invalid_max_age`. No digits at all crashes
    RabbitMQ's list_to_integer (541 INTERNAL_ERROR on the connection), as here."""
    digits = text[: len(text) - len(text.lstrip("0123456789"))]
    if not digits:
        raise exceptions.AMQPInternalError()
    value, unit = int(digits), text[len(digits):]
    if value <= 0 or unit not in AGE_UNITS_MS:
        return None
    return value * AGE_UNITS_MS[unit]


def _max_age(value: Any, _: Mapping[str, Any]) -> str | None:
    if not isinstance(value, str) or type_name(value) != "longstr":
        return f"{{unacceptable_type,{type_name(value)}}}"
    return None if parse_age(value) is not None else "invalid_max_age"


def _initial_group_size(value: Any, args: Mapping[str, Any]) -> str | None:
    error = _non_negative(value, args)
    if error is None and value == 0:
        return "{value_zero,0}"
    return error


def _queue_leader_locator(value: Any, _: Mapping[str, Any]) -> str | None:
    error = _longstr(value)
    if error is None and _text(value) not in QUEUE_LEADER_LOCATORS:
        return "invalid_queue_locator_arg"
    return error


VALIDATORS: tuple[tuple[str, Validator], ...] = (
    ("x-expires", _expires),
    ("x-message-ttl", _message_ttl),
    ("x-dead-letter-exchange", _dead_letter_exchange),
    ("x-dead-letter-routing-key", _dead_letter_routing_key),
    ("x-dead-letter-strategy", _dead_letter_strategy),
    ("x-max-length", _non_negative),
    ("x-max-length-bytes", _non_negative),
    ("x-max-in-memory-length", _non_negative),
    ("x-max-in-memory-bytes", _non_negative),
    ("x-max-priority", _max_priority),
    ("x-overflow", _overflow),
    ("x-queue-mode", _queue_mode),
    ("x-queue-version", _queue_version),
    ("x-single-active-consumer", _single_active_consumer),
    ("x-queue-type", _queue_type),
    ("x-quorum-initial-group-size", _initial_group_size),
    ("x-max-age", _max_age),
    ("x-stream-max-segment-size-bytes", _non_negative),
    ("x-initial-cluster-size", _initial_group_size),
    ("x-queue-leader-locator", _queue_leader_locator),
    # Not validated by RabbitMQ (it has no classic delivery limit); ours is.
    ("x-delivery-limit", _delivery_limit),
)


def validate_queue_arguments(args: Mapping[str, Any], queue: str, vhost: str) -> str:
    """Refuse what RabbitMQ refuses for a new queue, in its order; the queue type."""
    dlx = args.get("x-dead-letter-exchange")
    if "x-dead-letter-exchange" in args and _text(dlx) is None:
        # rabbit_channel checks this before the queue sees its arguments.
        raise exceptions.AMQPPreconditionFailed(
            f"invalid type '{type_name(dlx)}' for arg 'x-dead-letter-exchange' "
            f"in queue '{queue}' in vhost '{vhost}'"
        )
    if "x-queue-type" in args:
        error = _queue_type(args["x-queue-type"], args)
        if error is not None:
            raise _invalid("x-queue-type", queue, vhost, error)
    queue_type = _text(args.get("x-queue-type")) or "classic"
    accepted = TYPE_ARGUMENTS[queue_type]
    for name, validator in VALIDATORS:
        if name in args and name in accepted:
            error = validator(args[name], args)
            if error is not None:
                raise _invalid(name, queue, vhost, error)
    for name in args:  # in the client's order (rabbit_amqqueue:check_arguments_key)
        if name in KNOWN_ARGUMENTS and name not in accepted:
            raise exceptions.AMQPPreconditionFailed(
                f"invalid arg '{name}' for queue '{queue}' in vhost '{vhost}' "
                f"of queue type {_MODULES[queue_type]}"
            )
    return queue_type


def check_server_named(arguments: Mapping[str, Any]) -> None:
    """Quorum queues and streams cannot have a server-generated name (their
    capabilities say server_named => false); rabbit_channel asks before it looks
    at anything else."""
    queue_type = _text(arguments.get("x-queue-type"))
    if queue_type in ("quorum", "stream"):
        raise exceptions.AMQPPreconditionFailed(
            f"Cannot declare a server-named queue for type {_MODULES[queue_type]}"
        )


def check_queue_properties(
    queue_type: str, *, durable: bool, exclusive: bool, auto_delete: bool, queue: str, vhost: str,
    arguments: Mapping[str, Any] | None = None,
) -> None:
    """Quorum queues and streams are durable, shared and long-lived
    (rabbit_quorum_queue:declare, rabbit_stream_queue:declare); a stream's
    segments are at most 3 GB."""
    if queue_type not in ("quorum", "stream"):
        return
    for refused, prop in ((auto_delete, "auto-delete"), (exclusive, "exclusive-owner"), (not durable, "non-durable")):
        if refused:
            raise exceptions.AMQPPreconditionFailed(
                f"invalid property '{prop}' for queue '{queue}' in vhost '{vhost}'"
            )
    if queue_type == "stream" and (arguments or {}).get("x-stream-max-segment-size-bytes", 0) > MAX_STREAM_SEGMENT_SIZE:
        raise exceptions.AMQPPreconditionFailed("Exceeded max value for x-stream-max-segment-size-bytes")


def parse_queue_arguments(
    arguments: Mapping[str, Any] | None, queue: str, vhost: str
) -> QueueArguments:
    args = dict(arguments or {})
    return _build(args, validate_queue_arguments(args, queue, vhost))


def _build(args: Mapping[str, Any], queue_type: str) -> QueueArguments:
    def text(name: str) -> str | None:
        return _text(args.get(name))

    def integer(name: str) -> int | None:
        return _integer_or_none(args.get(name))

    overflow = text("x-overflow")
    if queue_type == "quorum" and overflow == "reject-publish-dlx":
        # 3.10 accepts it but logs a warning and drops the head (rabbit_quorum_queue:overflow/3).
        overflow = "drop-head"
    return QueueArguments(
        message_ttl=integer("x-message-ttl"),
        expires=integer("x-expires"),
        max_length=integer("x-max-length"),
        max_length_bytes=integer("x-max-length-bytes"),
        overflow=overflow if overflow in OVERFLOW_MODES else "drop-head",
        dead_letter_exchange=text("x-dead-letter-exchange"),
        dead_letter_routing_key=text("x-dead-letter-routing-key"),
        max_priority=integer("x-max-priority"),
        single_active_consumer=bool(args.get("x-single-active-consumer", False)),
        delivery_limit=integer("x-delivery-limit"),
        queue_type=queue_type,
        dead_letter_strategy=text("x-dead-letter-strategy"),
        max_age=parse_age(args["x-max-age"]) if queue_type == "stream" and "x-max-age" in args else None,
        max_segment_size_bytes=args.get("x-stream-max-segment-size-bytes") if queue_type == "stream" else None,
    )


# How a policy's value meets the queue's own x-argument, per queue type:
# rabbit_amqqueue_process:process_args_policy (classic) and
# rabbit_quorum_queue:ra_machine_config / dead_letter_handler (quorum) and
# rabbit_stream_queue:update_stream_conf (stream: policy_precedence, the policy wins).
_MIN, _ARGUMENT, _POLICY = "min", "argument", "policy"
POLICY_RESOLUTION: dict[str, dict[str, str]] = {
    "classic": {
        "expires": _MIN, "dead-letter-exchange": _ARGUMENT, "dead-letter-routing-key": _ARGUMENT,
        "message-ttl": _MIN, "max-length": _MIN, "max-length-bytes": _MIN, "overflow": _ARGUMENT,
        "queue-mode": _ARGUMENT,
    },
    "quorum": {
        "max-length": _MIN, "overflow": _POLICY, "max-length-bytes": _MIN, "delivery-limit": _MIN,
        "expires": _POLICY, "message-ttl": _MIN, "dead-letter-exchange": _ARGUMENT,
        "dead-letter-routing-key": _ARGUMENT, "dead-letter-strategy": _ARGUMENT,
    },
    "stream": {"max-length-bytes": _POLICY, "max-age": _POLICY, "stream-max-segment-size-bytes": _POLICY},
}


def resolve_policy(
    arguments: Mapping[str, Any], definition: Mapping[str, Any] | None, queue_type: str
) -> dict[str, Any]:
    """The x-arguments a queue acts on: its own, with the policy's values (policy
    and operator policy already merged) folded in as RabbitMQ resolves each key."""
    effective = dict(arguments)
    rules = POLICY_RESOLUTION.get(queue_type)
    if not definition or rules is None:
        return effective
    for key, rule in rules.items():
        if key not in definition:
            continue
        value, argument = definition[key], "x-" + key
        if argument not in effective or rule == _POLICY:
            effective[argument] = value
        elif rule == _MIN:
            # Erlang's min compares any two terms; both are integers once validated.
            current = effective[argument]
            if isinstance(current, int) and isinstance(value, int) and value < current:
                effective[argument] = value
    return effective


def effective_queue_arguments(
    arguments: Mapping[str, Any], definition: Mapping[str, Any] | None, queue_type: str
) -> QueueArguments:
    """What a queue whose arguments were validated at declare acts on under a policy.
    Not validated again: a policy's values were, and RabbitMQ takes the mix as it
    comes (a policy's dead-letter-routing-key without any exchange is simply unused)."""
    return _build(resolve_policy(arguments, definition, queue_type), queue_type)


def _integer_or_none(value: Any) -> int | None:
    # rabbit_fifo compares the delivery count with the limit as Erlang terms:
    # a number is below any binary or atom, so a non-integer limit never trips.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _same(old: Any, new: Any) -> bool:
    if type_class(old) != type_class(new):
        return False
    return _text(old) == _text(new) if type_class(old) == "longstr" else bool(old == new)


def assert_equivalent(
    current: Mapping[str, Any], received: Mapping[str, Any], queue: str, vhost: str
) -> None:
    """RabbitMQ's assert_args_equivalence for the arguments of the queue's type."""
    current_type = _text(current.get("x-queue-type")) or "classic"
    for name in TYPE_ARGUMENTS.get(current_type, TYPE_ARGUMENTS["classic"]):
        has_old, has_new = name in current, name in received
        if not has_old and not has_new:
            continue
        old, new = current.get(name), received.get(name)
        if has_old and has_new and _same(old, new):
            continue
        if name == "x-queue-type" and has_old != has_new and _text(old if has_old else new) == "classic":
            continue  # an explicit 'classic' equals none
        if has_old and has_new:
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
