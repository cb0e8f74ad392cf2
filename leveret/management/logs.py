"""Structured logs: one line per event, `key=value` (logfmt) or JSON.

The core and the frontend log with the standard library and put the event's
fields in `extra` (`log.info("connection closed", extra={"event":
"connection_closed", "connection": name, "reason": reason})`), so they need
nothing from this package. This formatter writes the event name, then the
fields, then the message:

    2026-11-23T17:58:24.084Z info event=connection_closed connection="127.0.0.1:40604 -> 127.0.0.1:5672" reason="client closed: 200 Normal shutdown"

Events logged (logger `leveret.*`): connection_opened, connection_closed
(reason), connection_error and channel_error (code, text), queue_deleted
(reason), dead_letter_storm and dead_letter_storm_ended, http_request (debug).
The broker is quiet by default: these are INFO, storms are WARNING, and
`leveret serve` logs WARNING and above unless given `--log-level`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("logfmt", "json")

# Attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def event_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The `extra` fields of a record, `event` first."""
    fields = {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}
    event = fields.pop("event", None)
    return {"event": event, **fields} if event is not None else fields


def _timestamp(created: float) -> str:
    millis = int(created * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{millis:03d}Z"


def _logfmt_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if text and not any(c in text for c in ' ="\\\n\t') and text.isprintable():
        return text
    return json.dumps(text, ensure_ascii=False)


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record.created), record.levelname.lower()]
        fields = event_fields(record)
        if "event" not in fields:
            fields = {"logger": record.name, **fields}
        parts.extend(f"{key}={_logfmt_value(value)}" for key, value in fields.items())
        parts.append(f"msg={_logfmt_value(record.getMessage())}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {"time": _timestamp(record.created), "level": record.levelname.lower(),
                                "logger": record.name}
        data.update(event_fields(record))
        data["msg"] = record.getMessage()
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str, ensure_ascii=False)


def configure(level: str = "warning", fmt: str = "logfmt", stream: TextIO | None = None) -> logging.Handler:
    """Send the `leveret` loggers to `stream` (stderr) at `level`, one line per event."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    logger = logging.getLogger("leveret")
    for old in list(logger.handlers):
        if getattr(old, "_leveret", False):
            logger.removeHandler(old)
    handler._leveret = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(getattr(logging, level.upper()))
    logger.propagate = False
    return handler
