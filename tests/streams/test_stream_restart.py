"""Streams on disk: `leveret serve --data-dir` as a subprocess, restarted (SIGTERM)
and killed (SIGKILL); offsets and messages must come back unchanged."""

from __future__ import annotations

from pathlib import Path

from tests.durability.process import LeveretProcess
from tests.streams.stream_client import Probe, count, has_body, offsets


def snapshot(url: str, name: str, expect: int) -> list[tuple[int, bytes]]:
    probe = Probe(url)
    try:
        return [(int(m["offset"]), m["body"]) for m in probe.read(name, "first", count(expect))]
    finally:
        probe.connection.close()


def test_a_stream_comes_back_after_restart_and_kill_9(tmp_path: Path) -> None:
    data, log = tmp_path / "data", tmp_path / "server.log"
    server = LeveretProcess(data, log)
    try:
        probe = Probe(server.url)
        probe.declare_stream("events", **{"x-stream-max-segment-size-bytes": 4000})
        probe.publish("events", [f"event {i}".encode() for i in range(200)])
        probe.connection.close()
        before = snapshot(server.url, "events", 200)
        assert [body for _, body in before] == [f"event {i}".encode() for i in range(200)]
        assert len(list((data / "streams").glob("*/*.seg"))) > 1  # several segments on disk
    finally:
        server.stop()
    server = LeveretProcess(data, log)
    try:
        assert snapshot(server.url, "events", 200) == before
        segments = len(list((data / "streams").glob("*/*.seg")))
        probe = Probe(server.url)
        probe.publish("events", [b"after restart"])
        # One offset on, or two if the message opened a segment (its tracking offset).
        step = 1 + (len(list((data / "streams").glob("*/*.seg"))) - segments)
        probe.connection.close()
        server.kill()  # everything confirmed was fsynced; offsets must not move
    finally:
        if server.process.poll() is None:
            server.kill()
    server = LeveretProcess(data, log)
    try:
        after = snapshot(server.url, "events", 201)
        assert after[:200] == before
        assert after[200][1] == b"after restart"
        assert after[200][0] == before[-1][0] + step
        probe = Probe(server.url)
        segments = len(list((data / "streams").glob("*/*.seg")))
        nxt = probe.read("events", "next", has_body(b"new"), after_subscribe=lambda: probe.publish("events", [b"new"]))
        step = 1 + (len(list((data / "streams").glob("*/*.seg"))) - segments)
        assert offsets(nxt) == [after[-1][0] + step]
        channel = probe.channel()
        channel.queue_delete("events")
        probe.connection.close()
    finally:
        server.stop()
    assert not any((data / "streams").iterdir())  # a deleted stream leaves no files
    assert "Traceback" not in log.read_text()


def test_retention_state_survives_a_restart(tmp_path: Path) -> None:
    data, log = tmp_path / "data", tmp_path / "server.log"
    server = LeveretProcess(data, log)
    try:
        probe = Probe(server.url)
        probe.declare_stream("capped", **{"x-max-length-bytes": 3000, "x-stream-max-segment-size-bytes": 1000})
        probe.publish("capped", [b"x" * 100 for _ in range(60)])
        probe.connection.close()
        probe = Probe(server.url)
        before = offsets(probe.read("capped", "first", lambda seen: bool(seen) and seen[-1]["offset"] >= 60))
        probe.connection.close()
        assert before[0] > 0
    finally:
        server.stop()
    server = LeveretProcess(data, log)
    try:
        probe = Probe(server.url)
        again = offsets(probe.read("capped", "first", lambda seen: bool(seen) and seen[-1]["offset"] >= before[-1]))
        assert again == before
        probe.connection.close()
    finally:
        server.stop()
