"""A backlog larger than memory (issue 19): leveret beside RabbitMQ 3.10, same run.

A script, not a test (pytest collects test_*.py only):

    .venv/bin/python tests/perf/bench_paging.py [--gb 0.25] [--queues 10] [--skip-rabbitmq]
        [--rabbitmq amqp://guest:guest@127.0.0.1:5672/]

1. One durable queue, no consumer: `leveret serve --data-dir (fresh) --memory-high-watermark
   256MiB`; a raw AMQP publisher (pre-built frames, 5 000 confirms in flight) puts
   --gb GB of 1 KiB persistent messages into it with confirms, each body carrying
   its sequence number. Then one consumer (prefetch 2 000, manual acks, multiple
   every 500) takes them all and checks every number comes back, in order, once.
   Rates for both brokers, leveret's peak RSS (VmHWM) against the 256 MiB limit.
2. Boot with the backlog on disk: the queue is filled again, leveret stopped
   (SIGTERM) and started on the same directory: seconds from spawn to its
   "listening" line and to the first delivery.
3. --queues durable queues filled the same way (the --gb split between them),
   then half get a consumer while the others are still published to: overall
   rates, peak RSS, order per queue.

The reference's queues get unique names and are deleted afterwards; its size
is the same --gb (keep it modest: it is a shared node).
"""

from __future__ import annotations

import argparse
import os
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from pamqp import commands, frame, header

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.perf.bench_durability import RawPublisher  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SIZE = 1024
WATERMARK = "256MiB"
_SEQ = struct.Struct(">Q")


def body_frame(channel: int, payload: bytes) -> bytes:
    return b"\x03" + struct.pack(">HI", channel, len(payload)) + payload + b"\xce"


class Client(RawPublisher):
    def publish_numbered(self, queue: str, count: int, start: int = 0, window: int = 5000) -> float:
        """Publish `count` persistent 1 KiB messages numbered from `start`; seconds to the last confirm."""
        self.send(1, commands.Confirm.Select())
        self.expect(commands.Confirm.SelectOk)
        head = (frame.marshal(commands.Basic.Publish(exchange="", routing_key=queue), 1)
                + frame.marshal(header.ContentHeader(0, SIZE, commands.Basic.Properties(delivery_mode=2)), 1))
        filler = b"." * (SIZE - 8)
        sent = confirmed = 0
        began = time.monotonic()
        while confirmed < count:
            if sent < count and sent - confirmed < window:
                n = min(500, count - sent)
                self.sock.sendall(b"".join(
                    head + body_frame(1, _SEQ.pack(start + sent + i) + filler) for i in range(n)))
                sent += n
                timeout = 0.0
            else:
                timeout = 30.0
            while True:
                value = self.read(timeout)
                if value is None:
                    break
                if isinstance(value, commands.Basic.Nack):
                    raise RuntimeError("a publish was nacked")
                if isinstance(value, commands.Basic.Ack):
                    tag = value.delivery_tag
                    confirmed = tag if value.multiple else max(confirmed, tag)
                timeout = 0.0
        self.send(1, commands.Channel.Close(200, "", 0, 0))  # a fresh channel for what follows
        self.expect(commands.Channel.CloseOk)
        self.send(1, commands.Channel.Open())
        self.expect(commands.Channel.OpenOk)
        return time.monotonic() - began

    def consume_checked(self, queue: str, count: int, start: int = 0) -> tuple[float, float, bool]:
        """Take `count` messages with manual acks: (seconds, seconds to the first, all in order)."""
        self.send(1, commands.Basic.Qos(prefetch_count=2000))
        self.expect(commands.Basic.QosOk)
        self.send(1, commands.Basic.Consume(queue=queue, consumer_tag="bench"))
        self.expect(commands.Basic.ConsumeOk)
        began = time.monotonic()
        first = None
        expected = start
        ordered = True
        got = 0
        tag = 0
        while got < count:
            value = self.read(30.0)
            if value is None:
                raise RuntimeError(f"stalled after {got} of {count}")
            if isinstance(value, commands.Basic.Deliver):
                tag = value.delivery_tag
            elif isinstance(value, bytes) or type(value).__name__ == "ContentBody":
                payload = value if isinstance(value, bytes) else value.value  # type: ignore[attr-defined]
                if first is None:
                    first = time.monotonic() - began
                number = _SEQ.unpack_from(payload)[0]
                ordered = ordered and number == expected
                expected += 1
                got += 1
                if got % 500 == 0 or got == count:
                    self.send(1, commands.Basic.Ack(delivery_tag=tag, multiple=True))
        self.send(1, commands.Basic.Cancel(consumer_tag="bench"))
        self.expect(commands.Basic.CancelOk)
        return time.monotonic() - began, first or 0.0, ordered


class Leveret:
    def __init__(self, data_dir: Path) -> None:
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "leveret.cli", "serve", "--port", "0", "--data-dir", str(data_dir),
             "--memory-high-watermark", WATERMARK],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        self.ready_after = time.monotonic() - self.started
        if "listening on amqp://" not in line:
            raise RuntimeError(f"leveret did not start: {line!r}")
        self.url = f"amqp://guest:guest@127.0.0.1:{int(line.split('127.0.0.1:')[1].split()[0])}/"

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(600)


def one_queue(url: str, queue: str, count: int) -> tuple[float, float, bool]:
    client = Client(url)
    try:
        client.declare(queue)
        publish = client.publish_numbered(queue, count)
        consume, _, ordered = client.consume_checked(queue, count)
        client.delete(queue)
    finally:
        client.close()
    return count / publish, count / consume, ordered


def many_queues(url: str, prefix: str, queues: int, count: int) -> tuple[float, bool]:
    """Fill `queues` queues (count each) from one thread apiece; consume half while
    the other half get a second round: messages per second overall, all in order."""
    results: list[bool] = []
    lock = threading.Lock()

    def work(index: int) -> None:
        client = Client(url)
        name = f"{prefix}-{index}"
        try:
            client.declare(name)
            client.publish_numbered(name, count)
            if index % 2:
                client.publish_numbered(name, count, start=count)
                _, _, ordered = client.consume_checked(name, 2 * count)
            else:
                _, _, ordered = client.consume_checked(name, count)
            client.delete(name)
        finally:
            client.close()
        with lock:
            results.append(ordered)

    began = time.monotonic()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(queues)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = queues // 2 * 3 * count + (queues - queues // 2) * count
    total_ops = 2 * total  # each message published and consumed
    return total_ops / (time.monotonic() - began), len(results) == queues and all(results)


def ping_latencies(url: str, samples: int) -> list[float]:
    """Round trips (ms) of one message through an unrelated queue, one at a time."""
    client = Client(url)
    name = f"ping-{uuid.uuid4().hex[:6]}"
    client.send(1, commands.Queue.Declare(queue=name, auto_delete=True))
    client.expect(commands.Queue.DeclareOk)
    client.send(1, commands.Basic.Consume(queue=name, no_ack=True))
    client.expect(commands.Basic.ConsumeOk)
    one = (frame.marshal(commands.Basic.Publish(exchange="", routing_key=name), 1)
           + frame.marshal(header.ContentHeader(0, 8, commands.Basic.Properties()), 1) + body_frame(1, b"p" * 8))
    out = []
    for _ in range(samples):
        began = time.perf_counter()
        client.sock.sendall(one)
        while type(client.read(10.0)).__name__ != "ContentBody":
            pass
        out.append((time.perf_counter() - began) * 1000)
        time.sleep(0.002)
    client.close()
    return out


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def latency_while_paging(url: str, count: int) -> None:
    """p50/p99 of an unrelated queue's round trip, idle and while a lazy queue pages in and out."""
    idle = ping_latencies(url, 500)
    stop = threading.Event()

    def bulk() -> None:
        client = Client(url)
        client.send(1, commands.Queue.Declare(queue="bulk", arguments={"x-queue-mode": "lazy"}))
        client.expect(commands.Queue.DeclareOk)
        while not stop.is_set():
            client.publish_numbered("bulk", count)
            client.consume_checked("bulk", count)
        client.close()

    worker = threading.Thread(target=bulk)
    worker.start()
    time.sleep(1.0)
    loaded = ping_latencies(url, 1000)
    stop.set()
    worker.join()
    print(f"leveret, unrelated queue round trip: idle p50 {percentile(idle, 0.5):.2f} ms, "
          f"p99 {percentile(idle, 0.99):.2f} ms; while a lazy queue pages {count} messages in and out: "
          f"p50 {percentile(loaded, 0.5):.2f} ms, p99 {percentile(loaded, 0.99):.2f} ms, "
          f"max {max(loaded):.2f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=0.25, help="GB of 1 KiB messages (the issue: 5)")
    parser.add_argument("--queues", type=int, default=10)
    parser.add_argument("--rabbitmq", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--skip-rabbitmq", action="store_true")
    args = parser.parse_args()
    count = int(args.gb * 1e9 / SIZE)
    tag = uuid.uuid4().hex[:8]
    print(f"{count} persistent messages of {SIZE} B ({args.gb} GB), memory limit {WATERMARK}")

    data = Path(tempfile.mkdtemp(prefix="bench-paging-"))
    leveret = Leveret(data / "one")
    publish, consume, ordered = one_queue(leveret.url, "backlog", count)
    print(f"leveret, one queue: publish {publish:,.0f} msg/s, consume {consume:,.0f} msg/s, "
          f"in order: {ordered}, peak RSS {leveret.peak_rss_mb():.0f} MiB")
    client = Client(leveret.url)
    client.declare("backlog")
    client.publish_numbered("backlog", count)
    client.close()
    on_disk = sum(f.stat().st_size for f in (data / "one").rglob("*") if f.is_file())
    leveret.stop()
    leveret = Leveret(data / "one")
    client = Client(leveret.url)
    _, first, ordered = client.consume_checked("backlog", count)
    client.delete("backlog")
    client.close()
    print(f"leveret, boot with {on_disk / 1e9:.2f} GB on disk: listening after {leveret.ready_after:.2f} s, "
          f"first delivery {first * 1000:.0f} ms after consume, all back in order: {ordered}, "
          f"peak RSS {leveret.peak_rss_mb():.0f} MiB")
    leveret.stop()

    if not args.skip_rabbitmq:
        try:
            publish_r, consume_r, ordered_r = one_queue(args.rabbitmq, f"bench-paging-{tag}", count)
        except OSError as error:
            print(f"RabbitMQ at {args.rabbitmq} unreachable ({error})")
        else:
            print(f"RabbitMQ, one queue: publish {publish_r:,.0f} msg/s, consume {consume_r:,.0f} msg/s, "
                  f"in order: {ordered_r}; leveret/RabbitMQ: publish {publish / publish_r:.2f}, "
                  f"consume {consume / consume_r:.2f}")

    leveret = Leveret(data / "latency")
    latency_while_paging(leveret.url, min(count, 50_000))
    leveret.stop()

    per_queue = max(1, count // args.queues)
    leveret = Leveret(data / "many")
    rate, ordered = many_queues(leveret.url, "bench", args.queues, per_queue)
    print(f"leveret, {args.queues} queues, mixed consumers: {rate:,.0f} msg/s (publish + consume), "
          f"in order: {ordered}, peak RSS {leveret.peak_rss_mb():.0f} MiB")
    leveret.stop()
    if not args.skip_rabbitmq:
        try:
            rate_r, ordered_r = many_queues(args.rabbitmq, f"bench-paging-{tag}", args.queues, per_queue)
        except OSError as error:
            print(f"RabbitMQ at {args.rabbitmq} unreachable ({error})")
        else:
            print(f"RabbitMQ, {args.queues} queues, mixed consumers: {rate_r:,.0f} msg/s, in order: {ordered_r}; "
                  f"leveret/RabbitMQ {rate / rate_r:.2f}")
    os.system(f"rm -rf {data}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
