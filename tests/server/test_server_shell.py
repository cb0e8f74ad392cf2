"""The asyncio shell (leveret.server.shell) around a scripted stand-in connection.

The stand-in speaks a line protocol so each test says what the shell must do
with bytes, output, closes, timers and heartbeats, without the AMQP protocol.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from leveret.server.shell import Server, ServerThread


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class FakeBroker:
    """Deadlines in epoch ms, like Broker.next_deadline; records each run_timers call."""

    def __init__(self) -> None:
        self.connections: list[FakeConnection] = []
        self.deadlines: list[int] = []
        self.runs: list[tuple[int, list[int]]] = []

    def now_ms(self) -> int:
        return wall_ms()

    def next_deadline(self) -> int | None:
        return min(self.deadlines) if self.deadlines else None

    def run_timers(self) -> None:
        now = wall_ms()
        due = [d for d in self.deadlines if d <= now]
        self.deadlines = [d for d in self.deadlines if d > now]
        self.runs.append((now, due))


class FakeConnection:
    """Commands, one per line: echo TEXT | burst | to INDEX TEXT | close | boom |
    pause | heartbeat SECONDS | deadline MS_FROM_NOW | close-ok."""

    def __init__(self, broker: FakeBroker, *, peer_host: str, on_output: Callable[[], None]) -> None:
        self.broker = broker
        self.peer_host = peer_host
        self.on_output = on_output
        self.want_close = False
        self.reading_paused = False
        self.lost = False
        self.interval: float | None = None
        self.ticks: list[float] = []
        self.shutdowns = 0
        self.drains = 0
        self._out = bytearray()
        self._in = bytearray()
        broker.connections.append(self)

    def send(self, data: bytes) -> None:
        self._out += data
        self.on_output()

    def receive_data(self, data: bytes) -> None:
        self._in += data
        while b"\n" in self._in:
            line, _, rest = bytes(self._in).partition(b"\n")
            self._in = bytearray(rest)
            self.command(*line.decode().split(" ", 1))

    def command(self, name: str, arg: str = "") -> None:
        if name == "echo":
            self.send(arg.encode() + b"\n")
        elif name == "burst":
            for piece in (b"a", b"b", b"c\n"):
                self.send(piece)
        elif name == "to":
            index, text = arg.split(" ", 1)
            self.broker.connections[int(index)].send(text.encode() + b"\n")
        elif name == "close":
            self.send(b"bye\n")
            self.want_close = True
        elif name == "boom":
            raise RuntimeError("a bug in the protocol")
        elif name == "pause":
            self.reading_paused = True
        elif name == "heartbeat":
            self.interval = float(arg)
        elif name == "deadline":
            self.broker.deadlines.append(wall_ms() + int(arg))
        elif name == "close-ok":
            self.want_close = True

    def buffers_to_send(self) -> list[bytes | memoryview]:
        self.drains += 1
        data = bytes(self._out)
        self._out.clear()
        return [data] if data else []

    def connection_lost(self) -> None:
        self.lost = True

    def heartbeat_tick(self, now: float) -> None:
        self.ticks.append(now)

    def heartbeat_interval(self) -> float | None:
        return self.interval

    def server_shutdown(self) -> None:
        self.shutdowns += 1
        self.send(b"shutdown\n")


Client = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    running = Server(FakeBroker(), connection_factory=FakeConnection, shutdown_grace=0.5)  # type: ignore[arg-type]
    await running.start("127.0.0.1", 0)
    yield running
    await running.stop()


def fake_broker(server: Server) -> FakeBroker:
    broker: Any = server.broker
    assert isinstance(broker, FakeBroker)
    return broker


async def connect(server: Server) -> Client:
    count = len(fake_broker(server).connections)
    client = await asyncio.open_connection("127.0.0.1", server.port)
    await until(lambda: len(fake_broker(server).connections) > count)
    return client


async def until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


async def line(reader: asyncio.StreamReader, timeout: float = 2.0) -> bytes:
    return await asyncio.wait_for(reader.readline(), timeout)


async def test_start_on_port_zero_binds_a_free_port_and_accepts(server: Server) -> None:
    assert server.host == "127.0.0.1"
    assert server.port > 0
    reader, writer = await connect(server)
    writer.write(b"echo hello\n")
    assert await line(reader) == b"hello\n"
    assert fake_broker(server).connections[0].peer_host == "127.0.0.1"
    writer.close()


async def test_start_returns_the_bound_address() -> None:
    running = Server(FakeBroker(), connection_factory=FakeConnection)  # type: ignore[arg-type]
    bound = await running.start("127.0.0.1", 0)
    await running.stop()
    assert bound == ("127.0.0.1", running.port)
    assert running.url == f"amqp://guest:guest@127.0.0.1:{running.port}/"


async def test_a_taken_port_raises_address_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        running = Server(FakeBroker(), connection_factory=FakeConnection)  # type: ignore[arg-type]
        with pytest.raises(OSError) as raised:
            await running.start("127.0.0.1", taken.getsockname()[1])
    assert raised.value.errno == errno.EADDRINUSE


async def test_output_is_coalesced_into_one_drain_per_loop_pass(server: Server) -> None:
    reader, writer = await connect(server)
    connection = fake_broker(server).connections[0]
    await until(lambda: connection.drains == 1)  # the flush after connection_made
    writer.write(b"burst\n")  # three on_output calls while handling one read
    assert await line(reader) == b"abc\n"
    assert connection.drains == 2
    writer.close()


async def test_output_caused_by_another_connection_reaches_its_socket(server: Server) -> None:
    reader_a, writer_a = await connect(server)
    reader_b, writer_b = await connect(server)
    writer_a.write(b"to 1 delivered\n")
    assert await line(reader_b) == b"delivered\n"
    writer_a.close()
    writer_b.close()


async def test_want_close_flushes_the_output_then_closes(server: Server) -> None:
    reader, writer = await connect(server)
    connection = fake_broker(server).connections[0]
    writer.write(b"close\n")
    received = await asyncio.wait_for(reader.read(), 2.0)  # read() returns at EOF
    await until(lambda: connection.lost)
    assert received == b"bye\n"
    assert not server.protocols
    writer.close()


async def test_client_disconnect_reports_connection_lost(server: Server) -> None:
    _, writer = await connect(server)
    connection = fake_broker(server).connections[0]
    writer.close()
    await until(lambda: connection.lost)
    assert not server.protocols


async def test_an_exception_in_the_protocol_costs_only_that_connection(server: Server) -> None:
    reader_a, writer_a = await connect(server)
    reader_b, writer_b = await connect(server)
    writer_a.write(b"boom\n")
    try:
        received = await asyncio.wait_for(reader_a.read(), 2.0)
    except ConnectionResetError:
        received = b""
    writer_b.write(b"echo still here\n")
    assert received == b""
    assert await line(reader_b) == b"still here\n"
    assert fake_broker(server).connections[0].lost
    writer_a.close()
    writer_b.close()


async def test_the_timer_follows_the_earliest_deadline(server: Server) -> None:
    broker = fake_broker(server)
    reader, writer = await connect(server)
    writer.write(b"deadline 5000\n")
    await asyncio.sleep(0.05)  # the 5 s timer is armed
    writer.write(b"deadline 100\n")  # an earlier deadline must re-arm it
    await until(lambda: any(due for _, due in broker.runs), timeout=1.0)
    (fired_at, due), = [(now, due) for now, due in broker.runs if due]
    assert due[0] <= fired_at < due[0] + 500
    assert len(broker.deadlines) == 1  # the 5 s deadline is still pending
    writer.close()


async def test_a_deadline_already_due_runs_the_timers_at_once(server: Server) -> None:
    broker = fake_broker(server)
    _, writer = await connect(server)
    writer.write(b"deadline -50\n")
    await until(lambda: any(due for _, due in broker.runs), timeout=0.5)
    writer.close()


async def test_without_deadlines_no_timer_runs(server: Server) -> None:
    reader, writer = await connect(server)
    writer.write(b"echo x\n")
    await line(reader)
    await asyncio.sleep(0.05)
    assert fake_broker(server).runs == []
    writer.close()


async def test_heartbeat_ticks_every_half_interval_once_negotiated(server: Server) -> None:
    _, writer_on = await connect(server)
    reader_off, writer_off = await connect(server)
    on, off = fake_broker(server).connections
    start = time.monotonic()
    writer_on.write(b"heartbeat 0.2\n")
    writer_off.write(b"echo no heartbeat\n")
    await line(reader_off)
    await asyncio.sleep(0.55)
    assert 2 <= len(on.ticks) <= 6
    assert all(start < tick <= time.monotonic() for tick in on.ticks)
    assert off.ticks == []
    writer_on.close()
    writer_off.close()


async def test_reading_paused_holds_back_the_socket_until_cleared(server: Server) -> None:
    reader, writer = await connect(server)
    connection = fake_broker(server).connections[0]
    writer.write(b"pause\n")
    await until(lambda: connection.reading_paused)
    await asyncio.sleep(0.05)
    writer.write(b"echo later\n")
    with pytest.raises(asyncio.TimeoutError):
        await line(reader, timeout=0.2)
    connection.reading_paused = False
    connection.on_output()
    assert await line(reader) == b"later\n"
    writer.close()


async def test_stop_closes_each_connection_with_shutdown_and_waits_for_close_ok() -> None:
    running = Server(FakeBroker(), connection_factory=FakeConnection, shutdown_grace=5.0)  # type: ignore[arg-type]
    await running.start("127.0.0.1", 0)
    reader, writer = await connect(running)
    connection = fake_broker(running).connections[0]
    started = time.monotonic()
    stopping = asyncio.create_task(running.stop())
    assert await line(reader) == b"shutdown\n"
    writer.write(b"close-ok\n")
    await asyncio.wait_for(stopping, 2.0)
    assert time.monotonic() - started < 2.0  # did not sit out the 5 s grace
    assert connection.shutdowns == 1
    assert connection.lost
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", running.port)
    writer.close()


async def test_stop_cuts_off_clients_that_do_not_answer() -> None:
    running = Server(FakeBroker(), connection_factory=FakeConnection, shutdown_grace=0.2)  # type: ignore[arg-type]
    await running.start("127.0.0.1", 0)
    reader, writer = await connect(running)
    await asyncio.wait_for(running.stop(), 2.0)
    try:
        received = await asyncio.wait_for(reader.read(), 2.0)
    except ConnectionResetError:
        received = b"shutdown\n"  # an abort may reset before the client reads
    assert received == b"shutdown\n"
    assert not running.protocols
    writer.close()


async def test_server_call_runs_now_and_rechecks_the_timers(server: Server) -> None:
    broker = fake_broker(server)
    result = server.call(lambda b: b.deadlines.append(wall_ms() + 20) or "done")  # type: ignore[attr-defined]
    await until(lambda: any(due for _, due in broker.runs), timeout=1.0)
    assert result == "done"


def test_server_thread_serves_synchronous_callers() -> None:
    with ServerThread(FakeBroker(), connection_factory=FakeConnection) as running:  # type: ignore[arg-type]
        with socket.create_connection(("127.0.0.1", running.port), timeout=2) as client:
            client.sendall(b"echo sync\n")
            received = client.makefile("rb").readline()
        count = running.call(lambda broker: len(broker.connections))  # type: ignore[attr-defined]
    assert received == b"sync\n"
    assert count == 1
    assert running.url == f"amqp://guest:guest@127.0.0.1:{running.port}/"


def test_server_thread_call_reraises_errors() -> None:
    def fail(broker: object) -> None:
        raise KeyError("inside the loop")

    with ServerThread(FakeBroker(), connection_factory=FakeConnection) as running:  # type: ignore[arg-type]
        with pytest.raises(KeyError):
            running.call(fail)


def test_server_thread_start_reraises_the_bind_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        thread = ServerThread(FakeBroker(), "127.0.0.1", taken.getsockname()[1], connection_factory=FakeConnection)  # type: ignore[arg-type]
        with pytest.raises(OSError) as raised:
            thread.start()
    assert raised.value.errno == errno.EADDRINUSE
