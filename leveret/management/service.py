"""The management server: the HTTP listener on the broker loop, its routing to the
API, the web UI's files and login, /metrics, and the sampling timer."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from leveret.management import auth
from leveret.management.api import Api
from leveret.management.core import SAMPLE_INTERVAL, STORM_RATE, Management
from leveret.management.http import HttpServer, Request, Response
from leveret.management.routes import NOT_FOUND, json_response
from leveret.management.session import (
    Sessions,
    clearing_cookie,
    cookie_header,
    csrf_refusal,
    session_id,
)
from leveret.management.static import PUBLIC_FILES, static_file

if TYPE_CHECKING:
    from leveret.server.shell import Server, ServerThread

__all__ = ["Management", "ManagementServer", "attach", "detach"]

log = logging.getLogger("leveret.management")


class ManagementServer:
    def __init__(self, server: Server, *, sample_interval: float = SAMPLE_INTERVAL,
                 storm_rate: float = STORM_RATE) -> None:
        self.server = server
        self.management = Management(server.broker, server, sample_interval=sample_interval,
                                     storm_rate=storm_rate)
        self.sessions = Sessions()
        self.api = Api(self.management, sessions=self.sessions)
        self.http = HttpServer(self.handle)
        self._registries: dict[bool, Any] = {}  # per_object -> prometheus registry
        self._timer: asyncio.TimerHandle | None = None
        self.broker_thread: ServerThread | None = None  # set by `attach`

    @property
    def host(self) -> str:
        return self.http.host

    @property
    def port(self) -> int:
        return self.http.port

    @property
    def url(self) -> str:
        """http://HOST:PORT, where /api and /metrics are."""
        return self.http.url

    async def start(self, host: str = "127.0.0.1", port: int = 15672, *, listen: bool = True) -> tuple[str, int]:
        """Start sampling and (unless `listen` is False) the HTTP listener; port 0 picks a free one."""
        m = self.management
        if listen:
            bound = await self.http.start(host, port)
            m.listeners = [("amqp", self.server.host, self.server.port), ("http", bound[0], bound[1])]
        else:
            bound = ("", 0)
            m.listeners = [("amqp", self.server.host, self.server.port)]
        m.sample()
        self._schedule()
        return bound

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self.http.stop()

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.management.sample_interval, self._tick)

    def _tick(self) -> None:
        try:
            self.management.sample()
        except Exception:  # statistics must never take the broker down
            log.exception("internal error while sampling statistics")
        self._schedule()

    # ------------------------------------------------------------ routing
    def handle(self, request: Request) -> Response:
        path = request.path
        if path in ("/metrics", "/metrics/", "/metrics/per-object"):
            return self.metrics(request, per_object=path == "/metrics/per-object")
        if path == "/api" or path.startswith("/api/"):
            return self.api.handle(request)
        if path in ("/login", "/logout", "/session"):
            return self.session_endpoint(request, path)
        if request.method in ("GET", "HEAD"):
            name = "index.html" if path == "/" else path.lstrip("/")
            found = static_file(name)
            if found is not None:
                if name in PUBLIC_FILES or self.sessions.find(request) is not None:
                    return found
                if name.endswith(".html"):  # a page: to the login form, then back
                    return Response(303, headers=(("location", "/login.html"),))
                return json_response(401, {"error": "not_authorized", "reason": "Login required"})
        return json_response(404, NOT_FOUND)

    def session_endpoint(self, request: Request, path: str) -> Response:
        """The web UI's login form (POST /login), logout, and who is logged in (GET /session)."""
        if path == "/session":
            if request.method not in ("GET", "HEAD"):
                return Response(405, headers=(("allow", "GET, HEAD"),))
            session = self.sessions.find(request)
            if session is None:
                return json_response(401, {"error": "not_authorized", "reason": "Login required"})
            return json_response(200, {"user": session.user, "csrf": session.csrf})
        if request.method != "POST":
            return Response(405, headers=(("allow", "POST"),))
        if path == "/logout":
            found = self.sessions.find(request)
            if found is not None and csrf_refusal(request, found) is None:
                self.sessions.close(session_id(request))
            return Response(204, headers=(clearing_cookie(),))
        form = login_form(request)
        if form is None:
            return json_response(400, {"error": "bad_request", "reason": "username and password expected"})
        origin = request.header("origin")
        if origin is not None and urlsplit(origin).netloc != (request.header("host") or ""):
            return json_response(403, {"error": "forbidden", "reason": "cross-site request refused"})
        user = auth.login(self.management.broker, form[0], form[1], request.peer_host)
        if isinstance(user, auth.Refused):
            return json_response(401, {"error": user.error, "reason": user.reason})
        sid, session = self.sessions.open(user.name)
        return json_response(200, {"user": user.name, "tags": list(user.tags), "csrf": session.csrf}) \
            .with_headers(cookie_header(sid))

    def metrics(self, request: Request, *, per_object: bool = False) -> Response:
        """/metrics (queue metrics aggregated) or /metrics/per-object (per queue)."""
        if request.method not in ("GET", "HEAD"):
            return Response(405, headers=(("allow", "GET, HEAD"),))
        from leveret.management import metrics  # prometheus-client loads on the first scrape

        registry = self._registries.get(per_object)
        if registry is None:
            registry = self._registries[per_object] = metrics.registry_for(self.management, per_object=per_object)
        body, content_type = metrics.render(registry, request.header("accept"))
        return Response(200, body, content_type)


def login_form(request: Request) -> tuple[str, str] | None:
    """(username, password) from a JSON or urlencoded login body."""
    try:
        if (request.header("content-type") or "").startswith("application/json"):
            data = json.loads(request.body)
        else:
            data = {k: v[0] for k, v in parse_qs(request.body.decode("utf-8")).items()}
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    name, password = data.get("username"), data.get("password")
    if not isinstance(name, str) or not isinstance(password, str):
        return None
    return name, password


def attach(thread: ServerThread, host: str = "127.0.0.1", port: int = 0, *,
           sample_interval: float = SAMPLE_INTERVAL, timeout: float = 10.0) -> ManagementServer:
    """Start a ManagementServer on a running ServerThread's loop; stop it with `detach`."""
    management = ManagementServer(thread.server, sample_interval=sample_interval)
    management.broker_thread = thread
    loop = thread.call(lambda _: asyncio.get_running_loop())
    asyncio.run_coroutine_threadsafe(management.start(host, port), loop).result(timeout)
    return management


def detach(thread: ServerThread, management: ManagementServer, timeout: float = 10.0) -> None:
    loop = thread.call(lambda _: asyncio.get_running_loop())
    asyncio.run_coroutine_threadsafe(management.stop(), loop).result(timeout)
