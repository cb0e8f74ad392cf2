"""`/metrics`: the broker in Prometheus' text format, built on each scrape.

Names follow RabbitMQ's own Prometheus plugin (rabbitmq_prometheus) where
the meaning is the same, so its Grafana dashboards and alerts keep working:
`rabbitmq_queue_messages_ready{vhost,queue}`, `rabbitmq_connections`,
`rabbitmq_global_messages_dead_lettered_expired_total{queue_type,dead_letter_strategy}`,
... Counters RabbitMQ only has per channel are given per queue, under a
`leveret_` name (`leveret_queue_messages_published_total{vhost,queue}`,
delivered, acked, redelivered, and dead-lettered with a `reason` label).

As rabbitmq_prometheus does by default, `/metrics` gives queue metrics
aggregated (one sample per metric, summed over every queue) and
`/metrics/per-object` gives them per queue, labelled `{vhost, queue}`.

The durability store's fsync latency is read through `StoreTimings` when the
broker has a store that offers it (`broker.store`, see queues/store.py);
until then the metric is absent.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.process_collector import ProcessCollector

from leveret.management.core import DEAD_LETTER_REASONS, Management, process_memory_bytes

# The classic text format (what rabbitmq_prometheus and every Prometheus
# understands); OpenMetrics when the scraper asks for it.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# RabbitMQ's queue_type label values.
_QUEUE_TYPES = {"classic": "rabbit_classic_queue", "quorum": "rabbit_quorum_queue", "stream": "rabbit_stream_queue"}


@runtime_checkable
class StoreTimings(Protocol):
    """The hook /metrics reads from the durability store (`broker.store`), when present:
    how many fsyncs it made and the seconds they took, in total, since start."""

    fsync_count: int
    fsync_seconds_total: float


class BrokerCollector:
    def __init__(self, management: Management, *, per_object: bool = False) -> None:
        self.m = management
        self.per_object = per_object

    def describe(self) -> list[Metric]:
        return []  # built per scrape; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        m = self.m
        objects = m.object_totals()
        for name, key, text in (
            ("rabbitmq_connections", "connections", "Connections currently open"),
            ("rabbitmq_channels", "channels", "Channels currently open"),
            ("rabbitmq_consumers", "consumers", "Consumers currently connected"),
            ("rabbitmq_queues", "queues", "Queues available"),
            ("leveret_exchanges", "exchanges", "Exchanges declared, predeclared ones included"),
        ):
            yield GaugeMetricFamily(name, text, value=objects[key])

        churn = m.churn_totals()
        for name, key, text in (
            ("rabbitmq_connections_opened", "connection_created", "Total number of connections opened"),
            ("rabbitmq_connections_closed", "connection_closed", "Total number of connections closed or terminated"),
            ("rabbitmq_channels_opened", "channel_created", "Total number of channels opened"),
            ("rabbitmq_channels_closed", "channel_closed", "Total number of channels closed"),
            ("rabbitmq_queues_created", "queue_created", "Total number of queues created"),
            ("rabbitmq_queues_deleted", "queue_deleted", "Total number of queues deleted"),
        ):
            yield CounterMetricFamily(name, text, value=churn[key])

        totals = m.message_totals()
        for name, key, text in (
            ("rabbitmq_global_messages_received", "publish", "Total number of messages received from publishers"),
            ("rabbitmq_global_messages_confirmed", "confirm", "Total number of messages confirmed to publishers"),
            ("rabbitmq_global_messages_unroutable_returned", "return_unroutable",
             "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable"),
            ("rabbitmq_global_messages_unroutable_dropped", "drop_unroutable",
             "Total number of messages published as non-mandatory into an exchange and dropped as unroutable"),
            ("rabbitmq_global_messages_delivered", "deliver_get", "Total number of messages delivered to consumers and basic.get"),
            ("rabbitmq_global_messages_acknowledged", "ack", "Total number of messages acknowledged by consumers"),
            ("rabbitmq_global_messages_redelivered", "redeliver", "Total number of messages redelivered to consumers"),
        ):
            yield CounterMetricFamily(name, text, value=totals[key])

        yield from self._dead_letters()
        yield from self._queues()

        yield GaugeMetricFamily("rabbitmq_process_resident_memory_bytes", "Memory used in bytes",
                                value=process_memory_bytes())
        identity = GaugeMetricFamily("rabbitmq_identity_info", "RabbitMQ node & cluster identity info",
                                     labels=["rabbitmq_node", "rabbitmq_cluster"])
        identity.add_metric([m.node, m.node], 1)
        yield identity
        yield from self._store()

    def _dead_letters(self) -> Iterator[Metric]:
        # Classic and quorum queues alike; strategy "disabled" counts messages dropped
        # for want of a dead-letter exchange, "at_most_once" the ones sent to it.
        by_type: dict[tuple[str, str, str], int] = {}
        for queue in self.m.queues():
            queue_type = _QUEUE_TYPES.get(queue.args.queue_type, queue.args.queue_type)
            for (reason, has_exchange), value in queue.dead_letter_counts.items():
                key = (reason, queue_type, "at_most_once" if has_exchange else "disabled")
                by_type[key] = by_type.get(key, 0) + value
        for vhost in self.m.vhosts():
            for (reason, has_exchange), value in vhost.removed_dead_letter_counts.items():
                # Deleted queues' type is not kept; they are counted as classic.
                key = (reason, _QUEUE_TYPES["classic"], "at_most_once" if has_exchange else "disabled")
                by_type[key] = by_type.get(key, 0) + value
        texts = {
            "expired": "Total number of messages dead-lettered due to message TTL exceeded",
            "rejected": "Total number of messages dead-lettered due to basic.reject or basic.nack",
            "maxlen": "Total number of messages dead-lettered due to overflow drop-head or reject-publish-dlx",
            "delivery_limit": "Total number of messages dead-lettered due to delivery-limit exceeded",
        }
        for reason in DEAD_LETTER_REASONS:
            family = CounterMetricFamily(f"rabbitmq_global_messages_dead_lettered_{reason}", texts[reason],
                                         labels=["queue_type", "dead_letter_strategy"])
            for queue_type in ("rabbit_classic_queue", "rabbit_quorum_queue"):
                for strategy in ("at_most_once", "disabled"):
                    family.add_metric([queue_type, strategy], by_type.get((reason, queue_type, strategy), 0))
            yield family

    def _queues(self) -> Iterator[Metric]:
        labels = ["vhost", "queue"] if self.per_object else []
        gauges = {
            "ready": GaugeMetricFamily("rabbitmq_queue_messages_ready", "Messages ready to be delivered to consumers", labels=labels),
            "unacked": GaugeMetricFamily("rabbitmq_queue_messages_unacked", "Messages delivered to consumers but not yet acknowledged", labels=labels),
            "messages": GaugeMetricFamily("rabbitmq_queue_messages", "Sum of ready and unacknowledged messages - total queue depth", labels=labels),
            "consumers": GaugeMetricFamily("rabbitmq_queue_consumers", "Consumers on a queue", labels=labels),
            "bytes": GaugeMetricFamily("rabbitmq_queue_messages_ready_bytes", "Size in bytes of ready messages", labels=labels),
        }
        counters = {
            "published": CounterMetricFamily("leveret_queue_messages_published", "Messages a queue received (publishes and dead-letters)", labels=labels),
            "delivered": CounterMetricFamily("leveret_queue_messages_delivered", "Messages a queue delivered to consumers or basic.get", labels=labels),
            "acked": CounterMetricFamily("leveret_queue_messages_acked", "Messages acknowledged to a queue", labels=labels),
            "redelivered": CounterMetricFamily("leveret_queue_messages_redelivered", "Deliveries of messages with the redelivered flag", labels=labels),
        }
        dead = CounterMetricFamily("leveret_queue_messages_dead_lettered",
                                   "Messages a queue dead-lettered to its dead-letter exchange, by reason",
                                   labels=[*labels, "reason"])
        # (vhost, queue) -> values, or () -> their sums when aggregated
        sums: dict[tuple[str, ...], dict[str, int]] = {}
        dead_sums: dict[tuple[str, ...], int] = {}
        for queue in self.m.queues():
            key: tuple[str, ...] = (queue.vhost, queue.name) if self.per_object else ()
            row = sums.setdefault(key, dict.fromkeys((*gauges, *counters), 0))
            row["ready"] += queue.message_count
            row["unacked"] += queue.unacked_count
            row["messages"] += queue.message_count + queue.unacked_count
            row["consumers"] += queue.consumer_count
            row["bytes"] += queue.ready_bytes
            for name in counters:
                row[name] += queue.stats.get(name, 0)
            for (reason, has_exchange), value in sorted(queue.dead_letter_counts.items()):
                if has_exchange:
                    dead_sums[(*key, reason)] = dead_sums.get((*key, reason), 0) + value
        if not self.per_object and not sums:
            sums[()] = dict.fromkeys((*gauges, *counters), 0)
        for labelled, row in sums.items():
            for name, gauge in gauges.items():
                gauge.add_metric(list(labelled), row[name])
            for name, counter in counters.items():
                counter.add_metric(list(labelled), row[name])
        for labelled, value in dead_sums.items():
            dead.add_metric(list(labelled), value)
        yield from gauges.values()
        yield from counters.values()
        yield dead

    def _store(self) -> Iterator[Metric]:
        store: Any = getattr(self.m.broker, "store", None)
        if not isinstance(store, StoreTimings):
            return
        summary = SummaryMetricFamily("leveret_store_fsync_seconds", "Time the message store spent in fsync")
        summary.add_metric([], count_value=store.fsync_count, sum_value=store.fsync_seconds_total)
        yield summary


def registry_for(management: Management, *, process: bool = True, per_object: bool = False) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BrokerCollector(management, per_object=per_object))
    if process:
        ProcessCollector(registry=registry)  # process_* (CPU, memory, fds) on Linux
    return registry


def render(registry: CollectorRegistry, accept: str | None = None) -> tuple[bytes, str]:
    """The exposition and its content type, as the scraper's Accept header prefers."""
    if accept and "application/openmetrics-text" in accept:
        return openmetrics.generate_latest(registry), openmetrics.CONTENT_TYPE_LATEST  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE
