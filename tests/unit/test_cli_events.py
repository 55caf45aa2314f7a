"""``hookdock events list|show|replay|retry-now``, ``purge``, ``retry`` of what is delivered,
``--version`` and ``--log-level``: their exact output, over a real SQLite journal."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from handlers.event import Event, FileRef, RawDelivery
from receiver.cli import main
from receiver.ids import new_id
from receiver.journal import Outcome, SqliteJournal

CONFIG = """\
[journal]
path = "j.db"

[[routes]]
name = "r"
source = "smartdocumentor.text_document"
auth = { type = "url-token", token = "${SD_TOKEN_THAT_IS_NOT_SET}" }
sinks = ["exports", "hook"]

[sinks.exports]
type = "local"
root = "exports"

[sinks.hook]
type = "local"
root = "hook"
"""

SAS = "https://a.blob.core.windows.net/c/f.pdf?sv=2022-11-02&se=2030-01-01&sig=S3CRET"
RECEIVED = datetime(2026, 3, 1, 8, 30, 15, tzinfo=UTC)


async def _journaled(path: Path) -> str:
    """A delivery whose event went to ``exports`` (delivered) and ``hook`` (dead)."""
    journal = SqliteJournal(path).open()
    try:
        ms = int(RECEIVED.timestamp() * 1000)
        d = RawDelivery(
            delivery_id=f"{ms:012x}{new_id()[12:]}",
            route="r",
            source="smartdocumentor.text_document",
            received_at=RECEIVED,
            content_type="application/json",
            body=json.dumps({"taskId": "task-9", "exportedFileUrl": SAS}).encode(),
        )
        await journal.append(d, d.delivery_id)
        [claim] = await journal.claim("w", 1, 60)
        e = Event(
            event_id=d.event_id(0),
            delivery_id=d.delivery_id,
            vendor="smartdocumentor",
            kind="text_document",
            route="r",
            received_at=RECEIVED,
            task_id="task-9",
            display_name="Invoice.pdf",
            files=(FileRef(role="exported", url=SAS),),
        )
        exports, hook = sorted(
            await journal.route(claim, "w", [(e, "exports"), (e, "hook")], {"exports", "hook"}, 60),
            key=lambda s: s.sink,
        )
        await journal.finish_send(exports, "w", Outcome.delivered())
        await journal.finish_send(hook, "w", Outcome.dead("410 Gone", code="gone"))
        return d.delivery_id
    finally:
        await journal.close()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "hookdock.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


@pytest.fixture
def delivery_id(config: Path) -> str:
    return asyncio.run(_journaled(config.parent / "j.db"))


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_list_prints_labelled_columns_with_the_zone(
    config: Path, delivery_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(capsys, "events", "list", "--config", str(config))
    assert (code, err) == (0, "")
    head, row, footer = out.splitlines()
    assert re.split(r"\s{2,}", head) == [
        "RECEIVED (UTC)",
        "EVENT",
        "STATE",
        "ROUTE",
        "KIND",
        "TASK",
        "NAME",
        "SENDS",
    ]
    assert re.split(r"\s{2,}", row) == [
        "2026-03-01 08:30:15",
        f"{delivery_id}-0",
        "dead",
        "r",
        "text_document",
        "task-9",
        "Invoice.pdf",
        "exports:delivered hook:dead",
    ]
    assert footer == "page 1: 1 of 1 events"
    code, out, _ = _run(capsys, "events", "list", "--state", "pending", "--config", str(config))
    assert (code, out) == (0, "no events match\n")


def test_list_as_json_is_the_apis_envelope(
    config: Path, delivery_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(
        capsys,
        "events",
        "list",
        "--sink",
        "hook",
        "--state",
        "dead",
        "--json",
        "--config",
        str(config),
    )
    page = json.loads(out)
    assert code == 0
    assert (page["totalCount"], page["items"][0]["deliveryId"]) == (1, delivery_id)
    assert page["items"][0]["receivedAt"] == "2026-03-01T08:30:15Z"


def test_show_takes_either_id_and_redacts(
    config: Path, delivery_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for ref in (delivery_id, f"{delivery_id}-0"):
        code, out, _ = _run(capsys, "events", "show", ref, "--config", str(config))
        assert code == 0
        assert "S3CRET" not in out
        lines = out.splitlines()
        assert lines[0] == f"delivery {delivery_id}"
        assert "  received    2026-03-01 08:30:15 UTC" in lines
        assert f'event {delivery_id}-0  text_document  task task-9  "Invoice.pdf"' in lines
        hook = next(line for line in lines if line.startswith("  -> hook"))
        assert re.fullmatch(r"  -> hook  send \d+  dead  \[gone\]", hook), hook
        assert any(
            re.fullmatch(r"       #1  \S+ \S+ UTC  dead  \d\.\d{3} s  410 Gone", x) for x in lines
        )
        assert "payload (as received; credentials redacted)" in lines
        assert (
            '    "exportedFileUrl": "https://a.blob.core.windows.net/c/f.pdf?sv=2022-11-02&se=2030-01-01&sig=REDACTED"'
            in lines
        )


def test_deliveries_with_an_id_shows_that_one_as_events_show_does(
    config: Path, delivery_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, shown, _ = _run(capsys, "events", "show", delivery_id, "--config", str(config))
    assert code == 0
    for ref in (delivery_id, f"{delivery_id}-0"):
        code, out, _ = _run(capsys, "deliveries", ref, "--config", str(config))
        assert code == 0
        assert out.splitlines()[0] == f"delivery {delivery_id}"
        if ref == delivery_id:
            assert out == shown
    code, out, _ = _run(capsys, "deliveries", delivery_id, "--json", "--config", str(config))
    assert json.loads(out)["deliveryId"] == delivery_id
    code, _, err = _run(capsys, "deliveries", "nope", "--config", str(config))
    assert (code, err) == (1, "hookdock: no delivery or event 'nope' in the journal\n")


def test_replay_then_show_records_who(
    config: Path, delivery_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(
        capsys, "events", "replay", f"{delivery_id}-0", "--sink", "exports", "--config", str(config)
    )
    assert (code, out) == (0, f"{delivery_id}: 1 sends go out again to sink exports\n")
    _, out, _ = _run(capsys, "events", "show", delivery_id, "--config", str(config))
    [action] = [line for line in out.splitlines() if "  replay" in line]
    assert re.fullmatch(r"  \S+ \S+ UTC  \S+@\S+ \(cli\)  replay  sink exports", action), action
    code, _, err = _run(
        capsys, "events", "replay", delivery_id, "--sink", "nope", "--config", str(config)
    )
    assert (code, err) == (
        2,
        "hookdock: no sink named 'nope' is configured (configured: exports, hook)\n",
    )


def test_retry_of_a_delivered_event_points_to_replay(
    config: Path, delivery_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = config.parent / "j.db"
    asyncio.run(_requeue_and_deliver(journal, delivery_id))
    code, out, err = _run(capsys, "retry", f"{delivery_id}-0", "--config", str(config))
    assert (code, out) == (1, "requeued 0 dead-lettered deliveries\n")
    assert err == (
        f"  delivery {delivery_id} is done: every send was delivered, and retry sends again only"
        f" what failed; to send it again anyway: hookdock events replay {delivery_id}-0\n"
    )


async def _requeue_and_deliver(path: Path, delivery_id: str) -> None:
    journal = SqliteJournal(path).open()
    try:
        assert await journal.requeue([delivery_id]) == 1
        [send] = await journal.claim_sends("w", {"hook": 1}, 60)
        await journal.finish_send(send, "w", Outcome.delivered())
    finally:
        await journal.close()


def test_retry_now_and_purge(
    config: Path, delivery_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, "events", "retry-now", "999", "--config", str(config))
    assert code == 1
    code, out, _ = _run(capsys, "purge", "--task", "task-9", "--config", str(config))
    assert (code, out) == (
        0,
        "erased 1 deliveries of task task-9 from the journal (1 routed, 0 never routed),"
        " 1 events, 2 sends, 3 attempts and 121 bytes of payload; copies live on in"
        " the sinks that received them: exports (1)\n",
    )
    code, out, _ = _run(capsys, "events", "list", "--config", str(config))
    assert out == "no events match\n"


def test_where_there_is_no_journal_it_says_so(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (["events", "list"], ["events", "show", "x"], ["purge", "--task", "t"]):
        code, out, err = _run(capsys, *argv, "--config", str(config))
        assert (code, out) == (1, "")
        assert f"there is no journal at {config.parent / 'j.db'}" in err
    assert not (config.parent / "j.db").exists()


def test_bad_values_are_refused_naming_them(
    config: Path, delivery_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(capsys, "events", "list", "--since", "yesterday", "--config", str(config))
    assert code == 2 and err.startswith("hookdock: since: "), err
    code, _, err = _run(capsys, "events", "show", "nope", "--config", str(config))
    assert (code, err) == (1, "hookdock: no delivery or event 'nope' in the journal\n")
    code, _, err = _run(capsys, "--log-level", "nonsense", "status", "--config", str(config))
    assert (code, err) == (
        2,
        "hookdock: --log-level (or HOOKDOCK_LOG_LEVEL) must be one of debug, info, warning,"
        " error, critical, not 'nonsense'\n",
    )


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert re.fullmatch(r"hookdock \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)


def test_replay_all_by_filter_dry_run_first(
    config: Path, delivery_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["events", "replay", "--all", "--sink", "hook", "--state", "dead"]
    code, out, _ = _run(capsys, *base, "--dry-run", "--config", str(config))
    assert (code, out) == (0, "1 events match; run again without --dry-run to replay them\n")
    code, out, err = _run(capsys, *base, "--config", str(config))
    assert code == 0
    job = re.fullmatch(
        r"bulk replay (replay_\w+) done: replayed 1 of 1 events: 1 sends go out again, 0 made,"
        r" 0 left to an attempt under way, 0 deliveries routed again\n",
        out,
    )
    assert job is not None, out
    assert err.startswith(f"bulk replay {job[1]}: 1 events match\n")
    assert "] 1 of 1 events" in err
    code, out, _ = _run(capsys, "events", "jobs", "--config", str(config))
    lines = out.splitlines()
    assert lines[0].split() == [
        "STARTED", "(UTC)", "JOB", "STATE", "REPLAYED", "BY", "RUNNING", "ON", "FILTER"
    ]  # fmt: skip
    assert f" {job[1]}  done   1 of 1 " in lines[1]
    assert lines[1].endswith('  -           {"state":["dead"],"sink":"hook"}')
    code, out, _ = _run(capsys, *base, "--dry-run", "--config", str(config))
    assert out.startswith("0 events match")
    code, _, err = _run(capsys, "events", "replay", "--config", str(config))
    assert (code, err) == (2, "hookdock events replay: name an id, or pass --all with filters\n")
