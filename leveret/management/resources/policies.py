"""/api/policies and /api/operator-policies, as RabbitMQ 3.10's management plugin answers them.

    GET    /api/policies                    every policy the user may see
    GET    /api/policies/VHOST              a vhost's (404 for an unknown vhost)
    GET    /api/policies/VHOST/NAME         one (404 if missing)
    PUT    /api/policies/VHOST/NAME         201 new, 204 replaced; 400 with RabbitMQ's reason
    DELETE /api/policies/VHOST/NAME         204; 404 if missing
    and the same under /api/operator-policies.

Who may (rabbit_mgmt_util, probed on 3.10.8): nobody without a management tag
("Not management user"); listing, of either kind, needs access to the vhost
(an administrator sees all, a listing of every vhost leaves out the others);
one policy, to read or change, needs `administrator`, or `policymaker` with
access to its vhost; one operator policy needs `administrator`. A refusal
changes nothing. Answers are (status, JSON or None) values for the HTTP layer
to write; with a store, a change is in its journal before the answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from leveret.broker.broker import Broker
from leveret.broker.policies import Policy, PolicyError, parse_policy
from leveret.management.http import Response
from leveret.management.routes import Call, Route, json_response

NOT_FOUND = {"error": "Object Not Found", "reason": "Not Found"}


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: Any = None  # JSON-able, or None for no body


_MANAGEMENT_TAGS = frozenset({"management", "policymaker", "monitoring", "administrator"})


def _refused(reason: str) -> Answer:
    return Answer(401, {"error": "not_authorised", "reason": reason})  # sic: RabbitMQ's spelling


def _escape(text: str) -> str:
    """rabbit_mgmt_format:escape_html_tags, which the policy (not operator policy) handler applies."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class PolicyEndpoints:
    """`run(change)` applies a change to the broker on its own loop (Api._call)."""

    def __init__(self, broker: Broker, run: Callable[[Callable[[], Any]], Any] | None = None) -> None:
        self.broker = broker
        self.run = run or (lambda change: change())

    # --------------------------------------------------------------- access
    def _may_see(self, user: str, tags: Iterable[str], vhost: str) -> bool:
        return "administrator" in tags or (user, vhost) in self.broker.access.permissions

    def _may_manage(self, user: str, tags: tuple[str, ...], vhost: str, operator: bool) -> bool:
        if "administrator" in tags:
            return True
        return not operator and "policymaker" in tags and (user, vhost) in self.broker.access.permissions

    # -------------------------------------------------------------- answers
    def list(self, user: str, tags: tuple[str, ...], vhost: str | None, *, operator: bool = False) -> Answer:
        if _MANAGEMENT_TAGS.isdisjoint(tags):
            return _refused("Not management user")
        if vhost is not None:
            # cowboy_rest asks is_authorized before resource_exists
            if not self._may_see(user, tags, vhost):
                return _refused("User not authorised to access virtual host")
            if vhost not in self.broker.vhosts:
                return Answer(404, NOT_FOUND)
            names = [vhost]
        else:
            names = [v for v in self.broker.vhosts if self._may_see(user, tags, v)]
        found: list[Policy] = []
        for name in names:
            found.extend(self.broker.vhosts[name].policies.listed(operator))
        found.sort(key=lambda p: p.priority)  # reply_list's default sort, stable across vhosts
        return Answer(200, [p.to_json() for p in found])

    def get(self, user: str, tags: tuple[str, ...], vhost: str, name: str, *, operator: bool = False) -> Answer:
        refusal = self._check(user, tags, vhost, operator)
        if refusal is not None:
            return refusal
        host = self.broker.vhosts.get(vhost)
        policy = host.policies.table(operator).get(name) if host is not None else None
        return Answer(404, NOT_FOUND) if policy is None else Answer(200, policy.to_json())

    def put(self, user: str, tags: tuple[str, ...], vhost: str, name: str, raw: bytes, *,
            operator: bool = False) -> Answer:
        refusal = self._check(user, tags, vhost, operator)
        if refusal is not None:
            return refusal
        host = self.broker.vhosts.get(vhost)
        if host is None:
            return Answer(404, {"error": "not_found", "reason": "vhost_not_found"})
        try:
            body = json.loads(raw) if raw.strip() else {}
        except (ValueError, UnicodeDecodeError):
            return Answer(400, {"error": "bad_request", "reason": "not_json"})
        if not isinstance(body, dict):
            return Answer(400, {"error": "bad_request", "reason": "not_json"})
        missing = [key for key in ("pattern", "definition") if key not in body]
        if missing:
            reason = "[" + ",".join(f"{{key_missing,{key}}}" for key in missing) + "]"
            return Answer(400, {"error": "bad_request", "reason": reason})
        try:
            policy = parse_policy(vhost, name, body, operator=operator)
        except PolicyError as error:
            reason = error.reason if operator else _escape(error.reason)
            return Answer(400, {"error": "bad_request", "reason": reason})
        table = host.policies.table(operator)
        existed = name in table
        if existed and table[name] == policy:
            return Answer(204)  # RabbitMQ's {old, Term}: nothing to do
        self.run(lambda: host.set_policy(policy, self.broker.now_ms(), operator=operator))
        self._written()
        return Answer(204 if existed else 201)

    def delete(self, user: str, tags: tuple[str, ...], vhost: str, name: str, *, operator: bool = False) -> Answer:
        refusal = self._check(user, tags, vhost, operator)
        if refusal is not None:
            return refusal
        host = self.broker.vhosts.get(vhost)
        if host is None or name not in host.policies.table(operator):
            return Answer(404, NOT_FOUND)
        self.run(lambda: host.clear_policy(name, self.broker.now_ms(), operator=operator))
        self._written()
        return Answer(204)

    def _written(self) -> None:
        """The change's journal records reach the page cache before the 2xx leaves,
        as AMQP replies do (leveret.server.shell): a kill -9 cannot forget it."""
        store = self.broker.store
        if store is not None and store.write_pending:
            store.write_through()

    def _check(self, user: str, tags: tuple[str, ...], vhost: str, operator: bool) -> Answer | None:
        if _MANAGEMENT_TAGS.isdisjoint(tags):
            return _refused("Not management user")
        if self._may_manage(user, tags, vhost, operator):
            return None
        return _refused("Not administrator user" if operator else "User not authorised to access object")


# ------------------------------------------------------------------ routes
def _answer(answer: Answer) -> Response:
    return Response(answer.status) if answer.body is None else json_response(answer.status, answer.body)


def _routes(segment: str, operator: bool) -> tuple[Route, ...]:
    def endpoints(call: Call) -> tuple[PolicyEndpoints, str, tuple[str, ...]]:
        return PolicyEndpoints(call.m.broker, call.run), call.user.name, tuple(call.user.tags)

    def listed(call: Call, vhost: str | None = None) -> Response:
        policies, user, tags = endpoints(call)
        return _answer(policies.list(user, tags, vhost, operator=operator))

    def one(call: Call, vhost: str, name: str) -> Response:
        policies, user, tags = endpoints(call)
        return _answer(policies.get(user, tags, vhost, name, operator=operator))

    def put(call: Call, vhost: str, name: str) -> Response:
        policies, user, tags = endpoints(call)
        return _answer(policies.put(user, tags, vhost, name, call.request.body, operator=operator))

    def delete(call: Call, vhost: str, name: str) -> Response:
        policies, user, tags = endpoints(call)
        return _answer(policies.delete(user, tags, vhost, name, operator=operator))

    # One policy is `policymaker` with access to its vhost, or `administrator`
    # (operator policies: `administrator`); the handler decides, with RabbitMQ's
    # "access object" reason, so the path does not name {vhost} for the router's
    # generic vhost check ("access virtual host").
    single = f"{segment}/{{policy_vhost}}/{{name}}"
    return (
        Route("GET", segment, listed),
        Route("GET", f"{segment}/{{vhost}}", listed),
        Route("GET", single, one),
        Route("PUT", single, put),
        Route("DELETE", single, delete),
    )


ROUTES = (*_routes("policies", False), *_routes("operator-policies", True))
