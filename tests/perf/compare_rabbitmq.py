"""leveret against the reference RabbitMQ, measured side by side in one run.

A script, not a test:

    .venv/bin/python tests/perf/compare_rabbitmq.py [--quick] [--only NAME,...]

It starts `leveret serve` on a free port, runs shared/bench's C load driver in
`compare` mode (A = RabbitMQ on 127.0.0.1:5672, B = leveret, interleaved
A B A B so a noisy host hurts both alike), and prints one table of ratios
(leveret / RabbitMQ; for latency, RabbitMQ's p99 / leveret's, so above 1.0 is
better everywhere) against the targets of issue 21. Figures from different
runs are not comparable: the hosts steal CPU at times.

Scenarios beyond the driver's standard suite:
- fan-out to 10 queues: the driver's topic scenario with a one-word
  vocabulary and 10 queues, so each of the 10 bindings matches every key and
  every confirmed publish is delivered to 10 queues.
- topic 100 000 selective bindings, and 10 000 wildcard-heavy (--topic-wild).
- persistent publishes with confirms on a durable queue (needs the durable
  store: skipped with a note when `leveret serve --data-dir` does not persist).
- memory per queued message: 1 000 000 16-byte messages published into one
  queue on each broker; RabbitMQ's figure is the queue's own memory
  (rabbitmqctl list_queues memory), leveret's the growth of its resident set.
- fan-out to 100 queues, and 1 MiB messages (e2e with confirms, window 16):
  driver scenarios with each broker's peak resident-set growth during the run.
- scale (bench_scale.py, a pipelining asyncio client of its own): 10 000
  exclusive queues each with a consumer, 100 000 topic bindings (time to
  declare, memory per queue / binding), and 400 connections (half publishing
  5 msg/s each, half consuming: throughput, p99, memory per connection),
  then 2 000 on leveret alone: the reference has ~830 sockets.
- start-up: process start to the first connection.start sent to a client
  (leveret only: the shared reference cannot be restarted), bytecode cached as
  in an installed package.
- streams (tests/perf/bench_streams.py, a raw-socket client: the C driver
  cannot pass queue or consumer arguments): publish with confirms into a
  stream, then one consumer reading all of it from `first`; the broker's RSS
  before the read and at its peak while reading (RabbitMQ's: its beam.smp).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The driver lives in shared/ beside the main checkout; worktrees sit one level deeper.
BENCH = next((path for path in (ROOT.parent / "shared" / "bench" / "amqp_bench.sh",
                                ROOT.parent.parent / "shared" / "bench" / "amqp_bench.sh")
              if path.exists()), ROOT.parent / "shared" / "bench" / "amqp_bench.sh")
REFERENCE = "amqp://guest:guest@127.0.0.1:5672/"


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    driver_args: tuple[str, ...]
    target: float
    measure: str = "msg_per_s"  # or "p99_us" (lower is better)
    memory: bool = False  # also report each broker's resident-set growth during the run


SCENARIOS = (
    Scenario("publish 16 B", ("publish_16b",), 2.0),
    Scenario("publish 1 KiB", ("publish_1k",), 2.0),
    Scenario("confirm 16 B", ("confirm_16b",), 2.0),
    Scenario("confirm 1 KiB", ("confirm_1k",), 2.0),
    Scenario("e2e 16 B", ("e2e_16b",), 2.0),
    Scenario("e2e 1 KiB", ("e2e_1k",), 2.0),
    Scenario("e2e confirm 16 B", ("e2e_confirm_16b",), 2.0),
    Scenario("e2e confirm 1 KiB", ("e2e_confirm_1k",), 2.0),
    Scenario("latency p99 @1000/s", ("latency_16b",), 1.0, "p99_us"),
    Scenario("fan-out to 10 queues", ("topic_10", "--topic-queues", "10", "--topic-vocab", "1"), 1.0),
    Scenario("fan-out to 100 queues", ("topic_100", "--topic-queues", "100", "--topic-vocab", "1"), 1.5,
             memory=True),
    # A window of 16 keeps at most ~32 MiB in flight: big messages, not a flood.
    Scenario("e2e confirm 1 MiB", ("e2e_confirm_1048576b", "--window", "16", "--prefetch", "16"), 1.5,
             memory=True),
    Scenario("topic 100 000 selective", ("topic_100000",), 4.0),
    Scenario("topic 10 000 wildcard", ("topic_10000", "--topic-wild"), 5.0),
    Scenario("persistent confirm 16 B", ("confirm_16b", "--persistent"), 1.0),
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float) -> float:
    """Seconds until a TCP connect to `port` succeeds."""
    started = time.perf_counter()
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return time.perf_counter() - started
        except OSError:
            if time.perf_counter() - started > timeout:
                raise
            time.sleep(0.002)


def leveret_command(port: int, data_dir: str | None) -> list[str]:
    command = [sys.executable, "-m", "leveret.cli", "serve", "--port", str(port)]
    if data_dir:
        command += ["--data-dir", data_dir]
    return command


def start_leveret(port: int, data_dir: str | None) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(leveret_command(port, data_dir), cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, 10)
    return process


def startup_seconds(rounds: int) -> float:
    """Median of `rounds` starts, after an untimed one that writes the bytecode
    cache: an installed package has its .pyc files (pip compiles them), so the
    timed starts do not compile sources even where PYTHONDONTWRITEBYTECODE is set."""
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    times = []
    for _ in range(rounds + 1):
        port = free_port()
        started = time.perf_counter()
        process = subprocess.Popen(leveret_command(port, None), cwd=ROOT, env=environment,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_connection_start(port, 10)
            times.append(time.perf_counter() - started)
        finally:
            process.terminate()
            process.wait(10)
    return statistics.median(times[1:])


def wait_for_connection_start(port: int, timeout: float) -> None:
    """Until the broker answers the protocol header with connection.start: a
    client can log in (an accepted TCP connection alone is not that)."""
    deadline = time.perf_counter() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
                connection.sendall(b"AMQP\x00\x00\x09\x01")
                if connection.recv(7)[:1] == b"\x01":  # a method frame: connection.start
                    return
        except OSError:
            pass
        if time.perf_counter() > deadline:
            raise TimeoutError(f"no connection.start on port {port} within {timeout} s")
        time.sleep(0.002)


def compare(leveret_url: str, scenario: Scenario, duration: float, repeat: int,
            leveret_pid: int) -> tuple[dict, tuple[int, int] | None]:
    """The driver's compare report, and with `scenario.memory` each broker's peak
    resident-set growth (RabbitMQ, leveret) while it ran."""
    command = ["bash", str(BENCH), "compare", REFERENCE, leveret_url, *scenario.driver_args,
               "--duration", str(duration), "--repeat", str(repeat)]
    sampler = PeakSampler((reference_pid(), leveret_pid)) if scenario.memory else None
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    finally:
        peaks = sampler.stop() if sampler else None
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"driver failed for {scenario.name}: {result.stderr.strip()[-400:]}")
    return json.loads(lines[-1]), (peaks[0], peaks[1]) if peaks else None


class PeakSampler:
    """Each process's peak resident-set growth over its size when sampling began."""

    def __init__(self, pids: tuple[int, ...], interval: float = 0.25) -> None:
        self.pids = pids
        self.start = [rss_bytes(pid) for pid in pids]
        self.peak = list(self.start)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self.thread.start()

    def _run(self, interval: float) -> None:
        while not self.done.wait(interval):
            for index, pid in enumerate(self.pids):
                self.peak[index] = max(self.peak[index], rss_bytes(pid))

    def stop(self) -> list[int]:
        self.done.set()
        self.thread.join()
        return [peak - start for peak, start in zip(self.peak, self.start, strict=True)]


def reference_memory() -> int:
    """The reference node's allocated memory after a collection of every Erlang
    process: its resident set moves by megabytes with garbage collection, which
    would drown the cost of a few thousand queues. (Kinder to RabbitMQ than
    leveret's figure, a resident set.)"""
    listing = subprocess.run(["rabbitmqctl", "eval", "[garbage_collect(P) || P <- processes()], erlang:memory(total)."],
                             capture_output=True, text=True, timeout=120).stdout.split()
    return int(listing[-1])


def reference_pid() -> int:
    """The reference node's beam process: its resident set is RabbitMQ's memory,
    measured the same way as leveret's."""
    found = subprocess.run(["pgrep", "-o", "beam.smp"], capture_output=True, text=True).stdout.split()
    if not found:
        raise RuntimeError("no beam.smp process visible: the reference's memory cannot be read")
    return int(found[0])


def ratio(report: dict, scenario: Scenario) -> tuple[float, float, float]:
    rabbit, leveret = report["a"][scenario.measure], report["b"][scenario.measure]
    if scenario.measure == "p99_us":  # lower is better: RabbitMQ's over ours
        return rabbit, leveret, rabbit / leveret
    return rabbit, leveret, leveret / rabbit


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def publish_many(url: str, queue: str, count: int) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.queue_declare(queue, auto_delete=False)
    body = b"x" * 16
    for _ in range(count):
        channel.basic_publish("", queue, body)
    channel.queue_declare(queue, passive=True)  # a round trip: everything was taken
    connection.close()


def delete_queue(url: str, queue: str) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    connection.channel().queue_delete(queue)
    connection.close()


def memory_per_message(leveret_url: str, leveret_pid: int, count: int) -> tuple[float, float]:
    queue = f"perf-memory-{uuid.uuid4().hex[:8]}"
    try:
        publish_many(REFERENCE, queue, count)
        time.sleep(1)  # let the queue process settle its stats
        listing = subprocess.run(["rabbitmqctl", "-q", "list_queues", "name", "memory"],
                                 capture_output=True, text=True, timeout=60).stdout
        rabbit = next(int(line.split()[1]) for line in listing.splitlines() if line.startswith(queue))
    finally:
        delete_queue(REFERENCE, queue)
    before = rss_bytes(leveret_pid)
    publish_many(leveret_url, queue, count)
    leveret = rss_bytes(leveret_pid) - before
    delete_queue(leveret_url, queue)
    return rabbit / count, leveret / count


Row = tuple[str, str, str, float | None, float | None]
MIB = 1 << 20


def scale_rows(args: argparse.Namespace) -> list[Row]:
    """The scale scenarios (bench_scale.py), RabbitMQ then leveret, each leveret
    run on a fresh process so its resident set shows only that scenario."""
    import asyncio

    import bench_scale

    rows: list[Row] = []

    def on_both(name: str, run) -> tuple[bench_scale.ScaleResult, bench_scale.ScaleResult] | None:
        try:
            rabbit = asyncio.run(run(5672, reference_memory))
            port = free_port()
            fresh = start_leveret(port, None)
            try:
                ours = asyncio.run(run(port, lambda: rss_bytes(fresh.pid)))
            finally:
                fresh.terminate()
                fresh.wait(10)
        except (TimeoutError, OSError, RuntimeError) as error:
            print(f"  {name}: {error}", file=sys.stderr, flush=True)
            rows.append((name, "-", "-", None, 1.5))
            return None
        print(f"  {name}: done", file=sys.stderr, flush=True)
        return rabbit, ours

    def memory_row(unit: str, rabbit: bench_scale.ScaleResult, ours: bench_scale.ScaleResult) -> Row:
        per_rabbit, per_ours = rabbit.memory_bytes / rabbit.count, ours.memory_bytes / ours.count
        return (f"  RSS per {unit}", f"{per_rabbit:,.0f} B", f"{per_ours:,.0f} B",
                per_rabbit / per_ours if per_ours > 0 else None, 1.0)

    queues = args.scale_queues
    pair = on_both(f"{queues:,} queues + consumers", lambda port, memory: asyncio.wait_for(
        bench_scale.queues_with_consumers("127.0.0.1", port, queues, memory), 600))
    if pair:
        rabbit, ours = pair
        rows.append((f"{queues:,} queues + consumers", f"{rabbit.seconds:.2f} s", f"{ours.seconds:.2f} s",
                     rabbit.seconds / ours.seconds, 1.5))
        rows.append(memory_row("queue", rabbit, ours))
    count = args.scale_bindings
    pair = on_both(f"{count:,} bindings declared", lambda port, memory: asyncio.wait_for(
        bench_scale.bindings("127.0.0.1", port, count, memory), 600))
    if pair:
        rabbit, ours = pair
        rows.append((f"{count:,} bindings declared", f"{rabbit.seconds:.2f} s", f"{ours.seconds:.2f} s",
                     rabbit.seconds / ours.seconds, 1.5))
        rows.append(memory_row("binding", rabbit, ours))
    # The reference has ~830 sockets: at most 400 connections against it.
    pairs, rate, seconds = args.connections // 2, args.connection_rate, 10.0
    name = f"{2 * pairs} connections @{rate:g}/s each"
    pair = on_both(name, lambda port, memory: asyncio.wait_for(
        bench_scale.many_connections("127.0.0.1", port, pairs, rate, seconds, memory), 600))
    if pair:
        rabbit, ours = pair
        rows.append((name, f"{rabbit.msg_per_s:,.0f} msg/s", f"{ours.msg_per_s:,.0f} msg/s",
                     ours.msg_per_s / rabbit.msg_per_s, 1.0))
        rows.append(("  p99 latency", f"{rabbit.p99_us:,.0f} us", f"{ours.p99_us:,.0f} us",
                     rabbit.p99_us / ours.p99_us, 1.5))
        rows.append(memory_row("connection", rabbit, ours))
    # leveret alone at the full size: it would exhaust the reference's descriptors.
    alone = args.connections_alone // 2
    port = free_port()
    fresh = start_leveret(port, None)
    try:
        ours = asyncio.run(asyncio.wait_for(bench_scale.many_connections(
            "127.0.0.1", port, alone, rate, seconds, lambda: rss_bytes(fresh.pid)), 600))
        rows.append((f"{2 * alone} connections (leveret only)", "(not run)", f"{ours.msg_per_s:,.0f} msg/s",
                     None, None))
        rows.append(("  p99 latency", "", f"{ours.p99_us:,.0f} us", None, None))
        rows.append(("  RSS per connection", "", f"{ours.memory_bytes / ours.count:,.0f} B", None, None))
    except (TimeoutError, OSError, RuntimeError) as error:
        print(f"  {2 * alone} connections: {error}", file=sys.stderr, flush=True)
        rows.append((f"{2 * alone} connections (leveret only)", "", "-", None, None))
    finally:
        fresh.terminate()
        fresh.wait(10)
    return rows


def broker_pid_rabbitmq() -> int | None:
    found = subprocess.run(["pgrep", "-x", "beam.smp"], capture_output=True, text=True).stdout.split()
    return int(found[0]) if found else None


def stream_figures(url: str, pid: int | None, count: int, size: int) -> dict[str, float]:
    """Publish `count` messages of `size` bytes into a new stream, read them all from first."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_streams

    queue = f"perf-stream-{uuid.uuid4().hex[:8]}"
    bench_streams.declare_stream(url, queue)
    try:
        published = bench_streams.publish_scenario(url, queue, count, size)
        before = rss_bytes(pid) if pid else 0
        peak = [before]

        def sample(received: int) -> None:
            if pid and received % 50_000 == 0:
                peak[0] = max(peak[0], rss_bytes(pid))

        read = bench_streams.read_scenario(url, queue, count, sample)
    finally:
        bench_streams.delete_queue(url, queue)
    return {"publish": published.rate, "read": read.rate, "rss_before": before, "rss_peak": peak[0]}


def stream_rows(leveret_url: str, leveret_pid: int, count: int, size: int) -> list[tuple[str, str, str, float | None, float]]:
    rabbit = stream_figures(REFERENCE, broker_pid_rabbitmq(), count, size)
    ours = stream_figures(leveret_url, leveret_pid, count, size)
    mib = 1 << 20
    return [
        (f"stream publish, confirms {size} B", f"{rabbit['publish']:,.0f} msg/s", f"{ours['publish']:,.0f} msg/s",
         ours["publish"] / rabbit["publish"], 1.0),
        (f"stream read {count:,} from first", f"{rabbit['read']:,.0f} msg/s", f"{ours['read']:,.0f} msg/s",
         ours["read"] / rabbit["read"], 1.0),
        ("  RSS before / peak in the read",
         f"{rabbit['rss_before'] / mib:,.0f}/{rabbit['rss_peak'] / mib:,.0f} MiB",
         f"{ours['rss_before'] / mib:,.0f}/{ours['rss_peak'] / mib:,.0f} MiB", None, 0.0),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 s runs, one repeat (a smoke run)")
    parser.add_argument("--only", help="comma-separated scenario names (substring match)")
    parser.add_argument("--messages", type=int, default=1_000_000, help="messages for the memory figure")
    parser.add_argument("--stream-messages", type=int, default=1_000_000, help="messages for the stream scenarios")
    parser.add_argument("--json", type=Path, help="also write the driver's raw compare reports here (JSON lines)")
    parser.add_argument("--scale-queues", type=int, default=10_000, help="queues (each with a consumer)")
    parser.add_argument("--scale-bindings", type=int, default=100_000, help="bindings declared")
    parser.add_argument("--connections", type=int, default=400,
                        help="connections (half publishing, half consuming) on both brokers; at most ~400")
    parser.add_argument("--connections-alone", type=int, default=2000, help="connections on leveret alone")
    parser.add_argument("--connection-rate", type=float, default=5.0, help="msg/s per publishing connection")
    args = parser.parse_args(argv)
    if args.connections > 400:
        parser.error("--connections above 400 would exhaust the reference's file descriptors")
    duration, repeat = (3.0, 1) if args.quick else (10.0, 3)
    if shutil.which("gcc") is None:
        print("needs gcc and librabbitmq-dev: apt-get install -y gcc librabbitmq-dev", file=sys.stderr)
        return 2
    try:
        wait_for_port(5672, 1)
    except OSError:
        print("no reference RabbitMQ on 127.0.0.1:5672: nothing to compare with", file=sys.stderr)
        return 2

    wanted = [s for s in SCENARIOS if not args.only or any(w.strip() in s.name for w in args.only.split(","))]
    rows: list[Row] = []
    data_dir = tempfile.mkdtemp(prefix="leveret-perf-")
    port = free_port()
    server = start_leveret(port, data_dir)
    url = f"amqp://guest:guest@127.0.0.1:{port}/"
    try:
        for scenario in wanted:
            try:
                report, peaks = compare(url, scenario, duration, repeat, server.pid)
            except (RuntimeError, subprocess.TimeoutExpired) as error:
                rows.append((scenario.name, "-", "-", None, scenario.target))
                print(f"  {scenario.name}: {error}", file=sys.stderr)
                continue
            if args.json:
                with args.json.open("a") as raw:
                    raw.write(json.dumps({"name": scenario.name, **report}) + "\n")
            rabbit, leveret, value = ratio(report, scenario)
            unit = "us p99" if scenario.measure == "p99_us" else "msg/s"
            rows.append((scenario.name, f"{rabbit:,.0f} {unit}", f"{leveret:,.0f} {unit}", value, scenario.target))
            if peaks is not None:
                rows.append(("  peak RSS growth", f"{peaks[0] / MIB:,.1f} MiB", f"{peaks[1] / MIB:,.1f} MiB",
                             None, None))
            print(f"  {scenario.name}: {value:.2f}x", file=sys.stderr, flush=True)
        if not args.only or "stream" in args.only:
            try:
                rows.extend(stream_rows(url, server.pid, args.stream_messages, 16))
            except (OSError, ConnectionError) as error:
                print(f"  streams: {error}", file=sys.stderr)
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(data_dir, ignore_errors=True)
    if not args.only or "memory" in args.only:
        # A fresh process: memory freed by earlier scenarios stays in CPython's
        # arenas and would hide the growth.
        port = free_port()
        fresh = start_leveret(port, None)
        try:
            rabbit_bytes, leveret_bytes = memory_per_message(
                f"amqp://guest:guest@127.0.0.1:{port}/", fresh.pid, args.messages)
        finally:
            fresh.terminate()
            fresh.wait(10)
        rows.append((f"memory per message ({args.messages:,})", f"{rabbit_bytes:,.0f} B", f"{leveret_bytes:,.0f} B",
                     rabbit_bytes / leveret_bytes, 1.0))
    if not args.only or "scale" in args.only:
        rows += scale_rows(args)
    if not args.only or "start" in args.only:
        seconds = startup_seconds(5)
        rows.append(("start to first connection", "(not measured)", f"{seconds * 1000:.0f} ms",
                     0.3 / seconds, 1.0))

    print(f"\n{'scenario':<32}{'RabbitMQ':>18}{'leveret':>18}{'ratio':>8}{'target':>8}  ")
    for name, rabbit_text, leveret_text, value, target in rows:
        shown = "-" if value is None else f"{value:.2f}"
        verdict = "" if value is None or not target else ("ok" if value >= target else "BELOW")
        wanted_text = "" if not target else f"{target:.1f}x"
        print(f"{name:<32}{rabbit_text:>18}{leveret_text:>18}{shown:>8}{wanted_text:>8}  {verdict}")
    print("\nratios: leveret/RabbitMQ (latency, time, memory: RabbitMQ/leveret; start-up: 0.3 s/leveret's)")
    print("memory: growth of leveret's resident set; RabbitMQ's: its beam.smp resident set in the driver scenarios,")
    print("        erlang:memory(total) after a full collection in the scale scenarios")
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
