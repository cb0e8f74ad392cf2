"""Stream scenarios for the benchmark: a small raw-socket AMQP client, since the C
driver cannot pass queue or consumer arguments.

    .venv/bin/python tests/perf/bench_streams.py URL [--messages N] [--size B]

- publish with confirms into a stream: one publisher, up to WINDOW publishes in
  flight, counting basic.ack (multiple) as they come;
- a consumer reading the stream from `first` (x-stream-offset), prefetch
  PREFETCH, acking every ACK_EVERY deliveries with multiple=true.

The client pre-encodes its frames and splits incoming ones with struct only,
so it outruns both brokers (tests/perf/compare_rabbitmq.py runs it against
RabbitMQ and leveret in one run, and reports their RSS while reading).
"""

from __future__ import annotations

import argparse
import socket
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

from pamqp import body as body_frame
from pamqp import commands, frame, header

WINDOW = 2000
PREFETCH = 2000
ACK_EVERY = 500
_FRAME_HEAD = struct.Struct(">BHI")
_CLASS_METHOD = struct.Struct(">HH")
FRAME_END = b"\xce"


@dataclass(frozen=True, slots=True)
class Result:
    messages: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


class RawClient:
    """Just enough AMQP 0-9-1: handshake, one channel, raw frames after that."""

    def __init__(self, url: str) -> None:
        parts = urlparse(url)
        self.sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()
        self.sock.sendall(b"AMQP\x00\x00\x09\x01")
        self.expect(commands.Connection.Start)
        user, password = unquote(parts.username or "guest"), unquote(parts.password or "guest")
        self.send(0, commands.Connection.StartOk(
            client_properties={"product": "leveret-bench", "capabilities": {"publisher_confirms": True}},
            mechanism="PLAIN", response=f"\0{user}\0{password}", locale="en_US"))
        tune = self.expect(commands.Connection.Tune)
        self.frame_max = tune.frame_max or 131072
        self.send(0, commands.Connection.TuneOk(channel_max=tune.channel_max, frame_max=self.frame_max, heartbeat=0))
        self.send(0, commands.Connection.Open(virtual_host=unquote(parts.path[1:]) if len(parts.path) > 1 else "/"))
        self.expect(commands.Connection.OpenOk)
        self.send(1, commands.Channel.Open())
        self.expect(commands.Channel.OpenOk)

    # ------------------------------------------------------------- frames
    def send(self, channel: int, value: object) -> None:
        self.sock.sendall(frame.marshal(value, channel))  # type: ignore[arg-type]

    def read_frame(self) -> tuple[int, int, bytes]:
        while True:
            if len(self.buffer) >= 7:
                kind, channel, size = _FRAME_HEAD.unpack_from(self.buffer, 0)
                end = 7 + size + 1
                if len(self.buffer) >= end:
                    payload = bytes(self.buffer[7:7 + size])
                    del self.buffer[:end]
                    return kind, channel, payload
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("closed by the broker")
            self.buffer += data

    def expect(self, kind: type) -> object:
        while True:
            frame_type, channel, payload = self.read_frame()
            if frame_type != 1:
                continue
            data = _FRAME_HEAD.pack(frame_type, channel, len(payload)) + payload + FRAME_END
            _, _, value = frame.unmarshal(data)
            if isinstance(value, (commands.Connection.Close, commands.Channel.Close)):
                raise ConnectionError(f"{value.reply_code} {value.reply_text}")
            if isinstance(value, kind):
                return value

    def call(self, method: object, reply: type) -> object:
        self.send(1, method)
        return self.expect(reply)

    def close(self) -> None:
        try:
            self.send(0, commands.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
            self.expect(commands.Connection.CloseOk)
        except (ConnectionError, OSError):
            pass
        self.sock.close()

    # ----------------------------------------------------------- scenarios
    def publish_confirmed(self, queue: str, count: int, size: int) -> Result:
        """Publish `count` messages to `queue` through the default exchange, WINDOW in flight."""
        self.call(commands.Confirm.Select(), commands.Confirm.SelectOk)
        body = b"x" * size
        one = b"".join((
            frame.marshal(commands.Basic.Publish(exchange="", routing_key=queue), 1),
            frame.marshal(header.ContentHeader(0, len(body), commands.Basic.Properties(delivery_mode=2)), 1),
            frame.marshal(body_frame.ContentBody(body), 1),
        ))
        batch = 100
        sent = confirmed = 0
        started = time.perf_counter()
        while confirmed < count:
            while sent < count and sent - confirmed < WINDOW:
                n = min(batch, count - sent, WINDOW - (sent - confirmed))
                self.sock.sendall(one * n)
                sent += n
            kind, _, payload = self.read_frame()
            if kind == 1 and payload[:4] == b"\x00\x3c\x00\x50":  # basic.ack
                tag = struct.unpack_from(">Q", payload, 4)[0]
                confirmed = max(confirmed, tag)
            elif kind == 1 and payload[:4] == b"\x00\x3c\x00\x78":  # basic.nack
                raise ConnectionError("a publish was nacked")
            elif kind == 1 and payload[:4] in (b"\x00\x0a\x00\x32", b"\x00\x14\x00\x28"):
                raise ConnectionError(f"closed: {payload!r}")
        return Result(count, time.perf_counter() - started)

    def consume_from(self, queue: str, offset: object, count: int,
                     on_progress: Callable[[int], None] | None = None) -> Result:
        """Read `count` deliveries from `queue` starting at `offset`, acking in batches."""
        self.call(commands.Basic.Qos(prefetch_count=PREFETCH), commands.Basic.QosOk)
        self.call(commands.Basic.Consume(queue=queue, consumer_tag="bench", arguments={"x-stream-offset": offset}),
                  commands.Basic.ConsumeOk)
        received = 0
        last_tag = 0
        started = time.perf_counter()
        buffer = self.buffer
        sock = self.sock
        while received < count:
            # Split frames in place; only basic.deliver method frames matter.
            position = 0
            size_of = len(buffer)
            while size_of - position >= 7:
                kind, _, size = _FRAME_HEAD.unpack_from(buffer, position)
                end = position + 8 + size
                if end > size_of:
                    break
                if kind == 1 and buffer[position + 7:position + 11] == b"\x00\x3c\x00\x3c":
                    tag_at = position + 11 + 1 + buffer[position + 11]
                    last_tag = struct.unpack_from(">Q", buffer, tag_at)[0]
                    received += 1
                    if received % ACK_EVERY == 0:
                        sock.sendall(frame.marshal(commands.Basic.Ack(delivery_tag=last_tag, multiple=True), 1))
                        if on_progress is not None:
                            on_progress(received)
                elif kind == 1 and buffer[position + 7:position + 11] in (b"\x00\x0a\x00\x32", b"\x00\x14\x00\x28"):
                    raise ConnectionError(f"closed: {bytes(buffer[position:end])!r}")
                position = end
            del buffer[:position]
            if received >= count:
                break
            data = sock.recv(1 << 20)
            if not data:
                raise ConnectionError("closed by the broker")
            buffer += data
        seconds = time.perf_counter() - started
        sock.sendall(frame.marshal(commands.Basic.Ack(delivery_tag=last_tag, multiple=True), 1))
        return Result(received, seconds)


def declare_stream(url: str, queue: str) -> None:
    client = RawClient(url)
    try:
        client.call(commands.Queue.Declare(queue=queue, durable=True, arguments={"x-queue-type": "stream"}),
                    commands.Queue.DeclareOk)
    finally:
        client.close()


def delete_queue(url: str, queue: str) -> None:
    client = RawClient(url)
    try:
        client.call(commands.Queue.Delete(queue=queue), commands.Queue.DeleteOk)
    finally:
        client.close()


def publish_scenario(url: str, queue: str, count: int, size: int) -> Result:
    client = RawClient(url)
    try:
        return client.publish_confirmed(queue, count, size)
    finally:
        client.close()


def read_scenario(url: str, queue: str, count: int, on_progress: Callable[[int], None] | None = None) -> Result:
    client = RawClient(url)
    try:
        return client.consume_from(queue, "first", count, on_progress)
    finally:
        client.close()


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--pid", type=int, help="the broker's pid: report its RSS before and while reading")
    args = parser.parse_args()
    queue = f"perf-stream-{uuid.uuid4().hex[:8]}"
    declare_stream(args.url, queue)
    try:
        published = publish_scenario(args.url, queue, args.messages, args.size)
        print(f"publish with confirms: {published.rate:,.0f} msg/s ({published.messages:,} in {published.seconds:.1f}s)")
        before = rss(args.pid) if args.pid else 0
        peak = [before]

        def sample(received: int) -> None:
            if args.pid and received % 20_000 == 0:
                peak[0] = max(peak[0], rss(args.pid))

        read = read_scenario(args.url, queue, args.messages, sample)
        print(f"read from first:       {read.rate:,.0f} msg/s ({read.messages:,} in {read.seconds:.1f}s)")
        if args.pid:
            print(f"broker RSS: {before / 2**20:,.0f} MiB before the read, {peak[0] / 2**20:,.0f} MiB at most during it "
                  f"(the stream: {args.messages * args.size / 2**20:,.0f} MiB of bodies)")
    finally:
        delete_queue(args.url, queue)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
