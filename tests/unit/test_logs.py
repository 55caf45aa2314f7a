"""The JSON log format: one object a line, with the ids a line is about and its traceback."""

from __future__ import annotations

import json
import logging
import sys

from handlers.redact import RedactingFilter
from receiver.logs import ACTIVITY, JsonFormatter, TextFormatter, log_activity


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord("hookdock.x", logging.ERROR, __file__, 1, "sent %s", ("e1",), None)
    record.__dict__.update(extra)
    return record


def test_a_line_is_one_object_with_its_ids() -> None:
    line = JsonFormatter().format(_record(delivery_id="d1", event_id="d1-0", sink="s", other=1))
    assert "\n" not in line
    out = json.loads(line)
    assert out["message"] == "sent e1"
    assert (out["level"], out["logger"]) == ("error", "hookdock.x")
    assert (out["delivery_id"], out["event_id"], out["sink"]) == ("d1", "d1-0", "s")
    assert "other" not in out and "request_id" not in out
    assert out["time"].endswith("+00:00")


def test_an_exception_keeps_its_traceback_inside_the_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record()
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["exception"]


def test_an_activity_line_carries_its_ids_and_passes_redaction() -> None:
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect()
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    ACTIVITY.addHandler(handler)
    level = ACTIVITY.level
    try:
        ACTIVITY.setLevel(logging.INFO)
        log_activity("sent %s with token=%s", "e1", "abc123", ids={"event_id": "e1", "sink": "s"})
        ACTIVITY.setLevel(logging.WARNING)  # [log] activity = false
        log_activity("sent %s", "e2", ids={"event_id": "e2"})
    finally:
        ACTIVITY.removeHandler(handler)
        ACTIVITY.setLevel(level)
    [line] = lines
    out = json.loads(line)
    assert out["message"] == "sent e1 with token=REDACTED"
    assert (out["level"], out["logger"]) == ("info", "hookdock.activity")
    assert (out["event_id"], out["sink"]) == ("e1", "s")


def test_the_text_time_is_the_standard_formatters() -> None:
    plain, text = logging.Formatter("%(asctime)s %(message)s"), TextFormatter()
    for created in (1_700_000_000.0, 1_700_000_000.999, 1_700_000_001.5, 1_700_000_000.25):
        record = _record()
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert text.formatTime(record) == plain.formatTime(record)
    assert text.format(record).endswith(" ERROR hookdock.x: sent e1")
