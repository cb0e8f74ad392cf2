"""/api/leveret/...: leveret's own read-only endpoints behind the web UI's routing view.

- GET  leveret/topology/{vhost}/{exchange}: what is reachable from an
  exchange, as nodes and edges; an edge is a binding, an alternate exchange
  or a queue's dead-letter exchange (`kind` says which).
- POST leveret/trace/{vhost}/{exchange} {"routing_key", "headers"}: the
  broker's own `trace` of that publish (every binding's verdict and why),
  the queues it lands in, and for each of them where a reject or an expiry
  would send it next (its dead-letter exchange, traced the same way).
- POST leveret/test {"text", "name"}: a route file run as `leveret test`
  runs it (on a broker of its own, not this one), with its report.

None of them changes the broker: a trace records nothing.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from leveret.broker.definitions import json_value
from leveret.broker.vhost import VirtualHost
from leveret.exchanges.router import BindingVerdict, ExchangeHop, publish_routing_keys
from leveret.management.resources.exchanges import DEFAULT_EXCHANGE_ALIAS, find_exchange
from leveret.management.routes import Call, Route, bad_request

MAX_NODES = 500  # a topology past this is cut, and says so
MAX_DEAD_LETTER_DEPTH = 4


def topology(call: Call, vhost_name: str, name: str) -> dict[str, Any]:
    vhost, start = find_exchange(call, vhost_name, name)
    nodes: dict[str, dict[str, Any]] = {}
    edges: list[dict[str, Any]] = []
    work = [("exchange", start.name)]
    truncated = False
    while work:
        kind, node_name = work.pop()
        node_id = f"{kind}:{node_name}"
        if node_id in nodes:
            continue
        if len(nodes) >= MAX_NODES:
            truncated = True
            break
        nodes[node_id] = _node(vhost, kind, node_name)
        if kind == "exchange":
            exchange = vhost.exchanges.get(node_name)
            if exchange is None or exchange.name == "":  # the default exchange's bindings are every queue
                continue
            for binding in sorted(exchange.bindings, key=lambda b: (b.destination.kind, b.destination.name)):
                target = (binding.destination.kind, binding.destination.name)
                edges.append({"source": node_id, "target": f"{target[0]}:{target[1]}", "kind": "binding",
                              "routing_key": binding.binding_key,
                              "arguments": json_value(binding.arguments_dict)})
                work.append(target)
            if exchange.alternate_exchange is not None:
                edges.append({"source": node_id, "target": f"exchange:{exchange.alternate_exchange}",
                              "kind": "alternate-exchange"})
                work.append(("exchange", exchange.alternate_exchange))
        else:
            queue = vhost.queues.get(node_name)
            if queue is None or queue.args.dead_letter_exchange is None:
                continue
            dlx = queue.args.dead_letter_exchange
            edges.append({"source": node_id, "target": f"exchange:{dlx}", "kind": "dead-letter",
                          "routing_key": queue.args.dead_letter_routing_key})
            work.append(("exchange", dlx))
    return {"vhost": vhost.name, "exchange": start.name, "nodes": list(nodes.values()), "edges": edges,
            "truncated": truncated}


def _node(vhost: VirtualHost, kind: str, name: str) -> dict[str, Any]:
    node: dict[str, Any] = {"id": f"{kind}:{name}", "kind": kind, "name": name}
    if kind == "exchange":
        exchange = vhost.exchanges.get(name)
        node["missing"] = exchange is None
        node["type"] = exchange.type_name if exchange is not None else None
        node["label"] = name or DEFAULT_EXCHANGE_ALIAS
    else:
        queue = vhost.queues.get(name)
        node["missing"] = queue is None
        node["messages"] = queue.message_count if queue is not None else 0
        node["label"] = name
    return node


def trace(call: Call, vhost_name: str, name: str) -> dict[str, Any]:
    vhost, start = find_exchange(call, vhost_name, name)
    body = call.body()
    routing_key = body.get("routing_key", "")
    headers = body.get("headers") or {}
    if not isinstance(routing_key, str):
        raise bad_request("routing_key must be a string")
    if not isinstance(headers, dict):
        raise bad_request("headers must be an object")
    keys = publish_routing_keys(routing_key, headers or None)
    traced = vhost.trace(start.name, keys, headers or None)
    return {
        "exchange": start.name, "routing_keys": list(keys), "headers": headers,
        "route": hop_json(traced.root), "queues": traced.queues,
        "next": [_next_hop(vhost, queue, keys, headers, 1, {queue}) for queue in traced.queues],
    }


def _next_hop(vhost: VirtualHost, queue_name: str, keys: Sequence[str], headers: dict[str, Any],
              depth: int, seen: set[str]) -> dict[str, Any]:
    """Where a message rejected (requeue=false) or expired from `queue_name` goes."""
    queue = vhost.queues.get(queue_name)
    out: dict[str, Any] = {"queue": queue_name, "dead_letter_exchange": None}
    if queue is None or queue.args.dead_letter_exchange is None:
        out["why"] = "no dead-letter exchange: a rejected or expired message is dropped"
        return out
    dlx, dlrk = queue.args.dead_letter_exchange, queue.args.dead_letter_routing_key
    dl_keys = [dlrk] if dlrk is not None else list(keys)
    out.update({"dead_letter_exchange": dlx, "routing_keys": dl_keys})
    if dlx not in vhost.exchanges:
        out["why"] = f"dead-letter exchange '{dlx}' does not exist: the message is dropped"
        return out
    traced = vhost.trace(dlx, dl_keys, headers or None)
    out["route"] = hop_json(traced.root)
    out["queues"] = traced.queues
    if depth < MAX_DEAD_LETTER_DEPTH:
        out["next"] = [_next_hop(vhost, q, dl_keys, headers, depth + 1, seen | {q})
                       for q in traced.queues if q not in seen]
    return out


def hop_json(hop: ExchangeHop) -> dict[str, Any]:
    return {
        "exchange": hop.exchange, "type": hop.exchange_type, "arrived_via": hop.arrived_via,
        "missing": hop.missing, "already_seen": hop.already_seen,
        "matched": [_verdict_json(v) for v in hop.matched],
        "unmatched": [_verdict_json(v) for v in hop.unmatched],
        "queues": list(hop.queues), "hops": [hop_json(h) for h in hop.hops],
        "alternate": hop_json(hop.alternate) if hop.alternate is not None else None,
    }


def _verdict_json(item: BindingVerdict) -> dict[str, Any]:
    binding = item.binding
    return {
        "destination": binding.destination.name, "destination_type": binding.destination.kind,
        "routing_key": binding.binding_key, "arguments": json_value(binding.arguments_dict),
        "matched": item.verdict.matched, "reason": item.verdict.reason,
    }


def run_route_file(call: Call) -> dict[str, Any]:
    """`leveret test` on one pasted file, in a folder of its own (a `load` finds nothing there)."""
    from leveret.playground.cli import run_test_file  # the playground loads only when asked
    from leveret.playground.parser import Load, PlaygroundError, parse
    from leveret.playground.render import make_console

    body = call.body()
    text = body.get("text")
    if not isinstance(text, str):
        raise bad_request("text must be a string")
    try:
        statements = parse(text)
    except PlaygroundError as error:
        return {"name": str(body.get("name") or "pasted.route"), "passed": False, "expectations": 0,
                "report": f"the file does not parse: {error}"}
    if any(isinstance(s, Load) for s in statements):
        raise bad_request("`load` reads files on the broker's host: not available from the browser")
    name = Path(str(body.get("name") or "pasted.route")).name
    if not name.endswith(".route"):
        name += ".route"
    out = io.StringIO()
    console = make_console(100, color=False, file=out)
    with tempfile.TemporaryDirectory(prefix="leveret-ui-") as folder:
        path = Path(folder) / name
        path.write_text(text, encoding="utf-8")
        result = run_test_file(str(path), console)
    report = out.getvalue().replace(str(path), name)
    return {"name": name, "passed": result.passed, "expectations": result.expectations, "report": report}


ROUTES = (
    Route("GET", "leveret/topology/{vhost}/{name}", topology),
    Route("POST", "leveret/trace/{vhost}/{name}", trace),
    Route("POST", "leveret/test", run_route_file),
)
