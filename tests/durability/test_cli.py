"""`leveret serve --data-dir/--definitions` and `leveret export-definitions`, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pika
import pytest

from tests.durability.process import REPO, LeveretProcess

DEFINITIONS = {
    "rabbit_version": "3.10.8",
    "vhosts": [{"name": "/"}],
    "exchanges": [
        {"name": "orders", "vhost": "/", "type": "topic", "durable": True, "auto_delete": False,
         "internal": False, "arguments": {}},
    ],
    "queues": [
        {"name": "billing", "vhost": "/", "durable": True, "auto_delete": False,
         "arguments": {"x-queue-type": "classic", "x-max-length": 1000}},
    ],
    "bindings": [
        {"source": "orders", "vhost": "/", "destination": "billing", "destination_type": "queue",
         "routing_key": "order.*", "arguments": {}},
    ],
}


def leveret(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "leveret.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60)


def routes(url: str, exchange: str, routing_key: str, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.confirm_delivery()
    channel.basic_publish(exchange, routing_key, b"m", pika.BasicProperties(delivery_mode=2))
    count = channel.queue_declare(queue, durable=True, passive=True).method.message_count
    connection.close()
    return int(count)


def test_definitions_load_at_boot_and_stay_in_the_data_dir(tmp_path: Path) -> None:
    definitions = tmp_path / "defs.json"
    definitions.write_text(json.dumps(DEFINITIONS))
    data, log = tmp_path / "data", tmp_path / "log"

    server = LeveretProcess(data, log, "--definitions", str(definitions))
    assert routes(server.url, "orders", "order.paid", "billing") == 1
    server.kill()
    server = LeveretProcess(data, log)  # no --definitions: the data dir has them
    assert routes(server.url, "orders", "order.paid", "billing") == 2
    server.stop()


def test_export_definitions_reads_a_data_dir_even_while_the_broker_runs(tmp_path: Path) -> None:
    definitions = tmp_path / "defs.json"
    definitions.write_text(json.dumps(DEFINITIONS))
    data, log = tmp_path / "data", tmp_path / "log"
    server = LeveretProcess(data, log, "--definitions", str(definitions))
    connection = pika.BlockingConnection(pika.URLParameters(server.url))
    connection.channel().queue_declare("transient-one", durable=False)
    try:
        result = leveret("export-definitions", "--data-dir", str(data))
    finally:
        connection.close()
        server.stop()
    assert result.returncode == 0, result.stderr
    exported = json.loads(result.stdout)
    assert exported["exchanges"] == DEFINITIONS["exchanges"]
    assert exported["queues"] == DEFINITIONS["queues"]  # the transient queue is not kept
    assert exported["bindings"] == [{**DEFINITIONS["bindings"][0], "arguments": {}}]

    out = tmp_path / "out.json"
    assert leveret("export-definitions", "--data-dir", str(data), str(out)).returncode == 0
    assert json.loads(out.read_text()) == exported


def test_one_data_dir_one_broker(tmp_path: Path) -> None:
    data, log = tmp_path / "data", tmp_path / "log"
    server = LeveretProcess(data, log)
    try:
        second = leveret("serve", "--port", "0", "--data-dir", str(data))
    finally:
        server.stop()
    assert second.returncode == 1
    assert second.stderr == (
        f"leveret: data directory {data} is in use by another leveret (pid {server.process.pid})\n"
    )


@pytest.mark.parametrize("content", ["{not json", None])
def test_bad_definitions_are_a_one_line_error(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "defs.json"
    if content is not None:
        path.write_text(content)
    result = leveret("serve", "--port", "0", "--definitions", str(path))
    assert result.returncode == 1
    assert result.stderr.startswith(f"leveret: cannot read definitions {path}: ")
    assert result.stderr.count("\n") == 1


def test_leveret_data_dir_is_the_default(tmp_path: Path) -> None:
    data, log = tmp_path / "from-env", tmp_path / "log"
    server = LeveretProcess(None, log, env={"LEVERET_DATA_DIR": str(data)})
    server.stop()
    assert (data / "topology.log").exists()


def test_definitions_in_a_vhost_the_file_does_not_declare_fail_the_start(tmp_path: Path) -> None:
    path = tmp_path / "defs.json"
    path.write_text(json.dumps({
        "vhosts": [{"name": "/"}],
        "queues": [{"name": "kept", "vhost": "/", "durable": True, "auto_delete": False, "arguments": {}},
                   {"name": "orders", "vhost": "shop", "durable": True, "auto_delete": False, "arguments": {}}],
        "exchanges": [{"name": "billing", "vhost": "shop", "type": "direct", "durable": True,
                       "auto_delete": False, "internal": False, "arguments": {}}],
    }))
    data = tmp_path / "data"
    result = leveret("serve", "--port", "0", "--data-dir", str(data), "--definitions", str(path))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"leveret: definitions {path} cannot be applied in full, not starting:",
        "  exchange 'billing' is in vhost 'shop', which the file does not declare",
        "  queue 'orders' is in vhost 'shop', which the file does not declare",
    ]
    # Nothing half-applied: the data directory holds nothing of the file.
    assert not (data / "topology.log").exists() or "kept" not in (data / "topology.log").read_text(errors="replace")


def test_definitions_leveret_cannot_declare_fail_the_start(tmp_path: Path) -> None:
    path = tmp_path / "defs.json"
    path.write_text(json.dumps({
        "vhosts": [{"name": "/"}],
        "exchanges": [{"name": "odd", "vhost": "/", "type": "x-recent-history", "durable": True,
                       "auto_delete": False, "internal": False, "arguments": {}}],
    }))
    result = leveret("serve", "--port", "0", "--definitions", str(path))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == f"leveret: definitions {path} cannot be applied in full, not starting:"
    assert "odd" in lines[1] and "x-recent-history" in lines[1]
