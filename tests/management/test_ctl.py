"""`leveret ctl`, through the real command-line entry point, against a running broker's API."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path

import pika
import pytest

from leveret import cli
from leveret.management import ManagementServer
from tests.management.conftest import Http

Ctl = Callable[..., tuple[int, str, str]]


@pytest.fixture
def ctl(leveret_management: ManagementServer, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> Ctl:
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("LEVERET_MANAGEMENT_URL", leveret_management.url)

    def run(*args: str) -> tuple[int, str, str]:
        status = cli.main(["ctl", *args])
        out, err = capsys.readouterr()
        return status, out, err

    return run


@pytest.fixture
def loaded(connection: pika.BlockingConnection) -> pika.BlockingConnection:
    channel = connection.channel()
    channel.exchange_declare("billing", "direct", durable=True)
    channel.queue_declare("invoices", durable=True, arguments={"x-message-ttl": 1000})
    channel.queue_bind("invoices", "billing", "invoice")
    for _ in range(3):
        channel.basic_publish("billing", "invoice", b"due")
    consumer = connection.channel()
    consumer.basic_qos(prefetch_count=1)
    consumer.basic_consume("invoices", lambda *args: None, consumer_tag="biller")
    connection.process_data_events(0.2)
    return connection


def test_list_queues_is_a_table(ctl: Ctl, loaded: pika.BlockingConnection) -> None:
    status, out, err = ctl("list", "queues", "--width", "200")

    assert status == 0 and err == ""
    assert "Queues (1)" in out
    row = next(line for line in out.splitlines() if "invoices" in line)
    assert row.split("│")[1:-1] == [" invoices ", " classic ", " D TTL    ", " running ", "     2 ", "       1 ",
                                    "     3 ", "         1 ", "  0.0 ", "       0.0 ", "   0.0 "]


def test_list_piped_is_plain_lines_with_whole_values(ctl: Ctl, loaded: pika.BlockingConnection) -> None:
    loaded.channel().queue_declare("invoices.overdue-after-the-second-reminder", durable=True)
    status, out, _ = ctl("list", "queues")  # captured: not a terminal

    assert status == 0
    lines = out.splitlines()
    assert lines[0].split("\t") == ["Name", "Type", "Features", "State", "Ready", "Unacked", "Total",
                                    "Consumers", "In/s", "Deliver/s", "Ack/s"]
    assert [line.split("\t")[:5] for line in lines[1:]] == [
        ["invoices", "classic", "D TTL", "running", "2"],
        ["invoices.overdue-after-the-second-reminder", "classic", "D", "running", "0"],
    ]


def test_list_at_80_columns_cuts_cells_instead_of_wrapping(ctl: Ctl, loaded: pika.BlockingConnection) -> None:
    loaded.channel().queue_declare("invoices.overdue-after-the-second-reminder", durable=True)
    status, out, _ = ctl("list", "queues", "--width", "80")

    assert status == 0
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines)
    rows = [line for line in lines if line.startswith("│")]
    assert len(rows) == 2  # one line per queue: nothing wraps
    names = [row.split("│")[1].strip() for row in rows]
    assert names[0] == "invoices"
    assert names[1].endswith("…") and "invoices.overdue-after-the-second-reminder".startswith(names[1][:-1])
    assert [row.split("│")[5].strip() for row in rows] == ["2", "0"]  # numbers stay whole


@pytest.mark.parametrize(("what", "expected"), [
    ("exchanges", "billing"),
    ("bindings", "invoice"),
    ("connections", "management-test"),
    ("channels", "(2)"),
    ("consumers", "biller"),
])
def test_list_the_others(ctl: Ctl, loaded: pika.BlockingConnection, what: str, expected: str) -> None:
    status, out, _ = ctl("list", what, "--width", "200")

    assert status == 0
    assert what.capitalize() in out and expected in out


def test_list_json_is_the_apis_answer(ctl: Ctl, http: Http, loaded: pika.BlockingConnection) -> None:
    status, out, _ = ctl("list", "bindings", "--json")

    assert status == 0
    assert json.loads(out) == http.get("/api/bindings/%2F")


def test_purge_and_delete(ctl: Ctl, http: Http, loaded: pika.BlockingConnection) -> None:
    assert ctl("purge", "invoices")[:2] == (0, "purged queue 'invoices' (2 messages ready)\n")
    assert http.get("/api/queues/%2F/invoices")["messages_ready"] == 0

    refused = ctl("delete", "queue", "invoices", "--if-unused")
    assert refused[0] == 1 and refused[2] == "leveret ctl: HTTP 400: queue 'invoices' in vhost '/' in use\n"

    assert ctl("delete", "queue", "invoices")[:2] == (0, "deleted queue 'invoices'\n")
    assert ctl("delete", "exchange", "billing")[:2] == (0, "deleted exchange 'billing'\n")
    assert [e["name"] for e in http.get("/api/exchanges/%2F") if e["name"] == "billing"] == []

    missing = ctl("delete", "queue", "invoices")
    assert missing[0] == 1 and missing[2] == "leveret ctl: no queue 'invoices' in vhost '/'\n"


def test_export_then_import(ctl: Ctl, http: Http, loaded: pika.BlockingConnection, tmp_path: Path) -> None:
    target = tmp_path / "definitions.json"

    exported = ctl("export", str(target))
    http.request("DELETE", "/api/queues/%2F/invoices")
    http.request("DELETE", "/api/exchanges/%2F/billing")
    imported = ctl("import", str(target))

    assert exported[:2] == (0, f"exported 1 exchange, 1 queue, 1 binding to {target}\n")
    assert imported[:2] == (0, f"imported 1 exchange, 1 queue, 1 binding from {target}\n")
    assert json.loads(target.read_text())["queues"][0]["name"] == "invoices"
    assert http.get("/api/queues/%2F/invoices")["arguments"] == {"x-message-ttl": 1000}
    assert [b["routing_key"] for b in http.get("/api/bindings/%2F")] == ["invoices", "invoice"]


def test_export_to_stdout(ctl: Ctl, loaded: pika.BlockingConnection) -> None:
    status, out, _ = ctl("export", "-")

    assert status == 0
    assert [q["name"] for q in json.loads(out)["queues"]] == ["invoices"]


def test_wrong_password_and_no_broker(ctl: Ctl, leveret_management: ManagementServer) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]

    refused = ctl("list", "queues", "--password", "wrong")
    unreachable = ctl("list", "queues", "--url", f"http://127.0.0.1:{closed_port}")

    assert refused[0] == 1 and refused[2] == "leveret ctl: not authorised: Login failed\n"
    assert unreachable[0] == 1
    assert unreachable[2] == f"leveret ctl: cannot reach the management API at http://127.0.0.1:{closed_port}: connection refused\n"


def test_import_a_file_that_is_not_json(ctl: Ctl, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")

    status, _, err = ctl("import", str(bad))

    assert status == 1 and err.startswith(f"leveret ctl: {bad} is not JSON:")
