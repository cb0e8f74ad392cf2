"""The management API client `leveret ctl` uses (urllib: no dependency), and its one-line errors."""

from __future__ import annotations

import base64
import html
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1


class CtlError(Exception):
    """A failure to report in one line (exit status 1)."""


@dataclass(frozen=True, slots=True)
class Client:
    """A minimal client of the management API (urllib: no dependency)."""

    url: str
    user: str
    password: str
    timeout: float = 10.0

    def request(self, method: str, path: str, body: Any = None, *, missing: str | None = None) -> Any:
        """The decoded JSON answer; `missing` is the error text for a 404."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        headers = {"Authorization": f"Basic {token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url.rstrip("/") + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            if error.code == 404 and missing is not None:
                raise CtlError(missing) from None
            raise CtlError(_http_error(error, path)) from None
        except urllib.error.URLError as error:
            reason = getattr(error.reason, "strerror", None) or str(error.reason)
            raise CtlError(f"cannot reach the management API at {self.url}: {str(reason).lower()}") from None
        except OSError as error:
            raise CtlError(f"cannot reach the management API at {self.url}: {error}") from None
        return json.loads(payload) if payload.strip() else None


def _http_error(error: urllib.error.HTTPError, path: str) -> str:
    try:
        detail = json.loads(error.read() or b"{}")
    except ValueError:
        detail = {}
    reason = detail.get("reason") if isinstance(detail, dict) else None
    if error.code == 401:
        return f"not authorised: {reason or 'login failed'}"
    if error.code == 404:
        return f"not found: {path}"
    if isinstance(reason, str):
        reason = html.unescape(reason).rstrip("\n")  # RabbitMQ escapes < > & for its web UI
    return f"HTTP {error.code}: {reason or error.reason}"


def run(action: Callable[[Any], int], args: Any) -> int:
    """Run a verb; a CtlError is one line on stderr and exit status 1."""
    try:
        return action(args)
    except CtlError as error:
        print(f"leveret ctl: {error}", file=sys.stderr)
        return EXIT_FAILED
