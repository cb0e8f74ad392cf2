"""Take the README's screenshots of the web UI: python tests/ui/screenshots.py [OUT_DIR].

A fresh leveret with a small topology (a topic exchange, an alternate
exchange, a dead-letter loop), some traffic over pika, and headless Chromium.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pika

from leveret.management import attach, detach
from leveret.server.shell import ServerThread
from tests.ui.conftest import CHROMIUM, log_in, sync_playwright


def topology(url: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    ch = connection.channel()
    ch.exchange_declare("unrouted", "fanout")
    ch.exchange_declare("logs", "topic", arguments={"alternate-exchange": "unrouted"})
    ch.exchange_declare("logs.dlx", "fanout")
    ch.queue_declare("logs.unrouted")
    ch.queue_bind("logs.unrouted", "unrouted")
    ch.queue_declare("logs.errors", arguments={"x-dead-letter-exchange": "logs.dlx", "x-message-ttl": 60000})
    ch.queue_declare("logs.db", arguments={"x-dead-letter-exchange": "logs.dlx"})
    ch.queue_declare("logs.parked")
    ch.queue_bind("logs.errors", "logs", "*.error")
    ch.queue_bind("logs.db", "logs", "db.#")
    ch.queue_bind("logs.parked", "logs.dlx")
    for i in range(200):
        ch.basic_publish("logs", ["db.error", "app.info", "db.slow"][i % 3], b"line %d" % i)
    connection.close()


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots")
    out.mkdir(parents=True, exist_ok=True)
    assert sync_playwright is not None and CHROMIUM is not None
    with ServerThread() as thread, sync_playwright() as p:
        management = attach(thread, sample_interval=1.0)
        topology(thread.url)
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(management.url + "/login.html")
        page.screenshot(path=str(out / "login.png"))
        log_in(page, management.url)
        page.wait_for_selector("[data-total]")
        live = pika.BlockingConnection(pika.URLParameters(thread.url))
        ch = live.channel()
        for _ in range(6):  # a few samples for the charts
            for i in range(300):
                ch.basic_publish("logs", "db.error", b"x %d" % i)
            time.sleep(5)
        page.screenshot(path=str(out / "overview.png"), full_page=True)
        page.goto(management.url + "/#/queues")
        page.wait_for_selector("table.list tbody tr td a")
        page.screenshot(path=str(out / "queues.png"))
        page.goto(management.url + "/#/queues/%2F/logs.errors")
        page.wait_for_selector("[data-field=Ready]")
        page.screenshot(path=str(out / "queue.png"), full_page=True)
        page.goto(management.url + "/#/exchanges/%2F/logs")
        page.fill("#trace-key", "db.error")
        page.wait_for_selector("#trace[data-key='db.error']")
        page.locator("#routing-view").screenshot(path=str(out / "routing-view.png"))
        live.close()
        browser.close()
        detach(thread, management)


if __name__ == "__main__":
    main()
