"""Draw playground events with rich, readable at 80 columns.

A publish becomes a tree: the exchange, each binding that matched (with the
matcher's reason), exchange-to-exchange hops nested under the binding that led
there, the alternate exchange when nothing matched, then the bindings that did
not match and why; below it the queues reached, and any dead-letter hops the
publish caused, each drawn the same way from its dead-letter exchange.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from bindings.model import Binding
from exchanges.router import BindingVerdict, ExchangeHop, RouteTrace
from leveret.playground.parser import Load, PlaygroundError, Statement
from leveret.playground.runner import (
    DeadLetterHop,
    Delivered,
    ErrorEvent,
    Event,
    ExpectEvent,
    ExplainEvent,
    GetEvent,
    InfoEvent,
    PublishEvent,
    SettleEvent,
    ShowEvent,
    WaitEvent,
    x_death_entries,
)

OK = "✓"
NO = "✗"
MAX_UNMATCHED = 8  # more than this and the rest are counted, not listed


def make_console(width: int | None = None, *, color: bool | None = None, file: Any = None) -> Console:
    """A console for the CLI; tests pass width=80 and color=False."""
    if color is False:
        return Console(width=width, color_system=None, force_terminal=False, highlight=False,
                       file=file, soft_wrap=False)
    return Console(width=width, highlight=False, file=file)


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def format_duration(ms: int) -> str:
    if ms % 3_600_000 == 0 and ms:
        return f"{ms // 3_600_000}h"
    if ms % 60_000 == 0 and ms:
        return f"{ms // 60_000}m"
    if ms % 1000 == 0:
        return f"{ms // 1000}s"
    if ms > 1000:
        return f"{ms / 1000:g}s"
    return f"{ms}ms"


def _value(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "replace")
    if isinstance(value, str):
        return value if value and value.replace(".", "").replace("-", "").isalnum() else _quote(value)
    return json.dumps(value, default=str, ensure_ascii=False)


class Renderer:
    def __init__(self, console: Console, *, show_declarations: bool = True, headings: bool = True) -> None:
        self.console = console
        self.show_declarations = show_declarations
        self.headings = headings  # off in the interactive prompt, where the user just typed it
        self._printed = False

    # --------------------------------------------------------------- events
    def events(self, events: Iterable[Event]) -> None:
        for event in events:
            self.event(event)

    def event(self, event: Event) -> None:
        if isinstance(event, PublishEvent):
            self.publish(event)
        elif isinstance(event, ExplainEvent):
            self._heading(event.statement, gap=True)
            self.console.print(self.trace_tree(event.trace, event.routing_keys))
            self.result(event.trace.queues, returned=False, nacked=False, mandatory=False)
        elif isinstance(event, WaitEvent):
            self.wait(event)
        elif isinstance(event, GetEvent):
            self.get(event)
        elif isinstance(event, SettleEvent):
            self.settle(event)
        elif isinstance(event, ExpectEvent):
            self.expect(event)
        elif isinstance(event, ErrorEvent):
            self.error(event)
        elif isinstance(event, ShowEvent):
            self.show(event)
        elif isinstance(event, InfoEvent):
            self.info(event)
        self.dead_letter_hops(event.dead_letters)
        for name in event.deleted_queues:
            self.console.print(Text.assemble(("  ", ""), (f"{NO} queue {name} deleted", "yellow"),
                                             (" (unused past x-expires)", "dim")))

    def _heading(self, statement: Statement, style: str = "bold", gap: bool = False) -> None:
        if not self.headings:
            return
        if gap and self._printed:
            self.console.print()
        self._printed = True
        text = Text()
        text.append(f"{statement.at.line:>4} │ ", style="dim")
        text.append(statement.at.source, style=style)
        self.console.print(text, overflow="ellipsis", no_wrap=True)

    def _gutter(self, statement: Statement) -> Text:
        if not self.headings:
            return Text("  ")
        return Text(f"{statement.at.line:>4} │ ", style="dim")

    def info(self, event: InfoEvent) -> None:
        if not self.show_declarations and not isinstance(event.statement, Load):
            return
        self._heading(event.statement, style="dim")
        lines = event.text.split("\n")
        for line in lines[1:]:
            self.console.print(Text("       " + line.strip(), style="yellow"))

    # -------------------------------------------------------------- publish
    def publish(self, event: PublishEvent) -> None:
        self._heading(event.statement, gap=True)
        if event.count > 1:
            self.console.print(Text(f"       ×{event.count} messages, all routed alike", style="dim"))
        self.console.print(self.trace_tree(event.trace, event.routing_keys))
        self.result(event.queues, returned=event.returned, nacked=event.nacked,
                     mandatory=event.mandatory)

    def result(self, queues: list[str], *, returned: bool, nacked: bool, mandatory: bool) -> None:
        text = Text("  ")
        if queues:
            text.append("→ ", style="green")
            text.append(", ".join(queues), style="bold green")
        else:
            text.append(f"{NO} unroutable", style="bold red")
            text.append(
                ": returned to the publisher (mandatory)" if returned
                else ": dropped (publish with mandatory to get it back)" if not mandatory
                else "", style="red" if returned else "dim")
        if nacked:
            text.append("  nacked: a full queue refused it (x-overflow reject-publish)", style="yellow")
        self.console.print(text)

    def trace_tree(self, trace: RouteTrace, routing_keys: Iterable[str] = ()) -> Tree:
        keys = list(routing_keys)
        label = self._hop_label(trace.root)
        if keys:
            label.append("  routing key ", style="dim")
            label.append(", ".join(_quote(k) for k in keys), style="cyan")
        tree = Tree(label, guide_style="dim")
        self._fill_hop(tree, trace.root)
        return tree

    def _hop_label(self, hop: ExchangeHop) -> Text:
        text = Text()
        if hop.exchange == "":
            text.append("(default exchange)", style="bold magenta")
            return text
        text.append(hop.exchange, style="bold magenta")
        if hop.exchange_type:
            text.append(f" ({hop.exchange_type})", style="magenta")
        return text

    def _fill_hop(self, node: Tree, hop: ExchangeHop) -> None:
        if hop.missing:
            node.add(Text(f"{NO} exchange does not exist: the message stops here", style="red"))
            return
        if hop.already_seen:
            node.add(Text("already visited on this path: not routed twice", style="dim"))
            return
        children = {child.exchange: child for child in hop.hops}
        for matched in hop.matched:
            branch = node.add(self._binding_label(matched, hop, matched=True))
            destination = matched.binding.destination
            if destination.kind == "exchange":
                child = children.pop(destination.name, None)
                if child is not None:
                    self._fill_hop(branch, child)
        if hop.alternate is not None:
            alternate = Text()
            alternate.append("↪ nothing matched: alternate-exchange ", style="yellow")
            alternate.append(self._hop_label(hop.alternate))
            self._fill_hop(node.add(alternate), hop.alternate)
        if hop.unmatched:
            self._unmatched(node, hop)
        if not hop.matched and hop.alternate is None and not hop.unmatched and hop.exchange:
            node.add(Text("no bindings", style="dim"))

    def _binding_label(self, item: BindingVerdict, hop: ExchangeHop, matched: bool) -> Text:
        binding = item.binding
        text = Text()
        text.append(f"{OK if matched else NO} ", style="green" if matched else "red")
        destination = binding.destination
        name_style = "bold" if matched else ""
        text.append(f"{destination.kind} ", style="dim")
        text.append(destination.name, style=name_style)
        rule = self._rule(binding, hop.exchange_type)
        if rule:
            text.append("  ")
            text.append(rule, style="cyan")
        reason = item.verdict.reason
        if reason and not self._redundant(reason, binding, hop):
            text.append("  " if matched else " — ", style="dim")
            text.append(reason, style="dim" if matched else "")
        return text

    @staticmethod
    def _rule(binding: Binding, exchange_type: str) -> str:
        if exchange_type == "headers":
            arguments = binding.arguments_dict
            if not arguments:
                return "(no arguments)"
            return " ".join(f"{k}={_value(v)}" for k, v in arguments.items())
        if exchange_type == "fanout" or binding.source == "":
            return ""
        text = _quote(binding.binding_key)
        if binding.arguments:
            text += " " + " ".join(f"{k}={_value(v)}" for k, v in binding.arguments_dict.items())
        return text

    @staticmethod
    def _redundant(reason: str, binding: Binding, hop: ExchangeHop) -> bool:
        # "pattern 'a.*' matches 'a.b'" only repeats the line; keep reasons that explain.
        return hop.exchange_type in ("topic", "direct", "fanout") and (
            reason.startswith(f"pattern '{binding.binding_key}' matches")
            or reason.startswith("binding key") and "equals" in reason
            or hop.exchange_type == "fanout"
        )

    def _unmatched(self, node: Tree, hop: ExchangeHop) -> None:
        count = len(hop.unmatched)
        branch = node.add(Text(f"{NO} did not match ({count})", style="red"))
        for item in hop.unmatched[:MAX_UNMATCHED]:
            branch.add(self._binding_label(item, hop, matched=False))
        if count > MAX_UNMATCHED:
            branch.add(Text(f"… and {count - MAX_UNMATCHED} more", style="dim"))

    # --------------------------------------------------------- dead letters
    def dead_letter_hops(self, hops: list[DeadLetterHop]) -> None:
        for hop in hops:
            event = hop.event
            text = Text("  ☠ dead-lettered ", style="yellow")
            text.append(f"({event.reason})", style="bold yellow")
            text.append(f" from {event.from_queue}", style="yellow")
            text.append(" → ", style="dim")
            text.append(event.exchange or "(default exchange)", style="magenta")
            self.console.print(text)
            if hop.trace is not None:
                tree = self.trace_tree(hop.trace, event.routing_keys)
                self.console.print(_indent(tree))
            result = Text("    ")
            if event.queues:
                result.append("→ ", style="green")
                result.append(", ".join(event.queues), style="bold green")
            elif not event.dropped_cycles:
                result.append(f"{NO} no queue: the message is dropped", style="red")
            if event.dropped_cycles:
                if event.queues:
                    result.append("  ")
                result.append(f"⟲ dropped as a cycle: {', '.join(event.dropped_cycles)}", style="red")
            self.console.print(result)

    # ------------------------------------------------------------- the rest
    def wait(self, event: WaitEvent) -> None:
        text = self._gutter(event.statement)
        text.append(f"⏱ wait {format_duration(event.ms)}", style="bold")
        text.append(f"  (t = {format_duration(event.elapsed_ms)})", style="dim")
        if event.expired:
            text.append(f"  {event.expired} expired", style="yellow")
        self.console.print(text)

    def get(self, event: GetEvent) -> None:
        self._heading(event.statement)
        delivered = event.delivered
        if delivered is None:
            self.console.print(Text(f"  ∅ {event.queue} is empty", style="dim"))
            return
        self.console.print(self.delivered(delivered, no_ack=event.no_ack))

    def delivered(self, delivered: Delivered, *, no_ack: bool = False) -> Text:
        text = Text("  ↓ ")
        text.append(_quote(delivered.body), style="bold")
        text.append(f"  tag {delivered.delivery_tag}", style="dim")
        if delivered.redelivered:
            text.append("  redelivered", style="yellow")
        if no_ack:
            text.append("  (no-ack)", style="dim")
        text.append(f"  {delivered.remaining} left", style="dim")
        deaths = x_death_entries(delivered.message)
        if deaths:
            text.append("\n    x-death: ", style="dim")
            text.append(", ".join(
                f"{d.get('queue')}/{d.get('reason')} ×{d.get('count')}" for d in deaths
            ), style="yellow")
        return text

    def settle(self, event: SettleEvent) -> None:
        self._heading(event.statement)
        for delivered in event.settled:
            verb = {"ack": "acked", "requeue": "requeued", "reject": f"{event.action}ed"}.get(
                delivered.settled or "", "dropped (queue gone)")
            style = "green" if delivered.settled == "ack" else "yellow"
            text = Text(f"  {verb} ", style=style)
            text.append(_quote(delivered.body))
            text.append(f" (tag {delivered.delivery_tag} from {delivered.queue})", style="dim")
            if delivered.settled == "reject" and not event.dead_letters:
                text.append(" — no dead-letter exchange: discarded", style="dim")
            self.console.print(text)

    def expect(self, event: ExpectEvent) -> None:
        if event.passed:
            text = self._gutter(event.statement)
            text.append(f"{OK} ", style="green")
            text.append(event.statement.at.source, style="green")
            self.console.print(text)
            return
        self.failure(event)

    def failure(self, event: ExpectEvent, filename: str | None = None) -> None:
        statement = event.statement
        where = f"{filename}:{statement.at.line}:{statement.at.column}" if filename else f"line {statement.at.line}"
        title = Text()
        title.append(f"{NO} FAIL ", style="bold red")
        title.append(where, style="bold")
        self.console.print(title)
        self.console.print(Text(f"{statement.at.line:>6} │ {statement.at.source}"))
        self.console.print(Text.assemble(("  - expected: ", "red"), event.expected))
        self.console.print(Text.assemble(("  + actual:   ", "green"), event.actual))

    def error(self, event: ErrorEvent, filename: str | None = None) -> None:
        statement = event.statement
        where = f"{filename}:{statement.at.line}:{statement.at.column}" if filename else None
        self._heading(statement)
        text = Text(f"  {NO} ", style="bold red")
        if where:
            text.append(f"{where}: ", style="bold")
        text.append(event.reply_text, style="red")
        self.console.print(text)
        if event.hint:
            self.console.print(Text(f"    hint: {event.hint}", style="yellow"))

    def show(self, event: ShowEvent) -> None:
        self._heading(event.statement)
        table = Table(title=None, show_edge=False, pad_edge=False, box=None, header_style="bold")
        for column in event.columns:
            table.add_column(column, overflow="fold")
        for row in event.rows:
            table.add_row(*row)
        if not event.rows:
            self.console.print(Text(f"  no {event.what}", style="dim"))
            return
        self.console.print(_indent(table))

    def syntax_error(self, error: PlaygroundError) -> None:
        lines = str(error).split("\n")
        self.console.print(Text(lines[0], style="bold red"))
        for line in lines[1:]:
            style = "yellow" if line.startswith("hint:") else ""
            self.console.print(Text(line, style=style))


def _indent(renderable: Any, width: int = 4) -> Any:
    from rich.padding import Padding

    return Padding(renderable, (0, 0, 0, width))


def headers_text(headers: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_value(v)}" for k, v in headers.items())


def render_text(events: Iterable[Event], width: int = 80) -> str:
    """Plain text of events as `leveret play` draws them (for tests and logs)."""
    console = make_console(width, color=False)
    with console.capture() as capture:
        Renderer(console).events(events)
    return "\n".join(line.rstrip() for line in capture.get().split("\n"))
