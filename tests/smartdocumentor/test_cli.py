"""``hookdock smartdocumentor create-batch|submit``, ``hookdock poll NAME``, ``hookdock pollers``
against the emulator, as a user runs them (each a process of its own)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from handlers.smartdocumentor.emulator import Emulator
from tests.conftest import SD_ROUTES, make_config, run_cli

pytestmark = pytest.mark.e2e


def config(tmp_path: Path, api_url: str) -> Path:
    api = {
        "base_url": api_url,
        "client_id": "emulator",
        "client_secret": "${SD_SECRET}",
        "allow_networks": ["127.0.0.1/32"],
    }
    pollers = [
        {
            "name": "sd-reconcile",
            "type": "smartdocumentor.reconcile",
            "sinks": ["exports"],
            "settings": {"api": api, "route": SD_ROUTES["text_document"], "grace_seconds": 0},
        },
        {
            "name": "sd-batches",
            "type": "smartdocumentor.batches",
            "sinks": ["exports"],
            "settings": {"api": api},
        },
    ]
    path = tmp_path / "hookdock.toml"
    path.write_text(make_config(tmp_path, pollers=pollers), encoding="utf-8")
    return path


ENV = {"SD_SECRET": "emulator-secret"}


def test_submit_then_poll_by_hand(tmp_path: Path, emulator: tuple[Emulator, str]) -> None:
    emu, url = emulator
    path = config(tmp_path, url)

    def cli(*args: str) -> tuple[int, str, str]:
        done = run_cli(*args, config=path, cwd=tmp_path, env=ENV)
        assert "emulator-secret" not in done.stdout + done.stderr
        return done.returncode, done.stdout, done.stderr

    code, out, err = cli("smartdocumentor", "create-batch", "--display-name", "March")
    assert code == 0, err
    batch = json.loads(out)
    assert (batch["displayName"], batch["totalTasks"]) == ("March", 0)
    code, out, err = cli(
        "smartdocumentor",
        "submit",
        "--batch",
        str(batch["batchId"]),
        "--url",
        "https://files.example.com/in/inv%201.pdf",
        "--url",
        "https://files.example.com/in/inv2.pdf",
        "--external-id",
        "inv-",
        "--metadata",
        '{"team": "ap"}',
    )
    assert code == 0, err
    tasks = json.loads(out)["tasks"]
    assert [(t["displayName"], t["externalId"], t["batchId"]) for t in tasks] == [
        ("inv 1.pdf", "inv-1", batch["batchId"]),
        ("inv2.pdf", "inv-2", batch["batchId"]),
    ]
    assert emu.tasks[tasks[0]["taskId"]].metadata == {"team": "ap"}

    # Both are exported at the vendor, and both webhooks are lost.
    emu.set_faults(drop_webhooks={t["taskId"] for t in tasks})
    emu.review()
    code, out, err = cli("poll", "sd-reconcile")
    assert code == 0, err
    report = json.loads(out)
    assert (report["ok"], report["new"], report["duplicates"]) == (True, 4, 0)  # 2 + 2 recovered
    code, out, err = cli("poll", "sd-reconcile")
    assert json.loads(out)["new"] == 0
    code, out, err = cli("poll", "sd-batches")
    assert (code, json.loads(out)["new"]) == (0, 1), err

    code, out, err = cli("pollers", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert rows["sd-reconcile"]["polls"] == 2 and rows["sd-reconcile"]["found"] == 4
    assert rows["sd-reconcile"]["totals"] == {"missing": 2, "recovered": 2}
    assert rows["sd-batches"]["totals"] == {"completed": 1, "open": 0}
    assert rows["sd-batches"]["held_by"] is None  # `poll` let go of it
    code, out, _ = cli("pollers")
    assert code == 0 and "sd-reconcile" in out and "smartdocumentor.batches" in out

    code, _, err = cli("poll", "nope")
    assert code == 2 and "no poller named 'nope'" in err


def test_a_vendor_failure_exits_non_zero_and_is_shown(
    tmp_path: Path, emulator: tuple[Emulator, str]
) -> None:
    emu, url = emulator
    path = config(tmp_path, url)
    emu.set_faults(fail_5xx=5)
    done = run_cli("poll", "sd-reconcile", config=path, cwd=tmp_path, env=ENV)
    assert done.returncode == 1
    assert "HTTP 503" in json.loads(done.stdout)["error"]
    rows = json.loads(run_cli("pollers", "--json", config=path, cwd=tmp_path, env=ENV).stdout)
    assert rows["sd-reconcile"]["failures"] == 1
    assert "HTTP 503" in rows["sd-reconcile"]["last_error"]
