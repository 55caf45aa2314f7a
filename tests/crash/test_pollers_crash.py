"""Pollers under SIGKILL: a server killed in the middle of reconciliation, again and again.

Every webhook of 40 text documents is lost, so each must come out once as ``task.missing`` and
once as a recovered ``text_document``.  The emulator answers slowly, so a poll (pages, then one
``GetExportData`` per task) spans many API calls; the server is killed with SIGKILL after a
seeded number of them, three times, then a last server runs until everything is out.  Nothing
may be exported twice (the dedupe keys and subjects), and nothing may be skipped (the state is
saved only after what a poll found is in the journal).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from handlers.smartdocumentor.emulator import Emulator, EmulatorSettings, run_in_thread
from tests.conftest import SD_ROUTES, make_config, run_hookdock, wait_until

pytestmark = [pytest.mark.crash, pytest.mark.e2e]

TASKS = 40
SEED = 1414


def counts(root: Path) -> dict[str, Counter[str]]:
    out: dict[str, Counter[str]] = {}
    for path in root.rglob("*.json"):
        event: dict[str, Any] = json.loads(path.read_bytes())
        out.setdefault(event["kind"], Counter())[event["task_id"]] += 1
    return out


def calls_reach(emu: Emulator, target: int) -> Callable[[], bool]:
    return lambda: sum(emu.calls.values()) >= target


def test_reconciliation_survives_sigkill(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    emu = Emulator(EmulatorSettings())
    with run_in_thread(emu) as api_url:
        tasks = [emu.add_task(workspace_id=1) for _ in range(TASKS)]
        emu.set_faults(drop_webhooks=set(tasks), slow_seconds=0.02)
        emu.review()
        poller = {
            "name": "sd-reconcile",
            "type": "smartdocumentor.reconcile",
            "interval_seconds": 0.3,
            "jitter": 0,
            "max_backoff_seconds": 1,
            "sinks": ["exports"],
            "settings": {
                "api": {
                    "base_url": api_url,
                    "client_id": "emulator",
                    "client_secret": "emulator-secret",
                    "allow_networks": ["127.0.0.1/32"],
                    "page_size": 5,
                },
                "route": SD_ROUTES["text_document"],
                "grace_seconds": 0,
            },
        }
        config = make_config(
            tmp_path,
            pollers=[poller],
            cluster={"heartbeat_seconds": 0.25, "stale_seconds": 1.0},
        )
        exports = tmp_path / "exports"
        for _ in range(3):
            with run_hookdock(tmp_path / "run", config) as server:
                target = sum(emu.calls.values()) + rng.randint(3, 50)
                wait_until(calls_reach(emu, target), 30, message=server.describe)
                assert server.proc is not None
                server.proc.kill()
                server.proc.wait(10)
        with run_hookdock(tmp_path / "run", config) as server:

            def complete() -> bool:
                found = counts(exports)
                return all(
                    len(found.get(kind, {})) == TASKS for kind in ("task.missing", "text_document")
                )

            wait_until(complete, 60, 0.1, lambda: f"{counts(exports)}\n{server.describe()}")
            done = emu.calls.get("sdtask/statuslistpaginated", 0)
            # One more full poll after completion: it must find nothing new.
            wait_until(lambda: emu.calls.get("sdtask/statuslistpaginated", 0) >= done + 9, 30)
    found = counts(exports)
    expected = {str(t) for t in tasks}
    for kind in ("task.missing", "text_document"):
        assert set(found[kind]) == expected
        doubled = {t: n for t, n in found[kind].items() if n != 1}
        assert doubled == {}, f"{kind} exported more than once: {doubled}"
