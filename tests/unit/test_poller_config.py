"""``[[pollers]]``: strict keys, references, the plugin's own settings, secrets kept out."""

from __future__ import annotations

from pathlib import Path

import pytest

from receiver.config import load_config
from receiver.errors import ConfigError
from receiver.plugins import load_plugins
from tests.unit.test_config import GOOD, TOKEN, write

SECRET = "sd-client-secret-do-not-print"

POLLER = """
[[pollers]]
name = "sd-reconcile"
type = "smartdocumentor.reconcile"
interval_seconds = 300
sinks = ["archive"]
settings = { route = "sd-invoices", api = { client_id = "c", client_secret = "${SD_SECRET}" } }
"""


def problems(tmp_path: Path, text: str) -> str:
    env = {"SD_TOKEN": TOKEN, "SD_SECRET": SECRET}

    def load() -> None:
        config, base = load_config(write(tmp_path, text), env=env)
        load_plugins(config, base).raise_problems()

    with pytest.raises(ConfigError) as info:
        load()
    message = str(info.value)
    assert SECRET not in message
    return message


def test_a_poller_loads_through_its_entry_point(tmp_path: Path) -> None:
    env = {"SD_TOKEN": TOKEN, "SD_SECRET": SECRET}
    config, base = load_config(write(tmp_path, GOOD + POLLER), env=env)
    plugins = load_plugins(config, base)
    assert plugins.problems == []
    poller = plugins.pollers["sd-reconcile"]
    assert type(poller).__name__ == "ReconcilePoller"
    assert SECRET not in repr(poller.settings)  # type: ignore[attr-defined]


def test_a_typo_names_the_key(tmp_path: Path) -> None:
    message = problems(tmp_path, GOOD + POLLER.replace("interval_seconds", "intervall_seconds"))
    assert "pollers[0].intervall_seconds" in message


def test_a_settings_typo_names_the_key_and_plugin(tmp_path: Path) -> None:
    message = problems(tmp_path, GOOD + POLLER.replace('route = "', 'rout = "'))
    assert "pollers[0].settings.rout" in message and "(plugin smartdocumentor.reconcile)" in message


def test_an_unknown_type_lists_what_is_installed(tmp_path: Path) -> None:
    message = problems(tmp_path, GOOD + POLLER.replace(".reconcile", ".reconcil"))
    assert "unknown poller type 'smartdocumentor.reconcil'" in message
    assert "smartdocumentor.reconcile" in message


def test_names_and_sinks_are_checked(tmp_path: Path) -> None:
    clash = problems(tmp_path, GOOD + POLLER.replace('"sd-reconcile"', '"sd-invoices"'))
    assert "pollers[0].name: 'sd-invoices' is already a route or poller name" in clash
    unknown = problems(tmp_path, GOOD + POLLER.replace('sinks = ["archive"]', 'sinks = ["nope"]'))
    assert "pollers[0].sinks: no sink named 'nope'" in unknown
