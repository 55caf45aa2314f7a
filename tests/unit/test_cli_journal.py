"""What ``hookdock status`` and ``deliveries --sends`` show of failure codes and stored files,
and what an operator's command does where there is no journal."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from handlers.event import Event, RawDelivery
from handlers.files import FileInfo
from receiver.cli import main
from receiver.ids import new_id
from receiver.journal import Outcome, SqliteJournal

CONFIG = """\
[journal]
path = "j.db"

[[routes]]
name = "r"
source = "smartdocumentor.text_document"
auth = { type = "none" }
sinks = ["exports", "hook"]

[sinks.exports]
type = "local"
root = "exports"

[sinks.hook]
type = "local"
root = "hook"
"""

PDF = FileInfo(
    size=2048, sha256="0123456789ab" + "f" * 52, content_type="application/pdf", filename="a.pdf"
)


def delivery() -> RawDelivery:
    return RawDelivery(
        delivery_id=new_id(),
        route="r",
        source="smartdocumentor.text_document",
        received_at=datetime.now(UTC),
        content_type="application/json",
        body=b"{}",
    )


def event(d: RawDelivery) -> Event:
    return Event(
        event_id=d.event_id(0),
        delivery_id=d.delivery_id,
        vendor="smartdocumentor",
        kind="text_document",
        route=d.route,
        received_at=d.received_at,
    )


async def _dead_send_with_a_file(path: Path, code: str | None) -> str:
    journal = SqliteJournal(path).open()
    try:
        d = delivery()
        await journal.append(d, d.delivery_id)
        [claim] = await journal.claim("w", 1, 60)
        e = event(d)
        exports, hook = sorted(
            await journal.route(claim, "w", [(e, "exports"), (e, "hook")], {"exports", "hook"}, 60),
            key=lambda s: s.sink,
        )
        await journal.finish_send(exports, "w", Outcome.delivered())
        assert await journal.record_file(hook, "w", "pdf", PDF)
        await journal.finish_send(hook, "w", Outcome.dead("the link expired", code=code))
        return d.delivery_id
    finally:
        await journal.close()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "hookdock.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


def test_status_counts_dead_sends_by_failure_code(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(_dead_send_with_a_file(config.parent / "j.db", "link_expired"))
    assert main(["status", "--config", str(config)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["failures"] == {"link_expired": 1}
    assert (out["dead"], out["sinks"]["hook"]["dead"]) == (1, 1)


def test_status_failures_are_empty_without_codes(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(_dead_send_with_a_file(config.parent / "j.db", None))
    assert main(["status", "--config", str(config)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {
        "pending",
        "done",
        "dead",
        "sinks",
        "failures",
        "processes",
        "leases",
        "alerts",
        "pollers",
    }
    assert out["failures"] == {}
    assert out["alerts"] == {}


def test_listed_sends_show_their_code_and_stored_files(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    delivery_id = asyncio.run(_dead_send_with_a_file(config.parent / "j.db", "link_expired"))
    assert main(["deliveries", "--sends", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    [hook] = [i for i, line in enumerate(lines) if "-> hook" in line]
    assert lines[hook].startswith(f"    {delivery_id}-0  -> hook")
    assert lines[hook].endswith("dead        1  [link_expired]  the link expired")
    assert lines[hook + 1] == "      file pdf: 2.0 KiB  sha256 0123456789ab  a.pdf"


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["deliveries"],
        ["sinks"],
        ["retry", "--all-dead"],
        ["prune", "--older-than-days", "1"],
    ],
)
def test_an_operators_command_without_a_journal_says_so_and_creates_nothing(
    config: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    journal = config.parent / "j.db"
    assert main([*command, "--config", str(config)]) == 1
    captured = capsys.readouterr()
    assert f"there is no journal at {journal}" in captured.err
    assert captured.out == ""
    assert sorted(p.name for p in config.parent.iterdir()) == ["hookdock.toml"]
