"""`leveret ctl` verbs for runtime administration, with rabbitmqctl's names and arguments.

    leveret ctl add_user USER PASSWORD          delete_user USER      list_users
    leveret ctl change_password USER PASSWORD   clear_password USER
    leveret ctl set_user_tags USER [TAG ...]
    leveret ctl add_vhost VHOST   delete_vhost VHOST   list_vhosts
    leveret ctl set_permissions [--vhost V] USER CONF WRITE READ
    leveret ctl clear_permissions [--vhost V] USER
    leveret ctl list_permissions [--vhost V]    list_user_permissions USER
    leveret ctl set_topic_permissions [--vhost V] USER EXCHANGE WRITE READ
    leveret ctl clear_topic_permissions [--vhost V] USER
    leveret ctl list_topic_permissions [--vhost V]
    leveret ctl set_vhost_limits [--vhost V] JSON   clear_vhost_limits [--vhost V]   list_vhost_limits
    leveret ctl set_user_limits USER JSON   clear_user_limits USER NAME|all   list_user_limits
    leveret ctl set_parameter [--vhost V] COMPONENT NAME JSON   clear_parameter ...   list_parameters
    leveret ctl set_global_parameter NAME JSON   clear_global_parameter NAME   list_global_parameters
    leveret ctl set_cluster_name NAME

rabbitmqctl's `-p VHOST` is `--vhost VHOST` here (`-p` is the API password).
They go through the management HTTP API, so they work against RabbitMQ too.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from leveret.management.ctl_client import EXIT_OK, Client, CtlError


def _q(name: str) -> str:
    return quote(name, safe="")


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as error:
        raise CtlError(f"not JSON: {text!r} ({error})") from None


def _user(client: Client, name: str) -> dict[str, Any]:
    found: dict[str, Any] = client.request("GET", f"/api/users/{_q(name)}", missing=f'User "{name}" does not exist')
    return found


def _rows(items: list[dict[str, Any]], *fields: str) -> str:
    lines = ["\t".join(fields)]
    for item in items:
        values = [item.get(f) for f in fields]
        lines.append("\t".join(",".join(v) if isinstance(v, list) else
                               json.dumps(v) if isinstance(v, dict) else str(v) for v in values))
    return "\n".join(lines)


# ------------------------------------------------------------------ users
def add_user(c: Client, a: argparse.Namespace) -> str:
    try:
        _user(c, a.username)
    except CtlError:
        c.request("PUT", f"/api/users/{_q(a.username)}", {"password": a.new_password, "tags": ""})
        return f'Adding user "{a.username}" ...'
    raise CtlError(f'User "{a.username}" already exists')


def delete_user(c: Client, a: argparse.Namespace) -> str:
    c.request("DELETE", f"/api/users/{_q(a.username)}", missing=f'User "{a.username}" does not exist')
    return f'Deleting user "{a.username}" ...'


def change_password(c: Client, a: argparse.Namespace) -> str:
    tags = _user(c, a.username)["tags"]
    c.request("PUT", f"/api/users/{_q(a.username)}", {"password": a.new_password, "tags": tags})
    return f'Changing password for user "{a.username}" ...'


def clear_password(c: Client, a: argparse.Namespace) -> str:
    tags = _user(c, a.username)["tags"]
    c.request("PUT", f"/api/users/{_q(a.username)}", {"password_hash": "", "tags": tags})
    return f'Clearing password for user "{a.username}" ...'


def set_user_tags(c: Client, a: argparse.Namespace) -> str:
    user = _user(c, a.username)
    c.request("PUT", f"/api/users/{_q(a.username)}", {"password_hash": user["password_hash"],
                                                  "hashing_algorithm": user["hashing_algorithm"], "tags": a.tags})
    return f'Setting tags for user "{a.username}" to [{", ".join(a.tags)}] ...'


def list_users(c: Client, a: argparse.Namespace) -> str:
    users = c.request("GET", "/api/users")
    return "Listing users ...\n" + _rows([{"user": u["name"], "tags": u["tags"]} for u in users], "user", "tags")


# ----------------------------------------------------------------- vhosts
def add_vhost(c: Client, a: argparse.Namespace) -> str:
    c.request("PUT", f"/api/vhosts/{_q(a.name)}", {})
    return f'Adding vhost "{a.name}" ...'


def delete_vhost(c: Client, a: argparse.Namespace) -> str:
    c.request("DELETE", f"/api/vhosts/{_q(a.name)}", missing=f'Virtual host "{a.name}" does not exist')
    return f'Deleting vhost "{a.name}" ...'


def list_vhosts(c: Client, a: argparse.Namespace) -> str:
    return "Listing vhosts ...\n" + _rows(c.request("GET", "/api/vhosts"), "name")


# ------------------------------------------------------------ permissions
def set_permissions(c: Client, a: argparse.Namespace) -> str:
    c.request("PUT", f"/api/permissions/{_q(a.vhost)}/{_q(a.username)}",
              {"configure": a.conf, "write": a.write, "read": a.read})
    return f'Setting permissions for user "{a.username}" in vhost "{a.vhost}" ...'


def clear_permissions(c: Client, a: argparse.Namespace) -> str:
    c.request("DELETE", f"/api/permissions/{_q(a.vhost)}/{_q(a.username)}",
              missing=f'User "{a.username}" has no permissions in vhost "{a.vhost}"')
    return f'Clearing permissions for user "{a.username}" in vhost "{a.vhost}" ...'


def list_permissions(c: Client, a: argparse.Namespace) -> str:
    items = c.request("GET", f"/api/vhosts/{_q(a.vhost)}/permissions", missing=f'no vhost "{a.vhost}"')
    return f'Listing permissions for vhost "{a.vhost}" ...\n' + _rows(items, "user", "configure", "write", "read")


def list_user_permissions(c: Client, a: argparse.Namespace) -> str:
    items = c.request("GET", f"/api/users/{_q(a.username)}/permissions", missing=f'User "{a.username}" does not exist')
    return f'Listing permissions for user "{a.username}" ...\n' + _rows(items, "vhost", "configure", "write", "read")


def set_topic_permissions(c: Client, a: argparse.Namespace) -> str:
    c.request("PUT", f"/api/topic-permissions/{_q(a.vhost)}/{_q(a.username)}",
              {"exchange": a.exchange, "write": a.write, "read": a.read})
    return f'Setting topic permissions on "{a.exchange}" for user "{a.username}" in vhost "{a.vhost}" ...'


def clear_topic_permissions(c: Client, a: argparse.Namespace) -> str:
    c.request("DELETE", f"/api/topic-permissions/{_q(a.vhost)}/{_q(a.username)}",
              missing=f'User "{a.username}" has no topic permissions in vhost "{a.vhost}"')
    return f'Clearing topic permissions for user "{a.username}" in vhost "{a.vhost}" ...'


def list_topic_permissions(c: Client, a: argparse.Namespace) -> str:
    items = c.request("GET", f"/api/vhosts/{_q(a.vhost)}/topic-permissions", missing=f'no vhost "{a.vhost}"')
    return (f'Listing topic permissions for vhost "{a.vhost}" ...\n'
            + _rows(items, "user", "exchange", "write", "read"))


# ----------------------------------------------------------------- limits
def set_vhost_limits(c: Client, a: argparse.Namespace) -> str:
    c.request("PUT", f"/api/parameters/vhost-limits/{_q(a.vhost)}/limits", {"value": _json(a.definition)})
    return f'Setting vhost limits to "{a.definition}" for vhost "{a.vhost}" ...'


def clear_vhost_limits(c: Client, a: argparse.Namespace) -> str:
    c.request("DELETE", f"/api/parameters/vhost-limits/{_q(a.vhost)}/limits", missing="no limits to clear")
    return f'Clearing vhost "{a.vhost}" limits ...'


def list_vhost_limits(c: Client, a: argparse.Namespace) -> str:
    items = c.request("GET", f"/api/vhost-limits/{_q(a.vhost)}", missing=f'no vhost "{a.vhost}"')
    return f'Listing limits for vhost "{a.vhost}" ...\n' + _rows(items, "vhost", "value")


def set_user_limits(c: Client, a: argparse.Namespace) -> str:
    limits = _json(a.definition)
    if not isinstance(limits, dict):
        raise CtlError("limits must be a JSON object")
    for name, value in limits.items():
        c.request("PUT", f"/api/user-limits/{_q(a.username)}/{_q(name)}", {"value": value})
    return f'Setting user limits to "{a.definition}" for user "{a.username}" ...'


def clear_user_limits(c: Client, a: argparse.Namespace) -> str:
    names = list(_user(c, a.username)["limits"]) if a.name == "all" else [a.name]
    for name in names:
        c.request("DELETE", f"/api/user-limits/{_q(a.username)}/{_q(name)}")
    return f'Clearing "{a.name}" limit for user "{a.username}" ...'


def list_user_limits(c: Client, a: argparse.Namespace) -> str:
    return "Listing user limits ...\n" + _rows(c.request("GET", "/api/user-limits"), "user", "value")


# ------------------------------------------------------------- parameters
def set_parameter(c: Client, a: argparse.Namespace) -> str:
    c.request("PUT", f"/api/parameters/{_q(a.component)}/{_q(a.vhost)}/{_q(a.name)}",
              {"value": _json(a.value), "component": a.component, "vhost": a.vhost, "name": a.name})
    return f'Setting runtime parameter "{a.name}" for component "{a.component}" to "{a.value}" in vhost "{a.vhost}" ...'


def clear_parameter(c: Client, a: argparse.Namespace) -> str:
    c.request("DELETE", f"/api/parameters/{_q(a.component)}/{_q(a.vhost)}/{_q(a.name)}",
              missing='Parameter does not exist')
    return f'Clearing runtime parameter "{a.name}" for component "{a.component}" on vhost "{a.vhost}" ...'


def list_parameters(c: Client, a: argparse.Namespace) -> str:
    items = [p for p in c.request("GET", "/api/parameters") if p.get("vhost") == a.vhost]
    return f'Listing runtime parameters for vhost "{a.vhost}" ...\n' + _rows(items, "component", "name", "value")


def set_global_parameter(c: Client, a: argparse.Namespace) -> str:
    c.request("PUT", f"/api/global-parameters/{_q(a.name)}", {"name": a.name, "value": _json(a.value)})
    return f'Setting global runtime parameter "{a.name}" to "{a.value}" ...'


def clear_global_parameter(c: Client, a: argparse.Namespace) -> str:
    c.request("DELETE", f"/api/global-parameters/{_q(a.name)}", missing="Parameter does not exist")
    return f'Clearing global runtime parameter "{a.name}" ...'


def list_global_parameters(c: Client, a: argparse.Namespace) -> str:
    return "Listing global runtime parameters ...\n" + _rows(c.request("GET", "/api/global-parameters"),
                                                              "name", "value")


def set_cluster_name(c: Client, a: argparse.Namespace) -> str:
    c.request("PUT", "/api/cluster-name", {"name": a.name})
    return f'Setting cluster name to {a.name} ...'


@dataclass(frozen=True, slots=True)
class Verb:
    name: str
    run: Callable[[Client, argparse.Namespace], str]
    arguments: tuple[str, ...]  # positional argument dests; a trailing '*' takes the rest
    help: str


VERBS = (
    Verb("add_user", add_user, ("username", "new_password"), "add a user (no tags, no permissions)"),
    Verb("delete_user", delete_user, ("username",), "delete a user and close its connections"),
    Verb("change_password", change_password, ("username", "new_password"), "change a user's password"),
    Verb("clear_password", clear_password, ("username",), "remove a user's password (no password login)"),
    Verb("set_user_tags", set_user_tags, ("username", "tags*"), "replace a user's tags"),
    Verb("list_users", list_users, (), "list users and their tags"),
    Verb("add_vhost", add_vhost, ("name",), "create a virtual host"),
    Verb("delete_vhost", delete_vhost, ("name",), "delete a virtual host and everything in it"),
    Verb("list_vhosts", list_vhosts, (), "list virtual hosts"),
    Verb("set_permissions", set_permissions, ("username", "conf", "write", "read"), "set a user's permissions in --vhost"),
    Verb("clear_permissions", clear_permissions, ("username",), "clear a user's permissions in --vhost"),
    Verb("list_permissions", list_permissions, (), "list the permissions in --vhost"),
    Verb("list_user_permissions", list_user_permissions, ("username",), "list a user's permissions"),
    Verb("set_topic_permissions", set_topic_permissions, ("username", "exchange", "write", "read"),
         "set a user's topic permissions on an exchange in --vhost"),
    Verb("clear_topic_permissions", clear_topic_permissions, ("username",), "clear a user's topic permissions in --vhost"),
    Verb("list_topic_permissions", list_topic_permissions, (), "list the topic permissions in --vhost"),
    Verb("set_vhost_limits", set_vhost_limits, ("definition",), "set --vhost's limits (JSON)"),
    Verb("clear_vhost_limits", clear_vhost_limits, (), "clear --vhost's limits"),
    Verb("list_vhost_limits", list_vhost_limits, (), "list --vhost's limits"),
    Verb("set_user_limits", set_user_limits, ("username", "definition"), "set a user's limits (JSON)"),
    Verb("clear_user_limits", clear_user_limits, ("username", "name"), "clear one of a user's limits, or all"),
    Verb("list_user_limits", list_user_limits, (), "list users' limits"),
    Verb("set_parameter", set_parameter, ("component", "name", "value"), "set a runtime parameter in --vhost"),
    Verb("clear_parameter", clear_parameter, ("component", "name"), "clear a runtime parameter in --vhost"),
    Verb("list_parameters", list_parameters, (), "list the runtime parameters of --vhost"),
    Verb("set_global_parameter", set_global_parameter, ("name", "value"), "set a global runtime parameter"),
    Verb("clear_global_parameter", clear_global_parameter, ("name",), "clear a global runtime parameter"),
    Verb("list_global_parameters", list_global_parameters, (), "list global runtime parameters"),
    Verb("set_cluster_name", set_cluster_name, ("name",), "set the cluster name"),
)


def add_verbs(actions: Any, common: argparse.ArgumentParser, client: Callable[[argparse.Namespace], Client],
              run: Callable[[Callable[[argparse.Namespace], int], argparse.Namespace], int]) -> None:
    for verb in VERBS:
        parser = actions.add_parser(verb.name, parents=[common], help=verb.help, description=verb.help)
        for dest in verb.arguments:
            many = dest.endswith("*")
            name = dest.rstrip("*")
            metavar = {"username": "USER", "new_password": "PASSWORD"}.get(name, name.upper())
            parser.add_argument(name, metavar=metavar, nargs="*" if many else None)

        def main(args: argparse.Namespace, verb: Verb = verb) -> int:
            def act(args: argparse.Namespace) -> int:
                print(verb.run(client(args), args))
                return EXIT_OK

            return run(act, args)

        parser.set_defaults(func=main)

