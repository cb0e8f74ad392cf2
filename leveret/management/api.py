"""RabbitMQ's management HTTP API, the paths dashboards and scripts use, in its JSON shapes.

The shapes were compared field by field with RabbitMQ 3.10.8's answers (its
management plugin on the reference broker). Fields that describe Erlang
internals (reductions, garbage_collection, backing_queue_status) are left
out; so are values leveret does not measure (consumer utilisation, per
exchange rates, socket byte counts) rather than being reported as zeros.

Each resource lives in a module of `leveret.management.resources` with its
`ROUTES` rows (see `routes`); adding an endpoint is one handler and one row
there. Vhosts and names in paths are percent-encoded (`%2F` for `/`).

`Api.handle` answers as RabbitMQ orders it: an unknown path is 404 and a
wrong method 405 before credentials are looked at, then 401 without valid
ones; handlers' errors become `{"error": ..., "reason": ...}` bodies.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from pamqp import exceptions

from leveret.broker.admin import AdminError
from leveret.management import auth
from leveret.management.core import Management
from leveret.management.http import Request, Response
from leveret.management.listing import shape
from leveret.management.resources import (
    bindings,
    connections,
    definitions,
    exchanges,
    health,
    messages,
    overview,
    parameters,
    policies,
    queues,
    routing,
    users,
    vhosts,
)
from leveret.management.routes import (
    JSON,
    NOT_AUTHORISED_VHOST,
    NOT_FOUND,
    Call,
    HttpError,
    Route,
    Router,
    json_response,
    refusal,
)
from leveret.management.session import Sessions

ROUTES: tuple[Route, ...] = (
    *overview.ROUTES, *vhosts.ROUTES, *queues.ROUTES, *exchanges.ROUTES, *bindings.ROUTES,
    *connections.ROUTES, *definitions.ROUTES, *users.ROUTES, *parameters.ROUTES, *health.ROUTES,
    *messages.ROUTES, *routing.ROUTES, *policies.ROUTES,
)

_CHALLENGE = (("www-authenticate", 'Basic realm="leveret management"'),)


class Api:
    """Answers /api/* requests; `handle` is the HTTP server's handler for them."""

    def __init__(self, management: Management, routes: Iterable[Route] = ROUTES,
                 sessions: Sessions | None = None) -> None:
        self.m = management
        self.router = Router(routes)
        self.sessions = sessions

    def handle(self, request: Request) -> Response:
        segments = Router.segments(request.path)
        found = self.router.find(request.method, segments)
        if found is None:
            return json_response(404, NOT_FOUND)
        if found.route is None:
            return Response(405, headers=(("allow", ", ".join(found.allowed)),))
        route, args = found.route, found.args
        vhost = args[route.vhost_index] if route.vhost_index is not None else None
        user = auth.authenticate_request(self.m.broker, request, vhost=vhost, sessions=self.sessions)
        if user is None:
            return Response(401, headers=_CHALLENGE)
        if isinstance(user, auth.Refused):
            return Response(user.status, json.dumps({"error": user.error, "reason": user.reason}).encode(), JSON,
                            _CHALLENGE if user.status == 401 else ())
        reason = refusal(route.tag, user.tags)
        if reason is None and vhost is not None and not self._may_use_vhost(user, vhost):
            reason = NOT_AUTHORISED_VHOST
        if reason is not None:
            return json_response(401, {"error": "not_authorised", "reason": reason})
        try:
            result = route.handler(Call(self.m, request, user), *args)
            if isinstance(result, Response):
                return result
            return json_response(200, shape(result, request.query))
        except HttpError as error:
            return json_response(error.status, {"error": error.error, "reason": error.reason})
        except exceptions.AMQPError as error:
            return _amqp_error(error)
        except AdminError as error:
            if error.missing:
                return json_response(404, {"error": "not_found", "reason": error.reason})
            return json_response(400, {"error": "bad_request", "reason": error.reason})

    def _may_use_vhost(self, user: auth.User, vhost: str) -> bool:
        """Permissions in the vhost, or an administrator; an unknown vhost passes
        on, for the handler's 404."""
        if vhost not in self.m.broker.vhosts or "administrator" in user.tags:
            return True
        return (user.name, vhost) in self.m.broker.access.permissions


def _amqp_error(error: exceptions.AMQPError) -> Response:
    reason = str(error.args[0]) if error.args else str(error)
    if isinstance(error, exceptions.AMQPNotFound):
        return json_response(404, NOT_FOUND)
    if isinstance(error, exceptions.AMQPAccessRefused):
        return json_response(401, {"error": "not_authorised", "reason": reason})
    return json_response(400, {"error": "bad_request", "reason": reason})
