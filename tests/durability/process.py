"""`leveret serve` as a subprocess on a free port, for the durability tests."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class LeveretProcess:
    """`leveret serve --port 0 --data-dir DIR [args]`, started and ready (its port parsed)."""

    def __init__(self, data_dir: Path | None, log: Path, *args: str, env: dict[str, str] | None = None) -> None:
        command = [sys.executable, "-m", "leveret.cli", "serve", "--port", "0", *args]
        if data_dir is not None:
            command += ["--data-dir", str(data_dir)]
        self.process = subprocess.Popen(
            command, cwd=REPO, stdout=subprocess.PIPE, stderr=log.open("a"), text=True,
            env={**os.environ, **(env or {})},
        )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 60)
        line = self.process.stdout.readline() if ready else ""
        assert "listening on amqp://127.0.0.1:" in line, f"no listening line: {line!r}; see {log}"
        self.port = int(line.split("127.0.0.1:")[1].split()[0])
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(20)
