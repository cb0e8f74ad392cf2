"""Differential: the same topology on leveret and on the reference RabbitMQ, the same JSON shapes.

Skips when the reference's management API (127.0.0.1:15672) is not there.
For every object kind the fields a dashboard or script reads must be present
on both sides with the same JSON types (and, where deterministic, the same
values); the fields RabbitMQ has and leveret leaves out are listed here, so a
shape change on either side fails the test.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pika
import pytest

from leveret.management import ManagementServer, attach, detach
from leveret.server.shell import ServerThread
from tests.management.conftest import Http

pytestmark = pytest.mark.rabbitmq

RABBITMQ_HTTP = "http://127.0.0.1:15672"
RABBITMQ_AMQP = "amqp://guest:guest@127.0.0.1:5672/"

# What leveret does not report: Erlang internals, and values it does not measure.
NOT_REPORTED = {
    # idle_since: present on both only once the queue has been quiet for a while (test_api.py checks ours).
    "queue": {"consumer_capacity", "consumer_utilisation", "garbage_collection",
              "idle_since", "memory", "message_bytes_persistent", "messages_persistent", "reductions",
              "reductions_details", "storage_version", "internal", "internal_owner"},
    "exchange": {"message_stats", "user_who_performed_action", "policy"},
    "connection": {"garbage_collection", "recv_cnt", "recv_oct", "recv_oct_details",
                   "reductions", "reductions_details", "send_cnt", "send_oct", "send_oct_details", "send_pend",
                   "user_who_performed_action"},
    "channel": {"garbage_collection", "idle_since", "pending_raft_commands", "reductions", "reductions_details",
                "user_who_performed_action", "cached_segments"},
    "consumer": set(),
    "binding": set(),
    "overview": {"erlang_version", "erlang_full_version", "release_series_support_status",
                 "sample_retention_policies", "is_op_policy_updating_enabled"},
}
# backing_queue_status fields leveret does not count.
NOT_REPORTED_BACKING = {"next_deliver_seq_id", "avg_ack_ingress_rate"}
# Fields a dashboard or script reads, per kind: present on both sides with the same JSON type.
READ_FIELDS = {
    "queue": ("name", "vhost", "durable", "auto_delete", "exclusive", "arguments", "type", "state", "node",
              "consumers", "messages", "messages_ready", "messages_unacknowledged", "messages_details",
              "message_bytes", "message_stats", "policy", "exclusive_consumer_tag"),
    "exchange": ("name", "vhost", "type", "durable", "auto_delete", "internal", "arguments"),
    "binding": ("source", "vhost", "destination", "destination_type", "routing_key", "arguments",
                "properties_key"),
    "connection": ("name", "node", "user", "vhost", "state", "channels", "peer_host", "peer_port", "host",
                   "port", "protocol", "client_properties", "user_provided_name", "connected_at", "timeout",
                   "frame_max", "channel_max", "ssl", "type"),
    "channel": ("name", "node", "number", "user", "vhost", "consumer_count", "messages_unacknowledged",
                "prefetch_count", "global_prefetch_count", "confirm", "transactional", "state",
                "connection_details", "message_stats"),
    "consumer": ("consumer_tag", "queue", "channel_details", "ack_required", "prefetch_count", "exclusive",
                 "active", "activity_status", "arguments"),
    "overview": ("management_version", "rabbitmq_version", "product_name", "product_version", "node",
                 "cluster_name", "message_stats", "queue_totals", "object_totals", "churn_rates", "listeners",
                 "exchange_types"),
}
SAME_VALUES = {
    "queue": ("durable", "auto_delete", "exclusive", "arguments", "type", "state", "consumers", "messages",
              "messages_ready", "messages_unacknowledged", "message_bytes", "exclusive_consumer_tag"),
    "exchange": ("type", "durable", "auto_delete", "internal", "arguments"),
    "binding": ("destination_type", "routing_key", "arguments"),
    "connection": ("user", "vhost", "state", "channels", "protocol", "user_provided_name", "ssl", "type",
                   "auth_mechanism"),
    "channel": ("number", "user", "vhost", "consumer_count", "messages_unacknowledged", "prefetch_count",
                "global_prefetch_count", "confirm", "transactional", "state"),
    "consumer": ("ack_required", "prefetch_count", "exclusive", "active", "activity_status", "arguments"),
}


def kind_of(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return type(value).__name__
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


class Side:
    """One broker with the test topology on it (names unique per run)."""

    def __init__(self, http: Http, amqp_url: str, suffix: str) -> None:
        self.http = http
        self.queue = f"shape-q-{suffix}"
        self.exchange = f"shape-x-{suffix}"
        self.client = f"shape-client-{suffix}"
        params = pika.URLParameters(amqp_url)
        params.client_properties = {"connection_name": self.client}
        self.connection = pika.BlockingConnection(params)
        publisher = self.connection.channel()
        publisher.exchange_declare(self.exchange, "topic", arguments={"alternate-exchange": "nowhere"})
        publisher.queue_declare(self.queue, arguments={"x-message-ttl": 600000, "x-max-length": 100})
        publisher.queue_bind(self.queue, self.exchange, "a.#", arguments={"k": 1})
        publisher.confirm_delivery()
        for _ in range(5):
            publisher.basic_publish(self.exchange, "a.b", b"hello")
        consumer = self.connection.channel()
        consumer.basic_qos(prefetch_count=2)
        consumer.basic_consume(self.queue, lambda *args: None, consumer_tag=f"ctag-{suffix}")
        self.connection.process_data_events(0.3)
        self.publisher = publisher

    def objects(self) -> dict[str, Any]:
        vhost_queue = f"/api/queues/%2F/{quote(self.queue)}"
        [connection] = [c for c in self.http.get("/api/connections") if c.get("user_provided_name") == self.client]
        channels = [c for c in self.http.get("/api/channels")
                    if c["connection_details"]["name"] == connection["name"]]
        channels.sort(key=lambda c: c["number"])
        [consumer] = [c for c in self.http.get("/api/consumers") if c["queue"]["name"] == self.queue]
        [binding] = [b for b in self.http.get("/api/bindings/%2F") if b["source"] == self.exchange]
        queue = self.http.get(vhost_queue)
        return {
            "connection_channels": self.http.get(f"/api/connections/{quote(connection['name'])}/channels"),
            "vhost_definitions": self.http.get("/api/definitions/%2F"),
            "queue": queue,
            "listed_queue": next(q for q in self.http.get("/api/queues/%2F") if q["name"] == self.queue),
            "exchange": self.http.get(f"/api/exchanges/%2F/{quote(self.exchange)}"),
            "binding": binding,
            "connection": connection,
            "channel": channels[-1],
            "consumer": consumer,
            "overview": self.http.get("/api/overview"),
        }

    def close(self) -> None:
        self.publisher.queue_delete(self.queue)
        self.publisher.exchange_delete(self.exchange)
        self.connection.close()


@pytest.fixture(scope="module")
def leveret() -> Iterator[ManagementServer]:
    with ServerThread() as thread:
        running = attach(thread)
        try:
            yield running
        finally:
            detach(thread, running)


def _settled(rabbitmq: Http, side: Side) -> bool:
    """RabbitMQ's statistics arrive every 5 s: wait until they show the consumer's share."""
    queue = rabbitmq.get(f"/api/queues/%2F/{quote(side.queue)}")
    connections = [c for c in rabbitmq.get("/api/connections") if c.get("user_provided_name") == side.client]
    return (queue.get("messages_unacknowledged") == 2 and "message_stats" in queue
            and [c.get("channels") for c in connections] == [2])


@pytest.fixture(scope="module")
def both(rabbitmq: Http, leveret: ManagementServer) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    suffix = uuid.uuid4().hex[:8]
    thread = leveret.broker_thread
    assert thread is not None
    theirs = Side(rabbitmq, RABBITMQ_AMQP, suffix)
    ours = Side(Http(leveret.url), thread.url, suffix)
    try:
        deadline = time.monotonic() + 20
        while not _settled(rabbitmq, theirs) and time.monotonic() < deadline:
            theirs.connection.process_data_events(0.5)
        yield theirs.objects(), ours.objects()
    finally:
        theirs.close()
        ours.close()


@pytest.mark.parametrize("kind", ["queue", "exchange", "binding", "connection", "channel", "consumer", "overview"])
def test_same_shape_as_rabbitmq(both: tuple[dict[str, Any], dict[str, Any]], kind: str) -> None:
    theirs, ours = both[0][kind], both[1][kind]

    missing = set(theirs) - set(ours) - NOT_REPORTED[kind]
    types = {f: (kind_of(theirs.get(f)), kind_of(ours.get(f))) for f in READ_FIELDS[kind]}
    values = {f: (theirs.get(f), ours.get(f)) for f in SAME_VALUES.get(kind, ())}

    assert missing == set()
    assert {f: t for f, t in types.items() if t[0] != t[1]} == {}
    assert {f: v for f, v in values.items() if v[0] != v[1]} == {}


def test_listed_queues_have_the_single_queue_fields(both: tuple[dict[str, Any], dict[str, Any]]) -> None:
    theirs, ours = both[0]["listed_queue"], both[1]["listed_queue"]

    assert set(theirs) - set(ours) - NOT_REPORTED["queue"] == set()


@pytest.mark.parametrize("kind", ["queue", "channel", "overview"])
def test_message_stats_fields(both: tuple[dict[str, Any], dict[str, Any]], kind: str) -> None:
    theirs, ours = both[0][kind]["message_stats"], both[1][kind]["message_stats"]
    fields = {"queue": ("publish", "deliver_get"), "channel": ("deliver_get",),
              "overview": ("publish", "confirm", "deliver_get", "ack", "redeliver", "drop_unroutable",
                           "return_unroutable")}[kind]

    for field in fields:
        assert kind_of(theirs.get(field)) == kind_of(ours.get(field)) == "number", field
        assert set(theirs[f"{field}_details"]) == set(ours[f"{field}_details"]) == {"rate"}
    if kind == "queue":
        assert (theirs["publish"], theirs["deliver_get"]) == (ours["publish"], ours["deliver_get"]) == (5, 2)


def test_overview_nested_totals(both: tuple[dict[str, Any], dict[str, Any]]) -> None:
    theirs, ours = both[0]["overview"], both[1]["overview"]

    assert set(ours["object_totals"]) == set(theirs["object_totals"])
    assert set(ours["queue_totals"]) == set(theirs["queue_totals"])
    assert set(theirs["churn_rates"]) - set(ours["churn_rates"]) <= {"queue_declared", "queue_declared_details"}
    assert {k for x in theirs["listeners"] for k in x} == {k for x in ours["listeners"] for k in x}


def test_a_connections_channels_as_on_rabbitmq(both: tuple[dict[str, Any], dict[str, Any]]) -> None:
    theirs, ours = both[0]["connection_channels"], both[1]["connection_channels"]

    assert [c["number"] for c in ours] == [c["number"] for c in theirs] == [1, 2]
    for their_channel, our_channel in zip(theirs, ours, strict=True):
        assert set(their_channel) - set(our_channel) - NOT_REPORTED["channel"] == set()
        assert our_channel["connection_details"]["name"] == both[1]["connection"]["name"]


def test_a_vhost_definitions_export_has_rabbitmqs_top_level_keys(both: tuple[dict[str, Any], dict[str, Any]]) -> None:
    theirs, ours = both[0]["vhost_definitions"], both[1]["vhost_definitions"]

    assert sorted(ours) == sorted(theirs)


def test_backing_queue_status_as_on_rabbitmq(both: tuple[dict[str, Any], dict[str, Any]]) -> None:
    # 5 published, 2 held by the consumer, 3 ready, every one in memory.
    theirs, ours = both[0]["queue"]["backing_queue_status"], both[1]["queue"]["backing_queue_status"]

    assert set(theirs) - set(ours) == NOT_REPORTED_BACKING
    assert set(ours) <= set(theirs)
    counted = ("len", "mode", "q1", "q2", "q3", "q4", "delta", "next_seq_id", "target_ram_count", "version")
    assert {f: ours[f] for f in counted} == {f: theirs[f] for f in counted}
    assert {f: kind_of(ours[f]) for f in ours} == {f: kind_of(theirs[f]) for f in ours}
