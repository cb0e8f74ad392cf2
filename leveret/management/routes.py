"""The management API's route table: one row per endpoint, and what a handler gets.

A row is `Route(method, "queues/{vhost}/{name}", handler, tag)`: the path
after /api/, its `{...}` segments percent-decoded and passed to the handler in
order after the `Call`. `tag` is the user tag RabbitMQ asks for that endpoint
(management, monitoring, policymaker, administrator), enforced by `refusal`
with RabbitMQ's 401 bodies; a route with a `{vhost}` also needs the user to
have permissions in that vhost (administrators may read any).

A handler returns a JSON-able value (200; lists get RabbitMQ's query
parameters, see `listing`), or a `Response`, or raises `HttpError`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from leveret.broker.vhost import VirtualHost
from leveret.management.auth import User
from leveret.management.core import Management
from leveret.management.http import Request, Response

JSON = "application/json"
NOT_FOUND = {"error": "Object Not Found", "reason": "Not Found"}
TAGS = ("management", "monitoring", "policymaker", "administrator")
# route tag -> the user tags that satisfy it, and RabbitMQ's reason when none does
_SATISFIED_BY = {
    "management": (set(TAGS), "Not management user"),
    "monitoring": ({"monitoring", "administrator"}, "Not monitor user"),
    "policymaker": ({"policymaker", "administrator"}, "User not authorised to access object"),
    "administrator": ({"administrator"}, "Not administrator user"),
}
NOT_AUTHORISED_VHOST = "User not authorised to access virtual host"


def refusal(tag: str, user_tags: Iterable[str]) -> str | None:
    """RabbitMQ's 401 reason when a user with `user_tags` may not call a `tag` route."""
    tags = set(user_tags)
    for needed in ("management", tag):  # RabbitMQ asks for a management user first
        wanted, reason = _SATISFIED_BY[needed]
        if not wanted & tags:
            return reason
    return None


def sees_all_vhosts(user_tags: Iterable[str]) -> bool:
    return bool({"administrator", "monitoring"} & set(user_tags))


class HttpError(Exception):
    def __init__(self, status: int, error: str, reason: Any) -> None:
        super().__init__(reason)
        self.status = status
        self.error = error
        self.reason = reason


def not_found() -> HttpError:
    return HttpError(404, NOT_FOUND["error"], NOT_FOUND["reason"])


def bad_request(reason: str) -> HttpError:
    return HttpError(400, "bad_request", reason)


def json_response(status: int, data: Any) -> Response:
    return Response(status, json.dumps(data, ensure_ascii=False).encode("utf-8"), JSON)


def flag(body: dict[str, Any], key: str, default: bool) -> bool:
    """A boolean from a JSON body: true/false, or the strings rabbitmqadmin sends ("false")."""
    value = body.get(key, default)
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def truthy(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1", "yes")


@dataclass(frozen=True, slots=True)
class Call:
    """One request to one handler: the broker's statistics, the request, who asks."""

    m: Management
    request: Request
    user: User

    @property
    def query(self) -> dict[str, str]:
        return self.request.query

    def vhosts(self) -> list[VirtualHost]:
        """The vhosts this user may see: all for administrators and monitoring users,
        else those where the user has permissions (as RabbitMQ filters its lists)."""
        vhosts = self.m.vhosts()
        if sees_all_vhosts(self.user.tags):
            return vhosts
        permissions = self.m.broker.access.permissions
        return [v for v in vhosts if (self.user.name, v.name) in permissions]

    def vhost(self, name: str) -> VirtualHost:
        vhost = self.m.broker.vhosts.get(name)
        if vhost is None:
            raise not_found()
        return vhost

    def as_client(self, vhost: str, permission: str | None = None, name: str = "") -> VirtualHost:
        """The vhost, for a handler that acts in it as an AMQP client would (RabbitMQ's
        management plugin opens a direct connection): 401 "Access refused." for a
        user without permissions there, administrators included, or (given a
        `permission`) without that permission on `name`."""
        found = self.vhost(vhost)
        if not self.may(vhost, permission, name):
            raise HttpError(401, "not_authorised", "Access refused.")
        return found

    def may(self, vhost: str, permission: str | None = None, name: str = "") -> bool:
        permissions = self.m.broker.access.permissions.get((self.user.name, vhost))
        if permissions is None:
            return False
        return permission is None or permissions.allows(permission, name)

    def run(self, fn: Callable[[], Any]) -> Any:
        """Run a change on the broker; the server re-checks its timers after it."""
        server = self.m.server
        if server is None:
            return fn()
        return server.call(lambda _: fn())

    def body(self) -> dict[str, Any]:
        if not self.request.body.strip():
            return {}
        try:
            data = json.loads(self.request.body)
        except (ValueError, UnicodeDecodeError):
            raise bad_request("not_json") from None
        if not isinstance(data, dict):
            raise bad_request("not_json")
        return data

    def required(self, body: dict[str, Any], *keys: str) -> None:
        """RabbitMQ's 400 for keys a body must have: [{key_missing,a},{key_missing,b}]."""
        missing = [key for key in keys if key not in body]
        if missing:
            raise bad_request("[" + ",".join(f"{{key_missing,{key}}}" for key in missing) + "]")


Handler = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str  # after /api/, e.g. "queues/{vhost}/{name}"
    handler: Handler
    tag: str = "management"

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.split("/")) if self.path else ()

    def match(self, segments: Sequence[str]) -> list[str] | None:
        """The `{...}` values when `segments` fit this path, else None."""
        mine = self.segments
        if len(mine) != len(segments):
            return None
        args = []
        for pattern, segment in zip(mine, segments, strict=True):
            if pattern.startswith("{"):
                args.append(segment)
            elif pattern != segment:
                return None
        return args

    @property
    def vhost_index(self) -> int | None:
        """Which argument names a vhost (what a permission check needs)."""
        names = [s for s in self.segments if s.startswith("{")]
        return names.index("{vhost}") if "{vhost}" in names else None


@dataclass(frozen=True, slots=True)
class Match:
    route: Route | None  # None: the path is known, the method is not
    args: list[str]
    allowed: tuple[str, ...] = ()


class Router:
    """Finds a request's route among the rows with its first segment and length."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = tuple(routes)
        for route in self.routes:
            assert route.tag in TAGS, route
        self._by_head: dict[tuple[str, int], list[Route]] = {}
        for route in self.routes:
            segments = route.segments
            self._by_head.setdefault((segments[0] if segments else "", len(segments)), []).append(route)

    @staticmethod
    def segments(path: str) -> list[str]:
        """/api/queues/%2F/q -> ["queues", "/", "q"]: split first, then decode each."""
        raw = path.split("/")
        if raw[-1:] == [""]:
            raw = raw[:-1]
        return [unquote(part) for part in raw[2:]]  # after "", "api"

    def find(self, method: str, segments: Sequence[str]) -> Match | None:
        method = "GET" if method == "HEAD" else method
        allowed: list[str] = []
        head = (segments[0] if segments else "", len(segments))
        for route in self._by_head.get(head, ()):
            args = route.match(segments)
            if args is None:
                continue
            if route.method == method:
                return Match(route, args)
            allowed.append(route.method)
        if allowed:
            return Match(None, [], tuple(sorted(set(allowed))))
        return None
