"""The asyncio shell: sockets in, sockets out, around the sans-IO Connection.

Theory of operation. `Server` listens and gives every accepted socket a
`_WireProtocol`, which owns one sans-IO connection (leveret.server.connection) and
only moves bytes: socket -> `receive_data`, `buffers_to_send` -> socket. This is
the only module that knows about asyncio; everything it drives is synchronous
and runs on the server's event loop thread, so the broker needs no locks.

Invariants it keeps:
- Output is coalesced: a connection's `on_output` may fire many times in one
  loop pass (also while *another* connection's bytes are processed, when a
  publish on A delivers to a consumer on B); it schedules at most one flush per
  pass, which drains `buffers_to_send()` into a single `transport.write` (`writelines` when a large body goes out as views of itself).
- Exactly one loop timer is armed for the broker's earliest TTL/expiry
  deadline (`Broker.next_deadline`, epoch ms on the broker's clock). Every
  event that can move a deadline (bytes received, a socket lost, timers run,
  a `call` from another thread) marks it for a re-check, done once per pass.
- Each connection with a negotiated heartbeat gets `heartbeat_tick` every
  heartbeat/2 seconds of `time.monotonic()`; the connection decides whether
  to send a heartbeat frame or give up on a silent peer (`want_close`).
- A housekeeping tick (BrokerSettings.tick_interval) measures the process for
  the memory alarm (leveret.server.memory) and gives every connection `tick`
  (handshake, closing and delivery acknowledgement timeouts).
- Back-pressure both ways: past the socket's write-buffer high watermark the
  connection is told (`writing_paused`) and stops being a delivery target
  until the buffer drains below the low one; past WRITE_BUFFER_HARD (a peer
  that sends requests but does not read the answers) its socket is not read.

`ServerThread` runs a Server on its own loop in a daemon thread, for callers
without an event loop (pika tests, the pytest plugin).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

if TYPE_CHECKING:
    from leveret.broker.broker import Broker
    from leveret.server.disk import DiskMonitor
    from leveret.server.memory import MemoryMonitor
    from leveret.store import Store

log = logging.getLogger("leveret.server")

T = TypeVar("T")

# Write-buffer watermarks per socket. Above HIGH asyncio calls pause_writing and
# deliveries to the connection stop until the buffer is below LOW again; above
# HARD the socket is not read either.
FAIR_READ_BYTES = 65536  # a read this big means the peer has more waiting
WRITE_BUFFER_HIGH = 1 << 20
WRITE_BUFFER_LOW = 1 << 18
WRITE_BUFFER_HARD = 16 << 20

# How long `stop()` waits for clients to answer connection.close with close-ok.
SHUTDOWN_GRACE = 2.0


def client_host(host: str) -> str:
    """How a client on this machine reaches a listener bound to `host`, for a URL."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"[{host}]" if ":" in host else host


class WireConnection(Protocol):
    """What the shell needs from leveret.server.connection.Connection (sans-IO)."""

    want_close: bool
    reading_paused: bool
    name: str

    def receive_data(self, data: bytes) -> None: ...
    def buffers_to_send(self) -> list[bytes | memoryview]: ...
    def connection_lost(self) -> None: ...
    def heartbeat_tick(self, now: float) -> None: ...
    def heartbeat_interval(self) -> float | None: ...
    def server_shutdown(self) -> None: ...


class ConnectionFactory(Protocol):
    def __call__(
        self, broker: Broker, *, peer_host: str, on_output: Callable[[], None]
    ) -> WireConnection: ...


class _WireProtocol(asyncio.Protocol):
    """One client socket: moves bytes between the transport and its Connection."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.connection: WireConnection | None = None
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self.writing_paused = False
        self._output_choked = False  # over WRITE_BUFFER_HARD: reading stops too
        self._reading_paused = False
        self._flush_scheduled = False
        self._heartbeat: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._close_deadline: float | None = None

    # ------------------------------------------------------ asyncio side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports quack like asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Small frames (acks, heartbeats) must not wait for Nagle.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH, low=WRITE_BUFFER_LOW)
        peer = transport.get_extra_info("peername")
        peer_host = peer[0] if isinstance(peer, tuple) and peer else ""
        try:
            self.connection = self.server.connection_factory(
                self.server.broker, peer_host=peer_host, on_output=self.on_output
            )
        except Exception:
            log.exception("cannot set up a connection from %s", peer_host)
            transport.abort()
            return
        # RabbitMQ's connection name, as its logs and management API show it.
        self.connection.name = f"{_address(peer)} -> {_address(transport.get_extra_info('sockname'))}"
        self.server.protocols.add(self)
        self.on_output()

    def data_received(self, data: bytes) -> None:
        connection = self.connection
        if connection is None or self.transport is None or self.transport.is_closing():
            return
        try:
            connection.receive_data(data)
        except Exception:
            # A bug in the protocol must cost one connection, not the server.
            log.exception("internal error on a connection; closing it")
            self.transport.abort()
            return
        self._sync_reading()
        self._arm_heartbeat()
        self.on_output()
        self.server.deadlines_changed()
        if len(data) >= FAIR_READ_BYTES and not self._reading_paused:
            # uvloop (libuv) keeps reading a busy socket up to 32 times per loop
            # pass: a flooding publisher then starves every other connection
            # (consumers' acks wait ~1 s). Yield the loop after each big read.
            self.transport.pause_reading()
            self.loop.call_soon(self._resume_after_yield)

    def _resume_after_yield(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing() and not self._reading_paused:
            transport.resume_reading()

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        self.server.protocols.discard(self)
        connection, self.connection = self.connection, None
        if connection is not None:
            try:
                connection.connection_lost()
            except Exception:
                log.exception("internal error while dropping a connection")
            self.server.deadlines_changed()
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self.writing_paused = True
        self._tell_writing_paused(True)

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._output_choked = False
        self._tell_writing_paused(False)
        self._sync_reading()

    def _tell_writing_paused(self, paused: bool) -> None:
        told = getattr(self.connection, "writing_paused", None)  # optional in the protocol
        if told is None:
            return
        try:
            told(paused)
        except Exception:
            log.exception("internal error on a connection; closing it")
            self.abort()

    # ------------------------------------------------------- output side
    def on_output(self) -> None:
        """The connection has (or may have) bytes to send: flush once this pass."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        connection, transport = self.connection, self.transport
        if connection is None or transport is None or transport.is_closing():
            return
        store = self.server.store
        if store is not None and store.write_pending:
            # Delivered flags and topology reach the page cache before the
            # client can see them, so a kill -9 cannot forget them.
            store.write_through()
        buffers = connection.buffers_to_send()
        if buffers:
            if len(buffers) == 1:
                transport.write(buffers[0])
            else:
                transport.writelines(buffers)
            if transport.get_write_buffer_size() > WRITE_BUFFER_HARD:
                self._output_choked = True
        if connection.want_close:
            if getattr(connection, "reset_on_close", False):  # optional in the protocol
                _reset(transport)
            else:
                transport.close()  # sends what is buffered first
            return
        self._arm_close_timer()
        self._sync_reading()

    def _arm_close_timer(self) -> None:
        """Drop the socket on the connection's deadline (handshake, or closing without
        an answer) to the moment, as RabbitMQ does: the housekeeping tick alone
        would be up to a tick late."""
        deadline = getattr(self.connection, "close_deadline", None)  # optional in the protocol
        if deadline == self._close_deadline:
            return
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        self._close_deadline = deadline
        if deadline is not None:
            self._close_timer = self.loop.call_later(
                max(0.0, deadline - time.monotonic()), self._closing_timed_out, deadline)

    def _closing_timed_out(self, deadline: float) -> None:
        self._close_timer = None
        self._close_deadline = None
        self.tick(max(time.monotonic(), deadline))  # it asks for a flush if it closes
        self._arm_close_timer()  # the state may have moved on to a deadline of its own

    def _sync_reading(self) -> None:
        connection, transport = self.connection, self.transport
        if connection is None or transport is None or transport.is_closing():
            return
        paused = connection.reading_paused or self._output_choked
        if paused != self._reading_paused:
            self._reading_paused = paused
            if self._reading_paused:
                transport.pause_reading()
                deadline = getattr(connection, "flow_deadline", None)
                if deadline is not None:
                    self.loop.call_later(max(0.0, deadline - time.monotonic()), self._flow_timer)
            else:
                transport.resume_reading()

    def _flow_timer(self) -> None:
        expired = getattr(self.connection, "flow_expired", None)  # optional in the protocol
        if expired is None:
            return
        expired(time.monotonic())
        self._sync_reading()

    # --------------------------------------------------------- heartbeat
    def _arm_heartbeat(self) -> None:
        if self._heartbeat is not None or self.connection is None:
            return
        interval = self.connection.heartbeat_interval()
        if interval:
            self._heartbeat = self.loop.call_later(interval / 2, self._heartbeat_tick)

    def _heartbeat_tick(self) -> None:
        self._heartbeat = None
        connection = self.connection
        if connection is None:
            return
        try:
            connection.heartbeat_tick(time.monotonic())
        except Exception:
            log.exception("internal error in a heartbeat tick; closing the connection")
            if self.transport is not None:
                self.transport.abort()
            return
        self.flush()
        self._arm_heartbeat()

    def tick(self, now: float) -> None:
        """The server's housekeeping tick, passed on to the connection (optional there)."""
        tick = getattr(self.connection, "tick", None)
        if tick is None:
            return
        try:
            tick(now)
        except Exception:
            log.exception("internal error in a housekeeping tick; closing the connection")
            self.abort()

    # ---------------------------------------------------------- shutdown
    def shutdown(self) -> None:
        connection = self.connection
        if connection is None:
            return
        try:
            connection.server_shutdown()
        except Exception:
            log.exception("internal error while closing a connection for shutdown")
            if self.transport is not None:
                self.transport.abort()
            return
        self.flush()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def _reset(transport: asyncio.Transport) -> None:
    """Close with an RST: a zero linger time makes the close abortive."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass  # gone already: nothing left to reset
    transport.abort()


class Server:
    """A listening AMQP server around one Broker. Create anywhere, start on a running loop."""

    def __init__(
        self,
        broker: Broker | None = None,
        *,
        connection_factory: ConnectionFactory | None = None,
        shutdown_grace: float = SHUTDOWN_GRACE,
    ) -> None:
        if broker is None:
            from leveret.broker.broker import Broker

            broker = Broker()
        if connection_factory is None:
            from leveret.server.connection import Connection

            connection_factory = Connection
        self.broker: Broker = broker
        self.connection_factory: ConnectionFactory = connection_factory
        self.shutdown_grace = shutdown_grace
        self.protocols: set[_WireProtocol] = set()
        self.host = ""
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: asyncio.Server | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: int | None = None
        self._deadline_check_scheduled = False
        self._stopping = False
        self.store: Store | None = None  # the broker's, if it persists (set by start)
        self._listeners: list[asyncio.Server] = []  # more listeners (TLS), see listen_tls
        self.tls_host = ""
        self.tls_port = 0
        self._housekeeping: asyncio.TimerHandle | None = None
        self.memory_monitor: MemoryMonitor | None = None  # set by start
        self.disk_monitor: DiskMonitor | None = None  # set by start

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the server is not started")
        return self._loop

    @property
    def url(self) -> str:
        """An AMQP URL a client on this machine can use (guest is allowed from loopback only)."""
        return f"amqp://guest:guest@{client_host(self.host)}:{self.port}/"

    @property
    def listening(self) -> bool:
        return self._listener is not None and not self._stopping

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Listen; return the (host, port) actually bound (port 0 picks a free one).

        Raises OSError (errno EADDRINUSE when the port is taken).
        """
        if self._listener is not None:
            raise RuntimeError("the server is already started")
        self._loop = asyncio.get_running_loop()
        self._listener = await self._loop.create_server(
            lambda: _WireProtocol(self), host or None, port
        )
        sockets = self._listener.sockets
        # A name that resolves to several addresses binds several sockets; with
        # port 0 each gets its own port, and we report the first.
        bound = sockets[0].getsockname() if sockets else (host, port)
        self.host, self.port = bound[0], bound[1]
        store = self.store = getattr(self.broker, "store", None)
        if store is not None:
            # The store's writer thread fsyncs; each sync comes back here, on the
            # loop, to release the publisher confirms it covers.
            loop = self._loop
            store.start(lambda: loop.call_soon_threadsafe(self._store_synced))
        self.deadlines_changed()
        if getattr(self.broker, "resources", None) is not None:
            from leveret.server.memory import MemoryMonitor

            self.memory_monitor = MemoryMonitor(
                self.broker.resources, lambda: self.broker.settings.memory_high_watermark
            )
            from leveret.broker.limits import DEFAULT_DISK_FREE_LIMIT
            from leveret.server.disk import DiskMonitor

            self.disk_monitor = DiskMonitor(
                self.broker.resources,
                lambda: store.directory if store is not None else None,
                lambda: getattr(self.broker.settings, "disk_free_limit", DEFAULT_DISK_FREE_LIMIT),
            )
        self._arm_housekeeping()
        return self.host, self.port

    async def listen_tls(self, host: str, port: int, context: ssl.SSLContext) -> tuple[str, int]:
        """Also listen for AMQP over TLS (amqps) on (host, port); the server must be started."""
        settings = getattr(self.broker, "settings", None)
        listener = await self.loop.create_server(
            lambda: _WireProtocol(self), host or None, port, ssl=context,
            ssl_handshake_timeout=getattr(settings, "handshake_timeout", 10.0),
        )
        self._listeners.append(listener)
        sockets = listener.sockets
        bound = sockets[0].getsockname() if sockets else (host, port)
        self.tls_host, self.tls_port = bound[0], bound[1]
        return self.tls_host, self.tls_port

    async def stop(self) -> None:
        """Stop listening, close every connection with 320 CONNECTION_FORCED, and wait.

        Clients get `shutdown_grace` seconds to answer with close-ok; stragglers are cut off.
        """
        if self._listener is None or self._stopping:
            return
        self._stopping = True
        self._listener.close()
        for listener in self._listeners:
            listener.close()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            self._housekeeping = None
        protocols = list(self.protocols)
        for protocol in protocols:
            protocol.shutdown()
        pending = [p.closed for p in protocols if not p.closed.done()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.shutdown_grace)
            for protocol in protocols:
                if protocol.closed in late:
                    protocol.abort()
            if late:
                await asyncio.wait(late, timeout=1.0)
        await self._listener.wait_closed()
        for listener in self._listeners:
            await listener.wait_closed()
        self._listeners.clear()
        self._cancel_timer()
        self._listener = None
        if self.store is not None:
            self.store.stop()  # a last fsync; the owner closes the store

    def _store_synced(self) -> None:
        store = self.store
        if store is None:
            return
        try:
            store.completed()
        except Exception:
            log.exception("internal error while releasing publisher confirms")

    # ------------------------------------------------------------ timers
    def _arm_housekeeping(self) -> None:
        interval = getattr(getattr(self.broker, "settings", None), "tick_interval", None)
        if interval and not self._stopping:
            self._housekeeping = self.loop.call_later(interval, self._housekeeping_tick)

    def _housekeeping_tick(self) -> None:
        self._housekeeping = None
        if self.memory_monitor is not None:
            try:
                self.memory_monitor.check()
                resources = self.broker.resources
                pressure = getattr(self.broker, "memory_pressure", None)
                if pressure is not None:
                    pressure(resources.memory_used, resources.memory_limit)
            except Exception:
                log.exception("cannot check memory use against the watermark")
        if self.disk_monitor is not None:
            try:
                self.disk_monitor.check()
            except Exception:
                log.exception("cannot check free disk space against disk_free_limit")
        now = time.monotonic()
        for protocol in list(self.protocols):
            protocol.tick(now)
        self.deadlines_changed()
        self._arm_housekeeping()

    def deadlines_changed(self) -> None:
        """Something may have moved the broker's next deadline: re-check once this pass."""
        if self._loop is None or self._deadline_check_scheduled:
            return
        self._deadline_check_scheduled = True
        self._loop.call_soon(self._rearm_timer)

    def _rearm_timer(self) -> None:
        self._deadline_check_scheduled = False
        if self._stopping:
            return
        deadline = self.broker.next_deadline()
        if deadline == self._timer_deadline and (self._timer is not None or deadline is None):
            return
        self._cancel_timer()
        if deadline is None:
            return
        # At least 1 ms: the loop may wake a hair before the broker's wall clock
        # reaches the deadline, and a due deadline must not spin the loop.
        delay = max(0.001, (deadline - self.broker.now_ms()) / 1000)
        self._timer_deadline = deadline
        self._timer = self.loop.call_later(delay, self._fire_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_deadline = None

    def _fire_timer(self) -> None:
        self._timer = None
        self._timer_deadline = None
        try:
            self.broker.run_timers()
        except Exception:
            log.exception("internal error while running broker timers")
        self.deadlines_changed()

    # ------------------------------------------------------------ callers
    def call(self, fn: Callable[[Broker], T]) -> T:
        """Run `fn(broker)` now (the caller is on the loop thread), then re-check the timers."""
        try:
            return fn(self.broker)
        finally:
            self.deadlines_changed()


def tls_context(
    cert: str, key: str, cacert: str | None = None, *, fail_if_no_peer_cert: bool = False
) -> ssl.SSLContext:
    """A server-side TLS context. With `cacert`, client certificates signed by it are
    verified when presented (RabbitMQ's verify_peer), and required with
    `fail_if_no_peer_cert`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if cacert:
        context.load_verify_locations(cacert)
        context.verify_mode = ssl.CERT_REQUIRED if fail_if_no_peer_cert else ssl.CERT_OPTIONAL
    elif fail_if_no_peer_cert:
        raise ValueError("fail_if_no_peer_cert needs a CA certificate to verify clients with")
    return context


def _address(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address or "")


class ServerThread:
    """A Server on its own event loop in a daemon thread.

    For synchronous callers: the pika tests and the pytest plugin. Everything
    that touches the broker goes through `call`, which runs on the loop thread.
    """

    def __init__(
        self,
        broker: Broker | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        connection_factory: ConnectionFactory | None = None,
        shutdown_grace: float = SHUTDOWN_GRACE,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
    ) -> None:
        self.server = Server(broker, connection_factory=connection_factory, shutdown_grace=shutdown_grace)
        self._address = (host, port)
        self._loop_factory = loop_factory or asyncio.new_event_loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def broker(self) -> Broker:
        return self.server.broker

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return self.server.url

    def start(self, timeout: float = 10.0) -> ServerThread:
        """Start the loop thread and listen; re-raises the bind error in the caller."""
        if self._thread is not None:
            raise RuntimeError("the server thread is already started")
        ready = threading.Event()
        loop = self._loop_factory()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="leveret-server", daemon=True)
        self._thread.start()
        ready.wait(timeout)
        future = asyncio.run_coroutine_threadsafe(self.server.start(*self._address), loop)
        try:
            future.result(timeout)
        except BaseException:
            self._halt_loop()
            raise
        return self

    def listen_tls(self, context: ssl.SSLContext, host: str | None = None, port: int = 0,
                   timeout: float = 10.0) -> tuple[str, int]:
        """Also accept amqps on (host, port); host defaults to the plain listener's."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the server thread is not started")
        listening = self.server.listen_tls(self._address[0] if host is None else host, port, context)
        return asyncio.run_coroutine_threadsafe(listening, loop).result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        loop = self._loop
        if loop is None or self._thread is None or loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(self.server.stop(), loop).result(timeout)
        finally:
            self._halt_loop()

    def _halt_loop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(10.0)

    def call(self, fn: Callable[[Broker], T], timeout: float = 10.0) -> T:
        """Run `fn(broker)` on the server's loop thread and return its result (or raise its error)."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the server thread is not started")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(self.server.call(fn))
            except BaseException as error:
                future.set_exception(error)

        loop.call_soon_threadsafe(run)
        return future.result(timeout)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()
