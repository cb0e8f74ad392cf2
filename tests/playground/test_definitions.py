"""RabbitMQ definitions: load an export, export what the playground built, round trip."""

from __future__ import annotations

import json
from typing import Any

from leveret.broker.broker import Broker
from leveret.broker.definitions import export_definitions, load_definitions
from leveret.broker.vhost import VirtualHost
from leveret.clock import VirtualClock
from leveret.playground.runner import Runner

# The shape `rabbitmqctl export_definitions` writes (RabbitMQ 3.10), trimmed.
EXPORT: dict[str, Any] = {
    "rabbit_version": "3.10.25",
    "rabbitmq_version": "3.10.25",
    "users": [{"name": "guest", "password_hash": "x", "tags": ["administrator"]}],
    "vhosts": [{"name": "/"}, {"name": "other"}],
    "permissions": [],
    "parameters": [],
    "global_parameters": [],
    "policies": [
        {"vhost": "/", "name": "dlx-all", "pattern": "^orders\\.", "apply-to": "queues",
         "definition": {"dead-letter-exchange": "dlx", "message-ttl": 60000}, "priority": 0},
        {"vhost": "/", "name": "ae", "pattern": "^events$", "apply-to": "exchanges",
         "definition": {"alternate-exchange": "unrouted"}, "priority": 1},
    ],
    "queues": [
        {"name": "orders.eu", "vhost": "/", "durable": True, "auto_delete": False,
         "arguments": {"x-message-ttl": 30000}},
        {"name": "orders.us", "vhost": "/", "durable": True, "auto_delete": False, "arguments": {}},
        {"name": "lost", "vhost": "/", "durable": True, "auto_delete": False, "arguments": {}},
        {"name": "elsewhere", "vhost": "other", "durable": True, "auto_delete": False, "arguments": {}},
        {"name": "bad", "vhost": "/", "durable": True, "auto_delete": False,
         "arguments": {"x-max-length": "ten"}},
    ],
    "exchanges": [
        {"name": "events", "vhost": "/", "type": "topic", "durable": True, "auto_delete": False,
         "internal": False, "arguments": {}},
        {"name": "unrouted", "vhost": "/", "type": "fanout", "durable": True, "auto_delete": False,
         "internal": False, "arguments": {}},
        {"name": "docs", "vhost": "/", "type": "headers", "durable": True, "auto_delete": False,
         "internal": False, "arguments": {}},
    ],
    "bindings": [
        {"source": "events", "vhost": "/", "destination": "orders.eu", "destination_type": "queue",
         "routing_key": "order.eu.*", "arguments": {}},
        {"source": "events", "vhost": "/", "destination": "orders.us", "destination_type": "queue",
         "routing_key": "order.us.*", "arguments": {}},
        {"source": "unrouted", "vhost": "/", "destination": "lost", "destination_type": "queue",
         "routing_key": "", "arguments": {}},
        {"source": "docs", "vhost": "/", "destination": "events", "destination_type": "exchange",
         "routing_key": "", "arguments": {"x-match": "any", "format": "pdf"}},
        {"source": "nope", "vhost": "/", "destination": "lost", "destination_type": "queue",
         "routing_key": "", "arguments": {}},
    ],
}


def fresh() -> VirtualHost:
    return Broker(clock=VirtualClock()).vhost("/")


def test_load_declares_the_vhosts_topology_and_warns_about_what_it_refused() -> None:
    vhost = fresh()
    result = load_definitions(vhost, EXPORT)
    assert (result.exchanges, result.queues, result.bindings) == (3, 3, 4)
    assert "elsewhere" not in vhost.queues
    binding_warning, queue_warning = sorted(result.warnings)
    assert binding_warning == "binding 'nope' -> queue 'lost': no exchange 'nope' in vhost '/'"
    # the rest of the text is the queue module's (RabbitMQ's) explanation
    assert queue_warning.startswith("queue 'bad': invalid arg 'x-max-length' for queue 'bad'")
    assert str(result) == "3 exchanges, 3 queues, 4 bindings, 2 policies (2 warnings)"


def test_policies_stay_policies_and_queues_keep_their_own_arguments() -> None:
    vhost = fresh()
    result = load_definitions(vhost, EXPORT)
    assert result.policies == 2
    eu, us, lost = (vhost.queues[name] for name in ("orders.eu", "orders.us", "lost"))
    assert eu.arguments == {"x-message-ttl": 30000}
    assert us.arguments == {} and lost.arguments == {}
    assert (us.policy, us.policy_definition) == ("dlx-all", {"dead-letter-exchange": "dlx", "message-ttl": 60000})
    # what the queues act on: the smaller TTL wins, the DLX comes from the policy
    assert (eu.args.message_ttl, eu.args.dead_letter_exchange) == (30000, "dlx")
    assert (us.args.message_ttl, us.args.dead_letter_exchange) == (60000, "dlx")
    assert lost.policy is None and lost.args.dead_letter_exchange is None
    assert vhost.exchanges["events"].alternate_exchange == "unrouted"
    assert vhost.exchanges["events"].arguments == {}
    # the application's own plain re-declare is equivalent
    vhost.declare_queue("orders.us", durable=True)
    exported = export_definitions(vhost)
    assert exported["policies"] == [
        {"vhost": "/", "name": "dlx-all", "pattern": "^orders\\.", "apply-to": "queues",
         "definition": {"dead-letter-exchange": "dlx", "message-ttl": 60000}, "priority": 0},
        {"vhost": "/", "name": "ae", "pattern": "^events$", "apply-to": "exchanges",
         "definition": {"alternate-exchange": "unrouted"}, "priority": 1},
    ]


def test_operator_policies_travel_as_parameters_and_bad_policies_warn() -> None:
    vhost = fresh()
    data = {"parameters": [{"vhost": "/", "component": "operator_policy", "name": "cap", "value": {
        "pattern": ".*", "definition": {"max-length": 100}, "priority": 0, "apply-to": "queues"}}],
        "policies": [{"vhost": "/", "name": "bad", "pattern": "(", "definition": {"message-ttl": 1},
                      "priority": 0, "apply-to": "all"}],
        "queues": [{"name": "q", "vhost": "/", "durable": True, "auto_delete": False, "arguments": {}}]}
    result = load_definitions(vhost, data)
    assert result.warnings == [
        "policy 'bad': Validation failed\n\npattern should be regular expression but is invalid: {\"missing )\",1}"]
    assert vhost.queues["q"].operator_policy == "cap" and vhost.queues["q"].args.max_length == 100
    assert export_definitions(vhost)["parameters"] == data["parameters"]


def test_loaded_topology_routes() -> None:
    vhost = fresh()
    load_definitions(vhost, EXPORT)
    trace = vhost.trace("events", ["order.apac.new"], None)
    assert trace.queues == ["lost"]
    trace = vhost.trace("docs", ["order.eu.new"], {"format": "pdf"})
    assert trace.queues == ["orders.eu"]


def test_another_vhost_can_be_chosen() -> None:
    vhost = fresh()
    result = load_definitions(vhost, EXPORT, vhost_name="other")
    assert (result.queues, list(vhost.queues)) == (1, ["elsewhere"])


def test_export_leaves_out_predeclared_exchanges_and_exclusive_queues() -> None:
    runner = Runner()
    runner.run_text(
        "exchange logs topic durable ae=unrouted\nexchange unrouted fanout\n"
        "queue q durable ttl=5s\nqueue mine exclusive\nbind logs -> q \"#\"\n"
        "bind amq.topic -> q a.b\nbind logs -> exchange unrouted x\n"
        "exchange h headers\nbind h -> q where x-match=any n=1\n"
    )
    data = runner.export()
    assert [x["name"] for x in data["exchanges"]] == ["h", "logs", "unrouted"]
    assert data["exchanges"][1] == {
        "name": "logs", "vhost": "/", "type": "topic", "durable": True, "auto_delete": False,
        "internal": False, "arguments": {"alternate-exchange": "unrouted"},
    }
    assert data["queues"] == [
        {"name": "q", "vhost": "/", "durable": True, "auto_delete": False,
         "arguments": {"x-message-ttl": 5000}},
    ]
    assert {(b["source"], b["destination"], b["destination_type"], b["routing_key"]) for b in data["bindings"]} == {
        ("amq.topic", "q", "queue", "a.b"), ("h", "q", "queue", ""), ("logs", "q", "queue", "#"),
        ("logs", "unrouted", "exchange", "x"),
    }
    headers_binding = next(b for b in data["bindings"] if b["source"] == "h")
    assert headers_binding["arguments"] == {"x-match": "any", "n": 1}
    assert data["vhosts"] == [{"name": "/"}]
    json.dumps(data)  # JSON-serialisable as is


def test_round_trip_export_load_export_is_identical() -> None:
    runner = Runner()
    runner.run_text(
        "exchange a direct ae=b\nexchange b fanout internal\nexchange c headers auto-delete\n"
        "queue q1 ttl=1s dlx=a dlk=k max-length=3 overflow=reject-publish\nqueue q2 priority=5\n"
        "bind a -> q1 k\nbind b -> q2\nbind c -> exchange a where x-match=all v=\"1\"\n"
        "bind a -> exchange c key\n"
    )
    first = runner.export()
    vhost = fresh()
    result = load_definitions(vhost, json.loads(json.dumps(first)))
    assert result.warnings == []
    second = export_definitions(vhost)
    assert second == first
