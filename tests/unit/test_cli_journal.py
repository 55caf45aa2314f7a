"""What ``hookdock status`` and ``deliveries --sends`` show of failure codes and stored files."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from handlers.event import RawDelivery
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


async def _dead_send_with_a_file(path: Path, code: str | None) -> str:
    journal = SqliteJournal(path).open()
    try:
        d = delivery()
        await journal.append(d, d.delivery_id)
        [claim] = await journal.claim("w", 1, 60)
        exports, hook = await journal.route(
            claim, "w", [(0, "exports"), (0, "hook")], {"exports", "hook"}, 60
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
    assert set(out) == {"pending", "done", "dead", "sinks", "failures", "alerts"}
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
