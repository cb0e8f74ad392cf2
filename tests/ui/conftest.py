"""Fixtures for the web UI tests: one leveret and one headless Chromium per module.

Chromium is the Debian package (`apt-get install -y chromium`), driven by
playwright with `executable_path`, so no browser is downloaded. Without
either, every test here skips and says why.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from leveret.management import ManagementServer, attach, detach
from leveret.server.shell import ServerThread

CHROMIUM = os.environ.get("LEVERET_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
TIMEOUT_MS = 15_000

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    sync_playwright = None


def _skip_reason() -> str | None:
    if sync_playwright is None:
        return "playwright is not installed (pip install -e '.[test]')"
    if CHROMIUM is None:
        return "no Chromium installed (apt-get install -y chromium)"
    return None


@dataclass
class Ui:
    thread: ServerThread
    management: ManagementServer

    @property
    def url(self) -> str:
        return self.management.url

    @property
    def amqp_url(self) -> str:
        return self.thread.url

    def call(self, fn: Callable[[Any], Any]) -> Any:
        """Run `fn(broker)` on the broker's loop."""
        return self.thread.call(fn)

    def http(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
             raw: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        all_headers = {"content-type": "application/json"} if data is not None else {}
        all_headers.update(headers or {})
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=all_headers)
        opener = urllib.request.build_opener(_NoRedirect())
        try:
            with opener.open(request, timeout=10) as reply:
                return reply.status, {k.lower(): v for k, v in reply.headers.items()}, reply.read()
        except urllib.error.HTTPError as error:
            return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()

    def has_endpoint(self, method: str, path: str) -> bool:
        """Whether the API routes `method path` (issue 17's endpoints land separately)."""
        found = self.management.api.router.find(method, self.management.api.router.segments("/api/" + path))
        return found is not None and found.route is not None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@pytest.fixture(scope="module")
def ui() -> Iterator[Ui]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    with ServerThread() as thread:
        management = attach(thread)
        try:
            yield Ui(thread, management)
        finally:
            detach(thread, management)


@pytest.fixture(scope="module")
def browser(ui: Ui) -> Iterator[Browser]:
    assert sync_playwright is not None
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def anonymous(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


def log_in(page: Page, url: str, user: str = "guest", password: str = "guest") -> None:
    page.goto(url + "/login.html")
    page.fill("#username", user)
    page.fill("#password", password)
    page.click("#login-button")


@pytest.fixture
def page(anonymous: Page, ui: Ui) -> Page:
    log_in(anonymous, ui.url)
    expect(anonymous.locator("#who")).to_have_text("guest")
    return anonymous
