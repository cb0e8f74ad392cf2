"""The scale scenarios of compare_rabbitmq.py set up what they claim, at small sizes.

Their memory probe is called once before and once after the topology is in
place; here it counts what the broker holds instead, so each result's
`memory_bytes` is the number of queues, consumers or bindings it gained.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_scale  # noqa: E402


def _counter(leveret_broker, count):
    return lambda: leveret_broker.call(lambda broker: count(broker.vhosts["/"]))


def test_queues_each_with_a_consumer(leveret_broker):
    consumers = _counter(leveret_broker, lambda vhost: sum(len(q.consumers) for q in vhost.queues.values()))
    result = asyncio.run(bench_scale.queues_with_consumers(leveret_broker.host, leveret_broker.port, 300, consumers))
    assert (result.count, result.memory_bytes) == (300, 300)
    assert leveret_broker.call(lambda broker: len(broker.vhosts["/"].queues)) == 0  # exclusive: gone with it


def test_bindings_declared(leveret_broker):
    bindings = _counter(leveret_broker, lambda vhost: len(vhost.topology.bindings()))
    result = asyncio.run(bench_scale.bindings(leveret_broker.host, leveret_broker.port, 500, bindings))
    assert (result.count, result.memory_bytes) == (500, 500)


def test_many_connections_deliver_at_the_offered_rate(leveret_broker):
    connections = _counter(leveret_broker, lambda vhost: len(vhost.queues))
    result = asyncio.run(bench_scale.many_connections(
        leveret_broker.host, leveret_broker.port, pairs=10, rate=20, seconds=1.0, memory=connections))
    assert result.count == 20 and result.memory_bytes == 10  # a queue per consumer connection
    assert result.msg_per_s > 100  # 10 x 20 msg/s offered
    assert 0 < result.p99_us < 1_000_000
