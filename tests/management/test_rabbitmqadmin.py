"""rabbitmqadmin 3.10.8, as the reference serves it at /cli/rabbitmqadmin, against leveret and RabbitMQ.

The same list/show/declare/delete/publish/get/close/purge commands run
against both (skipped when the reference cannot serve the script); each must
exit the same way and print the same output, lists restricted to the names
this test made (the reference has users and vhosts of its own).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pika
import pytest

from leveret.management import ManagementServer
from tests.management.conftest import Http
from tests.management.test_admin_differential import RABBITMQ_HTTP

pytestmark = pytest.mark.rabbitmq


@pytest.fixture(scope="module")
def rabbitmqadmin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        with urllib.request.urlopen(RABBITMQ_HTTP + "/cli/rabbitmqadmin", timeout=10) as response:
            script = response.read()
    except OSError as error:
        pytest.skip(f"the reference cannot serve rabbitmqadmin: {error}")
    path = tmp_path_factory.mktemp("cli") / "rabbitmqadmin"
    path.write_bytes(script)
    return path


class Admin:
    def __init__(self, script: Path, http_port: int, amqp_port: int, http: Http) -> None:
        self.script = script
        self.http_port = http_port
        self.amqp_port = amqp_port
        self.http = http

    def __call__(self, *args: str, vhost: str | None = None) -> tuple[int, str]:
        command = [sys.executable, str(self.script), "-H", "127.0.0.1", "-P", str(self.http_port),
                   "-u", "guest", "-p", "guest"]
        if vhost is not None:
            command += ["-V", vhost]
        done = subprocess.run([*command, *args], capture_output=True, text=True, timeout=60)
        return done.returncode, done.stdout + done.stderr


def _mine(output: str, names: set[str], key: str = "name") -> list[Any]:
    return sorted((item for item in json.loads(output) if item.get(key) in names), key=json.dumps)


def session(admin: Admin, suffix: str) -> list[Any]:
    vhost, user, exchange, queue = (f"ra-{kind}-{suffix}" for kind in ("vhost", "user", "x", "q"))
    seen: list[Any] = []
    try:
        for args in (
            ("declare", "vhost", f"name={vhost}"),
            ("declare", "user", f"name={user}", "password=pw", "tags=monitoring"),
            ("declare", "permission", f"vhost={vhost}", f"user={user}", "configure=.*", "write=.*", "read=^r"),
        ):
            seen.append(admin(*args))
        status, out = admin("-f", "raw_json", "list", "users")
        seen.append([{k: u[k] for k in ("name", "tags")} for u in _mine(out, {user})])
        status, out = admin("-f", "raw_json", "list", "vhosts", "name")
        seen.append(_mine(out, {vhost}))
        status, out = admin("-f", "raw_json", "list", "permissions")
        seen.append(_mine(out, {user}, "user"))
        seen.append(admin("show", "overview", "rabbitmq_version")[0])
        seen.append(admin("list", "nodes", "name")[0])
        for args in (
            ("declare", "exchange", f"name={exchange}", "type=direct"),
            ("declare", "queue", f"name={queue}", "durable=false"),
            ("declare", "binding", f"source={exchange}", f"destination={queue}", "routing_key=k"),
            ("-f", "tsv", "list", "exchanges", "name", "type", "durable"),
            ("-f", "tsv", "list", "queues", "name", "durable", "auto_delete"),  # messages: late on RabbitMQ
            ("-f", "tsv", "list", "bindings", "source", "destination", "routing_key"),
            ("publish", f"exchange={exchange}", "routing_key=k", "payload=hello"),
            ("publish", f"exchange={exchange}", "routing_key=nowhere", "payload=lost"),
            ("publish", "routing_key=" + queue, "payload=second"),
            ("get", f"queue={queue}", "ackmode=ack_requeue_true"),
            ("get", f"queue={queue}", "count=2", "ackmode=ack_requeue_false"),
            ("publish", "routing_key=" + queue, "payload=third"),
            ("purge", "queue", f"name={queue}"),
            ("get", f"queue={queue}"),
            ("delete", "binding", f"source={exchange}", "destination_type=queue", f"destination={queue}",
             "properties_key=k"),
            ("-f", "tsv", "list", "bindings", "source", "destination", "routing_key"),
        ):
            seen.append(admin(*args, vhost=vhost))
        params = pika.ConnectionParameters("127.0.0.1", admin.amqp_port, vhost, pika.PlainCredentials(user, "pw"),
                                           client_properties={"connection_name": f"ra-{suffix}"})
        connection = pika.BlockingConnection(params)
        name = _connection_name(admin.http, f"ra-{suffix}")
        seen.append(admin("close", "connection", f"name={name}"))
        seen.append(_closed(connection))
        for args in (
            ("delete", "queue", f"name={queue}"),
            ("delete", "exchange", f"name={exchange}"),
            ("-f", "tsv", "list", "queues", "name"),
        ):
            seen.append(admin(*args, vhost=vhost))
        seen.append(admin("delete", "user", f"name={user}"))
        seen.append(admin("delete", "vhost", f"name={vhost}"))
        seen.append(admin("delete", "vhost", f"name={vhost}"))
    finally:
        admin.http.request("DELETE", f"/api/users/{user}")
        admin.http.request("DELETE", f"/api/vhosts/{vhost}")
    return seen


def _connection_name(http: Http, client: str) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # RabbitMQ lists a connection a moment after it opens
        for connection in http.get("/api/connections"):
            if connection.get("user_provided_name") == client:
                return str(connection["name"])
        time.sleep(0.05)
    raise AssertionError(f"no connection {client}")


def _closed(connection: pika.BlockingConnection) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            connection.process_data_events(0.05)
        except pika.exceptions.ConnectionClosedByBroker as error:
            return f"closed {error.reply_code}"
    return "still open"


def test_rabbitmqadmin_runs_as_against_rabbitmq(rabbitmqadmin: Path, leveret_management: ManagementServer) -> None:
    thread = leveret_management.broker_thread
    assert thread is not None
    suffix = uuid.uuid4().hex[:10]
    theirs = session(Admin(rabbitmqadmin, 15672, 5672, Http(RABBITMQ_HTTP)), suffix)
    ours = session(Admin(rabbitmqadmin, leveret_management.port, thread.port, Http(leveret_management.url)), suffix)

    for their, our in zip(theirs, ours, strict=True):
        assert our == their
    assert theirs[-1][0] != 0 and theirs[0][0] == 0  # the last delete fails, the first declare works
