"""Who polls: two ``hookdock serve`` replicas on one PostgreSQL journal poll once per interval,
and ``hookdock poll NAME`` beside a running service asks that service to poll.

Both run the same ``[[pollers]]``; the named lease ``poller:<name>`` lets one of them poll.
Every successful poll of ``smartdocumentor.reconcile`` begins exactly one paged listing at the
emulator and is saved once in the journal, so the two counts must agree: had both replicas
polled, the emulator would have seen about twice the listings the journal counts (the other
replica's saves are refused without the lease).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from handlers.smartdocumentor.emulator import Emulator, EmulatorSettings, run_in_thread
from tests.conftest import make_config, pg_journal_table, run_cli, run_hookdock, wait_until

pytestmark = pytest.mark.e2e

INTERVAL = 0.5


@pytest.mark.postgres
def test_two_replicas_poll_once_per_interval(tmp_path: Path, pg_dsn: str, pg_schema: str) -> None:
    emu = Emulator(EmulatorSettings())
    with run_in_thread(emu) as api_url:
        for _ in range(12):
            emu.add_task()
        poller = {
            "name": "sd-reconcile",
            "type": "smartdocumentor.reconcile",
            "interval_seconds": INTERVAL,
            "jitter": 0,
            "sinks": ["exports"],
            "settings": {
                "api": {
                    "base_url": api_url,
                    "client_id": "emulator",
                    "client_secret": "emulator-secret",
                    "allow_networks": ["127.0.0.1/32"],
                    "page_size": 5,
                },
            },
        }
        config = make_config(
            tmp_path,
            journal={"path": None, **pg_journal_table(pg_dsn, pg_schema)},
            pollers=[poller],
        )
        with contextlib.ExitStack() as stack:
            servers = [
                stack.enter_context(run_hookdock(tmp_path / f"replica-{n}", config))
                for n in range(2)
            ]
            wait_until(lambda: emu.listings >= 8, 30, message=servers[0].describe)
            # Stop both first, so no poll is in flight when the counts are compared.
            for server in servers:
                server.stop()
            listings = emu.listings
        done = run_cli("pollers", "--json", config=servers[0].config_path, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)["sd-reconcile"]
    assert row["failures"] == 0
    # A poll cut by the stop may have listed without saving: at most one.
    assert row["polls"] <= listings <= row["polls"] + 1, (row, listings)


def test_poll_now_asks_the_running_service(tmp_path: Path) -> None:
    """``hookdock poll NAME`` beside a service that holds the lease: the service polls."""
    emu = Emulator(EmulatorSettings())
    with run_in_thread(emu) as api_url:
        poller = {
            "name": "sd-reconcile",
            "type": "smartdocumentor.reconcile",
            "interval_seconds": 3600,  # once at start, then not for an hour
            "sinks": ["exports"],
            "settings": {
                "api": {
                    "base_url": api_url,
                    "client_id": "emulator",
                    "client_secret": "emulator-secret",
                    "allow_networks": ["127.0.0.1/32"],
                },
            },
        }
        config = make_config(tmp_path, pollers=[poller])
        with run_hookdock(tmp_path / "run", config) as server:
            wait_until(lambda: emu.listings == 1, 30, message=server.describe)
            asked = run_cli("poll", "sd-reconcile", config=server.config_path, cwd=server.folder)
            assert asked.returncode == 0, asked.stderr
            assert "runs in another process: asked it to poll now" in asked.stdout
            wait_until(lambda: emu.listings == 2, 30, message=server.describe)
