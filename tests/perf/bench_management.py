"""Management API requests per second: the aiohttp server against the hand-written one it replaced.

A script, not a test (pytest collects test_*.py only):

    .venv/bin/python tests/perf/bench_management.py [--queues 1000] [--duration 3] [--rounds 3]
        [--old 8e22875]

One broker (a `ServerThread`) with --queues queues declared serves both: the
current `ManagementServer`, and beside it the old `HttpServer` and `Api`
loaded from git revision --old (the last with the hand-written server) on
the same broker loop. A keep-alive client (http.client, one connection)
sends GET /api/overview and GET /api/queues to each for --duration seconds,
the two servers interleaved over --rounds rounds; the best round of each is
kept and the ratio new/old printed (above 1: the new one is faster).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from leveret.management import attach, detach
from leveret.server.shell import ServerThread

ROOT = Path(__file__).resolve().parents[2]
AUTH = {"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()}
PATHS = ("/api/overview", "/api/queues")


def load_old(revision: str, name: str, path: str, folder: Path) -> ModuleType:
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{revision}:{path}"], check=True,
                            capture_output=True, text=True).stdout
    file = folder / f"{name}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def rate(port: int, path: str, duration: float) -> float:
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for _ in range(3):  # warm up, and check the answer
            client.request("GET", path, headers=AUTH)
            response = client.getresponse()
            assert response.status == 200, (path, response.status)
            response.read()
        count = 0
        started = time.perf_counter()
        deadline = started + duration
        while (now := time.perf_counter()) < deadline:
            client.request("GET", path, headers=AUTH)
            client.getresponse().read()
            count += 1
        return count / (now - started)
    finally:
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queues", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--old", default="8e22875", help="git revision with the hand-written server")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder, ServerThread() as thread:
        old_http = load_old(args.old, "old_management_http", "leveret/management/http.py", Path(folder))
        old_api = load_old(args.old, "old_management_api", "leveret/management/api.py", Path(folder))

        def declare(broker: Any) -> None:
            vhost = broker.vhosts["/"]
            for n in range(args.queues):
                vhost.declare_queue(f"bench-{n:05d}", durable=False, auto_delete=False, arguments={},
                                    now_ms=broker.now_ms())

        thread.call(declare)
        new = attach(thread)
        loop = thread.call(lambda _: asyncio.get_running_loop())
        old = old_http.HttpServer(old_api.Api(new.management).handle)
        asyncio.run_coroutine_threadsafe(old.start("127.0.0.1", 0), loop).result(10)
        try:
            best: dict[tuple[str, str], float] = {}
            for _ in range(args.rounds):
                for path in PATHS:
                    for label, port in (("old", old.port), ("new", new.port)):
                        key = (label, path)
                        best[key] = max(best.get(key, 0.0), rate(port, path, args.duration))
            print(f"{args.queues} queues, best of {args.rounds} rounds of {args.duration:g} s, one keep-alive client")
            for path in PATHS:
                o, n = best[("old", path)], best[("new", path)]
                print(f"GET {path:<14} old {o:8.1f} req/s   new {n:8.1f} req/s   new/old {n / o:.2f}")
        finally:
            asyncio.run_coroutine_threadsafe(old.stop(), loop).result(10)
            detach(thread, new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
