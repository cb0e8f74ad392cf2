"""`leveret play`, `leveret test` and `leveret explain`, through the real entry
point (subprocess) and through the handlers."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from leveret.playground.cli import HELP, add_subcommands
from leveret.version import RABBITMQ_VERSION

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "playground"


def leveret(*args: str, stdin: str | None = None, cwd: Path | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "import sys; from leveret.cli import main; sys.exit(main())", *args]
    environment = {**os.environ, "NO_COLOR": "1", "COLUMNS": "80", **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, input=stdin, cwd=cwd or ROOT,
                          env=environment, timeout=60)


def handler_exit(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="leveret")
    add_subcommands(parser.add_subparsers(dest="command"))
    namespace = parser.parse_args(args)
    code = namespace.func(namespace)
    return code, capsys.readouterr().out


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


PASSING = """
exchange logs topic
queue errors
bind logs -> errors "*.error"
publish logs kern.error "disk full"
expect errors got "disk full"
"""

FAILING = """
exchange logs topic
queue errors
bind logs -> errors "*.error"
publish logs kern.eror "disk full"
expect errors got "disk full"
expect errors got "this second failure is never reached"
"""


def test_the_samples_pass() -> None:
    result = leveret("test", *sorted(str(p) for p in SAMPLES.iterdir()))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().split("\n")
    assert lines[-1].startswith(f"{len(list(SAMPLES.iterdir()))} passed, 0 failed")
    assert all(line.startswith("ok    ") for line in lines[:-1])


def test_a_failing_expectation_fails_the_run_with_a_diff(tmp_path: Path) -> None:
    path = write(tmp_path, "failing.route", FAILING)
    result = leveret("test", path)
    assert result.returncode == 1
    out = result.stdout
    assert f"✗ FAIL {path}:6:1" in out
    assert '  - expected: errors got "disk full"' in out
    assert "  + actual:   errors got nothing" in out
    # the route that explains it is drawn below
    assert 'logs (topic)  routing key "kern.eror"' in out
    assert "word 2 is 'eror', pattern wants 'error'" in out
    assert "never reached" not in out
    assert out.strip().split("\n")[-1].startswith("0 passed, 1 failed")


def test_each_file_reports_and_the_summary_counts_files(tmp_path: Path) -> None:
    good = write(tmp_path, "good.route", PASSING)
    bad = write(tmp_path, "bad.route", FAILING)
    result = leveret("test", good, bad)
    assert result.returncode == 1
    assert f"ok    {good}  (1 expectation)" in result.stdout
    # the failing file stops at its first failure: 1 + 1 expectations ran
    assert "1 passed, 1 failed (2 expectations in 2 files)" in result.stdout


def test_a_directory_runs_its_route_files_and_other_files_are_skipped(tmp_path: Path) -> None:
    write(tmp_path, "a.route", PASSING)
    notes = write(tmp_path, "notes.txt", "not a route file")
    result = leveret("test", str(tmp_path), notes)
    assert result.returncode == 0
    assert f"skip  {notes} (not a .route file)" in result.stdout
    assert "1 passed, 0 failed" in result.stdout


def test_a_syntax_error_fails_with_line_column_and_hint(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.route", "queue q\nqueue r tll=5s\n")
    result = leveret("test", path)
    assert result.returncode == 1
    assert f"{path}:2:9: error: unknown queue option 'tll'" in result.stdout
    assert "hint: did you mean 'ttl'?" in result.stdout
    assert f"FAIL  {path}  the file does not parse" in result.stdout


def test_an_unexpected_broker_error_fails_unless_expected(tmp_path: Path) -> None:
    unexpected = write(tmp_path, "unexpected.route", "publish nowhere k x\nexpect unroutable\n")
    expected = write(tmp_path, "expected.route", "publish nowhere k x\nexpect error 404\n")
    result = leveret("test", unexpected, expected)
    assert result.returncode == 1
    assert "NOT_FOUND - no exchange 'nowhere' in vhost '/'" in result.stdout
    assert "add `expect error` after it if intended" in result.stdout
    assert f"ok    {expected}" in result.stdout


def test_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    result = leveret("test", str(tmp_path / "nope.route"))
    assert result.returncode == 2
    assert "no such file" in result.stdout


def test_play_draws_the_file_and_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = handler_exit(["play", str(SAMPLES / "topic-logs.route"), "--no-color", "--width", "80"], capsys)
    assert code == 0
    assert 'logs (topic)  routing key "kern.error"' in out
    assert "  → logs.all, logs.errors, logs.kern" in out
    assert max(len(line) for line in out.split("\n")) <= 80


def test_play_exits_one_when_an_expectation_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = handler_exit(["play", write(tmp_path, "f.route", FAILING), "--no-color"], capsys)
    assert code == 1
    assert "✗ FAIL line 6" in out


def test_play_export_writes_rabbitmq_definitions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "defs.json"
    code, _ = handler_exit(["play", str(SAMPLES / "alternate-exchange.route"), "--export", str(target),
                            "--no-color", "-q"], capsys)
    assert code == 0
    data = json.loads(target.read_text())
    orders = next(x for x in data["exchanges"] if x["name"] == "orders")
    assert orders["internal"] is True and orders["arguments"] == {"alternate-exchange": "unrouted"}
    assert {q["name"] for q in data["queues"]} == {"unrouted.orders", "orders.eu", "orders.us"}


def test_explain_reads_definitions_and_draws_the_route(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "defs.json"
    handler_exit(["play", str(SAMPLES / "alternate-exchange.route"), "--export", str(target), "-q"], capsys)
    result = leveret("explain", "--definitions", str(target), "ingest", "order.apac")
    assert result.returncode == 0, result.stdout
    assert 'ingest (topic)  routing key "order.apac"' in result.stdout
    assert "↪ nothing matched: alternate-exchange unrouted (fanout)" in result.stdout
    assert "  → unrouted.orders" in result.stdout


def test_explain_with_headers(tmp_path: Path) -> None:
    defs = {
        "exchanges": [{"name": "docs", "vhost": "/", "type": "headers", "durable": True,
                       "auto_delete": False, "internal": False, "arguments": {}}],
        "queues": [{"name": "v2", "vhost": "/", "durable": True, "auto_delete": False, "arguments": {}}],
        "bindings": [{"source": "docs", "vhost": "/", "destination": "v2", "destination_type": "queue",
                      "routing_key": "", "arguments": {"x-match": "all", "version": 2, "kind": "pdf"}}],
    }
    path = write(tmp_path, "defs.json", json.dumps(defs))
    hit = leveret("explain", "--definitions", path, "docs", "", "--header", "version=2", "--header", "kind=pdf")
    assert hit.returncode == 0
    assert "  → v2" in hit.stdout
    miss = leveret("explain", "--definitions", path, "docs", "", "--header", "version=\"2\"", "--header", "kind=pdf")
    assert "✗ unroutable" in miss.stdout


def test_explain_unknown_exchange_lists_the_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path, "defs.json", json.dumps({"exchanges": [
        {"name": "events", "vhost": "/", "type": "topic", "durable": True, "auto_delete": False,
         "internal": False, "arguments": {}}]}))
    result = leveret("explain", "--definitions", path, "evnts", "k")
    assert result.returncode == 1
    assert "no exchange 'evnts'" in result.stdout
    assert "events" in result.stdout


def test_play_with_definitions_then_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    defs = tmp_path / "defs.json"
    handler_exit(["play", str(SAMPLES / "fanout.route"), "--export", str(defs), "-q"], capsys)
    route = write(tmp_path, "use.route", 'publish orders.events x "hello"\nexpect routed to billing, shipping\n')
    code, out = handler_exit(["play", route, "--definitions", str(defs), "--no-color"], capsys)
    assert code == 0, out
    assert "loaded" in out


def test_interactive_prompt(tmp_path: Path) -> None:
    session = "\n".join([
        "help",
        "exchange logs topic",
        "queue errors; bind logs -> errors \"*.error\"",
        "publish logs kern.error \\",
        "  \"disk full\"",
        "expect errors got \"disk full\"",
        "queue q tll=5s",
        "show queues",
        f"export {tmp_path / 'out.json'}",
        "quit",
    ]) + "\n"
    history = tmp_path / "history"
    result = leveret("play", stdin=session, env={"LEVERET_HISTORY": str(history)})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Statements (one per line" in out
    assert 'logs (topic)  routing key "kern.error"' in out
    assert "✓ expect errors got \"disk full\"" in out
    assert "<prompt>:6:9: error: unknown queue option 'tll'" in out  # the sixth entry
    assert json.loads((tmp_path / "out.json").read_text())["queues"][0]["name"] == "errors"


def test_prompt_help_shows_every_option() -> None:
    result = leveret("play", "--width", "200", stdin="help\nquit\n")
    assert result.returncode == 0, result.stderr
    for line in HELP.splitlines():
        assert line in result.stdout  # [durable], [ttl=30s], [requeue] as written
    assert "[durable]" in result.stdout and "[requeue]" in result.stdout


def test_export_writes_the_rabbitmq_version_leveret_answers_as() -> None:
    result = leveret("play", str(SAMPLES / "fanout.route"), "--export", "-")
    assert result.returncode == 0
    assert json.loads(result.stdout)["rabbit_version"] == RABBITMQ_VERSION


def test_export_to_stdout_keeps_the_drawing_off_it() -> None:
    result = leveret("play", str(SAMPLES / "fanout.route"), "--export", "-")
    assert result.returncode == 0
    data = json.loads(result.stdout)
    assert {q["name"] for q in data["queues"]} == {"billing", "shipping", "analytics"}
    assert "orders.events (fanout)" in result.stderr
