"""A tiny Celery app for the subprocess worker in test_celery.py.

The broker URL and queue come from the environment, so the test can point a
real `celery -A tests.e2e.celery_app worker` at the leveret it started.
"""

from __future__ import annotations

import os

from celery import Celery

app = Celery("leveret_e2e_worker", set_as_current=False)
app.conf.update(
    broker_url=os.environ.get("LEVERET_CELERY_BROKER", "pyamqp://guest:guest@127.0.0.1:5672//"),
    result_backend="rpc://",
    task_default_queue=os.environ.get("LEVERET_CELERY_QUEUE", "celery"),
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=False,
)


@app.task(name="e2e.where")
def where(n: int) -> tuple[int, int]:
    """n squared, and the pid of the pool process that computed it."""
    return n * n, os.getpid()
