"""`leveret ctl`: look at and manage a running broker through its HTTP API, like rabbitmqctl.

    leveret ctl list queues|exchanges|bindings|connections|channels|consumers [--json]
    leveret ctl purge QUEUE
    leveret ctl delete queue|exchange NAME [--if-empty] [--if-unused]
    leveret ctl export FILE            (- for stdout)
    leveret ctl import FILE            (- for stdin)
    leveret ctl add_user|set_permissions|list_users|add_vhost|...   (see ctl_admin)
    leveret ctl set_policy|clear_policy|list_policies, set_operator_policy|...  (see ctl_policies)

Every command takes `--url` (default $LEVERET_MANAGEMENT_URL or
http://127.0.0.1:15672), `--user`/`--password` (guest/guest) and `--vhost`
(/). It works against RabbitMQ's management plugin as well.

leveret/cli.py finds this module and calls `add_subcommands(subparsers)`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from leveret.management import ctl_policies
from leveret.management.ctl_admin import add_verbs
from leveret.management.ctl_client import EXIT_FAILED, EXIT_OK, Client, CtlError

DEFAULT_URL = "http://127.0.0.1:15672"
LISTABLE = ("queues", "exchanges", "bindings", "connections", "channels", "consumers")


def _vhost(name: str) -> str:
    return quote(name, safe="")


# ------------------------------------------------------------------ parser
def add_subcommands(subparsers: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=os.environ.get("LEVERET_MANAGEMENT_URL", DEFAULT_URL),
                        help="management API base URL (default: $LEVERET_MANAGEMENT_URL or %(default)s)")
    common.add_argument("--user", "-u", default="guest", help="user (default: %(default)s)")
    common.add_argument("--password", "-p", default="guest", help="password (default: %(default)s)")
    common.add_argument("--vhost", default="/", help="virtual host (default: %(default)s)")

    ctl = subparsers.add_parser(
        "ctl", help="list, purge, delete, export and import on a running broker (HTTP API)",
        description="Manage a running broker through its management HTTP API, like rabbitmqctl. "
                    "Works against leveret (`leveret serve`) and RabbitMQ's management plugin.",
    )
    actions = ctl.add_subparsers(dest="ctl_command", metavar="ACTION")
    ctl.set_defaults(func=lambda args: _usage(ctl))

    listing = actions.add_parser("list", parents=[common], help="print a table of queues, exchanges, ...",
                                 description="Print a table of what the broker has.")
    listing.add_argument("what", choices=LISTABLE, metavar="{" + ",".join(LISTABLE) + "}")
    listing.add_argument("--all-vhosts", action="store_true", help="list every vhost, not only --vhost")
    listing.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    listing.add_argument("--width", type=int, metavar="COLUMNS",
                         help="draw the table this wide, cutting long cells with '…' (default: the "
                              "terminal's width; not on a terminal: plain tab-separated lines, uncut)")
    listing.set_defaults(func=list_main)

    purge = actions.add_parser("purge", parents=[common], help="remove the ready messages of a queue")
    purge.add_argument("queue", metavar="QUEUE")
    purge.set_defaults(func=purge_main)

    delete = actions.add_parser("delete", parents=[common], help="delete a queue or an exchange")
    delete.add_argument("kind", choices=("queue", "exchange"))
    delete.add_argument("name", metavar="NAME")
    delete.add_argument("--if-empty", action="store_true", help="only if the queue has no ready messages")
    delete.add_argument("--if-unused", action="store_true", help="only if it has no consumers (queue) or bindings (exchange)")
    delete.set_defaults(func=delete_main)

    export = actions.add_parser("export", parents=[common], help="write the definitions (topology) as JSON")
    export.add_argument("file", metavar="FILE", help="where to write ('-' for stdout)")
    export.add_argument("--only-vhost", action="store_true", help="export --vhost only (RabbitMQ's one-vhost format)")
    export.set_defaults(func=export_main)

    load = actions.add_parser("import", parents=[common], help="load definitions (topology) from JSON")
    load.add_argument("file", metavar="FILE", help="a definitions file ('-' for stdin)")
    load.add_argument("--only-vhost", action="store_true", help="load into --vhost (a one-vhost export)")
    load.set_defaults(func=import_main)
    add_verbs(actions, common, _client, _run)  # rabbitmqctl's administration verbs
    ctl_policies.add_verbs(actions, common)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _client(args: argparse.Namespace) -> Client:
    return Client(args.url, args.user, args.password)


def _run(action: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    try:
        return action(args)
    except CtlError as error:
        print(f"leveret ctl: {error}", file=sys.stderr)
        return EXIT_FAILED


def list_main(args: argparse.Namespace) -> int:
    return _run(_list, args)


def purge_main(args: argparse.Namespace) -> int:
    return _run(_purge, args)


def delete_main(args: argparse.Namespace) -> int:
    return _run(_delete, args)


def export_main(args: argparse.Namespace) -> int:
    return _run(_export, args)


def import_main(args: argparse.Namespace) -> int:
    return _run(_import, args)


# ----------------------------------------------------------------- actions
def _list(args: argparse.Namespace) -> int:
    client = _client(args)
    scoped = args.what not in ("connections", "channels")
    path = f"/api/{args.what}"
    if scoped and not args.all_vhosts:
        path += f"/{_vhost(args.vhost)}"
    items = client.request("GET", path, missing=f"no vhost '{args.vhost}'")
    if not scoped and not args.all_vhosts:
        items = [i for i in items if i.get("vhost") in (args.vhost, None)]
    if args.json:
        print(json.dumps(items, indent=2, ensure_ascii=False))
        return EXIT_OK
    listing = TABLES[args.what](items, args.all_vhosts)
    if args.width is None and not sys.stdout.isatty():
        sys.stdout.write(listing.plain())  # for grep, cut, awk: whole values, one line each
        return EXIT_OK
    from rich.console import Console  # only the table needs rich

    console = Console(width=args.width)
    console.print(listing.table(console.width))
    return EXIT_OK


def _purge(args: argparse.Namespace) -> int:
    client = _client(args)
    path = f"/api/queues/{_vhost(args.vhost)}/{quote(args.queue, safe='')}"
    missing = f"no queue '{args.queue}' in vhost '{args.vhost}'"
    ready = client.request("GET", path, missing=missing).get("messages_ready", 0)
    client.request("DELETE", path + "/contents", missing=missing)
    print(f"purged queue '{args.queue}' ({_plural(ready, 'message')} ready)")
    return EXIT_OK


def _delete(args: argparse.Namespace) -> int:
    client = _client(args)
    name = "amq.default" if args.kind == "exchange" and args.name == "" else args.name
    query = "&".join(q for q, on in (("if-empty=true", args.if_empty), ("if-unused=true", args.if_unused)) if on)
    path = f"/api/{args.kind}s/{_vhost(args.vhost)}/{quote(name, safe='')}"
    client.request("DELETE", path + (f"?{query}" if query else ""),
                   missing=f"no {args.kind} '{args.name}' in vhost '{args.vhost}'")
    print(f"deleted {args.kind} '{args.name}'")
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    client = _client(args)
    path = "/api/definitions" + (f"/{_vhost(args.vhost)}" if args.only_vhost else "")
    data = client.request("GET", path)
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    summary = _summary(data)
    if args.file == "-":
        sys.stdout.write(text)
    else:
        try:
            with open(args.file, "w", encoding="utf-8") as out:
                out.write(text)
        except OSError as error:
            raise CtlError(f"cannot write {args.file}: {error.strerror or error}") from None
        print(f"exported {summary} to {args.file}")
    return EXIT_OK


def _import(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        if args.file == "-":
            text = sys.stdin.read()
        else:
            with open(args.file, encoding="utf-8") as source:
                text = source.read()
    except OSError as error:
        raise CtlError(f"cannot read {args.file}: {error.strerror or error}") from None
    try:
        data = json.loads(text)
    except ValueError as error:
        raise CtlError(f"{args.file} is not JSON: {error}") from None
    if not isinstance(data, dict):
        raise CtlError(f"{args.file} is not a definitions object")
    path = "/api/definitions" + (f"/{_vhost(args.vhost)}" if args.only_vhost else "")
    client.request("POST", path, data)
    print(f"imported {_summary(data)} from {args.file}")
    return EXIT_OK


def _summary(data: dict[str, Any]) -> str:
    return ", ".join(_plural(len(data.get(key) or []), key[:-1]) for key in ("exchanges", "queues", "bindings"))


def _plural(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


# ------------------------------------------------------------------ tables
def _rate(item: dict[str, Any], field: str) -> str:
    details = (item.get("message_stats") or {}).get(f"{field}_details") or {}
    rate = details.get("rate")
    return "" if rate is None else f"{rate:.1f}"


def _flags(item: dict[str, Any], pairs: Sequence[tuple[str, str]]) -> str:
    return " ".join(short for key, short in pairs if item.get(key))


_ARGUMENT_ABBREVIATIONS = {
    "x-message-ttl": "TTL", "x-expires": "Exp", "x-max-length": "Lim", "x-max-length-bytes": "Lim B",
    "x-overflow": "Ovfl", "x-dead-letter-exchange": "DLX", "x-dead-letter-routing-key": "DLK",
    "x-max-priority": "Pri", "x-single-active-consumer": "SAC", "x-delivery-limit": "DelLim",
    "x-queue-mode": "Mode", "alternate-exchange": "AE",
}


def _arguments(item: dict[str, Any]) -> str:
    arguments = item.get("arguments") or {}
    return " ".join(_ARGUMENT_ABBREVIATIONS.get(k, k) for k in arguments if k != "x-queue-type")


@dataclass(frozen=True, slots=True)
class Listing:
    """A titled table of text cells, drawn for a terminal or written plain."""

    title: str
    columns: Sequence[tuple[str, bool]]  # (heading, numeric)
    rows: list[list[str]]

    def plain(self) -> str:
        """A heading line and one line per row, tab-separated, nothing cut."""
        lines = ["\t".join(name for name, _ in self.columns)]
        lines += ["\t".join(cell.replace("\t", " ").replace("\n", " ") for cell in row) for row in self.rows]
        return "\n".join(lines) + "\n"

    def table(self, width: int) -> Any:
        """A rich Table `width` columns wide at most: one line per row. Numbers and
        headings stay whole; when the text does not fit, the widest text column
        gives up room first and its long cells end in '…'."""
        from rich.table import Table

        widths = self._fit(width)
        table = Table(title=self.title, title_justify="left", header_style="bold")
        for (name, numeric), cells in zip(self.columns, widths, strict=True):
            table.add_column(name, justify="right" if numeric else "left", no_wrap=True,
                             overflow="ellipsis", width=cells)
        for row in self.rows:
            table.add_row(*row)
        return table

    def _fit(self, width: int) -> list[int]:
        values = [max([0, *(len(row[i]) for row in self.rows)]) for i in range(len(self.columns))]
        widths = [max(len(name), value) for (name, _), value in zip(self.columns, values, strict=True)]
        room = width - (3 * len(widths) + 1)  # "│ " before each cell, " " after, the last "│"
        # First text gives way (the name keeps 12), then, if still too wide,
        # headings over numbers; a number itself is never cut.
        for floors in (
            [w if numeric else min(w, 12 if i == 0 else 4) for i, ((_, numeric), w) in
             enumerate(zip(self.columns, widths, strict=True))],
            [max(value, 3) if numeric else min(w, 8 if i == 0 else 3) for i, ((_, numeric), w, value) in
             enumerate(zip(self.columns, widths, values, strict=True))],
        ):
            while sum(widths) > room:
                shrinkable = [i for i, w in enumerate(widths) if w > floors[i]]
                if not shrinkable:
                    break
                widths[max(shrinkable, key=lambda i: widths[i])] -= 1
        return widths


def _table(title: str, columns: Sequence[tuple[str, bool]], rows: list[list[str]]) -> Listing:
    return Listing(title, columns, rows)


def _with_vhost(columns: list[tuple[str, bool]], rows: list[list[str]], items: list[dict[str, Any]],
                all_vhosts: bool) -> tuple[list[tuple[str, bool]], list[list[str]]]:
    if not all_vhosts:
        return columns, rows
    return [("Vhost", False), *columns], [[str(i.get("vhost", "")), *row] for i, row in zip(items, rows, strict=True)]


def queues_table(items: list[dict[str, Any]], all_vhosts: bool = False) -> Listing:
    columns = [("Name", False), ("Type", False), ("Features", False), ("State", False), ("Ready", True),
               ("Unacked", True), ("Total", True), ("Consumers", True), ("In/s", True), ("Deliver/s", True),
               ("Ack/s", True)]
    rows = [[
        q["name"], q.get("type", ""),
        " ".join(filter(None, [_flags(q, (("durable", "D"), ("auto_delete", "AD"), ("exclusive", "Excl"))),
                               _arguments(q)])),
        q.get("state", ""), str(q.get("messages_ready", 0)), str(q.get("messages_unacknowledged", 0)),
        str(q.get("messages", 0)), str(q.get("consumers", 0)), _rate(q, "publish"), _rate(q, "deliver_get"),
        _rate(q, "ack"),
    ] for q in items]
    return _table(f"Queues ({len(items)})", *_with_vhost(columns, rows, items, all_vhosts))


def exchanges_table(items: list[dict[str, Any]], all_vhosts: bool = False) -> Listing:
    columns = [("Name", False), ("Type", False), ("Features", False), ("Arguments", False)]
    rows = [[
        e["name"] or "(AMQP default)", e.get("type", ""),
        _flags(e, (("durable", "D"), ("auto_delete", "AD"), ("internal", "I"))),
        json.dumps(e.get("arguments") or {}, ensure_ascii=False) if e.get("arguments") else "",
    ] for e in items]
    return _table(f"Exchanges ({len(items)})", *_with_vhost(columns, rows, items, all_vhosts))


def bindings_table(items: list[dict[str, Any]], all_vhosts: bool = False) -> Listing:
    columns = [("Source", False), ("Destination", False), ("Kind", False), ("Routing key", False),
               ("Arguments", False)]
    rows = [[
        b["source"] or "(AMQP default)", b["destination"], b.get("destination_type", ""), b.get("routing_key", ""),
        json.dumps(b.get("arguments") or {}, ensure_ascii=False) if b.get("arguments") else "",
    ] for b in items]
    return _table(f"Bindings ({len(items)})", *_with_vhost(columns, rows, items, all_vhosts))


def _client_name(connection: dict[str, Any]) -> str:
    properties = connection.get("client_properties") or {}
    named = connection.get("user_provided_name") or properties.get("connection_name")
    product = " ".join(str(properties.get(k, "")) for k in ("product", "version")).strip()
    return str(named or product)


def _since(millis: Any) -> str:
    if not isinstance(millis, (int, float)):
        return ""
    moment = datetime.datetime.fromtimestamp(millis / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def connections_table(items: list[dict[str, Any]], all_vhosts: bool = False) -> Listing:
    columns = [("Name", False), ("User", False), ("Vhost", False), ("Client", False), ("State", False),
               ("Channels", True), ("Heartbeat", True), ("Connected at (UTC)", False)]
    rows = [[
        c["name"], c.get("user", ""), str(c.get("vhost", "")), _client_name(c), c.get("state", ""),
        str(c.get("channels", 0)), str(c.get("timeout", "")), _since(c.get("connected_at")),
    ] for c in items]
    return _table(f"Connections ({len(items)})", columns, rows)


def channels_table(items: list[dict[str, Any]], all_vhosts: bool = False) -> Listing:
    columns = [("Name", False), ("User", False), ("Mode", False), ("Consumers", True), ("Unacked", True),
               ("Prefetch", True), ("Publish/s", True), ("Deliver/s", True)]
    rows = [[
        c["name"], c.get("user", ""), _flags(c, (("confirm", "C"), ("transactional", "T"))),
        str(c.get("consumer_count", 0)), str(c.get("messages_unacknowledged", 0)),
        str(c.get("prefetch_count", 0) or c.get("global_prefetch_count", 0)),
        _rate(c, "publish"), _rate(c, "deliver_get"),
    ] for c in items]
    return _table(f"Channels ({len(items)})", columns, rows)


def consumers_table(items: list[dict[str, Any]], all_vhosts: bool = False) -> Listing:
    columns = [("Queue", False), ("Consumer tag", False), ("Channel", False), ("Ack", False),
               ("Exclusive", False), ("Prefetch", True), ("Status", False)]
    rows = [[
        (c.get("queue") or {}).get("name", ""), c.get("consumer_tag", ""),
        (c.get("channel_details") or {}).get("name", ""), "manual" if c.get("ack_required") else "auto",
        "yes" if c.get("exclusive") else "", str(c.get("prefetch_count", 0)), c.get("activity_status", ""),
    ] for c in items]
    return _table(f"Consumers ({len(items)})", *_with_vhost(columns, rows,
                                                               [c.get("queue") or {} for c in items], all_vhosts))


TABLES: dict[str, Callable[[list[dict[str, Any]], bool], Listing]] = {
    "queues": queues_table, "exchanges": exchanges_table, "bindings": bindings_table,
    "connections": connections_table, "channels": channels_table, "consumers": consumers_table,
}
