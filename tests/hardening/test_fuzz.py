"""Hostile input on the sans-IO Connection: random and mutated frames, bounded in time.

What must hold for any input: `receive_data` returns (no exception, no hang);
what the connection writes is well-formed frames; a connection.close or
channel.close carries a valid AMQP reply code and never 541 (an internal error
is a bug); once closing, the connection ends; and what it keeps in memory stays
bounded (no growing buffers).
"""

from __future__ import annotations

import gc
import logging
import os
import random
import struct
import time
import tracemalloc
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from leveret.amqp_wire import framing
from pamqp import body, commands, frame, header

from leveret.broker.broker import Broker
from leveret.server.connection_state import State
from tests.wire.conftest import WireClient

VALID_CODES = {200, 311, 312, 313, 320, 402, 403, 404, 405, 406, 501, 502, 503, 504, 505, 506, 530, 540}
# 541 only as RabbitMQ sends it for content it cannot decode: "INTERNAL_ERROR", no explanation.
# Any other 541 is leveret's own internal error: a bug.
BUDGET = float(os.environ.get("LEVERET_FUZZ_SECONDS", "6"))
C = commands


def corpus_session() -> list[bytes]:
    """A well-behaved session, frame by frame: the raw material for mutations."""
    props = C.Basic.Properties(content_type="text/plain", headers={"k": "v", "n": 1}, delivery_mode=2,
                               expiration="60000", message_id="m1", priority=3)
    frames = [
        frame.marshal(C.Connection.StartOk(client_properties={"capabilities": {"connection.blocked": True}},
                                           mechanism="PLAIN", response="\0guest\0guest", locale="en_US"), 0),
        frame.marshal(C.Connection.TuneOk(channel_max=16, frame_max=131072, heartbeat=0), 0),
        frame.marshal(C.Connection.Open(virtual_host="/"), 0),
        frame.marshal(C.Channel.Open(), 1),
        frame.marshal(C.Exchange.Declare(exchange="x", exchange_type="topic", arguments={"alternate-exchange": "ae"}), 1),
        frame.marshal(C.Queue.Declare(queue="q", arguments={"x-message-ttl": 1000, "x-max-length": 5}), 1),
        frame.marshal(C.Queue.Bind(queue="q", exchange="x", routing_key="a.#"), 1),
        frame.marshal(C.Basic.Qos(prefetch_count=2), 1),
        frame.marshal(C.Basic.Consume(queue="q", consumer_tag="c"), 1),
        frame.marshal(C.Confirm.Select(), 1),
        frame.marshal(C.Basic.Publish(exchange="x", routing_key="a.b", mandatory=True), 1),
        frame.marshal(header.ContentHeader(0, 5, props), 1),
        frame.marshal(body.ContentBody(b"hello"), 1),
        frame.marshal(C.Basic.Ack(delivery_tag=1), 1),
        frame.marshal(C.Basic.Get(queue="q"), 1),
        frame.marshal(C.Basic.Nack(delivery_tag=0, multiple=True, requeue=True), 1),
        frame.marshal(C.Exchange.Bind(destination="x", source="amq.topic", routing_key="#"), 1),
        frame.marshal(C.Tx.Select(), 2),
        frame.marshal(C.Basic.Cancel(consumer_tag="c"), 1),
        frame.marshal(C.Queue.Purge(queue="q"), 1),
        frame.marshal(C.Queue.Delete(queue="q", if_unused=True), 1),
        framing.HEARTBEAT_FRAME,
        frame.marshal(C.Channel.Close(reply_code=200, reply_text="ok", class_id=0, method_id=0), 1),
        frame.marshal(C.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0), 0),
    ]
    return frames


CORPUS = corpus_session()


class Outcome:
    def __init__(self) -> None:
        self.codes: Counter[int] = Counter()
        self.frames_out = 0


def run_session(chunks: list[bytes], outcome: Outcome, *, open_first: bool = False) -> WireClient:
    """Feed `chunks`; check every invariant; return the client for more checks."""
    wire = WireClient(Broker())
    connection = wire.connection
    connection.receive_data(framing.PROTOCOL_HEADER)
    if open_first:
        for data in CORPUS[:4]:
            connection.receive_data(data)
    reader = framing.FrameReader(0)
    for chunk in chunks:
        started = time.monotonic()
        connection.receive_data(chunk)  # must not raise
        assert time.monotonic() - started < 2.0, "a read took too long"
        reader.feed(connection.data_to_send())
        for _frame_type, _channel, payload in reader.frames():  # well-formed frames only
            outcome.frames_out += 1
            if _frame_type == framing.FRAME_METHOD and payload[:4] in (b"\x00\x0a\x00\x32", b"\x00\x14\x00\x28"):
                code = int.from_bytes(payload[4:6], "big")
                outcome.codes[code] += 1
                assert code in VALID_CODES or payload[6:21] == b"\x0eINTERNAL_ERROR", (code, payload)
        if connection.want_close or connection.state is State.CLOSED:
            break
    assert reader.buffered == 0  # nothing half-written
    assert connection.reader.buffered <= max(connection.frame_max, 4096) + 8
    held = connection._held_frames or []
    assert len(held) <= 64 * 1024  # at most one read's worth of frames waits
    if connection.state is State.CLOSING:
        connection.tick(connection.monotonic() + 60)  # a peer that never answers our close
        assert connection.want_close
    return wire


def mutate(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        if not data:
            data += rng.randbytes(rng.randint(1, 16))
        elif choice < 0.35:  # flip bits
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif choice < 0.5:  # an interesting byte
            data[rng.randrange(len(data))] = rng.choice([0, 1, 0x7F, 0x80, 0xCE, 0xFF])
        elif choice < 0.65:  # truncate
            del data[rng.randrange(len(data)):]
        elif choice < 0.8:  # insert random bytes
            i = rng.randrange(len(data) + 1)
            data[i:i] = rng.randbytes(rng.randint(1, 32))
        elif choice < 0.9:  # a huge size field in the frame header
            if len(data) >= 7:
                data[3:7] = rng.choice([b"\xff\xff\xff\xff", b"\x00\x02\x00\x01", b"\x7f\xff\xff\xff"])
        else:  # splice in another corpus frame
            i = rng.randrange(len(data) + 1)
            data[i:i] = rng.choice(CORPUS)
    return bytes(data)


def split(rng: random.Random, data: bytes) -> list[bytes]:
    chunks, position = [], 0
    while position < len(data):
        size = rng.choice([1, 2, 7, 8, 64, 4096, len(data)])
        chunks.append(data[position:position + size])
        position += size
    return chunks


def reframe(rng: random.Random, data: bytes) -> bytes:
    """Mutate the payload only and frame it again: gets past framing into the methods."""
    if len(data) < 8:
        return mutate(rng, data)
    payload = mutate(rng, data[7:-1])
    return data[:3] + len(payload).to_bytes(4, "big") + payload + b"\xce"


def test_mutated_sessions_never_break_the_connection(caplog: pytest.LogCaptureFixture) -> None:
    rng = random.Random(int(os.environ.get("LEVERET_FUZZ_SEED", "20261123")))
    outcome = Outcome()
    sessions = 0
    deadline = time.monotonic() + BUDGET
    with caplog.at_level(logging.ERROR):
        while time.monotonic() < deadline:
            frames = list(CORPUS)
            for _ in range(rng.randint(1, 3)):
                i = rng.randrange(len(frames))
                frames[i] = reframe(rng, frames[i]) if rng.random() < 0.6 else mutate(rng, frames[i])
            if rng.random() < 0.2:
                rng.shuffle(frames)
            run_session(split(rng, b"".join(frames)), outcome)
            sessions += 1
    internal = [record for record in caplog.records if record.levelno >= logging.ERROR]
    closes = sum(outcome.codes.values())
    print(f"mutation fuzz: {sessions} sessions, {outcome.frames_out} frames answered, "
          f"{closes} closes by code {dict(sorted(outcome.codes.items()))}, 0 exceptions, 0 hangs, "
          f"{len(internal)} internal errors")
    assert sessions > 100
    assert internal == []


frame_types = st.sampled_from([1, 2, 3, 8, 0, 4, 9, 206, 255])
channels = st.sampled_from([0, 1, 2, 7, 65535])
payloads = st.one_of(
    st.binary(max_size=64),
    st.sampled_from([f[7:-1] for f in CORPUS]),
    st.builds(lambda f, cut: f[7:-1][:cut], st.sampled_from(CORPUS), st.integers(0, 40)),
)


@st.composite
def raw_frames(draw: Any) -> bytes:
    frame_type, channel, payload = draw(frame_types), draw(channels), draw(payloads)
    size = draw(st.one_of(st.just(len(payload)), st.integers(0, 2**32 - 1)))
    end = draw(st.sampled_from([b"\xce", b"\xce", b"\xce", b"\x00"]))
    return bytes([frame_type]) + channel.to_bytes(2, "big") + size.to_bytes(4, "big") + payload + end


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(raw_frames(), min_size=1, max_size=12), st.booleans(), st.integers(1, 64))
def test_random_frames_after_the_handshake(frames: list[bytes], opened: bool, chunk: int) -> None:
    data = b"".join(frames)
    chunks = [data[i:i + chunk] for i in range(0, len(data), chunk)]
    run_session(chunks, Outcome(), open_first=opened)


def test_a_flood_of_garbage_keeps_memory_flat() -> None:
    """10 MB of random bytes into fresh connections: what is kept does not grow."""
    rng = random.Random(7)
    garbage = rng.randbytes(1 << 20)
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        for _ in range(10):
            wire = WireClient(Broker())
            wire.connection.receive_data(framing.PROTOCOL_HEADER)
            for data in CORPUS[:4]:
                wire.connection.receive_data(data)
            for i in range(0, len(garbage), 65536):
                wire.connection.receive_data(garbage[i:i + 65536])
                wire.connection.data_to_send()
            wire.connection.connection_lost()
            del wire
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    print(f"garbage flood: 10 connections x 1 MiB of random bytes, memory kept {after - baseline} B")
    assert after - baseline < 512 * 1024


# ------------------------------------------------ what the fuzzer found
def opened_client() -> WireClient:
    wire = WireClient(Broker())
    wire.handshake()
    wire.open_channel(1)
    return wire


def close_of(frames: list[tuple[int, Any]]) -> tuple[int, str, int, int] | None:
    for _, method in frames:
        if isinstance(method, (commands.Connection.Close, commands.Channel.Close)):
            return (method.reply_code, method.reply_text, method.class_id, method.method_id)
    return None


def unchecked(method_class: Any, **fields: Any) -> Any:
    """A method pamqp would refuse to build (its name check); clients such as RabbitMQ's own send these."""
    return type(method_class.__name__, (method_class,), {"validate": lambda self: None})(**fields)


def test_names_outside_the_specs_old_domain_work_as_in_rabbitmq() -> None:
    """RabbitMQ takes UTF-8 and spaces in names; pamqp's check on replies used to end the connection."""
    wire = opened_client()
    queue, exchange = "qüeue ☃", "exchänge"
    declared = wire.send(1, unchecked(commands.Queue.Declare, queue=queue))
    wire.send(1, unchecked(commands.Exchange.Declare, exchange=exchange, exchange_type="direct"))
    wire.send(1, unchecked(commands.Queue.Bind, queue=queue, exchange=exchange, routing_key="k"))
    wire.send_raw(frame.marshal(unchecked(commands.Basic.Publish, exchange=exchange, routing_key="k"), 1)
                  + frame.marshal(header.ContentHeader(0, 1, commands.Basic.Properties()), 1)
                  + frame.marshal(body.ContentBody(b"m"), 1))
    got = wire.send(1, unchecked(commands.Basic.Get, queue=queue, no_ack=True))
    returned = wire.send_raw(
        frame.marshal(unchecked(commands.Basic.Publish, exchange=exchange, routing_key="no", mandatory=True), 1)
        + frame.marshal(header.ContentHeader(0, 1, commands.Basic.Properties()), 1)
        + frame.marshal(body.ContentBody(b"r"), 1))
    assert [m.queue for _, m in declared if isinstance(m, commands.Queue.DeclareOk)] == [queue]
    assert [m.exchange for _, m in got if isinstance(m, commands.Basic.GetOk)] == [exchange]
    assert [m.exchange for _, m in returned if isinstance(m, commands.Basic.Return)] == [exchange]


def test_undecodable_properties_are_541_internal_error_as_in_rabbitmq() -> None:
    """RabbitMQ 3.10 answers a content header whose expiration is cut short with
    541 'INTERNAL_ERROR' (0/0): its channel crashes decoding it."""
    wire = opened_client()
    wire.send(1, commands.Queue.Declare(queue="q"))
    data = frame.marshal(commands.Basic.Publish(exchange="", routing_key="q"), 1)
    data += framing.frame(framing.FRAME_HEADER, 1, b"\x00\x3c\x00\x00" + (1).to_bytes(8, "big") + b"\x01\x00\x05ab")
    data += framing.frame(framing.FRAME_BODY, 1, b"x")
    assert close_of(wire.send_raw(data)) == (541, "INTERNAL_ERROR", 0, 0)


def test_long_reply_texts_are_cut_as_rabbitmq_cuts_them() -> None:
    """Past 255 bytes RabbitMQ keeps 252 and adds '...' (seen on 3.10 with a long queue name)."""
    wire = opened_client()
    name = "q" * 240
    wire.send(1, commands.Queue.Declare(queue=name, exclusive=True))
    intruder = WireClient(wire.broker)
    intruder.handshake()
    intruder.open_channel(1)
    code, text, _, _ = close_of(intruder.send(1, commands.Queue.Declare(queue=name, passive=True))) or (0, "", 0, 0)
    assert code == 405
    assert len(text.encode()) == 255
    assert text.endswith("q...")


def test_a_refusal_quoting_bytes_that_are_not_utf8_still_goes_out() -> None:
    """An expiration property of bytes that are not UTF-8 is refused (406) like any bad
    expiration; building the text used to fail and cost the connection."""
    wire = opened_client()
    wire.send(1, commands.Queue.Declare(queue="q"))
    properties = b"\x01\x00\x02\xff1"  # expiration only: 0xff '1'
    data = frame.marshal(commands.Basic.Publish(exchange="", routing_key="q"), 1)
    data += framing.frame(framing.FRAME_HEADER, 1, b"\x00\x3c\x00\x00" + (1).to_bytes(8, "big") + properties)
    data += framing.frame(framing.FRAME_BODY, 1, b"x")
    wire.connection.receive_data(data)
    sent = wire.connection.data_to_send()
    # RabbitMQ quotes the raw byte (observed), which pamqp cannot decode back.
    text = b"PRECONDITION_FAILED - invalid expiration '\xff1': no_integer"
    close = struct.pack(">HHH", 20, 40, 406) + bytes([len(text)]) + text + struct.pack(">HH", 60, 40)
    assert sent == framing.frame(framing.FRAME_METHOD, 1, close)
