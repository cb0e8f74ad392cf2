"""Every sample in samples/ runs against leveret as a separate process, as a user would run it."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pika
import pytest

from tests import reference
from tests.e2e.conftest import Names

SAMPLES = Path(__file__).resolve().parents[2] / "samples"

# sample -> lines its output must contain (each sample also checks itself: exit 0).
EXPECTED_OUTPUT: dict[str, list[str]] = {
    "work_queue.py": ["sent 10 tasks to sample.work_queue.tasks", "10 tasks done, worker-1: "],
    "pubsub_fanout.py": ["every subscriber got all 3 messages"],
    "topic_logs.py": [
        "leveret.matching predicts every queue; a miss: ",
        "kernel+critical kern.* *.critical      got: kern.info, kern.critical, app.critical",
        "topic routing as expected",
    ],
    "headers_routing.py": ["pdf-or-report [x-match=any, format=pdf, type=report] got: q1.pdf, notes.pdf, q2.zip",
                           "headers routing as expected"],
    "rpc.py": ["direct reply-to: fib(10)=55, fib(20)=6765, fib(30)=832040, fib(40)=102334155", "8 calls answered"],
    "publisher_confirms.py": [
        "bounded queue (x-max-length=3, reject-publish): 3 acked, 2 nacked",
        "mandatory unroutable message returned: 312 NO_ROUTE",
        "all confirms as expected",
    ],
    "retry_dlx.py": [
        "order-flaky attempt 2: ok",
        "order-bad   attempt 3: failed, parked in sample.retry.parking",
        "  queue=sample.retry.wait reason=expired count=2 exchange=sample.retry.wait routing-keys=orders",
        "  queue=sample.retry.work reason=rejected count=2 exchange=sample.retry.work routing-keys=orders",
    ],
    "exactly_once_payments.py": [
        "6 payments, each charged once; redelivered and skipped: pay-0003",
        "exactly once: yes",
    ],
    "plugins_delayed_retry.py": [
        "job-flaky attempt 3: ok",
        "job-bad   attempt 3: failed, retry in 4s",
        "job-bad   attempt 4: failed, parked in sample.plugins.parking",
        "retries backed off 1s, 2s, 4s, then parked",
    ],
    "stream_replay.py": [
        "audit (from first):   0:created order-1, 1:created order-2, 2:paid order-1, 3:created order-3, 4:paid order-3",
        "4:paid order-3, 5:shipped order-1, 6:cancelled order-2, 7:shipped order-3",
        "from offset 6:        6:cancelled order-2, 7:shipped order-3",
        "replayed as expected",
    ],
    "plugins_partitions.py": [
        "40 publishes, 10 of them repeats, returned as duplicates (312 NO_ROUTE)",
        "every event delivered once, each customer on one partition, in order",
    ],
}


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_every_sample_has_a_test() -> None:
    assert sorted(path.name for path in SAMPLES.glob("*.py")) == sorted(EXPECTED_OUTPUT)


@pytest.mark.parametrize("sample", sorted(EXPECTED_OUTPUT))
def test_sample_runs_against_leveret(sample: str, broker_url: str) -> None:
    result = run(str(SAMPLES / sample), broker_url)

    assert result.returncode == 0, result.stdout + result.stderr
    missing = [line for line in EXPECTED_OUTPUT[sample] if line not in result.stdout]
    assert missing == [], result.stdout
    assert result.stderr == ""


def test_all_samples_in_a_row_against_leveret_serve() -> None:
    # As samples/README.md says: one long-lived `leveret serve`, every sample
    # against it in turn (so each must clean up after itself).
    leveret = Path(sys.executable).with_name("leveret")
    server = subprocess.Popen([str(leveret), "serve", "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        listening = server.stdout.readline()
        found = re.search(r"listening on amqp://127\.0\.0\.1:(\d+) ", listening)
        assert found, listening
        url = f"amqp://guest:guest@127.0.0.1:{found.group(1)}/"
        failures = []
        for sample in sorted(EXPECTED_OUTPUT) + ["work_queue.py"]:  # and one again
            result = run(str(SAMPLES / sample), url)
            if result.returncode != 0 or EXPECTED_OUTPUT[sample][-1] not in result.stdout:
                failures.append((sample, result.stdout + result.stderr))
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=10)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()

    assert failures == []
    assert server.returncode == 0


def test_sample_takes_the_url_from_amqp_url(broker_url: str) -> None:
    result = run(str(SAMPLES / "topic_logs.py"), env={"AMQP_URL": broker_url})

    assert result.returncode == 0, result.stdout + result.stderr
    assert "topic routing as expected" in result.stdout


def test_payments_are_charged_exactly_once_across_a_consumer_crash(
    broker_url: str, names: Names, tmp_path: Path
) -> None:
    script = str(SAMPLES / "exactly_once_payments.py")
    queue = names.queue("payments")
    store = tmp_path / "payments.db"
    consumer = [script, broker_url, "--queue", queue, "--consume", "--store", str(store)]

    published = run(script, broker_url, "--queue", queue, "--publish", "6")
    # Killed by its own SIGKILL right after committing its 3rd charge, before acking it.
    crashed = run(*consumer, "--crash-after", "3", "--prefetch", "3")
    db = sqlite3.connect(store)
    charged_before_crash = [row[0] for row in db.execute("SELECT message_id FROM charges ORDER BY message_id")]
    db.close()
    restarted = run(*consumer, "--expect", "6")

    db = sqlite3.connect(store)
    charges = db.execute("SELECT message_id, count(*) FROM deliveries WHERE outcome = 'charged' "
                         "GROUP BY message_id ORDER BY message_id").fetchall()
    ledger = db.execute("SELECT count(*), count(DISTINCT message_id), sum(amount_cents) FROM charges").fetchone()
    balances = db.execute("SELECT sum(charged_cents) FROM balances").fetchone()[0]
    redelivered = db.execute("SELECT message_id, outcome FROM deliveries WHERE redelivered = 1 "
                             "ORDER BY seq").fetchall()
    pids = db.execute("SELECT count(DISTINCT pid) FROM deliveries").fetchone()[0]
    db.close()
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    left = connection.channel().queue_declare(queue, passive=True).method
    connection.close()

    assert published.returncode == 0, published.stderr
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr
    assert "crashing after recording pay-0003, before its ack" in crashed.stdout
    assert charged_before_crash == ["pay-0001", "pay-0002", "pay-0003"]
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    # Each payment charged once, by one of the two consumers ...
    assert charges == [(f"pay-{i:04d}", 1) for i in range(1, 7)]
    assert ledger == (6, 6, sum(100 * i + 99 for i in range(1, 7)))
    assert balances == ledger[2]
    assert pids == 2
    # ... although the broker redelivered the one charged but not acked (and
    # the prefetched ones the first consumer never got to, charged once now).
    assert redelivered[0] == ("pay-0003", "duplicate")
    assert set(redelivered[1:]) <= {("pay-0004", "charged"), ("pay-0005", "charged")}
    assert "pay-0003 (redelivered) was charged already: ack without charging" in restarted.stdout
    assert (left.message_count, left.consumer_count) == (0, 0)


@pytest.mark.rabbitmq
@reference.needs_reference
def test_delayed_retry_sample_says_it_needs_the_plugin_where_there_is_none() -> None:
    result = run(str(SAMPLES / "plugins_delayed_retry.py"), reference.URL)
    if result.returncode == 0:
        pytest.skip("the reference RabbitMQ has rabbitmq_delayed_message_exchange enabled")

    assert result.returncode == 2, result.stdout + result.stderr
    assert "needs the x-delayed-message exchange type: run it against leveret" in result.stderr
    assert "Traceback" not in result.stderr
