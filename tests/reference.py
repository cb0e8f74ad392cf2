"""The reference RabbitMQ that differential tests compare leveret with.

It listens on 127.0.0.1:5672 on developers' machines and in CI; a user's fresh
machine has none, so every differential test skips, with this reason, when it
cannot be reached. Its state is shared by every run: tests use unique names
and delete what they declare.
"""

from __future__ import annotations

import functools
import socket
import uuid

import pytest

HOST, PORT = "127.0.0.1", 5672
URL = f"amqp://guest:guest@{HOST}:{PORT}/"
UNREACHABLE = f"no reference RabbitMQ on {HOST}:{PORT}"


@functools.cache
def reachable() -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=1):
            return True
    except OSError:
        return False


needs_reference = pytest.mark.skipif(not reachable(), reason=UNREACHABLE)


# --------------------------------------------------------- the node's history
# RabbitMQ says "invalid exchange type 'X'" when X is already an Erlang atom in its
# VM and "unknown exchange type 'X'" otherwise (rabbit_exchange:check_type), and a
# name becomes an atom for good once any code on the node makes it one. Only two
# kinds of name get the same answer on every node: atoms of the Erlang runtime and
# of rabbit's core, there from boot ("invalid"), and a name never seen before
# ("unknown"). Differential tests ask about those; for any other name the
# reference's answer tells of its history, not of RabbitMQ.
BOOT_ATOMS = frozenset({
    "", "true", "false", "undefined", "ok", "error", "none", "infinity", "normal", "binary",
    "list", "atom", "local", "default", "all", "any", "queue", "exchange", "durable",
    "transient", "classic", "quorum", "stream", "rabbit",
})


def unseen_name(stem: str) -> str:
    """A name no node has made an atom of: the reference says "unknown" for it, always."""
    return f"{stem}-{uuid.uuid4().hex[:12]}"


def type_error_answers(exchange_type: str, text: str) -> tuple[str, set[str]]:
    """(type to send, the texts the reference may answer) for an exchange type error
    as leveret's table states it. An unknown name is sent as an unseen one, which
    the reference calls unknown on every node; a boot atom keeps its one answer;
    for any other name only the history-free part is asked: 503 and the type named,
    "invalid" or "unknown" as the node's past has it (leveret's own answer is pinned
    by the table itself, without the reference)."""
    if text == f"unknown exchange type '{exchange_type}'":
        unseen = unseen_name(exchange_type or "type")
        return unseen, {f"unknown exchange type '{unseen}'"}
    if text == f"invalid exchange type '{exchange_type}'" and exchange_type not in BOOT_ATOMS:
        return exchange_type, {f"{word} exchange type '{exchange_type}'" for word in ("invalid", "unknown")}
    return exchange_type, {text}
