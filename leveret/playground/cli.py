"""`leveret play`, `leveret test` and `leveret explain`.

leveret/cli.py calls `add_subcommands(subparsers)`; each handler takes the
parsed arguments and returns the process exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from leveret.broker.broker import Broker
from leveret.broker.definitions import load_definitions
from leveret.clock import VirtualClock
from leveret.playground.parser import STATEMENTS, Expect, PlaygroundError, Statement, parse
from leveret.playground.render import Renderer, make_console
from leveret.playground.runner import ErrorEvent, Event, ExpectEvent, PublishEvent, Runner

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def add_subcommands(subparsers: Any) -> None:
    """Register play, test and explain on an argparse subparsers object."""
    play = subparsers.add_parser(
        "play", help="run a route file and draw where every message goes (no FILE: a prompt)",
        description="Run a route file on an in-process broker with a virtual clock and draw "
                    "each publish as a tree. Without FILE, open an interactive prompt.",
    )
    play.add_argument("file", nargs="?", help="a .route file (omit for the interactive prompt)")
    play.add_argument("--definitions", metavar="JSON", help="load a RabbitMQ definitions export first")
    play.add_argument("--export", metavar="JSON",
                      help="write the topology built as RabbitMQ definitions ('-' for stdout)")
    play.add_argument("--against", metavar="AMQP_URL",
                      help="also run the file on a live broker (aio-pika) and show differences")
    play.add_argument("--quiet", "-q", action="store_true", help="hide declarations")
    _output_options(play)
    play.set_defaults(func=play_main)

    test = subparsers.add_parser(
        "test", help="run the expectations of route files (for CI)",
        description="Run route files and check their expectations. Stops at the first failure "
                    "in each file; exits 1 if any file failed.",
    )
    test.add_argument("files", nargs="+", metavar="FILE", help=".route files or directories")
    test.add_argument("--definitions", metavar="JSON", help="load a RabbitMQ definitions export first")
    test.add_argument("--verbose", "-v", action="store_true", help="draw every statement as `play` does")
    _output_options(test)
    test.set_defaults(func=test_main)

    explain = subparsers.add_parser(
        "explain", help="show where a message would go in a RabbitMQ definitions export",
        description="Load a RabbitMQ definitions export (exchanges, queues, bindings, policies) "
                    "and trace a message published to EXCHANGE with ROUTING_KEY.",
    )
    explain.add_argument("--definitions", metavar="JSON", required=True,
                         help="RabbitMQ definitions export (rabbitmqctl export_definitions)")
    explain.add_argument("exchange", metavar="EXCHANGE", help="exchange to publish to ('' for the default)")
    explain.add_argument("routing_key", metavar="ROUTING_KEY")
    explain.add_argument("--header", action="append", default=[], metavar="K=V",
                         help="a message header (repeatable); V is read like a route-file value")
    explain.add_argument("--vhost", default="/", help="the vhost to read from the export (default /)")
    _output_options(explain)
    explain.set_defaults(func=explain_main)


def _output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-color", action="store_true", help="plain text output")
    parser.add_argument("--width", type=int, default=None, help="output width (default: the terminal's)")


def _console(args: argparse.Namespace, stderr: bool = False) -> Console:
    color = False if (args.no_color or os.environ.get("NO_COLOR")) else None
    return make_console(args.width, color=color, file=sys.stderr if stderr else None)


def _read(path: str, console: Console) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as error:
        console.print(Text(f"leveret: cannot read {path}: {error.strerror}", style="bold red"))
        return None


def _load_definitions(runner: Runner, path: str | None, console: Console, vhost: str | None = None) -> bool:
    if path is None:
        return True
    text = _read(path, console)
    if text is None:
        return False
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        console.print(Text(f"leveret: {path} is not JSON: {error}", style="bold red"))
        return False
    if not isinstance(data, dict):
        console.print(Text(f"leveret: {path} is not a RabbitMQ definitions export", style="bold red"))
        return False
    result = load_definitions(runner.vhost, data, now_ms=runner.now_ms, vhost_name=vhost)
    console.print(Text(f"loaded {path}: {result}", style="dim"))
    for warning in result.warnings:
        console.print(Text(f"  warning: {warning}", style="yellow"))
    return True


def _parse_file(path: str, console: Console) -> list[Statement] | None:
    text = _read(path, console)
    if text is None:
        return None
    try:
        return parse(text, path)
    except PlaygroundError as error:
        Renderer(console).syntax_error(error)
        return None


# ------------------------------------------------------------------ play


def play_main(args: argparse.Namespace) -> int:
    # `--export -` owns stdout: the drawing goes to stderr then
    console = _console(args, stderr=args.export == "-")
    if args.file is None:
        if args.against:
            console.print(Text("leveret: --against needs a FILE", style="bold red"))
            return EXIT_USAGE
        return interactive(args, console)
    statements = _parse_file(args.file, console)
    if statements is None:
        return EXIT_USAGE
    runner = Runner(base_dir=Path(args.file).resolve().parent)
    if not _load_definitions(runner, args.definitions, console):
        return EXIT_USAGE
    renderer = Renderer(console, show_declarations=not args.quiet)
    failed = False
    events: list[Event] = []
    for event in runner.run(statements):
        renderer.event(event)
        events.append(event)
        failed = failed or (isinstance(event, ExpectEvent) and not event.passed)
    if args.export and not _export(runner, args.export, console):
        return EXIT_USAGE
    if args.against:
        from leveret.playground.live import compare_against

        differences = compare_against(args.against, statements, events, console,
                                      base_dir=Path(args.file).resolve().parent)
        if differences is None:
            return EXIT_USAGE
        if differences:
            return EXIT_FAILED
    return EXIT_FAILED if failed else EXIT_OK


def _export(runner: Runner, target: str, console: Console) -> bool:
    text = json.dumps(runner.export(), indent=2, ensure_ascii=False) + "\n"
    if target == "-":
        sys.stdout.write(text)
        return True
    try:
        Path(target).write_text(text, encoding="utf-8")
    except OSError as error:
        console.print(Text(f"leveret: cannot write {target}: {error.strerror}", style="bold red"))
        return False
    console.print(Text(f"exported the topology to {target}", style="dim"))
    return True


HELP = """\
Statements (one per line; ';' separates; # starts a comment):
  exchange NAME TYPE [durable] [internal] [auto-delete] [ae=EXCHANGE]
  queue NAME [ttl=30s] [dlx=EXCHANGE] [dlk=KEY] [max-length=N] [overflow=MODE]
             [max-priority=N] [expires=1m] [delivery-limit=N] [x-arg=VALUE]
  bind SOURCE -> [queue|exchange] DEST ["key"] [where x-match=any k=v ...]
  unbind SOURCE -> DEST ["key"]        delete queue|exchange NAME    purge QUEUE
  publish EXCHANGE KEY ["body"] [mandatory] [persistent] [priority=N]
          [expiration=30s] [message-id=ID] [headers {k: v}] [cc=[k1, k2]] [repeat N]
  wait 30s | 500ms | 5m       get QUEUE [no-ack]
  ack [QUEUE] [all]    reject [QUEUE] [requeue]    nack [QUEUE] [requeue] [all]
  expect QUEUE got "body" | has N messages | is empty | never got "body"
         (got: the queue accepted such a message at some point in the run)
  expect unroutable | routed [to Q1, Q2] | returned | nacked     (the last publish)
  expect x-death count N [reason R] [queue Q] | body "..." | header K = V |
         property K = V | [not] redelivered | no message        (the last get)
  expect error [CODE | "text"]                    (the statement before failed)
  explain EXCHANGE KEY [headers {...}]    show [queues|exchanges|bindings|NAME]
  load "definitions.json"
Prompt only: help, export FILE.json, quit"""


def interactive(args: argparse.Namespace, console: Console) -> int:
    try:
        import readline
    except ImportError:  # Windows without pyreadline
        readline = None  # type: ignore[assignment]
    history = Path(os.environ.get("LEVERET_HISTORY", Path.home() / ".leveret_history"))
    runner = Runner(base_dir=Path.cwd())
    if not _load_definitions(runner, args.definitions, console):
        return EXIT_USAGE
    if readline is not None:
        try:
            readline.read_history_file(history)
        except OSError:
            pass
        readline.set_history_length(1000)
        readline.set_completer(_Completer(runner).complete)
        readline.set_completer_delims(" \t;")
        readline.parse_and_bind("tab: complete")
    renderer = Renderer(console, headings=False)
    console.print(Text("leveret playground — `help` for the statements, Ctrl-D to leave", style="dim"))
    line_number = 0
    try:
        for text in _lines():
            line_number += 1
            command = text.strip()
            if not command:
                continue
            if command in ("quit", "exit"):
                break
            if command in ("help", "?"):
                console.print(Text(HELP))  # not markup: rich would take [durable] for a style
                continue
            if command.startswith("export "):
                _export(runner, command.split(None, 1)[1].strip().strip('"'), console)
                continue
            try:
                statements = parse(text, "<prompt>")
            except PlaygroundError as error:
                error.line = line_number if error.line == 1 else error.line
                renderer.syntax_error(error)
                continue
            for statement in statements:
                renderer.event(runner.execute(statement))
    except KeyboardInterrupt:
        console.print()
    finally:
        if readline is not None:
            try:
                readline.write_history_file(history)
            except OSError:
                pass
    return EXIT_OK


def _lines() -> Iterator[str]:
    """Input lines; a trailing backslash continues a statement."""
    while True:
        try:
            text = input("leveret> ")
            while text.endswith("\\"):
                text = text[:-1] + " " + input("    ...> ")
        except EOFError:
            print()
            return
        yield text


class _Completer:
    """Tab completion: statements, then names the broker knows."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.matches: list[str] = []

    def complete(self, prefix: str, state: int) -> str | None:
        if state == 0:
            words = set(STATEMENTS) | set(self.runner.vhost.queues) | {
                name for name in self.runner.vhost.exchanges if name
            }
            words |= {"direct", "fanout", "topic", "headers", "requeue", "mandatory", "messages"}
            self.matches = sorted(w + " " for w in words if w.startswith(prefix))
        return self.matches[state] if state < len(self.matches) else None


# ------------------------------------------------------------------ test


@dataclass(slots=True)
class FileResult:
    path: str
    passed: bool
    expectations: int
    skipped: bool = False


def _route_files(paths: list[str], console: Console) -> list[str] | None:
    files: list[str] = []
    for path in paths:
        p = Path(path)
        if p.is_dir():
            files.extend(str(f) for f in sorted(p.rglob("*.route")))
        elif p.exists():
            files.append(path)
        else:
            console.print(Text(f"leveret: no such file: {path}", style="bold red"))
            return None
    return files


def test_main(args: argparse.Namespace) -> int:
    console = _console(args)
    files = _route_files(args.files, console)
    if files is None:
        return EXIT_USAGE
    results = [run_test_file(path, console, definitions=args.definitions, verbose=args.verbose)
               for path in files]
    ran = [r for r in results if not r.skipped]
    passed = sum(1 for r in ran if r.passed)
    failed = len(ran) - passed
    expectations = sum(r.expectations for r in ran)
    summary = Text()
    summary.append(f"{passed} passed, {failed} failed",
                   style="bold green" if not failed else "bold red")
    summary.append(f" ({_plural(expectations, 'expectation')} in {_plural(len(ran), 'file')})",
                   style="dim")
    console.print(summary)
    if not ran:
        return EXIT_USAGE
    return EXIT_FAILED if failed else EXIT_OK


def run_test_file(path: str, console: Console, *, definitions: str | None = None,
                  verbose: bool = False) -> FileResult:
    """Run one file; print `ok` or the first failure with what was expected and found."""
    if not path.endswith(".route"):
        console.print(Text(f"skip  {path} (not a .route file)", style="dim"), soft_wrap=True)
        return FileResult(path, True, 0, skipped=True)
    statements = _parse_file(path, console)
    if statements is None:
        _fail_line(console, path, "the file does not parse")
        return FileResult(path, False, 0)
    runner = Runner(base_dir=Path(path).resolve().parent)
    if not _load_definitions(runner, definitions, console):
        return FileResult(path, False, 0)
    renderer = Renderer(console)
    expectations = 0
    for index, statement in enumerate(statements):
        event = runner.execute(statement)
        if verbose:
            renderer.event(event)
        if isinstance(event, ExpectEvent):
            expectations += 1
            if not event.passed:
                _report_failure(console, renderer, path, event, runner)
                return FileResult(path, False, expectations)
        elif isinstance(event, ErrorEvent):
            following = statements[index + 1] if index + 1 < len(statements) else None
            if not (isinstance(following, Expect) and following.check == "error"):
                if not verbose:
                    renderer.error(event, filename=path)
                _fail_line(console, path, "a statement failed (add `expect error` after it if intended)")
                return FileResult(path, False, expectations)
    text = Text()
    text.append("ok    ", style="bold green")
    text.append(path)
    text.append(f"  ({_plural(expectations, 'expectation')})", style="dim")
    if not expectations:
        text.append("  nothing is checked: add `expect` lines", style="yellow")
    console.print(text, soft_wrap=True)
    return FileResult(path, True, expectations)


def _plural(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _fail_line(console: Console, path: str, why: str) -> None:
    text = Text()
    text.append("FAIL  ", style="bold red")
    text.append(path)
    text.append(f"  {why}", style="dim")
    console.print(text, soft_wrap=True)


def _report_failure(console: Console, renderer: Renderer, path: str, event: ExpectEvent,
                    runner: Runner) -> None:
    renderer.failure(event, filename=path)
    # Routing expectations are easier to fix next to the route they checked.
    if event.statement.__class__ is Expect and runner.last_publish is not None and getattr(
        event.statement, "check", ""
    ) in ("got", "got-matching", "never-got", "routed", "routed-to", "unroutable", "returned"):
        last: PublishEvent = runner.last_publish
        console.print(Text("  the last publish went:", style="dim"))
        quiet = Renderer(console)
        quiet.publish(last)
        quiet.dead_letter_hops(last.dead_letters)
    console.print()


# --------------------------------------------------------------- explain


def _header_value(text: str) -> Any:
    try:
        statements = parse(f'publish x k headers {{v: {text}}}')
    except PlaygroundError:
        return text
    headers = getattr(statements[0], "headers", {})
    return headers.get("v", text)


def explain_main(args: argparse.Namespace) -> int:
    console = _console(args)
    headers: dict[str, Any] = {}
    for item in args.header:
        if "=" not in item:
            console.print(Text(f"leveret: --header wants K=V, got {item!r}", style="bold red"))
            return EXIT_USAGE
        key, value = item.split("=", 1)
        headers[key] = _header_value(value)
    runner = Runner(Broker(clock=VirtualClock()))
    if not _load_definitions(runner, args.definitions, console, vhost=args.vhost):
        return EXIT_USAGE
    exchange = "" if args.exchange in ("", "amq.default") else args.exchange
    if exchange not in runner.vhost.exchanges:
        console.print(Text(f"leveret: no exchange '{exchange}' in {args.definitions}", style="bold red"))
        known = sorted(name for name in runner.vhost.exchanges if name)
        console.print(Text("exchanges: " + ", ".join(known), style="yellow"))
        return EXIT_FAILED
    routing_keys = [args.routing_key]
    for name in ("CC", "BCC"):
        value = headers.get(name)
        if isinstance(value, list):
            routing_keys.extend(str(v) for v in value)
        elif isinstance(value, str):
            routing_keys.append(value)
    trace = runner.vhost.trace(exchange, routing_keys, headers or None)
    renderer = Renderer(console)
    console.print(renderer.trace_tree(trace, routing_keys, headers=headers))
    renderer.result(trace.queues, returned=False, nacked=False, mandatory=False)
    return EXIT_OK
