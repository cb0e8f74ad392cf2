"""Who may use the management API: HTTP basic auth against the broker's users.

`authenticate_request` is the one entry the API calls: it reads the request's
credentials (`Authorization: Basic`, or the web UI's session cookie from its
login form, see `session`) and `authenticate` decides, so
that users, tags and per-vhost permissions live here, not in the HTTP layer. Today
every user of `BrokerSettings.users` is an administrator, and the users in
`loopback_users` (guest) may only log in from the loopback interface, as in
RabbitMQ (`loopback_users` applies to the management plugin too).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from leveret.broker.broker import Broker
from leveret.management.http import Request
from leveret.management.session import Sessions, csrf_refusal


@dataclass(frozen=True, slots=True)
class User:
    name: str
    tags: tuple[str, ...] = ("administrator",)


@dataclass(frozen=True, slots=True)
class Refused:
    """Why a request was refused: 401 with RabbitMQ's error and reason."""

    reason: str
    error: str = "not_authorized"
    status: int = 401


def _is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith(("127.", "::ffff:127."))


def basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """(user, password) from an `Authorization: Basic ...` header, None if absent or malformed."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def authenticate(broker: Broker, authorization: str | None, peer_host: str,
                 *, method: str = "GET", vhost: str | None = None) -> User | Refused | None:
    """The user making a request, a refusal, or None when no credentials came.

    `method` and `vhost` say what the request wants to do, for the
    permission checks a richer user model will make here.
    """
    credentials = basic_credentials(authorization)
    if credentials is None:
        return None
    name, password = credentials
    # The same users and password hashes as AMQP logins (a definitions file may replace guest).
    user = broker.access.authenticate(name, password)
    if user is None:
        return Refused("Login failed")
    if name in broker.settings.loopback_users and not _is_loopback(peer_host):
        return Refused("User can only log in via localhost")
    return User(name, user.tags)


MANAGEMENT_TAGS = ("management", "monitoring", "policymaker", "administrator")


def login(broker: Broker, name: str, password: str, peer_host: str) -> User | Refused:
    """The web UI's login form: as basic auth, and only for users with a management tag."""
    user = broker.access.authenticate(name, password)
    if user is None:
        return Refused("Login failed")
    if name in broker.settings.loopback_users and not _is_loopback(peer_host):
        return Refused("User can only log in via localhost")
    if not set(user.tags) & set(MANAGEMENT_TAGS):
        return Refused("Not management user")
    return User(name, user.tags)


def authenticate_request(broker: Broker, request: Request, *, vhost: str | None = None,
                         sessions: Sessions | None = None) -> User | Refused | None:
    """Who sent `request` (see `authenticate`); without basic credentials, the
    session its cookie names, whose state-changing requests must pass the CSRF check."""
    authorization = request.header("authorization")
    if authorization is None and sessions is not None:
        session = sessions.find(request)
        if session is not None:
            known = broker.access.users.get(session.user)
            if known is None:
                return Refused("Login failed")
            why = csrf_refusal(request, session)
            if why is not None:
                return Refused(why, "forbidden", 403)
            return User(known.name, known.tags)
    return authenticate(broker, authorization, request.peer_host,
                        method=request.method, vhost=vhost)
