"""Reconciliation end to end: the emulator, a real ``hookdock serve``, webhooks that get lost.

A batch of text documents is submitted with ``hookdock smartdocumentor submit``.  The emulator
reviews a set of tasks and posts their export webhooks to hookdock, dropping a
known few.  The ``smartdocumentor.reconcile`` poller, running inside ``hookdock serve``, must
report exactly those as ``task.missing`` and recover the text documents among them, as if the
webhook had come; a token that expires in the middle of paging, a 429 and a 503 must not stop
it, and a webhook that arrives late must not be a second event.  ``batch.completed`` comes
once, after the batch's last task.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from handlers.smartdocumentor.emulator import (
    Emulator,
    EmulatorSettings,
    call_in_loop,
    run_in_thread,
)
from tests.conftest import CREDS, SD_ROUTES, make_config, run_cli, run_hookdock, wait_until

pytestmark = pytest.mark.e2e

TEXT_ROUTE = SD_ROUTES["text_document"]
TRANSCRIPT_ROUTE = SD_ROUTES["transcript"]


def exported(root: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_bytes()) for p in root.rglob("*.json")]


def by_kind(events: list[dict[str, Any]]) -> dict[str, Counter[str]]:
    out: dict[str, Counter[str]] = {}
    for event in events:
        subject = event["task_id"] or event["batch_id"]
        out.setdefault(event["kind"], Counter())[subject] += 1
    return out


def test_reconciliation_finds_exactly_the_lost_webhooks(tmp_path: Path) -> None:
    emu = Emulator(EmulatorSettings(workspaces={1: "text_document", 2: "transcript"}))
    with run_in_thread(emu) as api_url:
        poller = {
            "name": "sd-reconcile",
            "type": "smartdocumentor.reconcile",
            "interval_seconds": 0.5,
            "jitter": 0,
            "max_backoff_seconds": 1,
            "sinks": ["exports"],
            "settings": {
                "api": {
                    "base_url": api_url,
                    "client_id": "emulator",
                    "client_secret": "emulator-secret",
                    "allow_networks": ["127.0.0.1/32"],
                    "page_size": 4,
                },
                "route": TEXT_ROUTE,
                "grace_seconds": 0,
            },
        }
        batches = {
            "name": "sd-batches",
            "type": "smartdocumentor.batches",
            "interval_seconds": 0.5,
            "jitter": 0,
            "max_backoff_seconds": 1,
            "sinks": ["exports"],
            "settings": {"api": poller["settings"]["api"]},  # type: ignore[index]
        }
        config = make_config(tmp_path, pollers=[poller, batches])
        exports = tmp_path / "exports"
        with run_hookdock(tmp_path / "run", config) as server:
            base = f"{server.url}/hooks"
            emu.settings = emu.settings.model_copy(
                update={
                    "webhook_urls": {
                        "text_document": f"{base}/{TEXT_ROUTE}/{CREDS.url_token}",
                        "transcript": f"{base}/{TRANSCRIPT_ROUTE}/{CREDS.url_token}",
                    }
                }
            )
            # A batch of 14 text documents, submitted as a user would.
            urls = [f"--url=https://files.example.com/in/{n}.pdf" for n in range(14)]
            cli = ("smartdocumentor", "submit", "--display-name", "March", *urls)
            submitted = run_cli(*cli, config=server.config_path, cwd=server.folder)
            assert submitted.returncode == 0, submitted.stderr
            created = json.loads(submitted.stdout)
            batch_id = str(created["batch"]["batchId"])
            texts = [t["taskId"] for t in created["tasks"]]
            transcripts = [emu.add_task(workspace_id=2) for _ in range(5)]
            waiting = emu.add_task(workspace_id=1)  # never reviewed: not missing
            dropped = {texts[1], texts[6], texts[13], transcripts[3]}
            # Tokens die after 3 calls (a 401 mid-paging); one 429, then one 503.
            emu.set_faults(drop_webhooks=dropped, token_calls=3, rate_limit=1, fail_5xx=1)
            # All but the batch's last text document first: the batch is not complete.
            first = call_in_loop(emu, emu.review_and_post(limit=13))
            listings = emu.listings
            wait_until(lambda: emu.listings >= listings + 6, 30, message=server.describe)
            assert "batch.completed" not in by_kind(exported(exports))
            posted = first + call_in_loop(emu, emu.review_and_post(limit=6))
            assert posted == 19 - len(dropped)
            assert emu.webhooks("dropped") == dropped

            def settled() -> dict[str, Counter[str]]:
                kinds = by_kind(exported(exports))
                missing = kinds.get("task.missing", Counter())
                text = kinds.get("text_document", Counter())
                done = kinds.get("batch.completed", Counter())
                if len(missing) >= len(dropped) and len(text) >= len(texts) and done:
                    return kinds
                return {}

            kinds = wait_until(settled, 30, 0.1, lambda: server.describe())
            assert set(kinds["task.missing"]) == {str(t) for t in dropped}
            assert set(kinds["text_document"]) == {str(t) for t in texts}
            assert set(kinds["transcript"]) == {str(t) for t in transcripts} - {str(transcripts[3])}
            assert str(waiting) not in kinds["text_document"]
            assert kinds["batch.completed"] == Counter({batch_id: 1})
            [completed] = [e for e in exported(exports) if e["kind"] == "batch.completed"]
            assert completed["payload"]["task_ids"] == [str(t) for t in texts]
            # A late webhook for a recovered text document is not a second event.
            late = emu.tasks[texts[6]].export
            assert late is not None
            answer = httpx.post(
                f"{base}/{TEXT_ROUTE}/{CREDS.url_token}",
                content=late,
                headers={"content-type": "application/json"},
                trust_env=False,
            )
            assert answer.status_code == 200 and "already accepted" in answer.text
            # Further polls (overlapping windows) report nothing again.
            polls_before = emu.calls["sdtask/statuslistpaginated"]
            wait_until(lambda: emu.calls["sdtask/statuslistpaginated"] > polls_before + 10, 30)
            again = by_kind(exported(exports))
            assert all(n == 1 for counter in again.values() for n in counter.values()), again
            missing_events = [e for e in exported(exports) if e["kind"] == "task.missing"]
            recovered = {e["task_id"] for e in missing_events if e["payload"]["recovered"]}
            assert recovered == {str(texts[1]), str(texts[6]), str(texts[13])}

            status = run_cli("status", config=server.config_path, cwd=server.folder)
            assert status.returncode == 0, status.stderr
            pollers_status = json.loads(status.stdout)["pollers"]
            assert pollers_status["sd-batches"]["totals"]["completed"] == 1
            summary = pollers_status["sd-reconcile"]
            assert summary["totals"] == {"missing": 4, "recovered": 3}
            assert summary["failures"] == 0 and summary["polls"] >= 3
            pollers = run_cli("pollers", "--json", config=server.config_path, cwd=server.folder)
            row = json.loads(pollers.stdout)["sd-reconcile"]
            assert row["held_by"] is not None and row["found"] == 7
    # The 429, the 503 and the expiring tokens were all met (and survived).
    assert emu.faults.rate_limit == 0 and emu.faults.fail_5xx == 0
    assert emu.calls["/connect/token"] >= 3
    assert "emulator-secret" not in server.stderr_text()
