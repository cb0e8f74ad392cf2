"""A minimal asyncio AMQP 0-9-1 client for the scale scenarios of compare_rabbitmq.py.

The C driver (shared/bench) has one publisher and one consumer connection; the
scale scenarios need thousands of connections, or tens of thousands of
pipelined declares. This client encodes frames with pamqp ahead of time and
parses only frame headers on the way in, so that in the declare scenarios
(everything sent with nowait, one synchronous method at the end) the time
measured is the broker's. In the many-connections scenario the client's own
cost per message is part of the figure (a Python client, ~50-100 us per
message), which is why that scenario runs at a modest aggregate rate.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

from pamqp import body as amqp_body
from pamqp import commands, frame, header

FRAME_END = b"\xce"
HEADER = struct.Struct(">BHI")
METHOD_ID = struct.Struct(">HH")
DELIVER = (60, 60)


def marshal(method: commands.base.Frame, channel: int = 1) -> bytes:
    return frame.marshal(method, channel)


def publish_frames(routing_key: str, payload: bytes, exchange: str = "", channel: int = 1) -> bytes:
    return (marshal(commands.Basic.Publish(exchange=exchange, routing_key=routing_key), channel)
            + frame.marshal(header.ContentHeader(0, len(payload), commands.Basic.Properties()), channel)
            + frame.marshal(amqp_body.ContentBody(payload), channel))


class RawClient:
    """One connection, one channel; method replies awaited by class and method id."""

    def __init__(self, on_body: Callable[[bytes], None] | None = None) -> None:
        self.on_body = on_body
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.waiting: list[tuple[tuple[int, int], asyncio.Future[bytes]]] = []
        self.task: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()
        self.error: str | None = None

    async def connect(self, host: str, port: int, user: str = "guest", password: str = "guest") -> None:
        self.reader, self.writer = await asyncio.open_connection(host, port, limit=1 << 22)
        self.task = asyncio.get_running_loop().create_task(self._read())
        start = self.expect(10, 10)
        self.writer.write(b"AMQP\x00\x00\x09\x01")
        await start
        tune = self.expect(10, 30)
        self.send(marshal(commands.Connection.StartOk(
            client_properties={"product": "leveret-perf"}, mechanism="PLAIN",
            response=f"\0{user}\0{password}", locale="en_US"), 0))
        await tune
        opened = self.expect(10, 41)
        self.send(marshal(commands.Connection.TuneOk(channel_max=16, frame_max=131072, heartbeat=0), 0)
                  + marshal(commands.Connection.Open(virtual_host="/"), 0))
        await opened
        await self.call(marshal(commands.Channel.Open()), (20, 11))

    def send(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)

    async def drain(self) -> None:
        assert self.writer is not None
        await self.writer.drain()

    def expect(self, class_id: int, method_id: int) -> asyncio.Future[bytes]:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.waiting.append(((class_id, method_id), future))
        return future

    async def call(self, data: bytes, reply: tuple[int, int]) -> bytes:
        future = self.expect(*reply)
        self.send(data)
        return await future

    async def _read(self) -> None:
        assert self.reader is not None
        read = self.reader.readexactly
        try:
            while True:
                kind, _channel, size = HEADER.unpack(await read(7))
                payload = (await read(size + 1))[:-1]
                if kind == 1:
                    ids = METHOD_ID.unpack_from(payload)
                    if ids == DELIVER:
                        continue
                    if ids in ((10, 50), (20, 40)):  # connection.close / channel.close
                        self.error = repr(frame.unmarshal(HEADER.pack(kind, _channel, size) + payload + FRAME_END)[2])
                        self._fail()
                        return
                    for index, (wanted, future) in enumerate(self.waiting):
                        if wanted == ids:
                            del self.waiting[index]
                            if not future.done():
                                future.set_result(payload)
                            break
                elif kind == 3 and self.on_body is not None:
                    self.on_body(payload)
        except (asyncio.IncompleteReadError, ConnectionError) as error:
            self.error = self.error or repr(error)
            self._fail()

    def _fail(self) -> None:
        self.closed.set()
        for _, future in self.waiting:
            if not future.done():
                future.set_exception(ConnectionError(self.error))
        self.waiting.clear()

    async def close(self) -> None:
        if self.writer is None:
            return
        if not self.closed.is_set():
            try:
                await asyncio.wait_for(self.call(marshal(commands.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0), 0), (10, 51)), 10)
            except (TimeoutError, ConnectionError):
                pass
        if self.task is not None:
            self.task.cancel()
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass
