"""/metrics, read back with prometheus-client's own parser."""

from __future__ import annotations

from dataclasses import dataclass

import pika
import pytest
from prometheus_client.parser import text_string_to_metric_families

from leveret.management import ManagementServer
from tests.management.conftest import Http


def scrape(http: Http, path: str = "/metrics/per-object") -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reply = http.request("GET", path, user=None)  # unauthenticated, as RabbitMQ's plugin
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(reply.body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_queue_depths_and_message_counters(http: Http, connection: pika.BlockingConnection) -> None:
    channel = connection.channel()
    channel.queue_declare("work")
    for _ in range(4):
        channel.basic_publish("", "work", b"job")
    channel.basic_publish("", "nowhere", b"lost")
    first = channel.basic_get("work")[0]
    second = channel.basic_get("work")[0]
    assert first is not None and second is not None
    channel.basic_ack(first.delivery_tag)
    channel.basic_nack(second.delivery_tag, requeue=True)
    again = channel.basic_get("work")[0]  # the requeued one, redelivered
    assert again is not None and again.redelivered

    samples = scrape(http)

    q = {"vhost": "/", "queue": "work"}
    assert value(samples, "rabbitmq_queue_messages_ready", **q) == 2
    assert value(samples, "rabbitmq_queue_messages_unacked", **q) == 1
    assert value(samples, "rabbitmq_queue_messages", **q) == 3
    assert value(samples, "rabbitmq_queue_consumers", **q) == 0
    assert value(samples, "leveret_queue_messages_published_total", **q) == 4
    assert value(samples, "leveret_queue_messages_delivered_total", **q) == 3
    assert value(samples, "leveret_queue_messages_acked_total", **q) == 1
    assert value(samples, "leveret_queue_messages_redelivered_total", **q) == 1
    assert value(samples, "rabbitmq_global_messages_received_total") == 5
    assert value(samples, "rabbitmq_global_messages_unroutable_dropped_total") == 1
    assert value(samples, "rabbitmq_global_messages_delivered_total") == 3
    assert value(samples, "rabbitmq_global_messages_acknowledged_total") == 1
    assert value(samples, "rabbitmq_global_messages_redelivered_total") == 1


def test_connections_channels_consumers_and_memory(http: Http, connection: pika.BlockingConnection) -> None:
    channel = connection.channel()
    channel.queue_declare("watched")
    channel.basic_consume("watched", lambda *args: None)
    connection.channel()

    samples = scrape(http)

    assert value(samples, "rabbitmq_connections") == 1
    assert value(samples, "rabbitmq_channels") == 2
    assert value(samples, "rabbitmq_consumers") == 1
    assert value(samples, "rabbitmq_queues") == 1
    assert value(samples, "rabbitmq_connections_opened_total") == 1
    assert value(samples, "rabbitmq_channels_opened_total") == 2
    assert value(samples, "rabbitmq_process_resident_memory_bytes") > 1_000_000
    assert value(samples, "rabbitmq_identity_info", rabbitmq_node=samples_node(samples),
                 rabbitmq_cluster=samples_node(samples)) == 1


def samples_node(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> str:
    [labels] = [dict(k[1]) for k in samples if k[0] == "rabbitmq_identity_info"]
    return labels["rabbitmq_node"]


def test_dead_letters_per_reason(http: Http, connection: pika.BlockingConnection) -> None:
    channel = connection.channel()
    channel.exchange_declare("dlx", "fanout")
    channel.queue_declare("graveyard")
    channel.queue_bind("graveyard", "dlx")
    channel.queue_declare("bounded", arguments={"x-max-length": 1, "x-dead-letter-exchange": "dlx"})
    channel.queue_declare("plain", arguments={"x-max-length": 1})  # no dead-letter exchange: dropped
    for _ in range(3):
        channel.basic_publish("", "bounded", b"x")  # 2 pushed out: maxlen
        channel.basic_publish("", "plain", b"x")
    got = channel.basic_get("bounded")[0]
    assert got is not None
    channel.basic_reject(got.delivery_tag, requeue=False)  # rejected
    channel.basic_publish("", "bounded", b"x", pika.BasicProperties(expiration="0"))  # expired

    samples = scrape(http)

    classic = {"queue_type": "rabbit_classic_queue"}
    assert value(samples, "rabbitmq_global_messages_dead_lettered_maxlen_total",
                 dead_letter_strategy="at_most_once", **classic) == 2
    assert value(samples, "rabbitmq_global_messages_dead_lettered_maxlen_total",
                 dead_letter_strategy="disabled", **classic) == 2
    assert value(samples, "rabbitmq_global_messages_dead_lettered_rejected_total",
                 dead_letter_strategy="at_most_once", **classic) == 1
    assert value(samples, "rabbitmq_global_messages_dead_lettered_expired_total",
                 dead_letter_strategy="at_most_once", **classic) == 1
    assert value(samples, "leveret_queue_messages_dead_lettered_total", vhost="/", queue="bounded",
                 reason="maxlen") == 2
    assert value(samples, "leveret_queue_messages_dead_lettered_total", vhost="/", queue="bounded",
                 reason="rejected") == 1
    assert value(samples, "rabbitmq_queue_messages_ready", vhost="/", queue="graveyard") == 4


def test_counters_survive_the_queue_they_counted(http: Http, connection: pika.BlockingConnection) -> None:
    channel = connection.channel()
    channel.queue_declare("brief", arguments={"x-max-length": 1, "x-dead-letter-exchange": "gone"})
    channel.basic_publish("", "brief", b"x")
    channel.basic_publish("", "brief", b"x")
    channel.queue_delete("brief")
    channel.close()

    samples = scrape(http)

    assert ("rabbitmq_queue_messages_ready", (("queue", "brief"), ("vhost", "/"))) not in samples
    assert value(samples, "rabbitmq_global_messages_received_total") == 2
    assert value(samples, "rabbitmq_global_messages_dead_lettered_maxlen_total",
                 queue_type="rabbit_classic_queue", dead_letter_strategy="at_most_once") == 1
    assert value(samples, "rabbitmq_queues_deleted_total") == 1
    assert value(samples, "rabbitmq_channels_closed_total") == 1


@dataclass
class FakeStore:
    fsync_count: int = 12
    fsync_seconds_total: float = 0.5


def test_store_fsync_latency_when_the_broker_has_a_store(http: Http, leveret_management: ManagementServer,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    assert not any(name.startswith("leveret_store_fsync") for name, _ in scrape(http))
    monkeypatch.setattr(leveret_management.server.broker, "store", FakeStore(), raising=False)

    samples = scrape(http)

    assert value(samples, "leveret_store_fsync_seconds_count") == 12
    assert value(samples, "leveret_store_fsync_seconds_sum") == 0.5


def test_openmetrics_when_the_scraper_asks_for_it(http: Http) -> None:
    reply = http.request("GET", "/metrics", user=None,
                         headers={"Accept": "application/openmetrics-text; version=1.0.0"})

    assert reply.headers["content-type"].startswith("application/openmetrics-text")
    assert reply.body.endswith(b"# EOF\n")
    names = {f.name for f in text_string_to_metric_families(reply.body.decode().replace("# EOF\n", ""))}
    assert "rabbitmq_queues" in names


def test_metrics_aggregates_queues_and_per_object_labels_them(http: Http, connection: pika.BlockingConnection) -> None:
    channel = connection.channel()
    for name, count in (("first", 2), ("second", 3)):
        channel.queue_declare(name)
        for _ in range(count):
            channel.basic_publish("", name, b"x")
    channel.basic_consume("second", lambda *args: None)
    connection.process_data_events(0.1)

    aggregated = scrape(http, "/metrics")
    per_object = scrape(http, "/metrics/per-object")

    assert value(aggregated, "rabbitmq_queue_messages") == 5
    assert value(aggregated, "rabbitmq_queue_consumers") == 1
    assert value(aggregated, "leveret_queue_messages_published_total") == 5
    assert not [key for key in aggregated if key[0] == "rabbitmq_queue_messages" and key[1]]
    assert value(per_object, "rabbitmq_queue_messages", vhost="/", queue="first") == 2
    assert value(per_object, "rabbitmq_queue_messages", vhost="/", queue="second") == 3
    assert ("rabbitmq_queue_messages", ()) not in per_object
