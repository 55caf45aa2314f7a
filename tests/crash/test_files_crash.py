"""Crash test: SIGKILL the server while it streams a file into a folder and an HTTP receiver.

The file server stalls both downloads halfway, so the kill lands mid-transfer for certain: the
local sink has a partial ``.part`` file beside its target, and the HTTP sink a spool, which
must be anonymous (no name on disk) so that the kill leaves nothing of it.  The next start
takes the sends over (their owner is dead), fetches again, and every destination ends with
the whole file exactly once, the partial file gone.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.conftest import run_hookdock, wait_until
from tests.e2e.test_files_e2e import HOOK_SECRET, config, event_json, post, stored
from tests.file_server import Fault, FileServer
from tests.webhook_receiver import WebhookReceiver

pytestmark = [pytest.mark.crash, pytest.mark.timeout(120)]

SIZE = 3 * 1024 * 1024
HALF = SIZE // 2


def open_spools(pid: int) -> list[str]:
    """The process's open files under a ``spool`` folder (anonymous ones show as deleted)."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if "/spool/" in target:
            found.append(target)
    return found


def test_a_kill_mid_transfer_leaves_no_spool_and_the_restart_completes(tmp_path: Path) -> None:
    data = os.urandom(SIZE)
    root = tmp_path / "exports"
    with FileServer() as files, WebhookReceiver(secret=HOOK_SECRET) as rx:
        files.add("big.pdf", data)
        files.script("big.pdf", [Fault(stall_after=HALF), Fault(stall_after=HALF)])
        link = files.sas_url("big.pdf")
        cfg = config(tmp_path, None, hook_url=f"{rx.url}/hook", fetch=["exported"])

        with run_hookdock(tmp_path, cfg) as server:
            event_id = f"{post(server, link)}-0"
            assert server.proc is not None
            pid = server.proc.pid

            def both_stalled_halfway() -> bool:
                partial = list(root.rglob(f".*{event_id}.exported*.part"))
                spools = open_spools(pid)
                return bool(partial) and partial[0].stat().st_size == HALF and bool(spools)

            wait_until(both_stalled_halfway, 20, message=server.describe)
            spools = open_spools(pid)
            assert all(s.endswith("(deleted)") for s in spools), spools
            server.send_signal(signal.SIGKILL)
            assert server.wait(10) == -signal.SIGKILL

        assert os.listdir(tmp_path / "spool") == [], "the kill left a spool file behind"
        assert list(root.rglob(".*.part")), "the kill should have left the partial file"
        files.release_stalls()

        with run_hookdock(tmp_path, cfg) as again:
            event = wait_until(lambda: event_json(root, event_id), 30, message=again.describe)
            rx.wait_for(lambda: event_id in rx.stored("/hook"), timeout=30)

    assert stored(root, event_id, "exported").read_bytes() == data
    assert not list(root.rglob(".*.part")), "the retry removes the killed writer's partial file"
    assert rx.stored_files("/hook") == {f"{event_id}.exported": data}
    assert event["files"][0]["size"] == SIZE
    assert len(files.requests("big.pdf")) == 4
