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

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from leveret.bindings.model import Binding
from leveret.exchanges.router import BindingVerdict, ExchangeHop, RouteTrace
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
TREE_STEP = 4  # columns each tree level indents


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
        # bare only when it cannot be mistaken for a number, a boolean or void
        bare = value and value.replace(".", "").replace("-", "").replace("_", "").isalnum()
        if bare and not value[0].isdigit() and value not in ("true", "false", "null"):
            return value
        return _quote(value)
    return json.dumps(value, default=str, ensure_ascii=False)


class Renderer:
    def __init__(self, console: Console, *, show_declarations: bool = True, headings: bool = True) -> None:
        self.console = console
        self.show_declarations = show_declarations
        self.headings = headings  # off in the interactive prompt, where the user just typed it
        self._printed = False
        self._brief_misses = False

    # --------------------------------------------------------------- events
    def events(self, events: Iterable[Event]) -> None:
        for event in events:
            self.event(event)

    def event(self, event: Event) -> None:
        if isinstance(event, PublishEvent):
            self.publish(event)
        elif isinstance(event, ExplainEvent):
            self._heading(event.statement, gap=True)
            self.console.print(self.trace_tree(event.trace, event.routing_keys, headers=event.headers))
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
        """The statement's source line, numbered (not in the prompt, where it was just typed)."""
        if not self.headings:
            return
        if gap and self._printed:
            self.console.print()
        self._emit(statement, Text(statement.at.source, style=style))

    def _emit(self, statement: Statement, body: Text) -> None:
        """`body` after the line-number gutter; long lines wrap under the body, not the gutter."""
        self._printed = True
        if not self.headings:
            self.console.print(_indent(body, 2))
            return
        grid = Table.grid()
        grid.add_column(no_wrap=True)
        grid.add_column(overflow="fold")
        grid.add_row(Text(f"{statement.at.line:>4} │ ", style="dim"), body)
        self.console.print(grid)

    def info(self, event: InfoEvent) -> None:
        if not self.show_declarations and not isinstance(event.statement, Load):
            return
        lines = event.text.split("\n")
        if self.headings:
            self._heading(event.statement, style="dim")
        else:
            self.console.print(Text(f"  {OK} {lines[0]}", style="dim"))
        for line in lines[1:]:
            self.console.print(Text("       " + line.strip(), style="yellow"))

    # -------------------------------------------------------------- publish
    def publish(self, event: PublishEvent) -> None:
        self._heading(event.statement, gap=True)
        if event.count > 1:
            self.console.print(Text(f"       ×{event.count} messages, all routed alike", style="dim"))
        self.console.print(self.trace_tree(event.trace, event.routing_keys,
                                           headers=event.message.properties.headers))
        if event.delayed is not None:
            self.delayed(event)
            return
        self.result(event.queues, returned=event.returned, nacked=event.nacked,
                     mandatory=event.mandatory)

    def delayed(self, event: PublishEvent) -> None:
        """x-delayed-message holds it: the tree is where it would go now."""
        text = Text("  ")
        text.append(f"⏱ held for {format_duration(event.delayed or 0)} (x-delay)", style="bold yellow")
        text.append(", then routed by the bindings of that time", style="dim")
        if event.returned:
            text.append("; returned now as unroutable (mandatory), as the plugin does", style="red")
        self.console.print(text)

    def result(self, queues: list[str], *, returned: bool, nacked: bool, mandatory: bool) -> None:
        text = Text("  ")
        if queues:
            text.append("→ ", style="green")
            text.append(", ".join(sorted(queues)), style="bold green")
        else:
            text.append(f"{NO} unroutable", style="bold red")
            text.append(
                ": returned to the publisher (mandatory)" if returned
                else ": dropped (publish with mandatory to get it back)" if not mandatory
                else "", style="red" if returned else "dim")
        if nacked:
            text.append("  nacked: a queue refused it (full, with x-overflow reject-publish; or a duplicate)",
                        style="yellow")
        self.console.print(text)

    def trace_tree(
        self, trace: RouteTrace, routing_keys: Iterable[str] = (), *, indent: int = 0,
        brief_misses: bool = False, headers: Mapping[str, Any] | None = None,
    ) -> Tree:
        """The route as a tree; `indent` is where the caller will place it (for wrapping).
        With `brief_misses`, bindings that did not match are only counted where
        something else matched (dead-letter hops: the why matters less there)."""
        self._brief_misses = brief_misses
        keys = list(routing_keys)
        label = self._hop_label(trace.root)
        if trace.root.exchange_type == "headers":
            # the routing key plays no part; the headers do
            label.append("  headers ", style="dim")
            label.append(headers_text(headers or {}) or "(none)", style="cyan")
        elif keys:
            label.append("  routing key ", style="dim")
            label.append(", ".join(_quote(k) for k in keys), style="cyan")
            if trace.root.exchange_type == "fanout":
                label.append(" (ignored)", style="dim")
        tree = Tree(label, guide_style="dim")
        self._fill_hop(tree, trace.root, indent + TREE_STEP)
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

    def _fill_hop(self, node: Tree, hop: ExchangeHop, column: int) -> None:
        """Add `hop`'s bindings under `node`, whose children start at `column`."""
        if hop.missing:
            node.add(Text(f"{NO} exchange does not exist: the message stops here", style="red"))
            return
        if hop.already_seen:
            node.add(Text("already visited on this path: not routed twice", style="dim"))
            return
        children = {child.exchange: child for child in hop.hops}
        for matched in hop.matched:
            branch = self._binding_node(node, matched, hop, column, matched=True)
            destination = matched.binding.destination
            if destination.kind == "exchange":
                child = children.pop(destination.name, None)
                if child is not None:
                    self._fill_hop(branch, child, column + TREE_STEP)
        if hop.alternate is not None:
            alternate = Text()
            alternate.append("↪ nothing matched: alternate-exchange ", style="yellow")
            alternate.append(self._hop_label(hop.alternate))
            self._fill_hop(node.add(alternate), hop.alternate, column + TREE_STEP)
        if hop.unmatched and self._brief_misses and (hop.matched or hop.alternate is not None):
            node.add(Text(f"{NO} {_plural(len(hop.unmatched), 'other binding')} did not match",
                          style="dim"))
        elif hop.unmatched:
            count = len(hop.unmatched)
            branch = node.add(Text(f"{NO} did not match ({count})", style="red"))
            for item in hop.unmatched[:MAX_UNMATCHED]:
                self._binding_node(branch, item, hop, column + TREE_STEP, matched=False)
            if count > MAX_UNMATCHED:
                branch.add(Text(f"… and {count - MAX_UNMATCHED} more", style="dim"))
        if not hop.matched and hop.alternate is None and not hop.unmatched and hop.exchange:
            node.add(Text("no bindings", style="dim"))

    def _binding_node(self, parent: Tree, item: BindingVerdict, hop: ExchangeHop, column: int,
                      *, matched: bool) -> Tree:
        """One binding; its reason goes on the same line if it fits, else just below."""
        binding = item.binding
        text = Text()
        if matched:
            text.append(f"{OK} ", style="green")
        destination = binding.destination
        text.append(f"{destination.kind} ", style="dim")
        text.append(destination.name, style="bold" if matched else "")
        rule = self._rule(binding, hop.exchange_type)
        if rule:
            text.append("  ")
            text.append(rule, style="cyan")
        reason = item.verdict.reason
        if not reason or self._redundant(reason, binding, hop):
            return parent.add(text)
        style = "dim" if matched else "yellow"
        if column + text.cell_len + 2 + len(reason) <= self.console.width:
            text.append("  ")
            text.append(reason, style=style)
            return parent.add(text)
        node = parent.add(text)
        node.add(Text(reason, style=style), guide_style="dim")
        return node

    @staticmethod
    def _rule(binding: Binding, exchange_type: str) -> str:
        if exchange_type == "headers":
            arguments = binding.arguments_dict
            if not arguments:
                return "(no arguments)"
            # x-match first: it says how to read the rest
            items = sorted(arguments.items(), key=lambda kv: (kv[0] != "x-match", kv[0]))
            return " ".join(f"{k}={_value(v)}" for k, v in items)
        if exchange_type in ("fanout", "x-message-deduplication") or binding.source == "":
            return ""
        if exchange_type == "x-consistent-hash":
            return f"weight {binding.binding_key}"
        text = _quote(binding.binding_key)
        if binding.arguments:
            text += " " + " ".join(f"{k}={_value(v)}" for k, v in binding.arguments_dict.items())
        return text

    @staticmethod
    def _redundant(reason: str, binding: Binding, hop: ExchangeHop) -> bool:
        # "pattern 'a.*' matches 'a.b'" only repeats the line; keep reasons that explain.
        if binding.source == "" or hop.exchange_type in ("fanout", "direct"):
            return True  # the key (or its absence) on the line says it all
        return hop.exchange_type in ("topic", "direct") and (
            reason.startswith(f"pattern '{binding.binding_key}' matches")
            or (reason.startswith("binding key") and "equals" in reason)
        )

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
                headers = None if hop.message is None else hop.message.properties.headers
                tree = self.trace_tree(hop.trace, event.routing_keys, indent=4, brief_misses=True,
                                       headers=_without_death_headers(headers))
                self.console.print(_indent(tree))
            result = Text("    ")
            if event.queues:
                result.append("→ ", style="green")
                result.append(", ".join(sorted(event.queues)), style="bold green")
            elif event.missing_exchange:
                result.append(f"{NO} exchange '{event.exchange}' does not exist: the message is dropped", style="red")
            elif not event.dropped_cycles:
                result.append(f"{NO} no queue: the message is dropped", style="red")
            if event.dropped_cycles:
                if event.queues:
                    result.append("  ")
                result.append(f"⟲ dropped as a cycle: {', '.join(event.dropped_cycles)}", style="red")
            self.console.print(result)

    # ------------------------------------------------------------- the rest
    def wait(self, event: WaitEvent) -> None:
        text = Text()
        text.append(f"⏱ wait {format_duration(event.ms)}", style="bold")
        text.append(f"  (t = {format_duration(event.elapsed_ms)})", style="dim")
        if event.expired:
            text.append(f"  {event.expired} expired", style="yellow")
        self._emit(event.statement, text)

    def get(self, event: GetEvent) -> None:
        self._heading(event.statement)
        delivered = event.delivered
        if delivered is None:
            self.console.print(Text(f"  ∅ {event.queue} is empty", style="dim"))
            return
        self.console.print(self.delivered(delivered, no_ack=event.no_ack))

    def delivered(self, delivered: Delivered, *, no_ack: bool = False) -> RenderableType:
        text = Text("  ↓ ")
        text.append(_quote(delivered.body), style="bold")
        text.append(f"  tag {delivered.delivery_tag}", style="dim")
        if delivered.redelivered:
            text.append("  redelivered", style="yellow")
        if no_ack:
            text.append("  (no-ack)", style="dim")
        text.append(f"  {delivered.remaining} left", style="dim")
        deaths = x_death_entries(delivered.message)
        if not deaths:
            return text
        death_text = Text("x-death: ", style="dim")
        death_text.append(", ".join(
            f"{d.get('queue')}/{d.get('reason')} ×{d.get('count')}" for d in deaths
        ), style="yellow")
        return Group(text, _indent(death_text))

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
            text = Text(f"{OK} ", style="green")
            text.append(event.statement.at.source, style="green")
            self._emit(event.statement, text)
            return
        self.failure(event)

    def failure(self, event: ExpectEvent, filename: str | None = None) -> None:
        statement = event.statement
        where = (f"{filename}:{statement.at.line}:{statement.at.column}" if filename
                 else f"line {statement.at.line}" if self.headings else "")
        title = Text()
        title.append(f"{NO} FAIL ", style="bold red")
        title.append(where, style="bold")
        self.console.print(title, soft_wrap=True)  # a path must stay whole to be clickable
        if self.headings or filename:
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
        self.console.print(text, soft_wrap=bool(where))
        if event.hint:
            self.console.print(_indent(_hint(event.hint), 4))

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
        self.console.print(Text(lines[0], style="bold red"), soft_wrap=True)
        for line in lines[1:]:
            if line.startswith("hint: "):
                self.console.print(_hint(line[len("hint: "):]))
            else:
                self.console.print(Text(line), soft_wrap=True)


def _hint(hint: str) -> Table:
    """`hint: ...`, wrapped under its own text."""
    grid = Table.grid()
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row(Text("hint: ", style="yellow"), Text(hint, style="yellow"))
    return grid


def _plural(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _indent(renderable: Any, width: int = 4) -> Any:
    from rich.padding import Padding

    return Padding(renderable, (0, 0, 0, width), expand=False)


def headers_text(headers: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={_value(v)}" for k, v in headers.items())


def _without_death_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    # x-death and x-first-death-* are the broker's notes; they would crowd the line
    return {k: v for k, v in (headers or {}).items() if not k.startswith(("x-death", "x-first-death"))}


def render_text(events: Iterable[Event], width: int = 80) -> str:
    """Plain text of events as `leveret play` draws them (for tests and logs)."""
    console = make_console(width, color=False)
    with console.capture() as capture:
        Renderer(console).events(events)
    return "\n".join(line.rstrip() for line in capture.get().split("\n"))
