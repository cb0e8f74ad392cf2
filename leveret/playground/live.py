"""`leveret play FILE --against amqp://...`: run a route file on a live broker
(leveret or RabbitMQ) through aio-pika and report where it differs from the
in-process run.

Theory of operation. The file runs twice: in-process on a fresh Runner, and on
the live broker, statement by statement. After each statement that can move
messages, both sides record an Observation: the ready count of every queue
the file declared (a passive queue.declare live), whether a publish reached a
queue (live: published mandatory with publisher confirms, so a basic.return
means unroutable and a nack means a full queue refused it), what a `get`
returned (body, redelivered, x-death), and the reply code of a statement that
failed. Any field that differs is a Difference.

Live names are the file's names prefixed with a unique run id, so runs never
collide and everything the file declared is deleted at the end. `wait` sleeps
its duration in real time plus a small grace for the broker's expiry timers,
so timings closer than that grace cannot be compared live.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aiormq.abc
import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from rich.console import Console
from rich.text import Text

from leveret.playground.parser import (
    Bind,
    DeclareExchange,
    DeclareQueue,
    Delete,
    Get,
    Load,
    Publish,
    Purge,
    Settle,
    Statement,
    Wait,
)
from leveret.playground.runner import ErrorEvent, GetEvent, PublishEvent, Runner

WAIT_GRACE_S = 0.1  # let the broker's expiry timers and dead-letter hops settle
OBSERVED = (Publish, Wait, Get, Settle, Purge, Delete, Load, DeclareQueue)
_CHANNEL_CODES: dict[type[BaseException], int] = {
    aiormq.exceptions.ChannelAccessRefused: 403,
    aiormq.exceptions.ChannelNotFoundEntity: 404,
    aiormq.exceptions.ChannelLockedResource: 405,
    aiormq.exceptions.ChannelPreconditionFailed: 406,
}


@dataclass(slots=True)
class Observation:
    queues: dict[str, int | None] = field(default_factory=dict)  # ready counts; None: no such queue
    error: int | None = None  # reply code of a failed statement
    routed: bool | None = None
    nacked: bool | None = None
    got: tuple[Any, ...] | None = None  # ("empty",) or (body, redelivered, x-death, first death)


@dataclass(frozen=True, slots=True)
class Difference:
    statement: Statement
    what: str
    in_process: str
    live: str


def _safe_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def _plain(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _got(body: bytes, redelivered: bool, headers: Mapping[str, Any] | None, unprefix: Any) -> tuple[Any, ...]:
    headers = headers or {}
    deaths = headers.get("x-death")
    summary: list[tuple[Any, ...]] = []
    if isinstance(deaths, list):
        for death in deaths:
            death = _plain(death)
            if isinstance(death, dict):
                summary.append((unprefix(death.get("queue")), death.get("reason"), death.get("count")))
    first = tuple(unprefix(_plain(headers.get(f"x-first-death-{k}"))) for k in ("queue", "reason"))
    return (body.decode("utf-8", "replace"), redelivered, tuple(summary), first)


# ------------------------------------------------------------- in-process


def observe_in_process(statements: Sequence[Statement], base_dir: Path) -> list[Observation | None]:
    """One Observation per statement (None where nothing is compared)."""
    runner = Runner(base_dir=base_dir)
    declared: list[str] = []
    observations: list[Observation | None] = []
    for statement in statements:
        event = runner.execute(statement)
        if isinstance(statement, DeclareQueue) and statement.name not in declared:
            declared.append(statement.name)
        if isinstance(statement, Load):
            declared.extend(name for name in runner.vhost.queues if name not in declared)
        if not isinstance(statement, OBSERVED):
            observations.append(None)
            continue
        observation = Observation(queues={
            name: (runner.vhost.queues[name].message_count if name in runner.vhost.queues else None)
            for name in declared
        })
        if isinstance(event, ErrorEvent):
            observation.error = event.code or -1
        elif isinstance(event, PublishEvent):
            observation.routed = event.routed
            observation.nacked = event.nacked
        elif isinstance(event, GetEvent):
            delivered = event.delivered
            observation.got = ("empty",) if delivered is None else _got(
                delivered.message.body, delivered.redelivered, delivered.message.properties.headers,
                lambda name: name,
            )
        observations.append(observation)
    return observations


# -------------------------------------------------------------------- live


class LiveRun:
    def __init__(self, url: str, base_dir: Path) -> None:
        self.url = url
        self.base_dir = base_dir
        self.prefix = f"pg-{uuid.uuid4().hex[:8]}."
        self.connection: AbstractConnection | None = None
        self.channel: AbstractChannel | None = None
        self.queues: list[str] = []  # file names, declaration order
        self.exchanges: list[str] = []
        self.held: list[tuple[str, AbstractIncomingMessage]] = []

    # -- names
    def name(self, name: str) -> str:
        return name if name == "" or name.startswith("amq.") else self.prefix + name

    def unprefix(self, name: Any) -> Any:
        if isinstance(name, str) and name.startswith(self.prefix):
            return name[len(self.prefix):]
        return name

    # -- connection
    async def open(self) -> None:
        self.connection = await aio_pika.connect(self.url, timeout=10)
        self.channel = await self._new_channel()

    async def _new_channel(self) -> AbstractChannel:
        assert self.connection is not None
        return await self.connection.channel(publisher_confirms=True)

    async def _usable_channel(self) -> AbstractChannel:
        if self.channel is None or self.channel.is_closed:
            self.channel = await self._new_channel()
            self.held.clear()  # a closed channel gave its unacked messages back
        return self.channel

    async def close(self) -> None:
        if self.connection is None:
            return
        try:
            channel = await self._new_channel()
            for queue in self.queues:
                await channel.queue_delete(self.name(queue))
            for exchange in self.exchanges:
                await channel.exchange_delete(self.name(exchange))
        finally:
            await self.connection.close()

    # -- statements
    async def run(self, statements: Sequence[Statement]) -> list[Observation | None]:
        observations: list[Observation | None] = []
        for statement in statements:
            observation = Observation()
            try:
                await self.execute(statement, observation)
            except aiormq.exceptions.ChannelClosed as error:
                observation.error = _code(error)
            except aio_pika.exceptions.DeliveryError as error:
                observation.error = _code(error)
            if not isinstance(statement, OBSERVED):
                observations.append(None)
                continue
            observation.queues = await self.counts()
            observations.append(observation)
        return observations

    async def execute(self, statement: Statement, observation: Observation) -> None:
        channel = await self._usable_channel()
        if isinstance(statement, DeclareExchange):
            await channel.declare_exchange(
                self.name(statement.name), statement.type, durable=statement.durable,
                auto_delete=statement.auto_delete, internal=statement.internal,
                arguments=self._exchange_arguments(statement.arguments),
            )
            if statement.name not in self.exchanges:
                self.exchanges.append(statement.name)
        elif isinstance(statement, DeclareQueue):
            if statement.name not in self.queues:
                self.queues.append(statement.name)
            await channel.declare_queue(
                self.name(statement.name), durable=statement.durable, exclusive=statement.exclusive,
                auto_delete=statement.auto_delete, arguments=self._queue_arguments(statement.arguments),
            )
        elif isinstance(statement, Bind):
            await self._bind(channel, statement)
        elif isinstance(statement, Publish):
            await self._publish(channel, statement, observation)
        elif isinstance(statement, Wait):
            # Timed from now, not from the start: what the statements since the
            # last wait enqueued started its TTL a little after the virtual instant.
            await asyncio.sleep(statement.ms / 1000 + WAIT_GRACE_S)
        elif isinstance(statement, Get):
            queue = await channel.get_queue(self.name(statement.queue), ensure=False)
            message = await queue.get(no_ack=statement.no_ack, fail=False)
            if message is None:
                observation.got = ("empty",)
            else:
                observation.got = _got(message.body, bool(message.redelivered), message.headers, self.unprefix)
                if not statement.no_ack:
                    self.held.append((statement.queue, message))
        elif isinstance(statement, Settle):
            await self._settle(statement)
        elif isinstance(statement, Purge):
            queue = await channel.get_queue(self.name(statement.queue), ensure=False)
            await queue.purge()
        elif isinstance(statement, Delete):
            if statement.kind == "queue":
                await channel.queue_delete(self.name(statement.name))
                self.held = [(q, m) for q, m in self.held if q != statement.name]
            else:
                await channel.exchange_delete(self.name(statement.name))
        elif isinstance(statement, Load):
            await self._load(channel, statement)
        # expect, explain and show only read: nothing to do live

    def _exchange_arguments(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        renamed = dict(arguments)
        if isinstance(renamed.get("alternate-exchange"), str):
            renamed["alternate-exchange"] = self.name(renamed["alternate-exchange"])
        return renamed

    def _queue_arguments(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        renamed = dict(arguments)
        dlx = renamed.get("x-dead-letter-exchange")
        if isinstance(dlx, str):
            renamed["x-dead-letter-exchange"] = self.name(dlx)
            key = renamed.get("x-dead-letter-routing-key")
            if dlx == "" and isinstance(key, str):
                renamed["x-dead-letter-routing-key"] = self.name(key)  # a queue name then
        return renamed

    async def _bind(self, channel: AbstractChannel, statement: Bind) -> None:
        kind = statement.destination_kind
        if kind is None:
            kind = "queue" if statement.destination in self.queues else "exchange"
        key = statement.binding_key or ""
        arguments = dict(statement.arguments)
        source = self.name(statement.source)
        destination = self.name(statement.destination)
        if kind == "queue":
            queue = await channel.get_queue(destination, ensure=False)
            if statement.unbind:
                await queue.unbind(source, key, arguments=arguments)
            else:
                await queue.bind(source, key, arguments=arguments)
            return
        exchange = await channel.get_exchange(destination, ensure=False)
        if statement.unbind:
            await exchange.unbind(source, key, arguments=arguments)
        else:
            await exchange.bind(source, key, arguments=arguments)

    async def _publish(self, channel: AbstractChannel, statement: Publish, observation: Observation) -> None:
        props = dict(statement.properties)
        headers = dict(statement.headers)
        routing_key = statement.routing_key
        if statement.exchange == "":
            routing_key = self.name(routing_key)
            for name in ("CC", "BCC"):
                if isinstance(headers.get(name), list):
                    headers[name] = [self.name(k) if isinstance(k, str) else k for k in headers[name]]
        expiration = props.pop("expiration", None)
        timestamp = props.pop("timestamp", None)
        message_type = props.pop("message_type", None)
        exchange = channel.default_exchange if statement.exchange == "" else await channel.get_exchange(
            self.name(statement.exchange), ensure=False)
        routed = nacked = False
        for number in range(1, statement.repeat + 1):
            body = statement.body
            if statement.repeat > 1:
                body = body.replace("{n}", str(number))
            message = aio_pika.Message(
                body.encode(), headers=headers or None,
                expiration=None if expiration is None else int(expiration) / 1000,
                timestamp=None if timestamp is None else datetime.fromtimestamp(timestamp, UTC),
                type=message_type, **props,
            )
            try:
                confirmation = await exchange.publish(message, routing_key, mandatory=True, timeout=10)
            except aio_pika.exceptions.DeliveryError as error:
                if error.frame is not None and type(error.frame).__name__ == "Nack":
                    # routed, then refused by a full queue (a returned message is acked)
                    nacked = routed = True
                    continue
                raise
            # aiormq resolves a returned message to the message itself
            if isinstance(confirmation, aiormq.abc.DeliveredMessage):
                continue
            routed = True
        observation.routed = routed
        observation.nacked = nacked

    async def _settle(self, statement: Settle) -> None:
        held = [(q, m) for q, m in self.held if statement.queue is None or q == statement.queue]
        chosen = held if statement.all else held[-1:]
        for item in chosen:
            self.held.remove(item)
            message = item[1]
            if statement.action == "ack":
                await message.ack()
            elif statement.action == "reject":
                await message.reject(requeue=statement.requeue)
            else:
                await message.nack(requeue=statement.requeue)

    async def _load(self, channel: AbstractChannel, statement: Load) -> None:
        path = Path(statement.path)
        data = json.loads((path if path.is_absolute() else self.base_dir / path).read_text())
        for item in data.get("exchanges") or []:
            name = str(item.get("name", ""))
            if not name or name.startswith("amq.") or item.get("vhost", "/") != "/":
                continue
            self.exchanges.append(name)
            await channel.declare_exchange(
                self.name(name), str(item.get("type", "direct")), durable=bool(item.get("durable", True)),
                auto_delete=bool(item.get("auto_delete", False)), internal=bool(item.get("internal", False)),
                arguments=self._exchange_arguments(item.get("arguments") or {}),
            )
        for item in data.get("queues") or []:
            if item.get("vhost", "/") != "/":
                continue
            name = str(item.get("name", ""))
            self.queues.append(name)
            await channel.declare_queue(
                self.name(name), durable=bool(item.get("durable", True)),
                auto_delete=bool(item.get("auto_delete", False)),
                arguments=self._queue_arguments(item.get("arguments") or {}),
            )
        for item in data.get("bindings") or []:
            if item.get("vhost", "/") != "/":
                continue
            to_exchange = item.get("destination_type") == "exchange"
            await self._bind(channel, Bind(
                at=statement.at, source=str(item.get("source", "")), destination=str(item.get("destination", "")),
                destination_kind="exchange" if to_exchange else "queue", binding_key=str(item.get("routing_key", "")),
                arguments=item.get("arguments") or {},
            ))

    async def counts(self) -> dict[str, int | None]:
        """Ready counts by passive declare, on a channel of their own (a 404 closes it)."""
        assert self.connection is not None
        counts: dict[str, int | None] = {}
        probe = await self._new_channel()
        try:
            for name in self.queues:
                if probe.is_closed:
                    probe = await self._new_channel()
                try:
                    queue = await probe.declare_queue(self.name(name), passive=True)
                    counts[name] = queue.declaration_result.message_count
                except aiormq.exceptions.ChannelNotFoundEntity:
                    counts[name] = None
        finally:
            if not probe.is_closed:
                await probe.close()
        return counts


def _code(error: BaseException) -> int:
    for kind, code in _CHANNEL_CODES.items():
        if isinstance(error, kind):
            return code
    frame = getattr(error, "frame", None)
    reply_code = getattr(frame, "reply_code", None)
    if isinstance(reply_code, int):
        return reply_code
    for arg in getattr(error, "args", ()):
        if isinstance(arg, int):
            return arg
    return -1


# ----------------------------------------------------------------- compare


def compare(
    statements: Sequence[Statement],
    ours: Sequence[Observation | None],
    theirs: Sequence[Observation | None],
) -> list[Difference]:
    differences: list[Difference] = []
    for statement, mine, live in zip(statements, ours, theirs, strict=True):
        if mine is None or live is None:
            continue

        def differ(what: str, a: Any, b: Any, statement: Statement = statement) -> None:
            differences.append(Difference(statement, what, _show(a), _show(b)))

        if (mine.error is None) != (live.error is None) or (
            mine.error is not None and live.error is not None and mine.error != live.error
        ):
            differences.append(Difference(statement, "error", _error(mine.error), _error(live.error)))
            continue  # after a failure the rest of the picture says little
        if mine.routed is not None and live.routed is not None and mine.routed != live.routed:
            differ("routed", mine.routed, live.routed)
        if mine.nacked is not None and live.nacked is not None and mine.nacked != live.nacked:
            differ("nacked", mine.nacked, live.nacked)
        if mine.got != live.got:
            differ("get", mine.got, live.got)
        for name in sorted(set(mine.queues) | set(live.queues)):
            a, b = mine.queues.get(name), live.queues.get(name)
            if a != b:
                differ(f"queue {name}", a, b)
    return differences


def _error(code: int | None) -> str:
    return "succeeded" if code is None else f"failed with {code}"


def _show(value: Any) -> str:
    if value is None:
        return "absent"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, tuple) and value and value[0] == "empty":
        return "no message"
    if isinstance(value, tuple) and len(value) == 4:
        body, redelivered, deaths, first = value
        text = json.dumps(body, ensure_ascii=False)
        if redelivered:
            text += " redelivered"
        if deaths:
            text += " x-death " + ", ".join(f"{q}/{r} x{c}" for q, r, c in deaths)
        if any(first):
            text += f" first death {first[0]}/{first[1]}"
        return text
    return str(value)


async def live_observations(url: str, statements: Sequence[Statement], base_dir: Path) -> tuple[str, list[Observation | None]]:
    live = LiveRun(url, base_dir)
    await live.open()
    try:
        return live.prefix, await live.run(statements)
    finally:
        await live.close()


def compare_against(url: str, statements: Sequence[Statement], events: Sequence[Any], console: Console,
                    *, base_dir: Path) -> list[Difference] | None:
    """Run on the live broker, print the differences; None if the broker cannot be used."""
    del events  # the in-process side is run again, observed statement by statement
    console.print()
    console.print(Text(f"against {_safe_url(url)}", style="bold"))
    ours = observe_in_process(statements, base_dir)
    try:
        prefix, theirs = asyncio.run(live_observations(url, statements, base_dir))
    except (TimeoutError, OSError, aiormq.exceptions.AMQPConnectionError) as error:
        console.print(Text(f"leveret: cannot use {_safe_url(url)}: {error or type(error).__name__}",
                           style="bold red"))
        return None
    differences = compare(statements, ours, theirs)
    console.print(Text(f"  live names were prefixed with {prefix} and deleted afterwards", style="dim"))
    compared = sum(1 for o in ours if o is not None)
    if not differences:
        console.print(Text(f"  no difference ({compared} statements compared)", style="bold green"))
        return differences
    for difference in differences:
        statement = difference.statement
        line = Text()
        line.append(f"{statement.at.line:>4} │ ", style="dim")
        line.append(statement.at.source)
        console.print(line)
        console.print(Text.assemble(
            (f"       {difference.what}: ", "bold"), ("in-process ", "dim"), (difference.in_process, "cyan"),
            (", live ", "dim"), (difference.live, "magenta"),
        ))
    console.print(Text(f"  {len(differences)} differences ({compared} statements compared)", style="bold red"))
    return differences
