"""Soak: many well-behaved clients and many hostile ones at once, against `leveret serve`.

Well-behaved clients (aio-pika) each consume their own queue and publish, with
confirms, a numbered series of messages to the next client's queue. Meanwhile
hostile clients keep coming: some send garbage, some vanish in the middle of a
frame, some finish the handshake with a 1 s heartbeat and then fall silent.
What must hold: every well-behaved client gets every message its predecessor
sent, in order; every silent client is dropped within its heartbeat timeout;
afterwards no connection or queue is left; and the broker's memory, measured
after each round, comes back to what it was after the first one.

Default: one short round (a few seconds). LEVERET_SOAK=1: a few hundred
connections for about a minute, loopback only.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from leveret.amqp_wire import framing
from pamqp import body, commands, frame, header

FULL = os.environ.get("LEVERET_SOAK") == "1"
GOOD = 300 if FULL else 40
MESSAGES = 60 if FULL else 25
HOSTILE = 60 if FULL else 12  # concurrent hostile clients of each kind, reconnecting
ROUNDS = 3 if FULL else 2
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Broker:
    process: subprocess.Popen[str]
    amqp_port: int
    http_port: int
    log: Any

    def rss(self) -> int:
        with open(f"/proc/{self.process.pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def api(self, path: str) -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}/api/{path}",
                                         headers={"Authorization": "Basic Z3Vlc3Q6Z3Vlc3Q="})  # guest:guest
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())


@pytest.fixture
def broker() -> Iterator[Broker]:
    if not os.path.exists("/proc/self/statm"):
        pytest.skip("measures the broker's memory through /proc")
    log = tempfile.TemporaryFile("w+")  # a pipe could fill up and stall the broker
    process = subprocess.Popen(
        [sys.executable, "-m", "leveret.cli", "serve", "--port", "0", "--http-port", "0",
         "--log-level", "error"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True,
    )
    assert process.stdout is not None
    amqp = process.stdout.readline()
    http = process.stdout.readline()
    try:
        amqp_port = int(amqp.split("amqp://127.0.0.1:")[1].split(" ")[0])
        http_port = int(http.split("http://127.0.0.1:")[1].split("/")[0])
    except IndexError:
        process.kill()
        raise AssertionError(f"leveret did not start: {amqp!r} {http!r}") from None
    yield Broker(process, amqp_port, http_port, log)
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@dataclass
class Tally:
    connections: Counter[str] = field(default_factory=Counter)
    bytes_sent: Counter[str] = field(default_factory=Counter)
    silent_dropped_after: list[float] = field(default_factory=list)


# ------------------------------------------------------------ well-behaved
async def good_client(port: int, index: int, round_: int, ready: asyncio.Barrier,
                      received: dict[int, list[int]]) -> None:
    connection = await aio_pika.connect(f"amqp://guest:guest@127.0.0.1:{port}/", timeout=30)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=20)
        queue = await channel.declare_queue(f"soak-{round_}-{index}", auto_delete=True)
        got = received.setdefault(index, [])
        done = asyncio.Event()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            got.append(int(message.body))
            await message.ack()
            if len(got) >= MESSAGES:
                done.set()

        await queue.consume(on_message)
        await ready.wait()  # every queue exists before anyone publishes
        target = f"soak-{round_}-{(index + 1) % GOOD}"
        for start in range(0, MESSAGES, 25):
            await asyncio.gather(*(
                channel.default_exchange.publish(aio_pika.Message(str(n).encode()), routing_key=target)
                for n in range(start, min(start + 25, MESSAGES))
            ))
        await asyncio.wait_for(done.wait(), 60)
        await asyncio.sleep(0.2)  # let the last acks out before closing


# ------------------------------------------------------------------ hostile
def handshake_bytes(heartbeat: int = 0) -> bytes:
    return b"".join((
        framing.PROTOCOL_HEADER,
        frame.marshal(commands.Connection.StartOk(client_properties={}, mechanism="PLAIN",
                                                  response="\0guest\0guest", locale="en_US"), 0),
        frame.marshal(commands.Connection.TuneOk(channel_max=16, frame_max=131072, heartbeat=heartbeat), 0),
        frame.marshal(commands.Connection.Open(virtual_host="/"), 0),
        frame.marshal(commands.Channel.Open(), 1),
    ))


async def garbage(port: int, stop: asyncio.Event, tally: Tally, rng: random.Random) -> None:
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            continue
        tally.connections["garbage"] += 1
        prefix = rng.choice([b"", framing.PROTOCOL_HEADER, handshake_bytes()])
        data = prefix + rng.randbytes(rng.randint(1, 64 * 1024))
        try:
            writer.write(data)
            await writer.drain()
            tally.bytes_sent["garbage"] += len(data)
            await asyncio.wait_for(reader.read(65536), 0.2)
        except (TimeoutError, OSError):
            pass
        writer.transport.abort()


async def mid_frame(port: int, stop: asyncio.Event, tally: Tally, rng: random.Random) -> None:
    publish = (frame.marshal(commands.Basic.Publish(exchange="", routing_key="nowhere"), 1)
               + frame.marshal(header.ContentHeader(0, 100_000, commands.Basic.Properties()), 1)
               + frame.marshal(body.ContentBody(b"z" * 50_000), 1))
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            continue
        tally.connections["mid-frame"] += 1
        session = handshake_bytes() + publish
        cut = session[: rng.randint(1, len(session) - 1)]
        try:
            writer.write(cut)
            await writer.drain()
            tally.bytes_sent["mid-frame"] += len(cut)
            await asyncio.sleep(rng.random() * 0.05)
        except OSError:
            pass
        writer.transport.abort()  # gone in the middle of a frame


async def silent(port: int, stop: asyncio.Event, tally: Tally) -> None:
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            continue
        tally.connections["silent"] += 1
        writer.write(handshake_bytes(heartbeat=1))
        started = time.monotonic()
        try:
            while await asyncio.wait_for(reader.read(65536), 10):  # we read; we never answer
                pass
            tally.silent_dropped_after.append(time.monotonic() - started)
        except (TimeoutError, OSError):
            pass
        writer.transport.abort()


async def soak_round(port: int, round_: int, seed: int) -> tuple[dict[int, list[int]], Tally, float]:
    rng = random.Random(seed)
    tally = Tally()
    stop = asyncio.Event()
    hostile = [asyncio.create_task(garbage(port, stop, tally, random.Random(rng.random())))
               for _ in range(HOSTILE)]
    hostile += [asyncio.create_task(mid_frame(port, stop, tally, random.Random(rng.random())))
                for _ in range(HOSTILE)]
    hostile += [asyncio.create_task(silent(port, stop, tally)) for _ in range(HOSTILE // 2)]
    received: dict[int, list[int]] = {}
    ready = asyncio.Barrier(GOOD)
    started = time.monotonic()
    await asyncio.gather(*(good_client(port, i, round_, ready, received) for i in range(GOOD)))
    took = time.monotonic() - started
    await asyncio.sleep(max(0.0, 4.5 - took))  # a silent client's 1 s heartbeat runs out in ~3 s
    stop.set()
    await asyncio.wait(hostile, timeout=15)
    for task in hostile:
        task.cancel()
    return received, tally, took


def test_soak(broker: Broker) -> None:
    baseline = broker.rss()
    after: list[int] = []
    totals = Tally()
    lost = 0
    for round_ in range(ROUNDS):
        received, tally, took = asyncio.run(soak_round(broker.amqp_port, round_, seed=round_))
        lost += sum(MESSAGES - len(received.get(i, [])) for i in range(GOOD))
        in_order = all(received.get(i) == list(range(MESSAGES)) for i in range(GOOD))
        totals.connections.update(tally.connections)
        totals.bytes_sent.update(tally.bytes_sent)
        totals.silent_dropped_after += tally.silent_dropped_after
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (broker.api("connections") or broker.api("queues")):
            time.sleep(0.2)
        left = (len(broker.api("connections")), len(broker.api("queues")))
        after.append(broker.rss())
        print(f"soak round {round_ + 1}: {GOOD} clients x {MESSAGES} messages in {took:.1f} s, "
              f"hostile {dict(tally.connections)}, lost {lost}, in order {in_order}, "
              f"left {left[0]} connections {left[1]} queues, rss {after[-1] >> 20} MiB")
        assert in_order
        assert left == (0, 0)
    drops = totals.silent_dropped_after
    print(f"soak: {GOOD * ROUNDS} well-behaved connections, {sum(totals.connections.values())} hostile "
          f"({dict(totals.connections)}, {sum(totals.bytes_sent.values()) >> 10} KiB of junk), "
          f"{GOOD * MESSAGES * ROUNDS} messages, lost {lost}; silent clients dropped after "
          f"{min(drops, default=0):.1f}-{max(drops, default=0):.1f} s; broker rss {baseline >> 20} MiB at start, "
          f"{after[0] >> 20} MiB after round 1, {after[-1] >> 20} MiB after round {ROUNDS}")
    assert lost == 0
    assert drops and max(drops) < 5.0
    # Warm-up (allocator arenas, interned names) happens in round 1; later rounds must not grow
    # (closed channels used to wait for a rare full garbage collection: +2-3 MiB a round).
    assert after[-1] <= after[0] * 1.05 + (2 << 20)
    assert broker.process.poll() is None
