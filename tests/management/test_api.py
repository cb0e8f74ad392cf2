"""The management API's read paths and actions, over real HTTP, on a broker real clients use."""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

import pika
import pytest

from leveret.management import ManagementServer
from tests.management.conftest import Http


def pump(connection: pika.BlockingConnection, seconds: float = 0.3) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        connection.process_data_events(0.05)


@pytest.fixture
def topology(connection: pika.BlockingConnection) -> dict[str, Any]:
    """An exchange, a queue bound to it, 5 messages in: a consumer holds 2 (prefetch), 3 wait."""
    publisher = connection.channel()
    publisher.exchange_declare("events", "topic", arguments={"alternate-exchange": "unrouted"})
    publisher.queue_declare("orders", arguments={"x-message-ttl": 60000, "x-dead-letter-exchange": "dlx"})
    publisher.queue_bind("orders", "events", "order.#", arguments={"k": 1})
    publisher.confirm_delivery()
    for _ in range(5):
        publisher.basic_publish("events", "order.created", b"hello")
    consumer = connection.channel()
    consumer.basic_qos(prefetch_count=2)
    consumer.basic_consume("orders", lambda *args: None, consumer_tag="worker-1")
    pump(connection)
    return {"publisher": publisher, "consumer": consumer}


def test_queue_lists_and_one_queue_in_rabbitmqs_shape(http: Http, topology: dict[str, Any]) -> None:
    listed = http.get("/api/queues")
    in_vhost = http.get("/api/queues/%2F")
    one = http.get("/api/queues/%2F/orders")

    assert [q["name"] for q in listed] == ["orders"] == [q["name"] for q in in_vhost]
    assert {k: one[k] for k in ("name", "vhost", "durable", "auto_delete", "exclusive", "type", "state",
                                "messages", "messages_ready", "messages_unacknowledged", "consumers")} == {
        "name": "orders", "vhost": "/", "durable": False, "auto_delete": False, "exclusive": False,
        "type": "classic", "state": "running", "messages": 5, "messages_ready": 3,
        "messages_unacknowledged": 2, "consumers": 1,
    }
    assert one["arguments"] == {"x-message-ttl": 60000, "x-dead-letter-exchange": "dlx"}
    assert one["message_bytes_ready"] == 15 and one["message_bytes_unacknowledged"] == 10
    assert one["message_stats"]["publish"] == 5 and one["message_stats"]["deliver_get"] == 2
    assert one["message_stats"]["publish_details"] == {"rate": 0.0}
    assert one["node"].startswith("leveret@")
    [detail] = one["consumer_details"]
    assert detail["consumer_tag"] == "worker-1" and detail["prefetch_count"] == 2
    assert detail["queue"] == {"name": "orders", "vhost": "/"}


def test_exchanges_and_the_default_exchange_alias(http: Http, topology: dict[str, Any]) -> None:
    exchanges = {e["name"]: e for e in http.get("/api/exchanges")}
    events = http.get("/api/exchanges/%2F/events")
    default = http.get("/api/exchanges/%2F/amq.default")

    assert {"", "amq.direct", "amq.topic", "amq.fanout", "amq.headers", "events"} <= set(exchanges)
    assert {k: events[k] for k in ("name", "vhost", "type", "durable", "auto_delete", "internal", "arguments")} == {
        "name": "events", "vhost": "/", "type": "topic", "durable": False, "auto_delete": False,
        "internal": False, "arguments": {"alternate-exchange": "unrouted"},
    }
    assert default["name"] == "" and default["type"] == "direct" and default["durable"] is True


def test_bindings_list_the_default_exchange_first(http: Http, topology: dict[str, Any]) -> None:
    bindings = http.get("/api/bindings")
    of_queue = http.get("/api/queues/%2F/orders/bindings")
    from_events = http.get("/api/exchanges/%2F/events/bindings/source")

    implicit = {"source": "", "vhost": "/", "destination": "orders", "destination_type": "queue",
                "routing_key": "orders", "arguments": {}, "properties_key": "orders"}
    explicit = {"source": "events", "vhost": "/", "destination": "orders", "destination_type": "queue",
                "routing_key": "order.#", "arguments": {"k": 1}}
    assert bindings[0] == implicit
    assert {k: v for k, v in bindings[1].items() if k != "properties_key"} == explicit
    assert bindings[1]["properties_key"].startswith("order.%23~")
    assert of_queue == bindings
    assert from_events == bindings[1:]


def test_connections_channels_and_consumers(http: Http, topology: dict[str, Any]) -> None:
    [connection] = http.get("/api/connections")
    channels = http.get("/api/channels")
    [consumer] = http.get("/api/consumers")

    name = connection["name"]
    assert name == f"127.0.0.1:{connection['peer_port']} -> 127.0.0.1:{connection['port']}"
    assert connection["user"] == "guest" and connection["vhost"] == "/" and connection["state"] == "running"
    assert connection["user_provided_name"] == "management-test"
    assert connection["client_properties"]["product"] == "Pika Python Client Library"
    assert connection["channels"] == 2 and connection["protocol"] == "AMQP 0-9-1"
    assert abs(connection["connected_at"] - time.time() * 1000) < 60_000
    quoted = name.replace(" ", "%20").replace(">", "%3E")
    assert http.get("/api/connections/" + quoted) == connection
    assert connection["auth_mechanism"] == "PLAIN"
    assert http.get(f"/api/connections/{quoted}/channels") == http.get("/api/channels")
    assert http.request("GET", "/api/connections/nobody/channels").status == 404

    assert [c["name"] for c in channels] == [f"{name} (1)", f"{name} (2)"]
    publisher, worker = channels
    assert publisher["confirm"] is True and publisher["message_stats"]["publish"] == 5
    assert publisher["message_stats"]["confirm"] == 5
    assert worker["consumer_count"] == 1 and worker["messages_unacknowledged"] == 2
    assert worker["prefetch_count"] == 2 and worker["message_stats"]["deliver_get"] == 2

    assert consumer["consumer_tag"] == "worker-1" and consumer["ack_required"] is True
    assert consumer["channel_details"]["name"] == f"{name} (2)"
    assert consumer["activity_status"] == "up" and consumer["active"] is True


def test_overview_totals_and_listeners(http: Http, leveret_management: ManagementServer,
                                       topology: dict[str, Any]) -> None:
    overview = http.get("/api/overview")

    assert overview["object_totals"] == {"connections": 1, "channels": 2, "consumers": 1,
                                         "exchanges": overview["object_totals"]["exchanges"], "queues": 1}
    assert overview["queue_totals"]["messages"] == 5 and overview["queue_totals"]["messages_ready"] == 3
    assert overview["message_stats"]["publish"] == 5 and overview["message_stats"]["confirm"] == 5
    assert overview["message_stats"]["deliver_get"] == 2
    assert overview["churn_rates"]["connection_created"] == 1
    assert overview["rabbitmq_version"] == "3.10.8" and overview["product_name"] == "leveret"
    assert {"direct", "fanout", "topic", "headers"} <= {t["name"] for t in overview["exchange_types"]}
    protocols = {(x["protocol"], x["port"]) for x in overview["listeners"]}
    assert ("http", leveret_management.port) in protocols


def test_rates_come_from_samples(http: Http, leveret_management: ManagementServer,
                                 connection: pika.BlockingConnection) -> None:
    channel = connection.channel()
    channel.queue_declare("rated")
    clock = [100.0]
    management = leveret_management.management
    management.monotonic = lambda: clock[0]
    leveret_management.broker_thread.call(lambda _: management.sample())  # type: ignore[union-attr]
    for _ in range(20):
        channel.basic_publish("", "rated", b"x")
    pump(connection, 0.2)
    clock[0] += 2.0
    leveret_management.broker_thread.call(lambda _: management.sample())  # type: ignore[union-attr]

    queue = http.get("/api/queues/%2F/rated")
    overview = http.get("/api/overview")

    assert queue["message_stats"]["publish_details"] == {"rate": 10.0}
    assert queue["messages_ready_details"] == {"rate": 10.0}
    assert overview["message_stats"]["publish_details"] == {"rate": 10.0}


def test_a_queue_is_idle_since_the_first_sample_that_saw_nothing_move(
        http: Http, leveret_management: ManagementServer, connection: pika.BlockingConnection) -> None:
    channel = connection.channel()
    channel.queue_declare("quiet")
    management = leveret_management.management
    thread = leveret_management.broker_thread
    assert thread is not None
    thread.call(lambda _: leveret_management._timer.cancel())  # type: ignore[union-attr]  # only our samples
    thread.call(lambda _: management.sample())
    assert "idle_since" not in http.get("/api/queues/%2F/quiet")  # nothing to compare with yet
    before = time.time()
    thread.call(lambda _: management.sample())
    idle = http.get("/api/queues/%2F/quiet")["idle_since"]
    # RabbitMQ's format: RFC 3339, milliseconds, the offset spelt out.
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", idle)
    assert abs(datetime.fromisoformat(idle).timestamp() - before) < 5
    thread.call(lambda _: management.sample())
    assert http.get("/api/queues/%2F/quiet")["idle_since"] == idle  # still the same idle spell
    channel.basic_publish("", "quiet", b"x")
    pump(connection, 0.2)
    thread.call(lambda _: management.sample())
    busy = http.get("/api/queues/%2F/quiet")
    assert "idle_since" not in busy
    assert {k: busy["backing_queue_status"][k] for k in ("len", "q4", "next_seq_id", "mode")} == {
        "len": 1, "q4": 1, "next_seq_id": 1, "mode": "default"}


def test_definitions_export_and_import_round_trip(http: Http, topology: dict[str, Any]) -> None:
    exported = http.get("/api/definitions")
    assert [q["name"] for q in exported["queues"]] == ["orders"]
    assert [e["name"] for e in exported["exchanges"]] == ["events"]
    assert exported["users"][0]["name"] == "guest"
    assert exported["users"][0]["hashing_algorithm"] == "rabbit_password_hashing_sha256"
    assert exported["vhosts"] == [{"name": "/"}]
    assert http.request("DELETE", "/api/queues/%2F/orders").status == 204
    assert http.request("DELETE", "/api/exchanges/%2F/events").status == 204

    imported = http.request("POST", "/api/definitions", exported)

    assert imported.status == 204
    again = http.get("/api/definitions")
    assert (again["queues"], again["exchanges"], again["bindings"]) == (
        exported["queues"], exported["exchanges"], exported["bindings"])


def test_one_vhost_definitions_leave_out_vhost_fields(http: Http, topology: dict[str, Any]) -> None:
    single = http.get("/api/definitions/%2F")

    assert "users" not in single and "vhost" not in single["queues"][0]
    assert sorted(single) == ["bindings", "exchanges", "parameters", "policies", "queues", "rabbit_version"]
    http.request("DELETE", "/api/queues/%2F/orders")
    assert http.request("POST", "/api/definitions/%2F", single).status == 204
    assert http.get("/api/queues/%2F/orders")["arguments"]["x-message-ttl"] == 60000


def test_import_reports_what_the_broker_refused(http: Http, topology: dict[str, Any]) -> None:
    reply = http.request("POST", "/api/definitions", {
        "queues": [{"name": "orders", "vhost": "/", "durable": True, "arguments": {}}],
        "exchanges": [{"name": "elsewhere", "vhost": "other", "type": "direct"}],
    })

    assert reply.status == 400
    assert reply.json["error"] == "bad_request"
    assert "inequivalent arg 'durable' for queue 'orders'" in reply.json["reason"]
    assert "vhost 'other' does not exist" in reply.json["reason"]


def test_purge_and_delete_a_queue(http: Http, topology: dict[str, Any], connection: pika.BlockingConnection) -> None:
    assert http.request("DELETE", "/api/queues/%2F/orders/contents").status == 204
    assert http.get("/api/queues/%2F/orders")["messages_ready"] == 0

    refused = http.request("DELETE", "/api/queues/%2F/orders?if-unused=true")
    assert refused.status == 400
    assert refused.json == {"error": "bad_request", "reason": "queue 'orders' in vhost '/' in use"}

    assert http.request("DELETE", "/api/queues/%2F/orders").status == 204
    pump(connection)  # the consumer hears basic.cancel
    assert http.request("GET", "/api/queues/%2F/orders").status == 404
    assert http.get("/api/consumers") == []


def test_declare_a_queue_and_an_exchange_with_put(http: Http) -> None:
    created = http.request("PUT", "/api/queues/%2F/jobs", {"durable": True, "arguments": {"x-max-length": 10}})
    again = http.request("PUT", "/api/queues/%2F/jobs", {"durable": True, "arguments": {"x-max-length": 10}})
    exchange = http.request("PUT", "/api/exchanges/%2F/jobs-x", {"type": "fanout"})
    no_type = http.request("PUT", "/api/exchanges/%2F/jobs-y", {})

    assert (created.status, again.status, exchange.status, no_type.status) == (201, 204, 201, 400)
    assert http.get("/api/queues/%2F/jobs")["durable"] is True
    assert http.get("/api/exchanges/%2F/jobs-x")["type"] == "fanout"


def test_errors_in_rabbitmqs_shape(http: Http, connection: pika.BlockingConnection) -> None:
    channel = connection.channel()
    exclusive = channel.queue_declare("", exclusive=True).method.queue

    missing = http.request("GET", "/api/queues/%2F/nothing-here")
    no_vhost = http.request("GET", "/api/queues/nowhere")
    system = http.request("DELETE", "/api/exchanges/%2F/amq.direct")
    locked = http.request("DELETE", f"/api/queues/%2F/{exclusive}")
    unknown = http.request("GET", "/api/not-a-thing")
    wrong_method = http.request("POST", "/api/queues")

    assert (missing.status, missing.json) == (404, {"error": "Object Not Found", "reason": "Not Found"})
    assert no_vhost.status == 404 and unknown.status == 404
    assert system.status == 401 and system.json["error"] == "not_authorised"
    assert locked.status == 400 and locked.json["reason"].startswith("cannot obtain exclusive access to locked queue")
    assert wrong_method.status == 405 and wrong_method.headers["allow"] == "GET"


def test_close_a_connection_from_the_api(http: Http, connection: pika.BlockingConnection) -> None:
    [listed] = http.get("/api/connections")
    name = listed["name"].replace(" ", "%20").replace(">", "%3E")

    reply = http.request("DELETE", f"/api/connections/{name}", headers={"X-Reason": "maintenance"})

    assert reply.status == 204
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
        pump(connection, 1.0)
    assert closed.value.reply_code == 320
    assert closed.value.reply_text == "CONNECTION_FORCED - maintenance"


def test_columns_sort_name_filter_and_pages(http: Http) -> None:
    for name in ("b-two", "a-one", "c-three"):
        http.request("PUT", f"/api/queues/%2F/{name}", {"durable": False})
    by_name = http.get("/api/queues?columns=name,message_stats.publish&sort=name&sort_reverse=true")
    filtered = http.get("/api/queues?name=^(a|c)-&use_regex=true&columns=name")
    paged = http.get("/api/queues?page=2&page_size=2&columns=name")

    assert by_name == [{"name": "c-three", "message_stats": {"publish": 0}},
                       {"name": "b-two", "message_stats": {"publish": 0}},
                       {"name": "a-one", "message_stats": {"publish": 0}}]
    assert filtered == [{"name": "a-one"}, {"name": "c-three"}]
    assert paged == {"filtered_count": 3, "item_count": 1, "items": [{"name": "c-three"}], "page": 2,
                     "page_count": 2, "page_size": 2, "total_count": 3}


def test_whoami_nodes_vhosts_and_alarms(http: Http) -> None:
    assert http.get("/api/whoami") == {"name": "guest", "tags": ["administrator"]}
    [node] = http.get("/api/nodes")
    assert node["running"] is True and node["mem_used"] > 0
    assert http.get(f"/api/nodes/{node['name']}")["name"] == node["name"]
    assert http.request("GET", "/api/nodes/rabbit@elsewhere").status == 404
    [vhost] = http.get("/api/vhosts")
    assert vhost["name"] == "/" and vhost["messages"] == 0
    assert http.get("/api/health/checks/alarms") == {"status": "ok"}


def test_the_alarms_health_check_reports_a_memory_alarm(http: Http, leveret_management: ManagementServer) -> None:
    resources = leveret_management.server.broker.resources
    resources.update_memory(used=2, limit=1)
    try:
        reply = http.request("GET", "/api/health/checks/alarms")
        assert reply.status == 503
        assert reply.json == {
            "status": "failed", "reason": "resource alarm(s) in effect in the cluster",
            "alarms": [{"node": leveret_management.management.node, "resource": "memory"}],
        }
    finally:
        resources.update_memory(used=0, limit=1)
    assert http.get("/api/health/checks/alarms") == {"status": "ok"}


def test_totals_do_not_go_back_when_queues_and_channels_go(http: Http, connection: pika.BlockingConnection) -> None:
    channel = connection.channel()
    channel.queue_declare("short-lived")
    for _ in range(3):
        channel.basic_publish("", "short-lived", b"x")
    channel.basic_get("short-lived", auto_ack=True)
    channel.queue_delete("short-lived")
    channel.close()

    stats = http.get("/api/overview")["message_stats"]

    assert stats["publish"] == 3 and stats["deliver_get"] == 1
    assert http.get("/api/overview")["churn_rates"]["queue_deleted"] == 1
