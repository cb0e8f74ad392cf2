"""Policies on streams, leveret against the reference RabbitMQ 3.10.8.

RabbitMQ 3.10 applies `max-length-bytes`, `max-age` and
`stream-max-segment-size-bytes` to streams, the policy's value winning over the
x-argument (rabbit_stream_queue:policy_precedence), and a change runs retention
on the existing stream at once. `apply-to: queues` matches streams; a policy
with a key streams do not support (message-ttl) does not. Names are unique;
policies and streams are deleted afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from leveret.queues.message import Message
from leveret.queues.stream_segments import Retention, stamp
from pamqp import commands

from leveret.management import ManagementServer
from leveret.store.stream_log import FileStreamLog
from tests import reference
from tests.management.conftest import Http
from tests.management.test_rabbitmq_shapes import RABBITMQ_HTTP
from tests.streams.stream_client import Probe, count, unique

BODY = b"x" * 1000
SEGMENT = {"x-stream-max-segment-size-bytes": 10000}


def first_offset(probe: Probe, name: str) -> int:
    return int(probe.read(name, "first", count(1), prefetch=1, ack=False)[0]["offset"])


def poll(what: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    value = what()
    while not done(value):
        assert time.monotonic() < deadline, f"still {value!r}"
        time.sleep(0.1)
        value = what()
    return value


class Broker:
    def __init__(self, amqp: str, http: Http) -> None:
        self.probe, self.http = Probe(amqp), http
        self.policies: list[str] = []

    def set_policy(self, name: str, definition: dict[str, Any], apply_to: str = "queues") -> None:
        self.policies.append(name)
        body = {"pattern": f"^{name}", "definition": definition, "apply-to": apply_to}
        reply = self.http.request("PUT", f"/api/policies/%2F/{quote(name)}", body)
        assert reply.status in (201, 204), reply.body

    def policy_of(self, name: str) -> tuple[Any, Any]:
        queue = self.http.get(f"/api/queues/%2F/{quote(name)}")
        return queue.get("policy"), queue.get("effective_policy_definition")

    def close(self) -> None:
        for name in self.policies:
            self.http.request("DELETE", f"/api/policies/%2F/{quote(name)}")
        self.probe.close()


def scenario(broker: Broker, name: str) -> list[Any]:
    probe, seen = broker.probe, []
    # A policy lowers retention of a stream that has its own, larger limit: at once.
    probe.declare_stream(name, **SEGMENT, **{"x-max-length-bytes": 10**9})
    probe.publish(name, [BODY] * 100)
    seen.append(first_offset(probe, name))
    broker.set_policy(name, {"max-length-bytes": 20000})
    seen.append(poll(lambda: broker.policy_of(name), lambda p: p[0] is not None))
    first = poll(lambda: first_offset(probe, name), lambda offset: offset > 0)
    seen.append(first > 60)  # only the newest segments are left (RabbitMQ may keep one more)
    # A key streams do not take keeps the policy off the stream.
    broker.set_policy(name, {"max-length-bytes": 20000, "message-ttl": 1000})
    seen.append(poll(lambda: broker.policy_of(name), lambda p: p[0] is None))
    # max-age is evaluated when it changes (and when a segment opens): a change to
    # 1 s once the messages are older drops all but the segment being written.
    aged = name + "-age"
    probe.declare_stream(aged, **SEGMENT)
    probe.publish(aged, [BODY] * 60)
    published = time.monotonic()
    broker.set_policy(aged, {"max-age": "1h"})
    seen.append(poll(lambda: broker.policy_of(aged), lambda p: p[0] is not None))
    poll(time.monotonic, lambda now: now > published + 1.5)  # the messages' age is the condition
    seen.append(first_offset(probe, aged))
    broker.set_policy(aged, {"max-age": "1s"})
    seen.append(poll(lambda: first_offset(probe, aged), lambda offset: offset > 0) > 50)

    # The policy wins over a lower x-max-length-bytes: nothing is dropped.
    wins = name + "-wins"
    broker.set_policy(wins, {"max-length-bytes": 10**9})
    probe.declare_stream(wins, **SEGMENT, **{"x-max-length-bytes": 20000})
    seen.append(poll(lambda: broker.policy_of(wins), lambda p: p[0] is not None))
    probe.publish(wins, [BODY] * 60)
    seen.append(first_offset(probe, wins))
    return seen


@pytest.mark.rabbitmq
@reference.needs_reference
def test_policies_act_on_streams_as_on_rabbitmq(leveret_management: ManagementServer) -> None:
    rabbitmq = Http(RABBITMQ_HTTP)
    try:
        rabbitmq.request("GET", "/api/overview")
    except OSError as error:
        pytest.skip(f"the reference RabbitMQ's management API is unreachable: {error}")
    thread = leveret_management.broker_thread
    assert thread is not None
    name = unique("stream-policy")
    results = []
    for amqp, http in ((reference.URL, rabbitmq), (thread.url, Http(leveret_management.url))):
        broker = Broker(amqp, http)
        try:
            results.append(scenario(broker, name))
        finally:
            broker.close()
    expected, actual = results
    assert actual == expected
    assert expected[1] == (name, {"max-length-bytes": 20000})
    assert expected[4:7] == [(name + "-age", {"max-age": "1h"}), 0, True]
    assert expected[-1] == 0


def test_a_file_log_drops_segments_when_retention_tightens(tmp_path: Path) -> None:
    synced: list[FileStreamLog] = []
    log = FileStreamLog(tmp_path, Retention(None, None, 2000), synced.append)
    for offset in range(30):
        log.append(stamp(Message("", "s", commands.Basic.Properties(), BODY), offset, 1000 + offset))
    log.flush_and_sync()
    files = len(list(tmp_path.glob("*.seg")))
    assert files > 3 and log.first_offset == 0
    synced.clear()
    log.set_retention(Retention(2500, None, 2000), 2000)
    assert log.first_offset > 0 and log.size <= 2500 + 2000
    assert synced == [log]  # the writer thread is asked to delete the files
    log.flush_and_sync()
    assert len(list(tmp_path.glob("*.seg"))) == len(log.segments) < files
    log.close()
