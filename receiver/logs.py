"""Logging: plain text or one JSON object a line (``[log] format``), and the activity lines.

Lines about a delivery, an event or a send carry their ids as fields (``delivery_id``,
``event_id``, ``sink``, ``request_id``, ``route``: ``extra=`` on the call), which the JSON
format writes as keys of their own, so a log search finds every line about one of them.

``hookdock.activity`` logs one INFO line per accepted delivery and per delivered send: what
went right, for following the traffic.  ``[log] activity = false`` turns it down to WARNING.
Secrets are never put in a line: ids and names only.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from handlers.redact import RedactingFilter

__all__ = [
    "ACTIVITY",
    "FIELDS",
    "JsonFormatter",
    "LogConfig",
    "TextFormatter",
    "log_activity",
    "setup_logging",
]

ACTIVITY = logging.getLogger("hookdock.activity")

FIELDS = ("request_id", "delivery_id", "event_id", "send_id", "sink", "route")
"""Record attributes the JSON format writes when a line has them."""

_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_HANDLER = "hookdock-stderr"

# Libraries whose debug output carries credentials (botocore logs signed canonical requests
# and request headers with the session token); held at INFO whatever --log-level says.
_CHATTY_LOGGERS = ("botocore", "aiobotocore", "s3transfer", "urllib3", "boto3")


def log_activity(message: str, *args: object, ids: Mapping[str, str]) -> None:
    """One ``hookdock.activity`` INFO line, ``ids`` as its fields, if the level lets it through.

    Like ``ACTIVITY.info`` but without looking up the calling file and line, which no format
    shows: that stack walk was a third of the cost of a line, and two lines go out per event.
    """
    if ACTIVITY.isEnabledFor(logging.INFO):
        record = ACTIVITY.makeRecord(
            ACTIVITY.name, logging.INFO, "(activity)", 0, message, args, None, extra=ids
        )
        ACTIVITY.handle(record)


class LogConfig(BaseModel):
    """``[log]``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["text", "json"] = "text"
    activity: bool = True
    """An INFO line per accepted delivery and per delivered send (``hookdock.activity``)."""
    level: Annotated[str, Field(pattern=r"^(?i:debug|info|warning|error|critical)$")] | None = None
    """Overrides ``--log-level`` / ``HOOKDOCK_LOG_LEVEL`` when set."""


class TextFormatter(logging.Formatter):
    """``time level logger: message``, the time as ``logging.Formatter`` writes it by default
    (local time, ``2026-01-02 03:04:05,678``), its seconds formatted once per second rather
    than once per line: a busy server logs hundreds of lines a second."""

    def __init__(self) -> None:
        super().__init__(_TEXT)
        self._second: int | None = None
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            # A handler formats under its lock: one line at a time.
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(record.created))
            self._second = second
        return f"{self._stamp},{int(record.msecs):03d}"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``,
    the ids the line is about, and ``exception`` with its traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def setup_logging(level: str, config: LogConfig | None = None) -> None:
    """Configure the root logger (again: ``serve`` knows the config only once it is read)."""
    config = config or LogConfig()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if config.format == "json" else TextFormatter())
    handler.set_name(_HANDLER)
    # Every line, from whatever library, passes the redaction of known secrets and
    # credential shapes on its way out (handlers.redact).
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    # Only our own handler is replaced: others (a test runner's capture) stay.
    for old in [h for h in root.handlers if h.get_name() == _HANDLER]:
        root.removeHandler(old)
    root.addHandler(handler)
    numeric = getattr(logging, (config.level or level).upper(), logging.INFO)
    root.setLevel(numeric)
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(max(numeric, logging.INFO))
    ACTIVITY.setLevel(logging.NOTSET if config.activity else logging.WARNING)
