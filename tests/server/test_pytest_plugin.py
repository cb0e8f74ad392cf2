"""The pytest plugin in a user's project: its own config, no asyncio_mode."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

USER_TESTS = '''
import aio_pika
import pika


async def test_with_aio_pika(leveret_url):
    connection = await aio_pika.connect(leveret_url)
    channel = await connection.channel()
    queue = await channel.declare_queue("", exclusive=True)
    await channel.default_exchange.publish(aio_pika.Message(b"hi"), routing_key=queue.name)
    assert (await queue.get(timeout=2)).body == b"hi"
    await connection.close()


def test_with_pika(leveret_url):
    connection = pika.BlockingConnection(pika.URLParameters(leveret_url))
    connection.close()
'''


def test_an_async_test_runs_in_a_project_without_asyncio_mode(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.pytest.ini_options]\naddopts = "-p no:cacheprovider"\n')
    (tmp_path / "test_user.py").write_text(USER_TESTS)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-W", "ignore"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 passed" in run.stdout
