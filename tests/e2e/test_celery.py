"""Real Celery workers using leveret as their broker: in a thread (celery.contrib.testing) and a `celery worker` process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from kombu import pools

from tests.e2e.celery_app import app as worker_app
from tests.e2e.celery_app import where
from tests.e2e.conftest import Names, wait_until
from tests.e2e.test_kombu import kombu_url

PREFETCH_MULTIPLIER = 2
REPO = Path(__file__).resolve().parents[2]


def make_app(url: str, queue: str) -> Celery:
    app = Celery("leveret_e2e", set_as_current=False)
    app.conf.update(
        broker_url=kombu_url(url),
        result_backend="rpc://",
        task_default_queue=queue,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=PREFETCH_MULTIPLIER,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=False,
        broker_connection_max_retries=1,
        worker_send_task_events=False,
        worker_enable_remote_control=False,
        # The worker's event loop only notices a stop request when it wakes
        # up; heartbeat checks (every heartbeat/3 s) wake it, and exercise
        # leveret's heartbeats on the way.
        broker_heartbeat=1,
    )
    return app


@pytest.fixture
def app(broker_url: str, names: Names) -> Iterator[Celery]:
    queue = names.queue("celery")
    # Celery routes through an exchange named as the queue; worker heartbeats go to celeryev.
    names.exchanges += [queue, "celeryev"]
    celery_app = make_app(broker_url, queue)
    yield celery_app
    close_app(celery_app)


def close_app(app: Celery) -> None:
    # app.close() only forgets its connections; a connection left open costs
    # the broker's shutdown grace period (clients that never answer close).
    result_consumer = app.backend.result_consumer
    if getattr(result_consumer, "_connection", None) is not None:
        result_consumer.stop()
    # The producer pool is kombu's, global and keyed by URL: reset them all.
    pools.reset()
    app.close()


def test_task_round_trip_with_rpc_results(app: Celery) -> None:
    side_effects: list[tuple[int, int]] = []

    @app.task(name="e2e.add")
    def add(x: int, y: int) -> int:
        side_effects.append((x, y))
        return x + y

    @app.task(name="e2e.fail")
    def fail() -> None:
        raise ValueError("boom")

    with start_worker(app, perform_ping_check=False, shutdown_timeout=5, without_heartbeat=False):
        results = [add.delay(i, i) for i in range(5)]
        values = [result.get(timeout=10) for result in results]
        failed = fail.delay()
        with pytest.raises(ValueError, match="boom"):
            failed.get(timeout=10)

    assert values == [0, 2, 4, 6, 8]
    assert sorted(side_effects) == [(i, i) for i in range(5)]
    assert failed.state == "FAILURE"


def test_worker_prefetch_multiplier_is_honoured(app: Celery, broker_url: str) -> None:
    # acks_late: a task's message stays unacked while it runs, so the broker
    # may hand the worker exactly concurrency * multiplier messages.
    release = threading.Event()
    started = threading.Event()

    @app.task(name="e2e.hold", acks_late=True)
    def hold(n: int) -> int:
        started.set()
        release.wait(10)
        return n

    queue = app.conf.task_default_queue
    total = 6
    results: list[Any] = []
    probe = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        channel = probe.channel()

        def ready() -> int:
            count: int = channel.queue_declare(queue, passive=True).method.message_count
            return count

        with start_worker(app, perform_ping_check=False, shutdown_timeout=5, without_heartbeat=False):
            results = [hold.delay(n) for n in range(total)]
            working = started.wait(10)
            wait_until(lambda: ready() <= total - PREFETCH_MULTIPLIER, timeout=3)
            time.sleep(0.3)  # room for any delivery beyond the window
            held_back = ready()
            release.set()
            values = [result.get(timeout=10) for result in results]
    finally:
        release.set()
        probe.close()

    assert working
    assert held_back == total - PREFETCH_MULTIPLIER
    assert values == list(range(total))


def test_eta_task_does_not_hold_back_the_worker(app: Celery) -> None:
    # A countdown/ETA task waits in the worker's memory, unacked, using up a
    # prefetch slot; Celery then raises the prefetch with basic.qos so other
    # tasks keep flowing. That raise must reach the broker's running consumer.
    app.conf.worker_prefetch_multiplier = 1

    @app.task(name="e2e.stamp")
    def stamp(label: str) -> str:
        return label

    with start_worker(app, perform_ping_check=False, shutdown_timeout=5, without_heartbeat=False):
        later = stamp.apply_async(("later",), countdown=3)
        time.sleep(0.3)  # the worker holds the ETA task now
        started = time.monotonic()
        now = stamp.delay("now")
        first = now.get(timeout=10)
        waited = time.monotonic() - started
        second = later.get(timeout=10)

    assert (first, second) == ("now", "later")
    assert waited < 1.5, f"the plain task waited {waited:.1f}s behind the ETA task"


def test_quorum_queue_with_native_delayed_delivery(app: Celery, names: Names) -> None:
    # Celery's setup for quorum queues (5.5+): no global qos, and countdown
    # tasks wait in the broker, not the worker: a cascade of 28 quorum queues
    # with TTLs 2^level s (x-overflow reject-publish, at-least-once
    # dead-lettering) linked by topic exchanges and exchange-to-exchange bindings.
    app.conf.task_default_queue_type = "quorum"
    app.conf.task_default_exchange_type = "topic"
    names.queues += [f"celery_delayed_{level}" for level in range(28)]
    names.exchanges += [f"celery_delayed_{level}" for level in range(28)] + ["celery_delayed_delivery"]

    @app.task(name="e2e.route", bind=True)
    def route(self: Any, label: str) -> tuple[str, str]:
        return label, self.request.delivery_info["exchange"]

    with start_worker(app, perform_ping_check=False, shutdown_timeout=5, without_heartbeat=False):
        started = time.monotonic()
        later = route.apply_async(("later",), countdown=2)
        now = route.delay("now").get(timeout=10)
        now_after = time.monotonic() - started
        delayed = later.get(timeout=10)
        later_after = time.monotonic() - started

    queue = app.conf.task_default_queue
    assert now == ["now", queue]
    assert now_after < 1
    assert delayed[0] == "later"
    assert delayed[1].startswith("celery_delayed_")  # it came through the broker's delay cascade
    assert 1.9 < later_after < 4


def test_celery_worker_process_with_prefork_pool(broker_url: str, names: Names) -> None:
    # `celery worker` as deployed: its own process, prefork pool, mingle,
    # gossip and remote control on; warm shutdown on SIGTERM.
    env = {
        **os.environ,
        "LEVERET_CELERY_BROKER": kombu_url(broker_url),
        "LEVERET_CELERY_QUEUE": names.queue("celery-worker"),
    }
    # Celery's own exchanges: the queue's, remote control's and events'.
    names.exchanges += [env["LEVERET_CELERY_QUEUE"], "celery.pidbox", "reply.celery.pidbox", "celeryev"]
    command = [sys.executable, "-m", "celery", "-A", "tests.e2e.celery_app", "worker",
               "--concurrency", "2", "--pool", "prefork", "--loglevel", "INFO", "--hostname", "e2e@%h"]
    worker = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    worker_app.conf.broker_url = env["LEVERET_CELERY_BROKER"]
    worker_app.conf.task_default_queue = env["LEVERET_CELERY_QUEUE"]
    try:
        results = [where.delay(n) for n in range(6)]
        values = [result.get(timeout=15) for result in results]
        pong = worker_app.control.ping(timeout=2, limit=1)
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=15)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
        close_app(worker_app)

    assert [square for square, _ in values] == [n * n for n in range(6)]
    assert os.getpid() not in {pid for _, pid in values}
    assert [list(reply.values()) for reply in pong] == [[{"ok": "pong"}]]
    assert [name.split("@")[0] for reply in pong for name in reply] == ["e2e"]
    assert worker.returncode == 0, output
    assert "ready." in output
    assert "Traceback" not in output and "ERROR" not in output, output
