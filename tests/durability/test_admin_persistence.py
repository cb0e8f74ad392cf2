"""Users, vhosts, permissions, limits and parameters survive kill -9 with --data-dir.

Every change is answered only once it is on disk, so a broker killed right
after the last 2xx comes back with all of them; the definitions export then
holds the same users (same hashes), permissions and parameters.
"""

from __future__ import annotations

import re
from pathlib import Path

import pika
import pika.exceptions
import pytest

from tests.durability.process import LeveretProcess
from tests.management.conftest import Http


class Served(LeveretProcess):
    """`leveret serve` with its HTTP API on a free port too."""

    def __init__(self, data_dir: Path, log: Path) -> None:
        super().__init__(data_dir, log, "--http-port", "0")
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        found = re.search(r"(http://127\.0\.0\.1:\d+)/api", line)
        assert found, line
        self.http = Http(found.group(1))


def _changes(http: Http) -> None:
    steps = [
        ("PUT", "/api/users/alice", {"password": "wonderland", "tags": "monitoring"}),
        ("PUT", "/api/vhosts/orders", None),
        ("PUT", "/api/permissions/orders/alice", {"configure": "^a", "write": ".*", "read": ".*"}),
        ("PUT", "/api/topic-permissions/orders/alice", {"exchange": "amq.topic", "write": "^x", "read": ".*"}),
        ("PUT", "/api/vhost-limits/orders/max-queues", {"value": 7}),
        ("PUT", "/api/user-limits/alice/max-channels", {"value": 3}),
        ("PUT", "/api/global-parameters/colour", {"value": {"a": 1}}),
        ("PUT", "/api/cluster-name", {"name": "burrow"}),
        ("PUT", "/api/queues/orders/kept", {"durable": True}),
        ("PUT", "/api/vhosts/gone", None),
        ("PUT", "/api/queues/gone/lost", {"durable": True}),
        ("DELETE", "/api/vhosts/gone", None),
        ("PUT", "/api/users/bob", {"password": "x", "tags": ""}),
        ("DELETE", "/api/users/bob", None),
    ]
    for method, path, body in steps:
        reply = http.request(method, path, body)
        assert reply.status in (201, 204), (method, path, reply.status, reply.body)


def _kept(definitions: dict) -> dict:
    return {key: definitions[key] for key in
            ("users", "vhosts", "permissions", "topic_permissions", "parameters", "global_parameters")}


@pytest.mark.parametrize("ending", ["kill", "stop"])
def test_administration_survives_a_restart(tmp_path: Path, ending: str) -> None:
    data, log = tmp_path / "data", tmp_path / "log"
    first = Served(data, log)
    try:
        _changes(first.http)
        before = first.http.get("/api/definitions")
    finally:
        first.kill() if ending == "kill" else first.stop()

    second = Served(data, log)
    try:
        after = second.http.get("/api/definitions")
        assert _kept(after) == _kept(before)
        assert {"name": "alice", "password_hash": next(u["password_hash"] for u in before["users"]
                                                       if u["name"] == "alice"),
                "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["monitoring"],
                "limits": {"max-channels": 3}} in after["users"]
        assert [v["name"] for v in after["vhosts"]] == ["/", "orders"]
        assert second.http.get("/api/cluster-name") == {"name": "burrow"}
        assert second.http.get("/api/vhost-limits/orders") == [{"vhost": "orders", "value": {"max-queues": 7}}]
        assert [q["name"] for q in second.http.get("/api/queues")] == ["kept"]
        assert second.http.request("GET", "/api/users/bob").status == 404
        # alice logs in with her password, into the vhost she was given, with its permissions
        connection = pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", second.port, "orders", pika.PlainCredentials("alice", "wonderland")))
        channel = connection.channel()
        channel.queue_declare("allowed")
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            channel.queue_declare("refused")
        assert refused.value.reply_code == 403
        connection.close()
    finally:
        second.stop()
