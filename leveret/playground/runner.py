"""Run route-file statements on an in-process Broker with a virtual clock.

Theory of operation. A Runner owns a Broker whose clock is a VirtualClock and
plays one client connection on the `/` vhost. Each statement becomes an Event
(what happened, for the renderer); expectations become ExpectEvents that pass
or fail. To answer "did queue q ever get this message" the runner records
every message a queue *accepted*; it wraps each queue's `enqueue` (the core
has no arrival hook yet) the first time it sees the queue. Dead-letter hops
come from `vhost.dead_letter_log`, which the runner turns on; the slice of the
log that grew during a statement belongs to that statement's event.

`wait` walks the clock from deadline to deadline (`broker.next_deadline`), so
a message that expires at 5s and is dead-lettered into another TTL queue
starts its next TTL at 5s, as on a real broker, however long the wait.
"""

from __future__ import annotations

import datetime
import fnmatch
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pamqp import exceptions
from pamqp.commands import Basic

from leveret.amqp_wire.properties import encode_properties
from leveret.bindings.model import Destination
from leveret.broker.broker import Broker
from leveret.broker.definitions import export_definitions, load_definitions
from leveret.broker.vhost import DeadLetterEvent, VirtualHost
from leveret.clock import VirtualClock
from leveret.exchanges.router import ExchangeHop, RouteTrace, publish_routing_keys
from leveret.playground.parser import (
    Bind,
    DeclareExchange,
    DeclareQueue,
    Delete,
    Expect,
    Explain,
    Get,
    Load,
    Location,
    PlaygroundError,
    Publish,
    Purge,
    Settle,
    Show,
    Statement,
    Wait,
    parse,
)
from leveret.queues.message import Message
from leveret.queues.queue import Entry

# ------------------------------------------------------------------ events


@dataclass(slots=True)
class Delivered:
    """A message handed out by `get`, and what became of it."""

    queue: str
    message: Message
    redelivered: bool
    delivery_tag: int
    remaining: int  # ready messages left in the queue after the get
    entry: Entry | None = None  # held (unacked) until settled; None with no-ack
    settled: str | None = None  # "ack", "reject", "requeue"

    @property
    def body(self) -> str:
        return self.message.body.decode("utf-8", "replace")


@dataclass(slots=True, kw_only=True)
class DeadLetterHop:
    event: DeadLetterEvent
    trace: RouteTrace | None = None  # None when it could not be traced faithfully
    message: Message | None = None  # the dead-lettered message, when a queue accepted it


@dataclass(slots=True, kw_only=True)
class Event:
    statement: Statement
    dead_letters: list[DeadLetterHop] = field(default_factory=list)
    deleted_queues: list[str] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class InfoEvent(Event):
    text: str


@dataclass(slots=True, kw_only=True)
class PublishEvent(Event):
    exchange: str
    routing_keys: tuple[str, ...]
    message: Message
    trace: RouteTrace
    queues: list[str]
    mandatory: bool
    returned: bool
    nacked: bool
    count: int = 1
    delayed: int | None = None  # ms an x-delayed-message exchange holds it before routing

    @property
    def routed(self) -> bool:
        return bool(self.queues)


@dataclass(slots=True, kw_only=True)
class WaitEvent(Event):
    ms: int
    elapsed_ms: int  # virtual time since the run started, after the wait
    expired: int  # messages that expired during the wait


@dataclass(slots=True, kw_only=True)
class GetEvent(Event):
    queue: str
    delivered: Delivered | None
    no_ack: bool


@dataclass(slots=True, kw_only=True)
class SettleEvent(Event):
    action: str  # ack | reject | nack
    requeue: bool
    settled: list[Delivered]


@dataclass(slots=True, kw_only=True)
class ExpectEvent(Event):
    passed: bool
    expected: str
    actual: str


@dataclass(slots=True, kw_only=True)
class ErrorEvent(Event):
    code: int  # AMQP reply code; 0 for a playground usage error
    name: str  # NOT_FOUND, PRECONDITION_FAILED, ... or "ERROR"
    text: str
    hint: str | None = None

    @property
    def reply_text(self) -> str:
        return f"{self.name} - {self.text}" if self.code else self.text


@dataclass(slots=True, kw_only=True)
class ExplainEvent(Event):
    exchange: str
    routing_keys: tuple[str, ...]
    headers: Mapping[str, Any]
    trace: RouteTrace


@dataclass(slots=True, kw_only=True)
class ShowEvent(Event):
    what: str
    rows: list[tuple[str, ...]]
    columns: tuple[str, ...]


class UsageError(Exception):
    """A statement that cannot run as written (not an AMQP error)."""

    def __init__(self, text: str, hint: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.hint = hint


# ------------------------------------------------------------------ runner


@dataclass(slots=True)
class Arrival:
    message: Message
    at_ms: int


class Runner:
    def __init__(self, broker: Broker | None = None, *, base_dir: Path | None = None, vhost: str = "/") -> None:
        self.clock = VirtualClock()
        self.broker = broker or Broker(clock=self.clock)
        if broker is not None:
            if not isinstance(broker.clock, VirtualClock):
                raise ValueError("the playground needs a broker with a VirtualClock")
            self.clock = broker.clock
        self.start_ms = self.clock.now_ms()
        self.vhost: VirtualHost = self.broker.vhost(vhost)
        self.vhost.dead_letter_log = []
        self.base_dir = base_dir or Path.cwd()
        self.connection = object()  # the owner of exclusive queues
        self.arrivals: dict[str, list[Arrival]] = {}
        self.vhost.on_arrival = self._arrived
        self.held: list[Delivered] = []
        self.current: Delivered | None = None
        self.last_get: GetEvent | None = None
        self.last_publish: PublishEvent | None = None
        self.previous_error: ErrorEvent | None = None
        self._delivery_tag = 0

    # ------------------------------------------------------------- driving
    def run(self, statements: Iterable[Statement]) -> Iterator[Event]:
        for statement in statements:
            yield self.execute(statement)

    def run_text(self, text: str, filename: str | None = None) -> list[Event]:
        return list(self.run(parse(text, filename)))

    def execute(self, statement: Statement) -> Event:
        log = self.vhost.dead_letter_log
        assert log is not None
        mark = len(log)
        queues_before = set(self.vhost.queues)
        try:
            event = self._dispatch(statement)
        except exceptions.AMQPError as error:
            event = _amqp_error_event(statement, error)
        except UsageError as error:
            event = ErrorEvent(statement=statement, code=0, name="ERROR", text=error.text, hint=error.hint)
        except PlaygroundError as error:
            event = ErrorEvent(statement=statement, code=0, name="ERROR", text=error.message, hint=error.hint)
        event.dead_letters.extend(self._hops(log[mark:]))
        event.deleted_queues.extend(sorted(queues_before - set(self.vhost.queues) - _deleted_by(statement)))
        if not isinstance(statement, Expect):
            self.previous_error = event if isinstance(event, ErrorEvent) else None
        return event

    def _dispatch(self, statement: Statement) -> Event:
        if isinstance(statement, DeclareExchange):
            return self._declare_exchange(statement)
        if isinstance(statement, DeclareQueue):
            return self._declare_queue(statement)
        if isinstance(statement, Bind):
            return self._bind(statement)
        if isinstance(statement, Publish):
            return self._publish(statement)
        if isinstance(statement, Wait):
            return self._wait(statement)
        if isinstance(statement, Get):
            return self._get(statement)
        if isinstance(statement, Settle):
            return self._settle(statement)
        if isinstance(statement, Delete):
            return self._delete(statement)
        if isinstance(statement, Purge):
            count = self.vhost.purge_queue(statement.queue, owner=self.connection)
            return InfoEvent(statement=statement, text=f"purged {_count(count, 'message')} from {statement.queue}")
        if isinstance(statement, Load):
            return self._load(statement)
        if isinstance(statement, Explain):
            return self._explain(statement)
        if isinstance(statement, Show):
            return self._show(statement)
        if isinstance(statement, Expect):
            return self._expect(statement)
        raise UsageError(f"cannot run {type(statement).__name__}")

    @property
    def now_ms(self) -> int:
        return self.clock.now_ms()

    @property
    def elapsed_ms(self) -> int:
        return self.clock.now_ms() - self.start_ms

    # ------------------------------------------------------------ arrivals
    def _arrived(self, queue: str, message: Message, now_ms: int) -> None:
        self.arrivals.setdefault(queue, []).append(Arrival(message, now_ms))

    def _hops(self, events: list[DeadLetterEvent]) -> list[DeadLetterHop]:
        hops: list[DeadLetterHop] = []
        for event in events:
            message = event.message
            headers = None if message is None else message.properties.headers
            trace: RouteTrace | None = None
            if event.exchange in self.vhost.exchanges:
                trace = self.vhost.trace(event.exchange, event.routing_keys, headers)
                if message is None and _uses_headers(trace.root):
                    trace = None  # the headers decide, and we do not have them
            hops.append(DeadLetterHop(event=event, trace=trace, message=message))
        return hops

    # ----------------------------------------------------------- topology
    def _declare_exchange(self, statement: DeclareExchange) -> Event:
        self.vhost.declare_exchange(
            statement.name, statement.type, durable=statement.durable,
            auto_delete=statement.auto_delete, internal=statement.internal,
            arguments=dict(statement.arguments),
        )
        return InfoEvent(statement=statement, text=f"exchange {statement.name} ({statement.type})")

    def _declare_queue(self, statement: DeclareQueue) -> Event:
        queue = self.vhost.declare_queue(
            statement.name, durable=statement.durable, exclusive=statement.exclusive,
            auto_delete=statement.auto_delete, arguments=dict(statement.arguments),
            owner=self.connection, now_ms=self.now_ms,
        )
        return InfoEvent(statement=statement, text=f"queue {queue.name}")

    def _bind(self, statement: Bind) -> Event:
        kind = statement.destination_kind
        name = statement.destination
        if kind is None:
            if name in self.vhost.queues:
                kind = "queue"
            elif name in self.vhost.exchanges:
                kind = "exchange"
            else:
                raise UsageError(
                    f"no queue or exchange named '{name}'",
                    f"declare it first (`queue {name}` or `exchange {name} TYPE`)",
                )
        destination = Destination(kind, name)
        binding_key = statement.binding_key
        if binding_key is None:
            source = self.vhost.exchanges.get(statement.source)
            routes_as = source.routes_as if source is not None else ""
            if source is not None and routes_as == "x-consistent-hash":
                raise UsageError(
                    f"a binding to the x-consistent-hash exchange '{source.name}' needs a weight",
                    "the binding key is the queue's share of the hash space: bind ring -> q 10",
                )
            if source is not None and routes_as in ("direct", "topic"):
                raise UsageError(
                    f"a binding to the {source.type_name} exchange '{source.name}' needs a key",
                    'write "" for the empty key; quote keys that start with # ("#", "#.error"): '
                    "a bare # starts a comment",
                )
            binding_key = ""
        if statement.unbind:
            self.vhost.unbind(statement.source, destination, binding_key, dict(statement.arguments),
                              owner=self.connection)
            return InfoEvent(statement=statement, text=f"unbound {statement.source} -> {name}")
        self.vhost.bind(statement.source, destination, binding_key, dict(statement.arguments),
                        owner=self.connection)
        return InfoEvent(statement=statement, text=f"bound {statement.source} -> {name}")

    def _delete(self, statement: Delete) -> Event:
        if statement.kind == "queue":
            count = self.vhost.delete_queue(statement.name, owner=self.connection)
            self.held = [d for d in self.held if d.queue != statement.name]
            return InfoEvent(statement=statement,
                             text=f"deleted queue {statement.name} ({_count(count, 'message')})")
        self.vhost.delete_exchange(statement.name)
        return InfoEvent(statement=statement, text=f"deleted exchange {statement.name}")

    def _load(self, statement: Load) -> Event:
        path = Path(statement.path)
        if not path.is_absolute():
            path = self.base_dir / path
        try:
            data = json.loads(path.read_text())
        except OSError as error:
            raise UsageError(f"cannot read {path}: {error.strerror}") from error
        except json.JSONDecodeError as error:
            raise UsageError(f"{path} is not JSON: {error}") from error
        if not isinstance(data, dict):
            raise UsageError(f"{path} is not a definitions export (a JSON object)")
        result = load_definitions(self.vhost, data, now_ms=self.now_ms)
        text = f"loaded {path.name}: {result}"
        for warning in result.warnings:
            text += f"\n  warning: {warning}"
        return InfoEvent(statement=statement, text=text)

    def export(self) -> dict[str, Any]:
        return export_definitions(self.vhost)

    # ----------------------------------------------------------- messages
    def _publish(self, statement: Publish) -> Event:
        headers = dict(statement.headers)
        routing_keys = list(publish_routing_keys(statement.routing_key, headers))
        # RabbitMQ removes BCC before a message is stored; CC stays.
        headers.pop("BCC", None)
        props = dict(statement.properties)
        if isinstance(props.get("timestamp"), int):
            props["timestamp"] = datetime.datetime.fromtimestamp(props["timestamp"], datetime.UTC)
        properties = Basic.Properties(headers=headers or None, **props)
        exchange = statement.exchange
        found: dict[str, None] = {}
        returned = nacked = False
        delayed: int | None = None
        message: Message | None = None
        # Traced before publishing: a deduplicating exchange remembers what it routed.
        trace = self.vhost.trace(exchange, routing_keys, headers or None, properties, self.now_ms)
        for number in range(1, statement.repeat + 1):
            body = statement.body
            if statement.repeat > 1:
                body = body.replace("{n}", str(number))
            message = Message(
                exchange=exchange, routing_key=statement.routing_key, properties=properties,
                body=body.encode(), raw_properties=encode_properties(properties),
                routing_keys=tuple(routing_keys),
            )
            outcome = self.vhost.publish(exchange, message, self.now_ms)
            for name in outcome.queues:
                found[name] = None
            returned = returned or (statement.mandatory and not outcome.routed)
            nacked = nacked or outcome.rejected
            delayed = outcome.delayed if delayed is None else delayed
        assert message is not None
        event = PublishEvent(
            statement=statement, exchange=exchange, routing_keys=tuple(routing_keys),
            message=message, trace=trace, queues=list(found), mandatory=statement.mandatory,
            returned=returned, nacked=nacked, count=statement.repeat, delayed=delayed,
        )
        self.last_publish = event
        return event

    def _wait(self, statement: Wait) -> Event:
        target = self.now_ms + statement.ms
        ready_before = {name: q.message_count for name, q in self.vhost.queues.items()}
        arrived_before = {name: len(self.arrivals.get(name, ())) for name in ready_before}
        for _ in range(100_000):  # a bound, in case a deadline never moves
            deadline = self.broker.next_deadline()
            if deadline is None or deadline > target:
                break
            if deadline > self.now_ms:
                self.clock.advance(deadline - self.now_ms)
            self.broker.run_timers()
            if self.broker.next_deadline() == deadline:
                break
        if target > self.now_ms:
            self.clock.advance(target - self.now_ms)
        self.broker.run_timers()
        # Nobody consumes while the clock runs, so what left a queue that still
        # exists expired (it may have been dead-lettered elsewhere).
        expired = 0
        for name, queue in self.vhost.queues.items():
            arrived = len(self.arrivals.get(name, ())) - arrived_before.get(name, 0)
            expired += ready_before.get(name, 0) + arrived - queue.message_count
        return WaitEvent(statement=statement, ms=statement.ms, elapsed_ms=self.elapsed_ms, expired=expired)

    def _get(self, statement: Get) -> Event:
        outcome = self.vhost.get(statement.queue, no_ack=statement.no_ack, owner=self.connection,
                                 now_ms=self.now_ms)
        delivered: Delivered | None = None
        if outcome.entry is not None:
            self._delivery_tag += 1
            entry = outcome.entry
            delivered = Delivered(
                queue=statement.queue, message=entry.message, redelivered=entry.redelivered,
                delivery_tag=self._delivery_tag, remaining=outcome.message_count,
                entry=None if statement.no_ack else entry,
                settled="ack" if statement.no_ack else None,
            )
            if not statement.no_ack:
                self.held.append(delivered)
        self.current = delivered
        event = GetEvent(statement=statement, queue=statement.queue, delivered=delivered,
                         no_ack=statement.no_ack)
        self.last_get = event
        return event

    def _settle(self, statement: Settle) -> Event:
        held = [d for d in self.held if statement.queue is None or d.queue == statement.queue]
        if not held:
            where = f" from {statement.queue}" if statement.queue else ""
            raise UsageError(
                f"nothing to {statement.action}: no unacknowledged message{where}",
                "`get QUEUE` first (without no-ack)",
            )
        chosen = held if statement.all else [held[-1]]
        by_queue: dict[str, list[Delivered]] = {}
        for delivered in chosen:
            by_queue.setdefault(delivered.queue, []).append(delivered)
        for name, group in by_queue.items():
            entries = [d.entry for d in group if d.entry is not None]
            queue = self.vhost.queues.get(name)
            for delivered in group:
                self.held.remove(delivered)
                delivered.entry = None
            if queue is None:
                continue  # the queue is gone; so are its unacked messages
            if statement.action == "ack":
                self.vhost.ack(queue, entries)
                settled = "ack"
            elif statement.requeue:
                self.vhost.requeue(queue, entries, self.now_ms)
                settled = "requeue"
            else:
                self.vhost.reject(queue, entries, self.now_ms)
                settled = "reject"
            for delivered in group:
                delivered.settled = settled
        return SettleEvent(statement=statement, action=statement.action, requeue=statement.requeue,
                           settled=chosen)

    def _explain(self, statement: Explain) -> Event:
        headers = dict(statement.headers)
        routing_keys = publish_routing_keys(statement.routing_key, headers)
        trace = self.vhost.trace(statement.exchange, routing_keys, headers or None)
        return ExplainEvent(statement=statement, exchange=statement.exchange,
                            routing_keys=tuple(routing_keys), headers=headers, trace=trace)

    def _show(self, statement: Show) -> Event:
        what = statement.what or "all"
        if what in ("queues", "all"):
            rows: list[tuple[str, ...]] = [
                (q.name, str(q.message_count), str(q.unacked_count), _describe_args(q.arguments))
                for q in sorted(self.vhost.queues.values(), key=lambda q: q.name)
            ]
            if what == "queues" or rows:
                return ShowEvent(statement=statement, what="queues", rows=rows,
                                 columns=("queue", "ready", "unacked", "arguments"))
        if what == "exchanges":
            rows = [
                (x.name, x.type_name, str(len(x.bindings)), _describe_args(x.arguments))
                for x in sorted(self.vhost.exchanges.values(), key=lambda x: x.name) if x.name
            ]
            return ShowEvent(statement=statement, what="exchanges", rows=rows,
                             columns=("exchange", "type", "bindings", "arguments"))
        if what == "bindings":
            rows = [
                (b.source, f"{b.destination.kind} {b.destination.name}", b.binding_key,
                 _describe_args(b.arguments_dict))
                for b in sorted(self.vhost.bindings(), key=lambda b: (b.source, b.destination.name, b.binding_key))
            ]
            return ShowEvent(statement=statement, what="bindings", rows=rows,
                             columns=("source", "destination", "key", "arguments"))
        queue = self.vhost.queues.get(what)
        if queue is not None:
            rows = [
                (str(index), entry.message.body.decode("utf-8", "replace"), entry.message.routing_key,
                 "yes" if entry.redelivered else "")
                for index, entry in enumerate(queue.ready_entries(), 1)
            ]
            return ShowEvent(statement=statement, what=f"queue {queue.name}", rows=rows,
                             columns=("#", "body", "routing key", "redelivered"))
        exchange = self.vhost.exchanges.get(what)
        if exchange is not None:
            rows = [
                (f"{b.destination.kind} {b.destination.name}", b.binding_key, _describe_args(b.arguments_dict))
                for b in sorted(exchange.bindings, key=lambda b: (b.destination.name, b.binding_key))
            ]
            return ShowEvent(statement=statement, what=f"exchange {exchange.name} ({exchange.type_name})",
                             rows=rows, columns=("destination", "key", "arguments"))
        raise UsageError(f"nothing to show called '{what}'",
                         "show queues | exchanges | bindings | QUEUE | EXCHANGE")

    # ------------------------------------------------------- expectations
    def _expect(self, statement: Expect) -> Event:
        passed, expected, actual = self.check(statement)
        return ExpectEvent(statement=statement, passed=passed, expected=expected, actual=actual)

    def check(self, e: Expect) -> tuple[bool, str, str]:
        """(passed, what was expected, what was found), both as a person would say them."""
        check = e.check
        if check in ("got", "got-matching", "never-got"):
            assert e.queue is not None and e.text is not None
            bodies = [a.message.body.decode("utf-8", "replace") for a in self.arrivals.get(e.queue, [])]
            if check == "got-matching":
                hit = any(fnmatch.fnmatchcase(b, e.text) for b in bodies)
                expected = f"{e.queue} got a message matching {_quote(e.text)}"
            else:
                hit = e.text in bodies
                expected = f"{e.queue} {'never got' if check == 'never-got' else 'got'} {_quote(e.text)}"
            if e.queue not in self.arrivals and e.queue not in self.vhost.queues:
                return check == "never-got", expected, f"there is no queue '{e.queue}'"
            actual = f"{e.queue} got " + (_bodies(bodies) if bodies else "nothing")
            return (not hit if check == "never-got" else hit), expected, actual
        if check in ("count", "unacked"):
            assert e.queue is not None and e.number is not None
            word = "ready " if check == "count" else "unacked "
            expected = f"{e.queue} has {_count(e.number, word + 'message')}"
            queue = self.vhost.queues.get(e.queue)
            if queue is None:
                return False, expected, f"there is no queue '{e.queue}'"
            have = queue.message_count if check == "count" else queue.unacked_count
            ready = [en.message.body.decode("utf-8", "replace") for en in queue.ready_entries()]
            actual = f"{e.queue} has {queue.message_count} ready"
            if ready:
                actual += f" ({_bodies(ready)})"
            actual += f" and {queue.unacked_count} unacked"
            return have == e.number, expected, actual
        if check in ("deleted", "exists"):
            assert e.queue is not None
            exists = e.queue in self.vhost.queues
            expected = f"queue {e.queue} {'exists' if check == 'exists' else 'is deleted'}"
            actual = f"queue {e.queue} {'exists' if exists else 'does not exist'}"
            return exists == (check == "exists"), expected, actual
        if check in ("unroutable", "routed", "routed-to", "returned", "nacked"):
            return self._check_publish(e)
        if check == "error":
            return self._check_error(e)
        return self._check_message(e)

    def _check_publish(self, e: Expect) -> tuple[bool, str, str]:
        expected = {
            "unroutable": "the last publish reached no queue",
            "routed": "the last publish reached a queue",
            "routed-to": "the last publish reached " + ", ".join(e.names),
            "returned": "the last publish came back (basic.return)",
            "nacked": "the last publish was nacked (a queue refused it)",
        }[e.check]
        last = self.last_publish
        if last is None:
            return False, expected, "nothing was published yet"
        reached = ", ".join(last.queues) if last.queues else "no queue"
        actual = f"it reached {reached}"
        if e.check == "unroutable":
            return not last.routed, expected, actual
        if e.check == "routed":
            return last.routed, expected, actual
        if e.check == "routed-to":
            return set(last.queues) == set(e.names), expected, actual
        if e.check == "returned":
            if not last.mandatory:
                actual += " and was not mandatory"
            elif not last.returned:
                actual += ", so it was not returned"
            return last.returned, expected, actual
        return last.nacked, expected, actual + (", confirmed" if not last.nacked else ", nacked")

    def _check_error(self, e: Expect) -> tuple[bool, str, str]:
        expected = "the previous statement failed"
        if e.number is not None:
            expected += f" with {e.number}"
        if e.text is not None:
            expected += f" with {_quote(e.text)}"
        error = self.previous_error
        if error is None:
            return False, expected, "it succeeded"
        actual = f"it failed: {error.reply_text}"
        if e.number is not None and error.code != e.number:
            return False, expected, actual
        if e.text is not None and e.text.lower() not in error.reply_text.lower():
            return False, expected, actual
        return True, expected, actual

    def _check_message(self, e: Expect) -> tuple[bool, str, str]:
        check = e.check
        if check == "no-message":
            expected = "the last get found no message"
            if self.last_get is None:
                return False, expected, "there was no get"
            got = self.last_get.delivered
            return got is None, expected, "it found nothing" if got is None else f"it got {_quote(got.body)}"
        descriptions = {
            "x-death": lambda: _describe_x_death_check(e),
            "body": lambda: f"the message's body is {_quote(e.text or '')}",
            "header": lambda: f"header {e.field_name} = {_show_value(e.value)}",
            "property": lambda: f"property {(e.field_name or '').replace('_', '-')} = {_show_value(e.value)}",
            "redelivered": lambda: "the message was redelivered",
            "not-redelivered": lambda: "the message was not redelivered",
        }
        expected = descriptions[check]()
        current = self.current
        if current is None:
            return False, expected, "no message: `get QUEUE` first" if self.last_get is None else (
                "the last get found no message")
        message = current.message
        if check == "x-death":
            deaths = x_death_entries(message)
            entry = _find_death(deaths, dict(e.filters))
            actual = "x-death: " + (", ".join(_death_summary(d) for d in deaths) if deaths else "none")
            if entry is None:
                return False, expected, actual
            return entry.get("count") == e.number, expected, actual
        if check == "body":
            return current.body == e.text, expected, f"the body is {_quote(current.body)}"
        if check == "header":
            headers = message.properties.headers or {}
            assert e.field_name is not None
            if e.field_name not in headers:
                return False, expected, f"there is no header {e.field_name}"
            value = _plain(headers[e.field_name])
            return _same(value, e.value), expected, f"header {e.field_name} = {_show_value(value)}"
        if check == "property":
            assert e.field_name is not None
            value = _plain(getattr(message.properties, e.field_name, None))
            if isinstance(value, datetime.datetime):
                value = int(value.timestamp())
            shown = "absent" if value is None else _show_value(value)
            return _same(value, e.value), expected, f"{e.field_name.replace('_', '-')} is {shown}"
        redelivered = current.redelivered
        actual = "it was redelivered" if redelivered else "it was a first delivery"
        return redelivered == (check == "redelivered"), expected, actual


# ------------------------------------------------------------------ helpers


def _deleted_by(statement: Statement) -> set[str]:
    return {statement.name} if isinstance(statement, Delete) and statement.kind == "queue" else set()


def _amqp_error_event(statement: Statement, error: exceptions.AMQPError) -> ErrorEvent:
    name = str(getattr(error, "name", "ERROR")).replace("-", "_")
    code = int(getattr(error, "value", 0))
    text = str(error.args[0]) if error.args else ""
    return ErrorEvent(statement=statement, code=code, name=name, text=text)


def _uses_headers(hop: ExchangeHop) -> bool:
    if hop.exchange_type == "headers":
        return True
    children = list(hop.hops) + ([hop.alternate] if hop.alternate is not None else [])
    return any(_uses_headers(child) for child in children)


def _plain(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _same(found: Any, wanted: Any) -> bool:
    if isinstance(wanted, bool) or isinstance(found, bool):
        return found is wanted
    if isinstance(wanted, (int, float)) and isinstance(found, (int, float)):
        return found == wanted
    if isinstance(found, (int, float)) and isinstance(wanted, str):
        return str(found) == wanted
    return bool(found == wanted)


def x_death_entries(message: Message) -> list[dict[str, Any]]:
    deaths = (message.properties.headers or {}).get("x-death")
    if not isinstance(deaths, list):
        return []
    return [_plain(d) for d in deaths if isinstance(d, dict)]


def _find_death(deaths: list[dict[str, Any]], filters: dict[str, str]) -> dict[str, Any] | None:
    for death in deaths:
        if all(death.get(key) == value for key, value in filters.items()):
            return death
    return None


def _death_summary(death: Mapping[str, Any]) -> str:
    return f"{death.get('queue')}/{death.get('reason')} x{death.get('count')}"


def _describe_x_death_check(e: Expect) -> str:
    text = f"x-death count {e.number}"
    for key, value in e.filters:
        text += f" {key} {value}"
    return text


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _bodies(bodies: list[str], limit: int = 5) -> str:
    shown = ", ".join(_quote(b) for b in bodies[:limit])
    if len(bodies) > limit:
        shown += f" and {len(bodies) - limit} more"
    return shown


def _show_value(value: Any) -> str:
    if isinstance(value, str):
        return _quote(value)
    return json.dumps(value, default=str, ensure_ascii=False)


def _describe_args(arguments: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={_show_value(_plain(v))}" for k, v in sorted(arguments.items()))


__all__ = [
    "Delivered", "DeadLetterHop", "Event", "InfoEvent", "PublishEvent", "WaitEvent", "GetEvent",
    "SettleEvent", "ExpectEvent", "ErrorEvent", "ExplainEvent", "ShowEvent", "Runner",
    "UsageError", "Location", "x_death_entries",
]
