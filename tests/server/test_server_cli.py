"""`leveret serve` as a user runs it: a subprocess, its one line, its exit status."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from leveret import __version__, cli

REPO = Path(__file__).resolve().parents[2]


def leveret(*args: str, importtime: bool = False) -> subprocess.Popen[str]:
    flags = ["-X", "importtime"] if importtime else []
    return subprocess.Popen(
        [sys.executable, *flags, "-m", "leveret.cli", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def first_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    return process.stdout.readline() if ready else ""


def listening_port(line: str) -> int:
    prefix = f"leveret {__version__} listening on amqp://127.0.0.1:"
    suffix = " (vhost /, guest/guest from loopback)\n"
    assert line.startswith(prefix) and line.endswith(suffix), line
    return int(line[len(prefix) : -len(suffix)])


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def test_serve_prints_one_line_and_accepts_a_connection_within_a_second() -> None:
    started = time.monotonic()
    process = leveret("serve", "--port", "0")
    try:
        line = first_line(process, timeout=5.0)
        port = listening_port(line)
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            elapsed = time.monotonic() - started
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
    assert elapsed < 1.0
    assert out == ""  # nothing after the one line
    assert err == ""
    assert process.returncode == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_server_with_exit_status_0(signum: signal.Signals) -> None:
    process = leveret("serve", "--port", "0")
    port = listening_port(first_line(process, timeout=5.0))
    process.send_signal(signum)
    out, err = process.communicate(timeout=10)
    assert process.returncode == 0
    assert err == ""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_a_taken_port_is_a_one_line_error_with_exit_status_1(taken_port: int) -> None:
    process = leveret("serve", "--port", str(taken_port))
    out, err = process.communicate(timeout=10)
    assert process.returncode == 1
    assert out == ""
    assert err == f"leveret: cannot listen on 127.0.0.1:{taken_port}: address already in use\n"


def test_serve_creates_the_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "state" / "node"
    process = leveret("serve", "--port", "0", "--data-dir", str(data_dir))
    listening_port(first_line(process, timeout=5.0))
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=10)
    assert data_dir.is_dir()
    assert process.returncode == 0


def test_serve_imports_neither_lark_nor_rich_nor_aio_pika() -> None:
    process = leveret("serve", "--port", "0", importtime=True)
    listening_port(first_line(process, timeout=5.0))
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=10)
    imported = {line.rsplit("|", 1)[-1].strip() for line in err.splitlines() if line.startswith("import time:")}
    assert "leveret.broker.broker" in imported  # the probe sees real imports
    assert imported.isdisjoint({"lark", "rich", "aio_pika", "aiormq"})


def test_no_command_prints_usage_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.main([])
    assert status == 2
    assert "serve" in capsys.readouterr().err


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A stand-in for leveret.playground.cli, importable under another name."""
    name = f"leveret_cli_plugin_{os.getpid()}_{time.monotonic_ns()}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            def add_subcommands(subparsers):
                hello = subparsers.add_parser("hello", help="say hello")
                hello.add_argument("--name", default="world")
                hello.set_defaults(func=lambda args: print("hello", args.name) or 7)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "PLUGIN_MODULES", (name,))
    return name


def test_plugin_subcommands_are_dispatched(plugin: str, capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.main(["hello", "--name", "leveret"])
    assert status == 7
    assert capsys.readouterr().out == "hello leveret\n"


def test_a_missing_plugin_module_leaves_its_commands_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "PLUGIN_MODULES", ("leveret.no_such_plugin", "no_such_package.cli"))
    parser = cli.build_parser()
    with pytest.raises(SystemExit) as raised:
        parser.parse_args(["hello"])
    assert raised.value.code == 2


def test_serve_does_not_load_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"leveret_broken_plugin_{os.getpid()}_{time.monotonic_ns()}"
    (tmp_path / f"{name}.py").write_text("raise ImportError('lark is not installed')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "PLUGIN_MODULES", (name,))
    with pytest.raises(SystemExit) as raised:
        cli.main(["serve", "--help"])
    assert raised.value.code == 0
    assert name not in sys.modules
