"""Routing rules and per-sink settings: what picks an event's sinks, and errors naming the key."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from handlers.testing import make_event
from receiver.config import RetryConfig, load_config
from receiver.errors import ConfigError
from receiver.routing import Router, RuleConfig

TOKEN = "a-very-long-url-token-0123456789"


def router(*rules: dict[str, Any], default: tuple[str, ...] = ("archive",)) -> Router:
    return Router([RuleConfig.model_validate(r) for r in rules], default)


def test_no_rule_matches_so_the_route_default_applies() -> None:
    r = router({"kind": "transcript", "sinks": ["s3"]})
    assert r.sinks_for(make_event(kind="text_document")) == ("archive",)


def test_first_matching_rule_wins_and_can_fan_out() -> None:
    r = router(
        {"workspace_id": ["41", "42"], "sinks": ["s3", "archive"]},
        {"workspace_id": "42", "sinks": ["http"]},
    )
    assert r.sinks_for(make_event(workspace_id="42")) == ("s3", "archive")
    assert r.sinks_for(make_event(workspace_id="43")) == ("archive",)


def test_a_sink_named_twice_is_sent_to_once() -> None:
    r = router({"kind": "text_document", "sinks": ["s3", "archive", "s3"]}, default=("a", "a"))
    assert r.sinks_for(make_event()) == ("s3", "archive")
    assert r.sinks_for(make_event(kind="transcript")) == ("a",)


def test_every_condition_of_a_rule_must_hold() -> None:
    r = router({"vendor": "smartdocumentor", "kind": "transcript_file", "sinks": ["s3"]})
    assert r.sinks_for(make_event(kind="transcript_file")) == ("s3",)
    assert r.sinks_for(make_event(kind="transcript")) == ("archive",)
    assert r.sinks_for(make_event(kind="transcript_file", vendor="other")) == ("archive",)


def test_a_rule_can_drop_events() -> None:
    r = router({"batch_id": "b-test", "drop": True})
    assert r.sinks_for(make_event(batch_id="b-test")) == ()
    assert r.sinks_for(make_event(batch_id=None)) == ("archive",), "a missing id never matches"


@pytest.mark.parametrize(
    ("fields", "payload", "matches"),
    [
        ({"documentType": "invoice"}, {"documentType": "invoice"}, True),
        ({"documentType": "invoice"}, {"documentType": "receipt"}, False),
        ({"documentType": ["invoice", "receipt"]}, {"documentType": "receipt"}, True),
        ({"documentType": "invoice"}, {}, False),
        ({"totalPages": 3}, {"totalPages": 3}, True),
        ({"totalPages": "3"}, {"totalPages": 3}, True),
        ({"workspaceId": 7}, {"workspaceId": "7"}, True),
        ({"flag": True}, {"flag": 1}, False),
        ({"flag": True}, {"flag": True}, True),
        (
            {"chunks.0.entities.1.type": "iban"},
            {"chunks": [{"entities": [{}, {"type": "iban"}]}]},
            True,
        ),
        ({"chunks.1.type": "x"}, {"chunks": [{"type": "x"}]}, False),
        ({"a.b": "x"}, {"a": "not an object"}, False),
        ({"a": "x"}, {"a": {"b": "x"}}, False),
    ],
)
def test_payload_field_matches(
    fields: dict[str, Any], payload: dict[str, Any], matches: bool
) -> None:
    r = router({"fields": fields, "sinks": ["special"]})
    expected = ("special",) if matches else ("archive",)
    assert r.sinks_for(make_event(payload=payload)) == expected


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"kind": "x"}, "a rule needs sinks = [...] or drop = true"),
        ({"kind": "x", "sinks": ["a"], "drop": True}, "either drops events or names sinks"),
        ({"kinds": "x", "sinks": ["a"]}, "kinds"),
        ({"kind": [], "sinks": ["a"]}, "kind"),
    ],
)
def test_bad_rules_are_refused(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        RuleConfig.model_validate(rule)


CONFIG = """
[dispatcher]
retry = {{ max_attempts = 12, jitter = 0.1 }}

[[routes]]
name = "sd"
source = "smartdocumentor.text_document"
auth = {{ type = "url-token", token = "{token}" }}
sinks = {sinks}
{rules}

[sinks.archive]
type = "local"
root = "exports"
{archive}

[sinks.mirror]
type = "local"
root = "mirror"
"""


def load(tmp_path: Path, sinks: str = '["archive"]', rules: str = "", archive: str = "") -> Any:
    path = tmp_path / "hookdock.toml"
    text = CONFIG.format(token=TOKEN, sinks=sinks, rules=rules, archive=archive)
    path.write_text(text, encoding="utf-8")
    config, _ = load_config(path, env={})
    return config


def test_rules_in_config_name_known_sinks(tmp_path: Path) -> None:
    config = load(tmp_path, rules='rules = [{ kind = "text_document", sinks = ["mirror"] }]')
    assert config.routes[0].sink_names() == ["archive", "mirror"]
    with pytest.raises(ConfigError, match=r"routes\[0\]\.rules\[0\]\.sinks: no sink named 'nope'"):
        load(tmp_path, rules='rules = [{ kind = "text_document", sinks = ["nope"] }]')


def test_a_route_without_sinks_needs_rules(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"routes\[0\]: sinks: name at least one sink"):
        load(tmp_path, sinks="[]")
    config = load(
        tmp_path, sinks="[]", rules='rules = [{ workspace_id = "7", sinks = ["mirror"] }]'
    )
    assert config.routes[0].sinks == []


def test_a_sink_retry_table_is_merged_over_the_dispatcher_default(tmp_path: Path) -> None:
    config = load(tmp_path, archive="retry = { max_attempts = 3, schedule = [1, 2] }")
    archive, mirror = config.sink_retry("archive"), config.sink_retry("mirror")
    assert (archive.max_attempts, archive.schedule, archive.jitter) == (3, (1.0, 2.0), 0.1)
    assert (mirror.max_attempts, mirror.schedule, mirror.jitter) == (12, None, 0.1)
    assert config.sink_host("archive").concurrency is None


def test_exponential_backoff_replaces_the_schedule_per_sink() -> None:
    base = RetryConfig(schedule=(1, 2))
    merged = base.merged({"base_seconds": 3})
    assert (merged.schedule, merged.base_seconds) == (None, 3)


@pytest.mark.parametrize(
    ("archive", "message"),
    [
        ("retry = { max_atempts = 3 }", r"sinks\.archive\.retry\.max_atempts: unknown key"),
        ("retry = { max_attempts = 0 }", r"sinks\.archive\.retry\.max_attempts: .*greater than"),
        (
            "retry = { schedule = [1], base_seconds = 2 }",
            r"sinks\.archive\.retry: give either schedule or base_seconds",
        ),
        ("concurrency = 0", r"sinks\.archive\.concurrency: .*greater than or equal to 1"),
    ],
)
def test_bad_per_sink_settings_name_the_key(tmp_path: Path, archive: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, archive=archive)
