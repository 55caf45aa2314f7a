"""``hookdock status`` counts alerts (``receiver.alerts``) from the stored events, on SQLite
and on PostgreSQL (the two engines filter event bodies differently)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import psycopg
import pytest

from handlers.event import RawDelivery
from handlers.testing import make_event
from receiver.journal import SqlJournal
from receiver.journal.config import PostgresConfig, make_journal
from receiver.journal.memory import MemoryJournal

DSN = os.environ.get("HOOKDOCK_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_reachable() -> bool:
    try:
        psycopg.connect(DSN, connect_timeout=3).close()
    except psycopg.Error:
        return False
    return True


@pytest.fixture(params=["sqlite", "postgres"])
async def journal(request: pytest.FixtureRequest) -> AsyncIterator[SqlJournal]:
    if request.param == "sqlite":
        memory = MemoryJournal()
        yield memory
        await memory.close()
        return
    if not _pg_reachable():
        pytest.skip(f"no PostgreSQL at {DSN}")
    schema = f"t_alerts_{uuid.uuid4().hex[:12]}"
    pg = make_journal(
        PostgresConfig.model_validate({"type": "postgres", "dsn": DSN, "schema": schema})
    )
    await asyncio.to_thread(pg.open)
    try:
        yield pg
    finally:
        await pg.close()
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


async def _route(journal: SqlJournal, n: int, **fields: object) -> None:
    delivery = RawDelivery(
        delivery_id=f"d{n:025d}",
        route="so",
        source="superoffice.webhook",
        received_at=datetime.now(UTC),
        content_type="application/json",
        body=b"{}",
    )
    await journal.append(delivery, f"key-{n}")
    [claim] = await journal.claim("owner", 1, 60)
    event = make_event(delivery_id=delivery.delivery_id, vendor="superoffice", **fields)
    await journal.route(claim, "owner", [(event, "a")], set(), 60)


@pytest.mark.anyio
async def test_alerts_are_counted_by_vendor_and_kind(journal: SqlJournal) -> None:
    assert await journal.alert_counts() == {}
    await _route(journal, 1, kind="webhook.errors", alert="failing")
    await _route(journal, 2, kind="webhook.errors", alert="failing again")
    # Not alerts: no alert, and a payload that merely holds the same words.
    await _route(journal, 3, kind="contact.changed", payload={"alert": "not one"})
    await _route(journal, 4, kind="contact.changed")
    assert await journal.alert_counts() == {"superoffice webhook.errors": 2}
