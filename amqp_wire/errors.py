"""Reply-code errors to close frames: the one place that decides channel vs connection."""

from __future__ import annotations

from dataclasses import dataclass

from pamqp import exceptions

MAX_REPLY_TEXT = 255


@dataclass(frozen=True, slots=True)
class Closing:
    connection: bool  # True: connection.close; False: channel.close
    reply_code: int
    reply_text: str


def reply_text(name: str, explanation: str) -> str:
    """RabbitMQ's "NAME - explanation"; past the 255 bytes a shortstr holds, its first
    252 bytes and "..." (rabbit_binary_generator:amqp_exception_explanation)."""
    text = f"{name.replace('-', '_')} - {explanation}"
    # Bytes that were not UTF-8 (a published exchange name) are surrogate escapes
    # here; they go out raw, as RabbitMQ sends them, and so does a character the
    # cut splits: RabbitMQ cuts bytes.
    encoded = text.encode("utf-8", "surrogateescape")
    if len(encoded) > MAX_REPLY_TEXT:
        text = (encoded[:MAX_REPLY_TEXT - 3] + b"...").decode("utf-8", "surrogateescape")
    return text


def closing_for(error: exceptions.AMQPError) -> Closing:
    name = getattr(error, "name", "INTERNAL-ERROR")
    code = getattr(error, "value", 541)
    explanation = str(error.args[0]) if error.args else ""
    if code == 541 and not explanation:
        # What RabbitMQ says when a channel crashes on input it cannot decode.
        return Closing(connection=True, reply_code=541, reply_text="INTERNAL_ERROR")
    return Closing(
        connection=isinstance(error, exceptions.AMQPHardError),
        reply_code=code,
        reply_text=reply_text(name, explanation),
    )


def erlang_binary(data: bytes) -> str:
    """A binary as Erlang's ~p prints it, for RabbitMQ's frame-error texts."""
    if data and all(32 <= byte <= 126 for byte in data):
        text = data.decode("ascii").replace("\\", "\\\\").replace('"', '\\"')
        return f'<<"{text}">>'
    return "<<" + ",".join(str(byte) for byte in data) + ">>"


def frame_snippet(frame_type: int, payload: bytes) -> str:
    """RabbitMQ's "type T, all octets = <<...>>" (or "first 16 octets") prefix."""
    if len(payload) <= 16:
        return f"type {frame_type}, all octets = {erlang_binary(payload)}"
    return f"type {frame_type}, first 16 octets = {erlang_binary(payload[:16])}"
