"""Policies and operator policies survive restarts and kill -9 with --data-dir:
a 2xx from the management API is never followed by a change a crash forgot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pika

from tests.durability.process import LeveretProcess
from tests.management.conftest import Http

POLICY = {"pattern": "^keep\\.", "definition": {"max-length": 2, "dead-letter-exchange": "dlx"},
          "priority": 1, "apply-to": "queues"}
OPERATOR = {"pattern": ".*", "definition": {"message-ttl": 600000}, "priority": 0, "apply-to": "all"}


def start(data: Path, log: Path) -> tuple[LeveretProcess, Http]:
    server = LeveretProcess(data, log, "--http-port", "0")
    assert server.process.stdout is not None
    line = server.process.stdout.readline()  # printed with the first: maybe read into its buffer already
    assert "management API on http://" in line, line
    url = line.split("management API on ")[1].split("/api")[0]
    return server, Http(url)


def queue_fields(http: Http, name: str) -> dict[str, Any]:
    info = http.get(f"/api/queues/%2F/{name}")
    return {k: info[k] for k in ("policy", "operator_policy", "effective_policy_definition", "arguments")}


def test_policies_come_back_after_kill_9(tmp_path: Path) -> None:
    data, log = tmp_path / "data", tmp_path / "log"
    server, http = start(data, log)
    connection = pika.BlockingConnection(pika.URLParameters(server.url))
    connection.channel().queue_declare("keep.q", durable=True)
    connection.close()
    assert http.request("PUT", "/api/policies/%2F/cap", POLICY).status == 201
    assert http.request("PUT", "/api/operator-policies/%2F/ttl", OPERATOR).status == 201
    assert http.request("PUT", "/api/policies/%2F/gone", {**POLICY, "priority": 0}).status == 201
    assert http.request("DELETE", "/api/policies/%2F/gone").status == 204
    server.kill()  # right after the answers: nothing may be forgotten

    server, http = start(data, log)
    try:
        assert http.get("/api/policies/%2F") == [{"vhost": "/", "name": "cap", **POLICY}]
        assert http.get("/api/operator-policies/%2F") == [{"vhost": "/", "name": "ttl", **OPERATOR}]
        assert queue_fields(http, "keep.q") == {
            "policy": "cap", "operator_policy": "ttl", "arguments": {},
            "effective_policy_definition": {"dead-letter-exchange": "dlx", "max-length": 2, "message-ttl": 600000}}
        connection = pika.BlockingConnection(pika.URLParameters(server.url))
        channel = connection.channel()
        channel.confirm_delivery()
        for body in (b"1", b"2", b"3"):
            channel.basic_publish("", "keep.q", body, pika.BasicProperties(delivery_mode=2))
        assert channel.queue_declare("keep.q", durable=True, passive=True).method.message_count == 2
        connection.close()
        exported = http.get("/api/definitions")
        assert [p["name"] for p in exported["policies"]] == ["cap"]
        assert [p["name"] for p in exported["parameters"] if p["component"] == "operator_policy"] == ["ttl"]
        assert http.request("DELETE", "/api/operator-policies/%2F/ttl").status == 204
    finally:
        server.kill()

    server, http = start(data, log)
    try:
        assert http.get("/api/operator-policies/%2F") == []
        assert queue_fields(http, "keep.q")["operator_policy"] is None
    finally:
        server.stop()
