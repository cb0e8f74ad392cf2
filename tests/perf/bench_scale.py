"""Scale scenarios for compare_rabbitmq.py: many connections, queues and bindings.

Each function runs one scenario against one broker (host, port) and returns a
`ScaleResult`; `memory` is measured by the caller's `memory_probe` (leveret:
its resident set; RabbitMQ: the node's `erlang:memory(total)`), taken before
and after the scenario's topology is in place, so it is the cost of that
topology. Everything declared is exclusive or auto-deleted and goes with the
connection.

The declare scenarios pipeline their methods with nowait and end with one
synchronous method, so the time is the broker's. The connections scenario
is a Python client at a modest rate: its latency includes the client's loop.
"""

from __future__ import annotations

import asyncio
import statistics
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from amqp_raw import RawClient, marshal, publish_frames
from pamqp import commands

STAMP = struct.Struct(">q")
BATCH = 2000  # methods per write in the pipelined scenarios


@dataclass(frozen=True, slots=True)
class ScaleResult:
    seconds: float  # time to set up (declare scenarios) or to run
    memory_bytes: int  # growth of the broker's memory across the scenario's topology
    count: int  # queues, bindings or connections
    msg_per_s: float = 0.0
    p99_us: float = 0.0


async def _pipelined(client: RawClient, frames: list[bytes]) -> None:
    for start in range(0, len(frames), BATCH):
        client.send(b"".join(frames[start:start + BATCH]))
        await client.drain()


async def queues_with_consumers(host: str, port: int, count: int, memory: Callable[[], int]) -> ScaleResult:
    """`count` exclusive queues, each with a consumer, declared over one connection."""
    prefix = f"perf-q-{uuid.uuid4().hex[:6]}"
    frames = []
    for index in range(count):
        name = f"{prefix}-{index}"
        frames.append(marshal(commands.Queue.Declare(queue=name, exclusive=True, nowait=True)))
        frames.append(marshal(commands.Basic.Consume(queue=name, consumer_tag=f"c{index}", no_ack=True, nowait=True)))
    client = RawClient()
    await client.connect(host, port)
    before = memory()
    started = time.perf_counter()
    await _pipelined(client, frames)
    await client.call(marshal(commands.Queue.Declare(queue=f"{prefix}-{count - 1}", passive=True)), (50, 11))
    seconds = time.perf_counter() - started
    grown = memory() - before
    await client.close()
    return ScaleResult(seconds, grown, count)


async def bindings(host: str, port: int, count: int, memory: Callable[[], int]) -> ScaleResult:
    """`count` topic bindings of one exclusive queue to one auto-delete exchange."""
    tag = uuid.uuid4().hex[:6]
    exchange, queue = f"perf-x-{tag}", f"perf-b-{tag}"
    client = RawClient()
    await client.connect(host, port)
    await client.call(marshal(commands.Exchange.Declare(exchange=exchange, exchange_type="topic", auto_delete=True)),
                      (40, 11))
    await client.call(marshal(commands.Queue.Declare(queue=queue, exclusive=True)), (50, 11))
    frames = [marshal(commands.Queue.Bind(queue=queue, exchange=exchange, routing_key=f"k{index}.*.{index % 97}",
                                          nowait=True)) for index in range(count - 1)]
    before = memory()
    started = time.perf_counter()
    await _pipelined(client, frames)
    await client.call(marshal(commands.Queue.Bind(queue=queue, exchange=exchange, routing_key="last.#")), (50, 21))
    seconds = time.perf_counter() - started
    grown = memory() - before
    await client.call(marshal(commands.Exchange.Delete(exchange=exchange)), (40, 21))
    await client.close()
    return ScaleResult(seconds, grown, count)


async def _open_all(host: str, port: int, clients: list[RawClient], parallel: int = 50) -> None:
    gate = asyncio.Semaphore(parallel)

    async def one(client: RawClient) -> None:
        async with gate:
            await client.connect(host, port)

    await asyncio.gather(*(one(client) for client in clients))


async def many_connections(host: str, port: int, pairs: int, rate: float, seconds: float,
                           memory: Callable[[], int]) -> ScaleResult:
    """`pairs` publisher connections, each publishing `rate` msg/s of 16 B to the
    exclusive queue of its own consumer connection (no-ack consumers)."""
    prefix = f"perf-c-{uuid.uuid4().hex[:6]}"
    latencies: list[int] = []
    received = [0]
    measuring = [False]

    def on_body(payload: bytes) -> None:
        if measuring[0]:
            received[0] += 1
            latencies.append(time.perf_counter_ns() - STAMP.unpack_from(payload)[0])

    before = memory()
    consumers = [RawClient(on_body) for _ in range(pairs)]
    publishers = [RawClient() for _ in range(pairs)]
    try:
        await _open_all(host, port, consumers)
        for index, consumer in enumerate(consumers):
            name = f"{prefix}-{index}"
            consumer.send(marshal(commands.Queue.Declare(queue=name, exclusive=True, nowait=True))
                          + marshal(commands.Basic.Consume(queue=name, consumer_tag="c", no_ack=True, nowait=True)))
        await asyncio.gather(*(consumer.call(marshal(commands.Queue.Declare(queue=f"{prefix}-{index}", passive=True)),
                                             (50, 11)) for index, consumer in enumerate(consumers)))
        await _open_all(host, port, publishers)
        grown = memory() - before
        stop = [False]

        async def publish(index: int, publisher: RawClient) -> None:
            name = f"{prefix}-{index}"
            interval = 1.0 / rate
            await asyncio.sleep(interval * index / pairs)  # spread the first publishes
            next_at = time.perf_counter()
            while not stop[0] and not publisher.closed.is_set():
                publisher.send(publish_frames(name, STAMP.pack(time.perf_counter_ns()) + b"x" * 8))
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

        tasks = [asyncio.create_task(publish(index, publisher)) for index, publisher in enumerate(publishers)]
        await asyncio.sleep(2.0)  # warm-up
        measuring[0] = True
        started = time.perf_counter()
        await asyncio.sleep(seconds)
        measuring[0] = False
        elapsed = time.perf_counter() - started
        stop[0] = True
        await asyncio.gather(*tasks)
        failed = [client.error for client in consumers + publishers if client.closed.is_set()]
        if failed:
            raise RuntimeError(f"{len(failed)} connections closed: {failed[0]}")
    finally:
        await asyncio.gather(*(client.close() for client in consumers + publishers), return_exceptions=True)
    p99 = statistics.quantiles(latencies, n=100)[98] / 1000 if len(latencies) > 100 else 0.0
    return ScaleResult(elapsed, grown, 2 * pairs, received[0] / elapsed, p99)
