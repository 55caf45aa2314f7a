"""``[retention]``: the job one process runs deletes delivered and dead deliveries past their
ages; ``hookdock prune`` does the same on demand."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from handlers.event import Event, RawDelivery
from receiver.cli import main
from receiver.config import parse_config
from receiver.ids import new_id
from receiver.journal import Outcome, SqliteJournal, SqlJournal
from receiver.runtime import Runtime

pytestmark = pytest.mark.anyio

OLD = datetime(2020, 1, 1, tzinfo=UTC)


def _config(tmp_path: Path, **retention: float) -> dict[str, object]:
    return {
        "journal": {"path": str(tmp_path / "j.db")},
        "retention": retention,
        "routes": [
            {
                "name": "r",
                "source": "smartdocumentor.text_document",
                "auth": {"type": "none"},
                "sinks": ["s"],
            }
        ],
        "sinks": {"s": {"type": "local", "root": str(tmp_path / "out")}},
    }


async def _one(journal: SqlJournal, outcome: Outcome, received_at: datetime = OLD) -> str:
    d = RawDelivery(
        delivery_id=new_id(),
        route="r",
        source="smartdocumentor.text_document",
        received_at=received_at,
        content_type="application/json",
        body=new_id().encode(),
    )
    await journal.append(d, d.delivery_id)
    [claim] = await journal.claim("w", 1, 60)
    e = Event(
        event_id=d.event_id(0),
        delivery_id=d.delivery_id,
        vendor="v",
        kind="k",
        route="r",
        received_at=received_at,
    )
    [send] = await journal.route(claim, "w", [(e, "s")], {"s"}, 60)
    await journal.finish_send(send, "w", outcome)
    return d.delivery_id


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqlJournal]:
    journal = SqliteJournal(tmp_path / "j.db").open()
    yield journal
    await journal.close()


async def test_the_retention_job_deletes_delivered_and_dead_past_their_ages(
    tmp_path: Path, journal: SqlJournal
) -> None:
    done = await _one(journal, Outcome.delivered())
    dead = await _one(journal, Outcome.dead("refused"))
    fresh_dead = await _one(journal, Outcome.dead("refused"), datetime.now(UTC))
    config = parse_config(_config(tmp_path, dead_days=30), base_dir=tmp_path)
    runtime = Runtime.build(config, tmp_path, journal=journal, log_plugins=False)
    [job] = runtime.named_jobs()
    assert job.name == "retention"
    await job.run()
    assert await journal.get(dead) is None
    assert await journal.get(done) is not None, "delivered_days is 0: kept"
    assert await journal.get(fresh_dead) is not None

    both = parse_config(_config(tmp_path, dead_days=30, delivered_days=30), base_dir=tmp_path)
    [job] = Runtime.build(both, tmp_path, journal=journal, log_plugins=False).named_jobs()
    await job.run()
    assert await journal.get(done) is None
    assert not Runtime.build(
        parse_config(_config(tmp_path), base_dir=tmp_path), tmp_path, journal=journal
    ).named_jobs(), "no ages, no job"


def test_prune_dead_letters_on_demand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async def setup() -> str:
        journal = SqliteJournal(tmp_path / "j.db").open()
        try:
            return await _one(journal, Outcome.dead("refused"))
        finally:
            await journal.close()

    dead = asyncio.run(setup())
    config = tmp_path / "hookdock.toml"
    config.write_text(
        f'[journal]\npath = "{tmp_path / "j.db"}"\n[[routes]]\nname = "r"\n'
        'source = "smartdocumentor.text_document"\nauth = { type = "none" }\nsinks = ["s"]\n'
        f'[sinks.s]\ntype = "local"\nroot = "{tmp_path}"\n',
        encoding="utf-8",
    )
    assert main(["prune", "--dead-older-than-days", "30", "--config", str(config)]) == 0
    assert capsys.readouterr().out == "deleted 1 dead deliveries older than 30 days\n"
    assert main(["prune", "--config", str(config)]) == 2
    assert "give --older-than-days, --dead-older-than-days or both" in capsys.readouterr().err
    assert main(["events", "show", dead, "--config", str(config)]) == 1
