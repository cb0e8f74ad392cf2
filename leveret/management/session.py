"""The web UI's login sessions: a random id in an HttpOnly, SameSite=Strict cookie.

A session remembers who logged in and a CSRF token. The browser sends the
cookie by itself, so a state-changing request (anything but GET and HEAD)
made with the cookie must also carry the token in `x-csrf-token` (only the
UI's own script can read it, from the login answer) and, when the browser
says where it comes from (`Origin`), come from this very host. Sessions live
in memory: a restart logs everyone out, as RabbitMQ's UI does.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from urllib.parse import urlsplit

from leveret.management.http import Request

COOKIE = "leveret_session"
MAX_AGE_S = 8 * 3600
MAX_SESSIONS = 10_000
SAFE_METHODS = ("GET", "HEAD")


@dataclass(frozen=True, slots=True)
class Session:
    user: str
    csrf: str
    expires: float


class Sessions:
    def __init__(self, max_age_s: float = MAX_AGE_S) -> None:
        self.max_age_s = max_age_s
        self._by_id: dict[str, Session] = {}

    def open(self, user: str) -> tuple[str, Session]:
        self._expire()
        if len(self._by_id) >= MAX_SESSIONS:  # the oldest goes first
            self._by_id.pop(next(iter(self._by_id)))
        sid = secrets.token_urlsafe(32)
        session = Session(user, secrets.token_urlsafe(24), time.monotonic() + self.max_age_s)
        self._by_id[sid] = session
        return sid, session

    def close(self, sid: str | None) -> None:
        if sid:
            self._by_id.pop(sid, None)

    def find(self, request: Request) -> Session | None:
        session = self._by_id.get(session_id(request) or "")
        if session is None or session.expires < time.monotonic():
            return None
        return session

    def _expire(self) -> None:
        now = time.monotonic()
        for sid in [s for s, v in self._by_id.items() if v.expires < now]:
            del self._by_id[sid]


def session_id(request: Request) -> str | None:
    raw = request.header("cookie")
    if not raw:
        return None
    try:
        cookie = SimpleCookie(raw)
    except CookieError:
        return None
    morsel = cookie.get(COOKIE)
    return morsel.value if morsel is not None else None


def cookie_header(sid: str, max_age_s: float = MAX_AGE_S) -> tuple[str, str]:
    return ("set-cookie", f"{COOKIE}={sid}; Path=/; HttpOnly; SameSite=Strict; Max-Age={int(max_age_s)}")


def clearing_cookie() -> tuple[str, str]:
    return ("set-cookie", f"{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")


def csrf_refusal(request: Request, session: Session) -> str | None:
    """Why a cookie-authenticated request may not change anything, or None when it may."""
    if request.method in SAFE_METHODS:
        return None
    origin = request.header("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != (request.header("host") or ""):
        return "cross-site request refused"
    if origin == "null":
        return "cross-site request refused"
    token = request.header("x-csrf-token") or ""
    if not hmac.compare_digest(token.encode(), session.csrf.encode()):
        return "missing or wrong CSRF token"
    return None
