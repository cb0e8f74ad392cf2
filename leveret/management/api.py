"""RabbitMQ's management HTTP API, the paths dashboards and scripts use, in its JSON shapes.

The shapes were compared field by field with RabbitMQ 3.10.8's answers (its
management plugin on the reference broker). Fields that describe Erlang
internals (reductions, garbage_collection, backing_queue_status) are left
out; so are values leveret does not measure (consumer utilisation, per
exchange rates, socket byte counts) rather than being reported as zeros.

Paths (vhost and names percent-encoded, `%2F` for `/`; `amq.default` names the
default exchange):

    GET    /api/overview  /api/nodes[/NODE]  /api/vhosts[/VHOST]  /api/whoami
    GET    /api/health/checks/alarms  /api/health/checks/local-alarms
    GET    /api/queues[/VHOST[/NAME]]  /api/queues/VHOST/NAME/bindings
    PUT    /api/queues/VHOST/NAME                 declare (201 created, 204 existed)
    DELETE /api/queues/VHOST/NAME[?if-empty=true&if-unused=true]
    DELETE /api/queues/VHOST/NAME/contents        purge
    GET    /api/exchanges[/VHOST[/NAME]]  /api/exchanges/VHOST/NAME/bindings/{source,destination}
    PUT    /api/exchanges/VHOST/NAME  DELETE /api/exchanges/VHOST/NAME[?if-unused=true]
    GET    /api/bindings[/VHOST]
    GET    /api/connections[/NAME]  DELETE /api/connections/NAME (X-Reason header)
    GET    /api/channels[/NAME]  /api/consumers[/VHOST]
    GET    /api/definitions[/VHOST]  POST /api/definitions[/VHOST]

Lists take RabbitMQ's query parameters: `columns=name,message_stats.publish`,
`sort=messages&sort_reverse=true`, `name=...&use_regex=true`, and `page` /
`page_size` (which return RabbitMQ's paged object instead of a list).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import platform
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from pamqp import exceptions

from leveret.bindings.model import Binding, Destination
from leveret.broker.definitions import LoadResult, export_definitions, json_value, load_definitions
from leveret.broker.vhost import VirtualHost
from leveret.exchanges import base
from leveret.exchanges.base import Exchange
from leveret.management import auth
from leveret.management.core import (
    DEAD_LETTER_REASONS,
    LiveConnection,
    Management,
    process_memory_bytes,
)
from leveret.management.http import Request, Response
from leveret.queues.queue import Queue
from leveret.version import RABBITMQ_VERSION, __version__

if TYPE_CHECKING:
    from leveret.server.channel import Channel, ChannelConsumer

DEFAULT_EXCHANGE_ALIAS = "amq.default"
JSON = "application/json"

_NOT_FOUND = {"error": "Object Not Found", "reason": "Not Found"}
# Paths whose second segment names a vhost (what a permission check needs).
_VHOST_SCOPED = frozenset({"queues", "exchanges", "bindings", "consumers", "definitions", "vhosts"})


class HttpError(Exception):
    def __init__(self, status: int, error: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.error = error
        self.reason = reason


def not_found() -> HttpError:
    return HttpError(404, _NOT_FOUND["error"], _NOT_FOUND["reason"])


def bad_request(reason: str) -> HttpError:
    return HttpError(400, "bad_request", reason)


def json_response(status: int, data: Any) -> Response:
    return Response(status, json.dumps(data, ensure_ascii=False).encode("utf-8"), JSON)



def with_rates(counts: Mapping[str, int], rate: Callable[[str], float]) -> dict[str, Any]:
    """{"publish": 5, "publish_details": {"rate": 1.2}, ...} as RabbitMQ nests them."""
    out: dict[str, Any] = {}
    for field, value in counts.items():
        out[field] = value
        out[f"{field}_details"] = {"rate": rate(field)}
    return out


def properties_key(binding_key: str, arguments: Mapping[str, Any]) -> str:
    """An opaque id for a binding in URLs: the quoted key, then `~hash` when it has arguments."""
    key = quote(binding_key, safe="")
    if not arguments:
        return key
    digest = hashlib.sha1(json.dumps(json_value(arguments), sort_keys=True).encode()).digest()
    return key + "~" + base64.urlsafe_b64encode(digest[:4]).decode().rstrip("=")


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1", "yes")


class Api:
    """Answers /api/* requests; `handle` is the HTTP server's handler for them."""

    def __init__(self, management: Management) -> None:
        self.m = management
        self._user = auth.User("")  # who is asking: set for each request before its handler runs
        self._routes: list[tuple[str, tuple[str, ...], Callable[..., Any]]] = [
            ("GET", ("overview",), self.overview),
            ("GET", ("whoami",), self.whoami),
            ("GET", ("nodes",), lambda r: [self.node()]),
            ("GET", ("nodes", "*"), self.node_named),
            ("GET", ("vhosts",), lambda r: [self.vhost_info(v) for v in self.m.vhosts()]),
            ("GET", ("vhosts", "*"), lambda r, v: self.vhost_info(self._vhost(v))),
            ("GET", ("health", "checks", "alarms"), self.alarms),
            ("GET", ("health", "checks", "local-alarms"), self.alarms),
            ("GET", ("queues",), lambda r: self.queues(None)),
            ("GET", ("queues", "*"), lambda r, v: self.queues(self._vhost(v))),
            ("GET", ("queues", "*", "*"), self.queue),
            ("PUT", ("queues", "*", "*"), self.declare_queue),
            ("DELETE", ("queues", "*", "*"), self.delete_queue),
            ("DELETE", ("queues", "*", "*", "contents"), self.purge_queue),
            ("GET", ("queues", "*", "*", "bindings"), self.queue_bindings),
            ("GET", ("exchanges",), lambda r: self.exchanges(None)),
            ("GET", ("exchanges", "*"), lambda r, v: self.exchanges(self._vhost(v))),
            ("GET", ("exchanges", "*", "*"), self.exchange),
            ("PUT", ("exchanges", "*", "*"), self.declare_exchange),
            ("DELETE", ("exchanges", "*", "*"), self.delete_exchange),
            ("GET", ("exchanges", "*", "*", "bindings", "source"), self.exchange_bindings_source),
            ("GET", ("exchanges", "*", "*", "bindings", "destination"), self.exchange_bindings_destination),
            ("GET", ("bindings",), lambda r: self.bindings(None)),
            ("GET", ("bindings", "*"), lambda r, v: self.bindings(self._vhost(v))),
            ("GET", ("connections",), lambda r: [self.connection(c) for c in self.m.connections()]),
            ("GET", ("connections", "*"), lambda r, n: self.connection(self._connection(n))),
            ("DELETE", ("connections", "*"), self.close_connection),
            ("GET", ("channels",), lambda r: [self.channel(c, ch) for c, ch in self.m.channels()]),
            ("GET", ("channels", "*"), self.channel_named),
            ("GET", ("consumers",), lambda r: self.consumers(None)),
            ("GET", ("consumers", "*"), lambda r, v: self.consumers(self._vhost(v))),
            ("GET", ("definitions",), lambda r: self.definitions(None)),
            ("GET", ("definitions", "*"), lambda r, v: self.definitions(self._vhost(v))),
            ("POST", ("definitions",), lambda r: self.import_definitions(r, None)),
            ("POST", ("definitions", "*"), lambda r, v: self.import_definitions(r, self._vhost(v))),
        ]

    # ---------------------------------------------------------- dispatch
    def handle(self, request: Request) -> Response:
        raw = request.path.split("/")
        if raw[-1:] == [""]:
            raw = raw[:-1]
        segments = [unquote(part) for part in raw[2:]]  # after "", "api"
        scoped = len(segments) > 1 and segments[0] in _VHOST_SCOPED
        user = auth.authenticate(self.m.broker, request.header("authorization"), request.peer_host,
                                 method=request.method, vhost=segments[1] if scoped else None)
        if user is None:
            return Response(401, headers=(("www-authenticate", 'Basic realm="leveret management"'),))
        if isinstance(user, auth.Refused):
            return Response(401, json.dumps({"error": user.error, "reason": user.reason}).encode(), JSON,
                            (("www-authenticate", 'Basic realm="leveret management"'),))
        self._user = user
        method = "GET" if request.method == "HEAD" else request.method
        allowed: list[str] = []
        for route_method, pattern, handler in self._routes:
            if len(pattern) != len(segments) or any(p != "*" and p != s for p, s in zip(pattern, segments, strict=True)):
                continue
            if route_method != method:
                allowed.append(route_method)
                continue
            args = [s for p, s in zip(pattern, segments, strict=True) if p == "*"]
            try:
                result = handler(request, *args)
            except HttpError as error:
                return json_response(error.status, {"error": error.error, "reason": error.reason})
            except exceptions.AMQPError as error:
                return self._amqp_error(error)
            if isinstance(result, Response):
                return result
            if isinstance(result, list):
                result = self._list_query(result, request.query)
            elif "columns" in request.query and isinstance(result, dict):
                result = _columns(result, request.query["columns"])
            return json_response(200, result)
        if allowed:
            return Response(405, headers=(("allow", ", ".join(sorted(set(allowed)))),))
        return json_response(404, _NOT_FOUND)

    @staticmethod
    def _amqp_error(error: exceptions.AMQPError) -> Response:
        reason = str(error.args[0]) if error.args else str(error)
        if isinstance(error, exceptions.AMQPNotFound):
            return json_response(404, _NOT_FOUND)
        if isinstance(error, exceptions.AMQPAccessRefused):
            return json_response(401, {"error": "not_authorised", "reason": reason})
        return json_response(400, {"error": "bad_request", "reason": reason})

    def _list_query(self, items: list[Any], query: Mapping[str, str]) -> Any:
        name = query.get("name")
        if name:
            if _truthy(query.get("use_regex")):
                try:
                    pattern = re.compile(name)
                except re.error as error:
                    raise bad_request(f"invalid regex: {error}") from None
                items = [i for i in items if pattern.search(str(i.get("name", "")))]
            else:
                items = [i for i in items if name in str(i.get("name", ""))]
        sort = query.get("sort")
        if sort:
            items = sorted(items, key=lambda i: _sort_key(_dig(i, sort)), reverse=_truthy(query.get("sort_reverse")))
        if "columns" in query:
            items = [_columns(i, query["columns"]) for i in items]
        if "page" not in query:
            return items
        try:
            page = max(1, int(query["page"]))
            page_size = max(1, min(500, int(query.get("page_size", "100"))))
        except ValueError:
            raise bad_request("page and page_size must be integers") from None
        page_count = max(1, -(-len(items) // page_size))
        return {
            "filtered_count": len(items), "item_count": len(items[(page - 1) * page_size: page * page_size]),
            "items": items[(page - 1) * page_size: page * page_size], "page": page,
            "page_count": page_count, "page_size": page_size, "total_count": len(items),
        }

    # ----------------------------------------------------------- lookups
    def _vhost(self, name: str) -> VirtualHost:
        vhost = self.m.broker.vhosts.get(name)
        if vhost is None:
            raise not_found()
        return vhost

    def _queue(self, vhost_name: str, name: str) -> tuple[VirtualHost, Queue]:
        vhost = self._vhost(vhost_name)
        queue = vhost.queues.get(name)
        if queue is None:
            raise not_found()
        return vhost, queue

    def _exchange(self, vhost_name: str, name: str) -> tuple[VirtualHost, Exchange]:
        vhost = self._vhost(vhost_name)
        exchange = vhost.exchanges.get("" if name == DEFAULT_EXCHANGE_ALIAS else name)
        if exchange is None:
            raise not_found()
        return vhost, exchange

    def _connection(self, name: str) -> LiveConnection:
        for live in self.m.connections():
            if live.connection.name == name:
                return live
        raise not_found()

    def _call(self, fn: Callable[[], Any]) -> Any:
        """Run a change on the broker; the server re-checks its timers after it."""
        server = self.m.server
        if server is None:
            return fn()
        return server.call(lambda _: fn())

    @staticmethod
    def _body(request: Request) -> dict[str, Any]:
        if not request.body.strip():
            return {}
        try:
            data = json.loads(request.body)
        except (ValueError, UnicodeDecodeError) as error:
            raise bad_request(f"cannot parse JSON body: {error}") from None
        if not isinstance(data, dict):
            raise bad_request("the JSON body must be an object")
        return data

    # ---------------------------------------------------------- overview
    def overview(self, request: Request) -> dict[str, Any]:
        m = self.m
        totals = m.message_totals()
        ready = sum(q.message_count for q in m.queues())
        unacked = sum(q.unacked_count for q in m.queues())
        return {
            "management_version": RABBITMQ_VERSION,
            "rates_mode": "basic",
            "exchange_types": self.exchange_types(),
            "product_version": __version__,
            "product_name": "leveret",
            "rabbitmq_version": RABBITMQ_VERSION,
            "cluster_name": m.node,
            "python_version": platform.python_version(),
            "disable_stats": False,
            "enable_queue_totals": False,
            "message_stats": with_rates(totals, lambda f: m.rate("overview", f)),
            "churn_rates": with_rates(m.churn_totals(), lambda f: m.rate("overview", f)),
            "queue_totals": with_rates({
                "messages": ready + unacked, "messages_ready": ready, "messages_unacknowledged": unacked,
            }, lambda f: m.rate("overview", f)),
            "object_totals": m.object_totals(),
            "statistics_db_event_queue": 0,
            "node": m.node,
            "listeners": [
                {"node": m.node, "protocol": protocol, "ip_address": host, "port": port, "socket_opts": {}}
                for protocol, host, port in m.listeners
            ],
            "contexts": [
                {"node": m.node, "description": "leveret management", "path": "/", "port": str(port)}
                for protocol, _, port in m.listeners if protocol == "http"
            ],
        }

    @staticmethod
    def exchange_types() -> list[dict[str, Any]]:
        types = []
        for name, kind in sorted(base.REGISTRY.items()):
            doc = (type(kind).__doc__ or "").strip().splitlines()
            types.append({"name": name, "description": doc[0] if doc else "", "enabled": True})
        return types

    def whoami(self, request: Request) -> dict[str, Any]:
        return {"name": self._user.name, "tags": list(self._user.tags)}

    def node(self) -> dict[str, Any]:
        m = self.m
        return {
            "name": m.node, "type": "disc", "running": True, "os_pid": str(os.getpid()),
            "mem_used": process_memory_bytes(), "uptime": m.uptime_ms(), "processors": os.cpu_count() or 1,
            "sockets_used": len(m.connections()), "rates_mode": "basic",
            "exchange_types": self.exchange_types(),
            "partitions": [], "mem_alarm": False, "disk_free_alarm": False,
        }

    def node_named(self, request: Request, name: str) -> dict[str, Any]:
        if name != self.m.node:
            raise not_found()
        return self.node()

    def vhost_info(self, vhost: VirtualHost) -> dict[str, Any]:
        ready = sum(q.message_count for q in vhost.queues.values())
        unacked = sum(q.unacked_count for q in vhost.queues.values())
        description = "Default virtual host" if vhost.name == "/" else ""
        return {
            "name": vhost.name, "description": description, "tags": [],
            "metadata": {"description": description, "tags": []}, "tracing": False,
            "default_queue_type": "undefined", "cluster_state": {self.m.node: "running"},
            **with_rates({"messages": ready + unacked, "messages_ready": ready,
                          "messages_unacknowledged": unacked}, lambda f: self.m.rate("vhost", vhost.name, f)),
        }

    # ------------------------------------------------------------ queues
    def queues(self, vhost: VirtualHost | None) -> list[dict[str, Any]]:
        vhosts = [vhost] if vhost is not None else self.m.vhosts()
        held = self.m.unacked_by_queue()
        return [
            self.queue_info(queue, held.get(queue, (0, 0))[1])
            for v in vhosts for queue in sorted(v.queues.values(), key=lambda q: q.name)
        ]

    def queue(self, request: Request, vhost_name: str, name: str) -> dict[str, Any]:
        _, queue = self._queue(vhost_name, name)
        held = self.m.unacked_by_queue()
        info = self.queue_info(queue, held.get(queue, (0, 0))[1])
        info["consumer_details"] = [
            self.consumer(live, channel, consumer)
            for live, channel in self.m.channels() for consumer in channel.consumers.values()
            if consumer.queue is queue
        ]
        info["incoming"] = []
        info["deliveries"] = []
        return info

    def queue_info(self, queue: Queue, unacked_bytes: int) -> dict[str, Any]:
        m = self.m
        ready, unacked = queue.message_count, queue.unacked_count
        stream = queue.args.queue_type == "stream"
        if stream:
            unacked = unacked_bytes = 0  # RabbitMQ counts a stream's messages, all "ready", whatever was delivered

        def rate(field: str) -> float:
            return m.rate("queue", queue.vhost, queue.name, field)

        stats = {field: queue.stats.get(key, 0) for key, field in
                 (("published", "publish"), ("delivered", "deliver_get"), ("acked", "ack"),
                  ("redelivered", "redeliver"))}
        exclusive_consumer = queue.exclusive_consumer
        active = queue.consumers[0] if queue.args.single_active_consumer and queue.consumers else None
        info: dict[str, Any] = {
            "arguments": json_value(queue.arguments),
            "auto_delete": queue.auto_delete,
            "consumers": queue.consumer_count,
            "durable": queue.durable,
            "effective_policy_definition": {},
            "exclusive": queue.is_exclusive,
            "exclusive_consumer_tag": exclusive_consumer.consumer_tag if exclusive_consumer is not None else None,
            "head_message_timestamp": None,
            "message_bytes": queue.ready_bytes + unacked_bytes,
            "message_bytes_paged_out": 0,
            "message_bytes_ram": queue.ready_bytes + unacked_bytes,
            "message_bytes_ready": queue.ready_bytes,
            "message_bytes_unacknowledged": unacked_bytes,
            "message_stats": with_rates(stats, rate),
            **with_rates({"messages": ready + unacked}, rate),
            "messages_paged_out": 0,
            "messages_ram": ready + unacked,
            **with_rates({"messages_ready": ready}, rate),
            "messages_ready_ram": ready,
            **with_rates({"messages_unacknowledged": unacked}, rate),
            "messages_unacknowledged_ram": unacked,
            "name": queue.name,
            "node": m.node,
            "operator_policy": None,
            "policy": None,
            "recoverable_slaves": None,
            "single_active_consumer_tag": active.consumer_tag if active is not None else None,
            "state": "running",
            "type": queue.args.queue_type,
            "vhost": queue.vhost,
        }
        if queue.args.queue_type == "quorum":
            info.update({"leader": m.node, "members": [m.node], "online": [m.node]})
        elif stream:
            # As RabbitMQ 3.10 lists a stream: its replicas and readers, no paging.
            info.update({"members": [m.node], "online": [m.node], "readers": {m.node: queue.consumer_count}})
        info["dead_lettered"] = {
            reason: sum(v for (r, dlx), v in queue.dead_letter_counts.items() if r == reason and dlx)
            for reason in DEAD_LETTER_REASONS
        }
        return info

    def declare_queue(self, request: Request, vhost_name: str, name: str) -> Response:
        vhost = self._vhost(vhost_name)
        body = self._body(request)
        existed = name in vhost.queues
        self._call(lambda: vhost.declare_queue(
            name, durable=bool(body.get("durable", True)), auto_delete=bool(body.get("auto_delete", False)),
            arguments=body.get("arguments") or {}, now_ms=self.m.broker.now_ms(),
        ))
        return Response(204 if existed else 201)

    def delete_queue(self, request: Request, vhost_name: str, name: str) -> Response:
        vhost, _ = self._queue(vhost_name, name)
        self._call(lambda: vhost.delete_queue(
            name, if_empty=_truthy(request.query.get("if-empty")),
            if_unused=_truthy(request.query.get("if-unused")), reason="management",
        ))
        return Response(204)

    def purge_queue(self, request: Request, vhost_name: str, name: str) -> Response:
        vhost, _ = self._queue(vhost_name, name)
        self._call(lambda: vhost.purge_queue(name))
        return Response(204)

    def queue_bindings(self, request: Request, vhost_name: str, name: str) -> list[dict[str, Any]]:
        vhost, queue = self._queue(vhost_name, name)
        destination = Destination.queue(queue.name)
        return [self.default_binding(vhost, queue.name)] + [
            self.binding(vhost, b) for b in _sorted_bindings(vhost.bindings()) if b.destination == destination
        ]

    # --------------------------------------------------------- exchanges
    def exchanges(self, vhost: VirtualHost | None) -> list[dict[str, Any]]:
        vhosts = [vhost] if vhost is not None else self.m.vhosts()
        return [self.exchange_info(v, e) for v in vhosts for e in sorted(v.exchanges.values(), key=lambda e: e.name)]

    def exchange(self, request: Request, vhost_name: str, name: str) -> dict[str, Any]:
        vhost, exchange = self._exchange(vhost_name, name)
        info = self.exchange_info(vhost, exchange)
        info["incoming"] = []
        info["outgoing"] = []
        return info

    @staticmethod
    def exchange_info(vhost: VirtualHost, exchange: Exchange) -> dict[str, Any]:
        info = {
            "arguments": json_value(exchange.arguments),
            "auto_delete": exchange.auto_delete,
            "durable": exchange.durable,
            "internal": exchange.internal,
            "name": exchange.name,
            "type": exchange.type_name,
            "vhost": vhost.name,
        }
        if exchange.name == "" or exchange.name.startswith("amq."):
            info["user_who_performed_action"] = "rmq-internal"
        return info

    def declare_exchange(self, request: Request, vhost_name: str, name: str) -> Response:
        vhost = self._vhost(vhost_name)
        body = self._body(request)
        if "type" not in body:
            raise bad_request("[{key_missing,type}]")
        existed = name in vhost.exchanges
        self._call(lambda: vhost.declare_exchange(
            "" if name == DEFAULT_EXCHANGE_ALIAS else name, str(body["type"]),
            durable=bool(body.get("durable", True)), auto_delete=bool(body.get("auto_delete", False)),
            internal=bool(body.get("internal", False)), arguments=body.get("arguments") or {},
        ))
        return Response(204 if existed else 201)

    def delete_exchange(self, request: Request, vhost_name: str, name: str) -> Response:
        vhost, exchange = self._exchange(vhost_name, name)
        self._call(lambda: vhost.delete_exchange(exchange.name, if_unused=_truthy(request.query.get("if-unused"))))
        return Response(204)

    def exchange_bindings_source(self, request: Request, vhost_name: str, name: str) -> list[dict[str, Any]]:
        vhost, exchange = self._exchange(vhost_name, name)
        if exchange.name == "":
            return [self.default_binding(vhost, q) for q in sorted(vhost.queues)]
        return [self.binding(vhost, b) for b in _sorted_bindings(exchange.bindings)]

    def exchange_bindings_destination(self, request: Request, vhost_name: str, name: str) -> list[dict[str, Any]]:
        vhost, exchange = self._exchange(vhost_name, name)
        destination = Destination.exchange(exchange.name)
        return [self.binding(vhost, b) for b in _sorted_bindings(vhost.bindings()) if b.destination == destination]

    # ---------------------------------------------------------- bindings
    def bindings(self, vhost: VirtualHost | None) -> list[dict[str, Any]]:
        """The default exchange's implicit bindings first, as RabbitMQ lists them."""
        out: list[dict[str, Any]] = []
        for v in [vhost] if vhost is not None else self.m.vhosts():
            out.extend(self.default_binding(v, name) for name in sorted(v.queues))
            out.extend(self.binding(v, b) for b in _sorted_bindings(v.bindings()))
        return out

    @staticmethod
    def default_binding(vhost: VirtualHost, queue: str) -> dict[str, Any]:
        return {
            "source": "", "vhost": vhost.name, "destination": queue, "destination_type": "queue",
            "routing_key": queue, "arguments": {}, "properties_key": properties_key(queue, {}),
        }

    @staticmethod
    def binding(vhost: VirtualHost, binding: Binding) -> dict[str, Any]:
        arguments = binding.arguments_dict
        return {
            "source": binding.source, "vhost": vhost.name, "destination": binding.destination.name,
            "destination_type": binding.destination.kind, "routing_key": binding.binding_key,
            "arguments": json_value(arguments), "properties_key": properties_key(binding.binding_key, arguments),
        }

    # -------------------------------------------------------- connections
    def connection(self, live: LiveConnection) -> dict[str, Any]:
        connection = live.connection
        properties = json_value(connection.client_properties)
        vhost = connection.vhost
        state = connection.state.name.lower()
        if state.startswith("await"):
            state = "starting"
        elif state == "open":
            state = "blocked" if connection.reading_paused else "running"
        return {
            "channel_max": connection.channel_max,
            "channels": len(connection.channels),
            "client_properties": properties,
            "connected_at": connection.connected_at,
            "frame_max": connection.frame_max,
            "host": live.host,
            "name": connection.name,
            "node": self.m.node,
            "peer_cert_issuer": None,
            "peer_cert_subject": None,
            "peer_cert_validity": None,
            "peer_host": live.peer_host,
            "peer_port": live.peer_port,
            "port": live.port,
            "protocol": "AMQP 0-9-1",
            "ssl": False,
            "ssl_cipher": None,
            "ssl_hash": None,
            "ssl_key_exchange": None,
            "ssl_protocol": None,
            "state": state,
            "timeout": connection.heartbeat,
            "type": "network",
            "user": connection.user,
            "user_provided_name": properties.get("connection_name"),
            "vhost": vhost.name if vhost is not None else None,
        }

    def close_connection(self, request: Request, name: str) -> Response:
        live = self._connection(name)
        reason = request.header("x-reason") or "Closed via management plugin"
        self._call(lambda: live.connection.close_with(exceptions.AMQPConnectionForced(reason)))
        return Response(204)

    # ----------------------------------------------------------- channels
    def channel(self, live: LiveConnection, channel: Channel) -> dict[str, Any]:
        m = self.m
        connection = live.connection
        name = f"{connection.name} ({channel.number})"

        def rate(field: str) -> float:
            return m.rate("channel", connection.name, channel.number, field)

        stats = {
            "publish": channel.published, "confirm": channel.publish_seq if channel.confirm else 0,
            "return_unroutable": channel.returned_unroutable, "drop_unroutable": channel.dropped_unroutable,
            "deliver_get": channel.delivery_tag,
        }
        return {
            "acks_uncommitted": len(channel.tx_settled),
            "confirm": channel.confirm,
            "connection_details": {"name": connection.name, "peer_host": live.peer_host,
                                   "peer_port": live.peer_port},
            "consumer_count": len(channel.consumers),
            "global_prefetch_count": channel.global_prefetch,
            "message_stats": with_rates(stats, rate),
            "messages_unacknowledged": len(channel.unacked),
            "messages_uncommitted": len(channel.tx) if channel.tx is not None else 0,
            "messages_unconfirmed": 0,
            "name": name,
            "node": m.node,
            "number": channel.number,
            "prefetch_count": channel.consumer_prefetch,
            "state": "running",
            "transactional": channel.tx is not None,
            "user": connection.user,
            "vhost": channel.vhost.name,
        }

    def channel_named(self, request: Request, name: str) -> dict[str, Any]:
        for live, channel in self.m.channels():
            if f"{live.connection.name} ({channel.number})" == name:
                return self.channel(live, channel)
        raise not_found()

    # ---------------------------------------------------------- consumers
    def consumers(self, vhost: VirtualHost | None) -> list[dict[str, Any]]:
        return [
            self.consumer(live, channel, consumer)
            for live, channel in self.m.channels() for consumer in channel.consumers.values()
            if vhost is None or channel.vhost is vhost
        ]

    def consumer(self, live: LiveConnection, channel: Channel, consumer: ChannelConsumer) -> dict[str, Any]:
        connection = live.connection
        queue = consumer.queue
        status = "up"
        if queue.args.single_active_consumer:
            status = "single_active" if queue.consumers and queue.consumers[0] is consumer else "waiting"
        return {
            "arguments": {"x-priority": consumer.priority} if consumer.priority else {},
            "ack_required": not consumer.no_ack,
            "active": status != "waiting",
            "activity_status": status,
            "channel_details": {
                "connection_name": connection.name, "name": f"{connection.name} ({channel.number})",
                "node": self.m.node, "number": channel.number, "peer_host": live.peer_host,
                "peer_port": live.peer_port, "user": connection.user,
            },
            "consumer_tag": consumer.consumer_tag,
            "exclusive": consumer.exclusive,
            "prefetch_count": consumer.prefetch,
            "queue": {"name": queue.name, "vhost": queue.vhost},
        }

    def alarms(self, request: Request) -> Any:
        """RabbitMQ's health check: 200 ok, or 503 naming the alarm in effect."""
        resources = self.m.broker.resources
        if not resources.memory_alarm:
            return {"status": "ok"}
        body = {"status": "failed", "reason": "resource alarm(s) in effect in the cluster",
                "alarms": [{"node": self.m.node, "resource": "memory"}]}
        return json_response(503, body)

    # -------------------------------------------------------- definitions
    def definitions(self, vhost: VirtualHost | None) -> dict[str, Any]:
        if vhost is not None:
            single = export_definitions(vhost)
            # A one-vhost export (as RabbitMQ's) has no users and no vhost fields.
            for key in ("queues", "exchanges", "bindings"):
                for item in single[key]:
                    item.pop("vhost", None)
            return {"rabbit_version": single["rabbit_version"], "rabbitmq_version": single["rabbitmq_version"],
                    "product_name": "leveret", "product_version": __version__,
                    **{k: single[k] for k in ("parameters", "policies", "queues", "exchanges", "bindings")}}
        exports = [export_definitions(v) for v in self.m.vhosts()]
        merged: dict[str, Any] = {
            "rabbit_version": RABBITMQ_VERSION, "rabbitmq_version": RABBITMQ_VERSION,
            "product_name": "leveret", "product_version": __version__,
            **self.m.broker.access.export(),
            "vhosts": [{"name": v.name} for v in self.m.vhosts()],
            "global_parameters": [], "policies": [],
        }
        for key in ("parameters", "queues", "exchanges", "bindings"):
            merged[key] = [item for export in exports for item in export[key]]
        return merged

    def _load(self, vhost: VirtualHost, data: Mapping[str, Any], now: int) -> list[str]:
        result: LoadResult = self._call(lambda: load_definitions(vhost, data, now_ms=now))
        return result.warnings

    def import_definitions(self, request: Request, vhost: VirtualHost | None) -> Response:
        data = self._body(request)
        now = self.m.broker.now_ms()
        warnings: list[str] = []
        if vhost is not None:
            warnings.extend(self._load(vhost, data, now))
        else:
            grouped = _by_vhost(data)
            for name, part in sorted(grouped.items()):
                target = self.m.broker.vhosts.get(name)
                if target is None:
                    warnings.append(f"vhost {name!r} does not exist")
                    continue
                warnings.extend(self._load(target, part, now))
        if warnings:
            raise bad_request("; ".join(warnings))
        return Response(204)


def _by_vhost(data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A full export's items per vhost; items without one belong to "/"."""
    grouped: dict[str, dict[str, Any]] = {}
    for key in ("parameters", "queues", "exchanges", "bindings", "policies"):
        for item in data.get(key) or []:
            if not isinstance(item, Mapping):
                continue
            vhost = str(item.get("vhost", "/"))
            grouped.setdefault(vhost, {}).setdefault(key, []).append({**item, "vhost": vhost})
    return grouped


def _sorted_bindings(bindings: Iterable[Binding]) -> list[Binding]:
    return sorted(bindings, key=lambda b: (b.source, b.destination.kind, b.destination.name, b.binding_key,
                                           repr(b.arguments)))


def _dig(item: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(item, Mapping):
            return None
        item = item.get(part)
    return item


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, 0)
    if isinstance(value, (int, float)):
        return (1, value)
    return (2, str(value))


def _columns(item: Mapping[str, Any], columns: str) -> dict[str, Any]:
    """RabbitMQ's `columns`: keep these fields; dotted names keep nested ones."""
    out: dict[str, Any] = {}
    for column in filter(None, (c.strip() for c in columns.split(","))):
        parts = column.split(".")
        source: Any = item
        for part in parts:
            if not isinstance(source, Mapping) or part not in source:
                break
            source = source[part]
        else:
            target = out
            for part in parts[:-1]:
                target = target.setdefault(part, {})
            target[parts[-1]] = source
    return out
