"""kombu 5.7.0's own integration tests for py-amqp, run against leveret.

The tests come from kombu's sdist on PyPI (the wheel has no t/), fetched once
with pip into a cache under the system temp dir and run in a subprocess from
the unpacked sdist (so it is kombu 5.7.0's code and tests, whatever kombu is
installed). They pick the broker from RABBITMQ_HOST / RABBITMQ_5672_TCP. Skips
with the reason when the sdist cannot be had (no network, no PyPI).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from leveret.server.shell import ServerThread

KOMBU = "5.7.0"
CACHE = Path(tempfile.gettempdir()) / f"leveret-tests-kombu-{KOMBU}"


def kombu_source() -> Path:
    """The unpacked sdist, downloaded the first time."""
    source = CACHE / f"kombu-{KOMBU}"
    if (source / "t" / "integration" / "test_py_amqp.py").is_file():
        return source
    CACHE.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:", "--no-deps",
             "--dest", str(CACHE), f"kombu=={KOMBU}"],
            check=True, capture_output=True, timeout=180,
        )
    except (subprocess.SubprocessError, OSError) as error:
        pytest.skip(f"kombu {KOMBU}'s sdist cannot be downloaded with pip: {error}")
    with tarfile.open(CACHE / f"kombu-{KOMBU}.tar.gz") as archive:
        archive.extractall(CACHE, filter="data")
    return source


def test_kombu_py_amqp_integration_suite_passes_against_leveret() -> None:
    source = kombu_source()
    with ServerThread() as broker:
        env = {**os.environ, "RABBITMQ_HOST": broker.host, "RABBITMQ_5672_TCP": str(broker.port)}
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore",
             "t/integration/test_py_amqp.py"],
            cwd=source, env=env, capture_output=True, text=True, timeout=300,
        )
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    passed = re.search(r"(\d+) passed", summary)
    assert passed is not None and int(passed.group(1)) >= 51, summary
    assert "failed" not in summary and "error" not in summary, summary
