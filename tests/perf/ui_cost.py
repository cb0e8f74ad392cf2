"""What an open web UI costs the broker: e2e_16b throughput with the UI closed and open.

    python tests/perf/ui_cost.py [--duration 10] [--repeat 3]

Starts one leveret (AMQP and management on free ports), then runs the C load
driver (/work/shared/bench/amqp_bench.sh, or $AMQP_BENCH) in turns: UI closed,
UI open (headless Chromium logged in on the overview page, which polls
overview, nodes and alarms), closed, open... and prints the medians and the
open/closed ratio. The driver and the browser share the machine's cores with
the broker, so the ratio includes the browser's own CPU; the number that
matters for the broker is the ratio, not the absolute rates.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys

from leveret.management import attach, detach
from leveret.server.shell import ServerThread

BENCH = os.environ.get("AMQP_BENCH", "/work/shared/bench/amqp_bench.sh")


def bench(url: str, duration: int) -> float:
    out = subprocess.run([BENCH, url, "e2e_16b", "--duration", str(duration)], check=True,
                         capture_output=True, text=True).stdout
    line = [raw for raw in out.splitlines() if raw.startswith("{")][-1]
    data = json.loads(line)
    return float(data.get("msg_per_s") or data.get("rate") or data["msgs_per_sec"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("no chromium (apt-get install -y chromium)", file=sys.stderr)
        return 2
    closed: list[float] = []
    opened: list[float] = []
    with ServerThread() as thread, sync_playwright() as p:
        management = attach(thread)
        url = thread.url
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        try:
            for _ in range(args.repeat):
                closed.append(bench(url, args.duration))
                page = browser.new_page()
                page.goto(management.url + "/login.html")
                page.fill("#username", "guest")
                page.fill("#password", "guest")
                page.click("#login-button")
                page.wait_for_selector("[data-total]")
                opened.append(bench(url, args.duration))
                page.close()
        finally:
            browser.close()
            detach(thread, management)
    result = {"scenario": "e2e_16b", "closed_msg_s": statistics.median(closed),
              "open_msg_s": statistics.median(opened), "closed_runs": closed, "open_runs": opened}
    result["open_over_closed"] = round(result["open_msg_s"] / result["closed_msg_s"], 3)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
