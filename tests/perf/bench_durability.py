"""Persistent publish-with-confirms throughput and recovery time, beside RabbitMQ.

A script, not a test (pytest collects test_*.py only):

    .venv/bin/python tests/perf/bench_durability.py [--messages 1000000] [--duration 10]
        [--repeat 3] [--rabbitmq amqp://guest:guest@127.0.0.1:5672/] [--skip-throughput]

It starts `leveret serve --data-dir` (a fresh directory under /tmp) and measures:

1. Throughput: the shared load driver (../shared/bench/amqp_bench.sh `compare`,
   A = leveret, B = RabbitMQ, interleaved) on `confirm_16b --persistent` and
   `confirm_1k --persistent` (durable queue, delivery_mode 2, 1 000 confirms in
   flight), and `e2e_confirm_16b --persistent` (the same with a consumer that
   acks each message: delivery marks and acks are written too). Ratios are
   quoted from the same run (the machine's speed drifts).
2. 1 000 000 messages: a minimal raw AMQP publisher (pre-encoded frames, 20 000
   confirms in flight, so it costs little CPU) puts --messages persistent 16-byte
   messages into a durable queue of each broker, confirmed: the fill time and
   rate for both. Then leveret is killed with SIGKILL and restarted on the same
   directory: the time from spawn to its "listening" line (recovery included;
   the same for an empty directory is shown for the interpreter's start-up),
   its RSS after recovery, and a check that all messages are back.
3. RabbitMQ's recovery: the shared reference cannot be restarted, so a private
   node of the installed package (its own node name, ports, mnesia and log
   directories under /tmp, no plugins; the shared epmd only gets a name) is
   started, filled the same way, killed with SIGKILL (its whole process group)
   and started again on the same directories: the time from spawn until a
   passive queue.declare reports all messages. Skipped with a reason if the
   package is not installed (--no-private-rabbitmq skips it anyway).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

from pamqp import commands, frame, header
from pamqp import exceptions as pamqp_exceptions
from pamqp.body import ContentBody

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO.parent / "shared" / "bench" / "amqp_bench.sh"


# ------------------------------------------------------------ raw publisher
class RawPublisher:
    """Just enough AMQP 0-9-1 to publish a lot with confirms, and nothing more."""

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        self.sock = socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 5672))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.sock.sendall(b"AMQP\x00\x00\x09\x01")
        self.expect(commands.Connection.Start)
        self.send(0, commands.Connection.StartOk(
            client_properties={"product": "bench_durability"}, mechanism="PLAIN",
            response=f"\x00{parsed.username or 'guest'}\x00{parsed.password or 'guest'}", locale="en_US"))
        tune = self.expect(commands.Connection.Tune)
        self.frame_max = tune.frame_max
        self.send(0, commands.Connection.TuneOk(channel_max=tune.channel_max, frame_max=tune.frame_max, heartbeat=0))
        self.send(0, commands.Connection.Open(virtual_host="/"))
        self.expect(commands.Connection.OpenOk)
        self.send(1, commands.Channel.Open())
        self.expect(commands.Channel.OpenOk)

    def send(self, channel: int, value: object) -> None:
        self.sock.sendall(frame.marshal(value, channel))  # type: ignore[arg-type]

    def read(self, timeout: float | None = None) -> object | None:
        while True:
            if self.buffer:
                try:
                    used, _, value = frame.unmarshal(self.buffer)
                except pamqp_exceptions.UnmarshalingException:
                    pass
                else:
                    self.buffer = self.buffer[used:]
                    return value
            if timeout is not None and not select.select([self.sock], [], [], timeout)[0]:
                return None
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("the broker closed the connection")
            self.buffer += data

    def expect(self, kind: type) -> object:
        while True:
            value = self.read()
            if isinstance(value, commands.Connection.Close | commands.Channel.Close):
                raise RuntimeError(f"closed by the broker: {value}")
            if isinstance(value, kind):
                return value

    def declare(self, queue: str, passive: bool = False) -> int:
        self.send(1, commands.Queue.Declare(queue=queue, durable=True, passive=passive))
        ok = self.expect(commands.Queue.DeclareOk)
        return int(ok.message_count)  # type: ignore[attr-defined]

    def delete(self, queue: str) -> None:
        self.send(1, commands.Queue.Delete(queue=queue))
        self.expect(commands.Queue.DeleteOk)

    def publish_confirmed(self, queue: str, count: int, size: int = 16, window: int = 20_000) -> float:
        """Publish `count` persistent messages; seconds until the last is confirmed."""
        self.send(1, commands.Confirm.Select())
        self.expect(commands.Confirm.SelectOk)
        one = b"".join((
            frame.marshal(commands.Basic.Publish(exchange="", routing_key=queue), 1),
            frame.marshal(header.ContentHeader(0, size, commands.Basic.Properties(delivery_mode=2)), 1),
            frame.marshal(ContentBody(b"x" * size), 1),
        ))
        chunk = 500
        block = one * chunk
        sent = confirmed = 0
        started = time.monotonic()
        while confirmed < count:
            if sent < count and sent - confirmed < window:
                n = min(chunk, count - sent)
                self.sock.sendall(block if n == chunk else one * n)
                sent += n
                timeout = 0.0
            else:
                timeout = 5.0
            while True:
                value = self.read(timeout)
                if value is None:
                    break
                if isinstance(value, commands.Basic.Nack):
                    raise RuntimeError(f"nack for {value.delivery_tag}")
                if isinstance(value, commands.Basic.Ack):
                    confirmed = max(confirmed, value.delivery_tag)
                timeout = 0.0
        return time.monotonic() - started

    def close(self) -> None:
        self.sock.close()


# ------------------------------------------------------------------ leveret
class Leveret:
    def __init__(self, data_dir: Path) -> None:
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "leveret.cli", "serve", "--port", "0", "--data-dir", str(data_dir)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        self.ready_after = time.monotonic() - self.started
        if "listening on amqp://" not in line:
            raise RuntimeError(f"leveret did not start: {line!r}")
        self.port = int(line.split("127.0.0.1:")[1].split()[0])
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)


# ---------------------------------------------------------- private RabbitMQ
RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivateRabbitMQ:
    """A throwaway node of the installed RabbitMQ, all state under `base`.

    Run in the foreground in its own session so that its whole process tree
    (sh, beam.smp, erl_child_setup, ...) can be killed by process group.
    """

    def __init__(self, base: Path) -> None:
        base.mkdir(parents=True)
        (base / "home").mkdir()
        self.port = free_port()
        # /etc/rabbitmq's config and env file name the shared node's port and
        # name: both are replaced by private ones.
        (base / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        (base / "rabbitmq-env.conf").write_text("ERL_EPMD_ADDRESS=127.0.0.1\n")
        (base / "enabled_plugins").write_text("[].\n")
        self.env = {
            **os.environ,
            "HOME": str(base / "home"),  # the Erlang cookie goes there
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_NODENAME": f"leveretbench-{os.getpid()}@localhost",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
        }
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> None:
        self.started = time.monotonic()
        self.process = subprocess.Popen([str(RABBITMQ_SERVER)], env=self.env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)

    def wait_for(self, queue: str | None, count: int, timeout: float = 600.0) -> float:
        """Seconds from spawn until it accepts AMQP (and `queue` holds `count`)."""
        while time.monotonic() - self.started < timeout:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"RabbitMQ exited with {self.process.returncode}")
            try:
                client = RawPublisher(self.url)
                try:
                    if queue is None or client.declare(queue, passive=True) == count:
                        return time.monotonic() - self.started
                finally:
                    client.close()
            except (OSError, RuntimeError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"RabbitMQ not ready after {timeout} s")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None


def rabbitmq_recovery(base: Path, queue: str, messages: int) -> None:
    node = PrivateRabbitMQ(base)
    try:
        node.start()
        boot = node.wait_for(None, 0)
        seconds = fill(node.url, queue, messages)
        print(f"private RabbitMQ node on {node.url}: booted (empty) in {boot:.2f} s, "
              f"fill {messages} in {seconds:.1f} s ({messages / seconds:,.0f} msg/s)")
        node.kill()
        node.start()
        recovered = node.wait_for(queue, messages)
        print(f"RabbitMQ recovery after kill -9: {messages} messages back {recovered:.2f} s after spawn "
              f"(empty node: {boot:.2f} s)")
    finally:
        node.kill()


# ------------------------------------------------------------------ phases
def throughput(leveret_url: str, rabbitmq_url: str, duration: float, repeat: int) -> list[dict[str, object]]:
    results = []
    for scenario in ("confirm_16b", "confirm_1k", "e2e_confirm_16b"):
        command = [str(BENCH), "compare", leveret_url, rabbitmq_url, scenario, "--persistent",
                   "--duration", str(duration), "--repeat", str(repeat)]
        output = subprocess.run(command, capture_output=True, text=True, timeout=3600).stdout.strip()
        line = output.splitlines()[-1] if output else '{"error": "no output"}'
        results.append(json.loads(line))
    return results


def fill(url: str, queue: str, messages: int) -> float:
    client = RawPublisher(url)
    try:
        client.declare(queue)
        return client.publish_confirmed(queue, messages)
    finally:
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per throughput run")
    parser.add_argument("--repeat", type=int, default=3, help="A/B pairs per throughput scenario")
    parser.add_argument("--rabbitmq", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--no-private-rabbitmq", action="store_true", help="skip RabbitMQ's recovery time")
    args = parser.parse_args()

    rabbitmq = args.rabbitmq
    try:
        RawPublisher(rabbitmq).close()
    except OSError as error:
        print(f"reference RabbitMQ at {rabbitmq} unreachable ({error}): leveret figures only")
        rabbitmq = None

    directory = Path(tempfile.mkdtemp(prefix="leveret-bench-"))
    try:
        empty = Leveret(directory / "empty")
        empty.stop()
        server = Leveret(directory / "data")
        print(f"leveret on {server.url} with --data-dir {directory / 'data'}")

        if not args.skip_throughput and rabbitmq and BENCH.exists():
            for result in throughput(server.url, rabbitmq, args.duration, args.repeat):
                a, b = result.get("a", {}), result.get("b", {})
                ratio = result.get("ratio_b_over_a", {})
                print(f"{result.get('scenario')} --persistent: leveret {a.get('msg_per_s')} msg/s "
                      f"(p50 {a.get('p50_us')} us, broker CPU {a.get('broker_cpu_pct')}%), "
                      f"RabbitMQ {b.get('msg_per_s')} msg/s (p50 {b.get('p50_us')} us); "
                      f"RabbitMQ/leveret {ratio.get('msg_per_s')}"
                      + (f"  errors: {a.get('errors') or b.get('errors')}" if a.get("errors") or b.get("errors") else ""))

        queue = f"bench-durability-{uuid.uuid4().hex[:8]}"
        seconds = fill(server.url, queue, args.messages)
        print(f"fill {args.messages} persistent 16 B messages, confirmed: leveret {seconds:.1f} s "
              f"({args.messages / seconds:,.0f} msg/s)", end="")
        if rabbitmq:
            try:
                other = fill(rabbitmq, queue, args.messages)
                print(f", RabbitMQ {other:.1f} s ({args.messages / other:,.0f} msg/s)")
            finally:
                client = RawPublisher(rabbitmq)
                client.delete(queue)
                client.close()
        else:
            print()
        size = sum(p.stat().st_size for p in (directory / "data").rglob("*") if p.is_file())
        print(f"leveret data dir: {size / 1e6:.0f} MB, RSS before the kill {server.rss_mb():.0f} MB")

        server.kill()
        restarted = Leveret(directory / "data")
        client = RawPublisher(restarted.url)
        count = client.declare(queue)
        client.close()
        print(f"recovery after kill -9: listening {restarted.ready_after:.2f} s after spawn "
              f"(empty data dir: {empty.ready_after:.2f} s), {count} messages back"
              f"{'' if count == args.messages else ' (EXPECTED ' + str(args.messages) + ')'}, "
              f"RSS {restarted.rss_mb():.0f} MB")
        restarted.stop()
        if args.no_private_rabbitmq:
            print("RabbitMQ recovery: not measured (--no-private-rabbitmq)")
        elif not RABBITMQ_SERVER.exists():
            print(f"RabbitMQ recovery: not measured ({RABBITMQ_SERVER} is not installed)")
        else:
            rabbitmq_recovery(directory / "rabbitmq", queue, args.messages)
        return 0 if count == args.messages else 1
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
