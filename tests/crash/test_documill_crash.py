"""A Documill watch under SIGKILL: the server is killed in the middle of reading a batch, again.

A batch of 40 tasks is submitted once with ``hookdock documill submit``.  Dynamo answers slowly,
so a poll (the batch, then one read per finished task) spans many calls; the server is killed
with SIGKILL after a seeded number of them, three times, then a last server runs until the
batch is out.  The batch is posted once (a restart submits nothing), every task is one event
(the dedupe keys: a task read again after a restart is nothing new, so no second event with
files of its own is exported), no task is skipped (the state is saved only after what a poll
found is journaled), and ``batch.completed`` comes once.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from handlers.documill.emulator import DocumillEmulator, EmulatorSettings, result_bytes
from handlers.emulation import serve_in_thread
from tests.conftest import make_config, run_cli, run_hookdock, wait_until

pytestmark = [pytest.mark.crash, pytest.mark.e2e]

TASKS = 40
SEED = 1616
ENV = {"DYNAMO_KEY": "emulator-key"}


def calls_reach(emu: DocumillEmulator, target: int) -> bool:
    return sum(emu.calls.values()) >= target


def test_a_watch_survives_sigkill(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    emu = DocumillEmulator(EmulatorSettings(task_seconds=0.01))
    with serve_in_thread(emu.app, "documill") as api_url:
        emu.settings = emu.settings.model_copy(update={"public_url": api_url})
        poller = {
            "name": "dynamo",
            "type": "documill.batches",
            "interval_seconds": 0.3,
            "jitter": 0,
            "max_backoff_seconds": 1,
            "sinks": ["exports"],
            "files": {"fetch": ["exported"], "allow_networks": ["127.0.0.1/32"]},
            "settings": {
                "api": {
                    "base_url": api_url,
                    "tenant_id": "emulator-tenant",
                    "api_key": "${DYNAMO_KEY}",
                    "allow_networks": ["127.0.0.1/32"],
                },
            },
        }
        config = make_config(
            tmp_path, pollers=[poller], cluster={"heartbeat_seconds": 0.25, "stale_seconds": 1.0}
        )
        batch = {"template": "tpl", "tasks": [{"params": {"id": f"r{n}"}} for n in range(TASKS)]}
        (tmp_path / "batch.json").write_text(json.dumps(batch))
        exports = tmp_path / "exports"
        emu.set_faults(slow_seconds=0.03)
        submitted = False
        for _ in range(3):
            with run_hookdock(tmp_path / "run", config, env=ENV) as server:
                if not submitted:
                    done = run_cli(
                        "documill", "submit", "--batch", str(tmp_path / "batch.json"),
                        config=server.config_path, env=ENV,
                    )  # fmt: skip
                    assert done.returncode == 0, done.stderr
                    submitted = True
                target = sum(emu.calls.values()) + rng.randint(3, 30)
                wait_until(partial(calls_reach, emu, target), 30, 0.01, server.describe)
                assert server.proc is not None
                server.proc.kill()
        emu.set_faults(slow_seconds=0)
        (batch_id,) = emu.batches

        def found() -> dict[str, dict[str, set[str]]]:
            out: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
            for path in exports.rglob("*.json"):
                event: dict[str, Any] = json.loads(path.read_bytes())
                out[event["kind"]][event["task_id"] or event["batch_id"]].add(event["event_id"])
            return out

        with run_hookdock(tmp_path / "run", config, env=ENV) as server:
            wait_until(
                lambda: len(found()["task.completed"]) == TASKS and found()["batch.completed"],
                60,
                0.2,
                server.describe,
            )
    events = found()
    assert emu.calls["post"] == 1 and len(emu.batches) == 1
    tasks = {t.task_id: t for t in emu.batches[batch_id].tasks}
    assert set(events["task.completed"]) == set(tasks)
    assert all(len(ids) == 1 for ids in events["task.completed"].values()), events
    assert [len(ids) for ids in events["batch.completed"].values()] == [1]
    assert [len(ids) for ids in events["batch.submitted"].values()] == [1]
    for task_id, (event_id,) in events["task.completed"].items():
        (stored,) = list(exports.rglob(f"*{event_id}*.pdf"))
        assert stored.read_bytes() == result_bytes(batch_id, task_id, tasks[task_id].params)
