"""`leveret serve` with its HTTP listener and logs, as a user runs it: a subprocess."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from leveret import cli
from tests.management.conftest import Http

REPO = Path(__file__).resolve().parents[2]


def leveret(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "leveret.cli", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def test_serve_with_http_and_info_logs() -> None:
    process = leveret("serve", "--port", "0", "--http-port", "0", "--log-level", "info")
    try:
        assert process.stdout is not None
        amqp_line, http_line = process.stdout.readline(), process.stdout.readline()
        amqp_port = re.search(r"amqp://127\.0\.0\.1:(\d+) ", amqp_line)
        http_url = re.search(r"(http://127\.0\.0\.1:\d+)/api, metrics on /metrics$", http_line.strip())
        assert amqp_port and http_url, (amqp_line, http_line)
        params = pika.URLParameters(f"amqp://guest:guest@127.0.0.1:{amqp_port.group(1)}/")
        params.client_properties = {"connection_name": "cli-test"}
        connection = pika.BlockingConnection(params)
        overview = Http(http_url.group(1)).get("/api/overview")
        connection.close()
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=10)

    assert process.returncode == 0
    assert overview["object_totals"]["connections"] == 1
    lines = err.splitlines()
    assert any(" info event=connection_opened " in line and "client=cli-test" in line for line in lines), err
    assert any(" info event=connection_closed " in line and 'reason="client closed: 200 Normal shutdown"' in line
               for line in lines), err


def test_a_taken_http_port_is_a_one_line_error(taken_port: int) -> None:
    process = leveret("serve", "--port", "0", "--http-port", str(taken_port))
    out, err = process.communicate(timeout=10)

    assert process.returncode == 1
    assert out == ""
    assert err == f"leveret: cannot listen on 127.0.0.1:{taken_port} (http): address already in use\n"


@pytest.mark.parametrize(("argv", "expected"), [
    (["serve"], 15672),
    (["serve", "--port", "5673"], 15673),
    (["serve", "--port", "0"], None),
    (["serve", "--port", "60000"], None),
    (["serve", "--port", "0", "--http-port", "0"], 0),
    (["serve", "--http-port", "off"], None),
    (["serve", "--http-port", "8080"], 8080),
])
def test_the_default_http_port_follows_rabbitmq(argv: list[str], expected: int | None) -> None:
    args = cli.build_parser(plugins=False).parse_args(argv)

    assert cli._default_http_port(args) == expected
