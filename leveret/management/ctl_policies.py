"""`leveret ctl` verbs for policies, with rabbitmqctl's names, arguments and banners:

    leveret ctl set_policy [--vhost V] [--priority N] [--apply-to A] NAME PATTERN DEFINITION
    leveret ctl clear_policy [--vhost V] NAME
    leveret ctl list_policies [--vhost V] [--no-table-headers]
    leveret ctl set_operator_policy / clear_operator_policy / list_operator_policies (likewise)

They go through the management API (/api/policies, /api/operator-policies), so
they work against RabbitMQ's management plugin too. A refusal prints the
broker's reason (RabbitMQ's "Validation failed" text) and exits 1.
"""

from __future__ import annotations

import argparse
import json
from typing import Any
from urllib.parse import quote

from leveret.management.ctl_client import EXIT_OK, Client, CtlError, run

_KINDS = {False: ("policy", "policies"), True: ("operator policy", "operator-policies")}


def add_verbs(actions: Any, common: argparse.ArgumentParser) -> None:
    for operator in (False, True):
        prefix = "operator_" if operator else ""
        noun, _ = _KINDS[operator]
        setter = actions.add_parser(f"set_{prefix}policy", parents=[common], help=f"set a {noun}",
                                    description=f"Set a {noun}, as rabbitmqctl set_{prefix}policy does.")
        setter.add_argument("name", metavar="NAME")
        setter.add_argument("pattern", metavar="PATTERN", help="regular expression matched against names")
        setter.add_argument("definition", metavar="DEFINITION", help='JSON object, e.g. \'{"max-length":10}\'')
        setter.add_argument("--priority", type=int, default=0, help="policy priority (default: 0)")
        setter.add_argument("--apply-to", default="all", help="queues, exchanges or all (default: all)")
        setter.set_defaults(func=lambda args, op=operator: run(lambda a: set_policy(a, op), args))
        clearer = actions.add_parser(f"clear_{prefix}policy", parents=[common], help=f"clear a {noun}")
        clearer.add_argument("name", metavar="NAME")
        clearer.set_defaults(func=lambda args, op=operator: run(lambda a: clear_policy(a, op), args))
        lister = actions.add_parser(f"list_{prefix}policies", parents=[common], help=f"list {noun} settings")
        lister.add_argument("--no-table-headers", action="store_true", help="leave out the header line")
        lister.set_defaults(func=lambda args, op=operator: run(lambda a: list_policies(a, op), args))


def _path(operator: bool, vhost: str, name: str | None = None) -> str:
    path = f"/api/{_KINDS[operator][1]}/{quote(vhost, safe='')}"
    return path if name is None else f"{path}/{quote(name, safe='')}"


def _client(args: argparse.Namespace) -> Client:
    return Client(args.url, args.user, args.password)


def set_policy(args: argparse.Namespace, operator: bool) -> int:
    override = "operator policy override" if operator else "policy"
    print(f'Setting {override} "{args.name}" for pattern "{args.pattern}" to "{args.definition}" '
          f'with priority "{args.priority}" for vhost "{args.vhost}" ...')
    try:
        definition = json.loads(args.definition)
    except ValueError as error:
        raise CtlError(f"JSON decoding error. Reason: {error}") from None
    body = {"pattern": args.pattern, "definition": definition, "priority": args.priority,
            "apply-to": args.apply_to}
    _client(args).request("PUT", _path(operator, args.vhost, args.name), body,
                          missing=f"virtual host '{args.vhost}' does not exist")
    return EXIT_OK


def clear_policy(args: argparse.Namespace, operator: bool) -> int:
    noun = "operator policy" if operator else "policy"
    print(f'Clearing {noun} "{args.name}" on vhost "{args.vhost}" ...')
    _client(args).request("DELETE", _path(operator, args.vhost, args.name), missing="Parameter does not exist")
    return EXIT_OK


def list_policies(args: argparse.Namespace, operator: bool) -> int:
    what = "operator policy overrides" if operator else "policies"
    print(f'Listing {what} for vhost "{args.vhost}" ...')
    items: list[dict[str, Any]] = _client(args).request(
        "GET", _path(operator, args.vhost), missing=f"virtual host '{args.vhost}' does not exist") or []
    columns = ("vhost", "name", "pattern", "apply-to", "definition", "priority")
    if items and not args.no_table_headers:
        print("\t".join(columns))
    for item in items:
        print("\t".join(_cell(item.get(column)) for column in columns))
    return EXIT_OK


def _cell(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)
