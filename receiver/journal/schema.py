"""The journal's tables, written once for both engines, and their versions.

``deliveries`` holds each accepted request's raw bytes and its routing state (``pending`` until
routed, then ``routed``, or ``dead`` when it cannot be).  ``events`` holds each event a routed
delivery was normalized into, as JSON, known by its id: every attempt of every send delivers
that stored event, so a source runs once per delivery, however many sinks and retries follow.
``sends`` holds one row per (event, sink) pair with its own attempts, lease and outcome, and
the files it stored (``files``, a JSON object role -> ``FileInfo``; NULL while there are none).
A delivery's overall state (pending / done / dead) is derived when it is read (``rules``), so
the hot path writes nothing extra.

``poller_state`` is each poller's state between polls (its cursor, as JSON), when it ran, its
last error and when it runs next.  ``watches`` are the things a poller was asked to follow (a
Documill batch, a SuperOffice batch task), by key, open until the poller has seen them end.

``processes`` is every running ``hookdock serve`` and ``worker`` with its last heartbeat (on the
database's clock), so a replica on another machine is known to be gone once its heartbeat is
stale; ``named_leases`` is work one process at a time must do (retention, pollers), each held by
one live process until it lets go, its lease runs out, or its heartbeat goes stale.

Versions: 1 had one state per delivery, 2 added sends, 3 their files and failure codes, 4 the
stored events, 5 processes and named leases, 6 each delivery's ``subject`` (what it is about,
``smartdocumentor:task:42``, for reconciliation) and ``poller_state`` (each poller's saved state,
counts, last error and next run), 7 the events' searchable fields (filled in from their stored
JSON when an older journal is migrated) and the operators' ``actions``, 8 ``deliveries.dropped``
(routed with every event dropped by the rules: shown in listings beside the unrouted ones) and
``replay_jobs`` (bulk replays, their progress and the process running each, so every replica
shows them and a dead one's are taken over), 9 ``watches`` (what a poller was asked to
follow, such as a batch submitted from the command line, open until the poller closes it),
10 on SQLite the index for free text (``text_index``: an FTS5 trigram table over the events'
names, kept by triggers; nothing on PostgreSQL, whose ``pg_trgm`` index ``postgres`` makes).
``migrate`` brings
any older journal up to ``SCHEMA_VERSION`` under a write lock, and refuses one that is newer
than this hookdock knows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson

from receiver.journal.dialect import Tx
from receiver.journal.errors import SchemaMismatch
from receiver.journal.text_index import make_text_index

__all__ = [
    "EVENTLESS",
    "EVENT_FIELDS",
    "HELD_BY",
    "SCHEMA_VERSION",
    "TABLES",
    "SchemaStatus",
    "event_columns",
    "migrate",
    "schema_status",
]

log = logging.getLogger("hookdock.journal")


HELD_BY = "COALESCE(lease_owner, '') = ?"
"""``WHERE`` a row is leased to the owner given (never an empty string), for rows also picked
by id.  Not ``lease_owner = ?``: the ``*_leased`` indexes keep an entry for every lease an
owner took until a vacuum clears the old row versions, and PostgreSQL combined that index with
the primary key, reading them all: 30,000 index entries per routing batch after 30,000
deliveries (3.9 ms a statement instead of 0.8, growing with every delivery).  The expression
is not the indexed column, so the rows are found by id alone."""

SCHEMA_VERSION = 10

_TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY,
    route TEXT NOT NULL,
    source TEXT NOT NULL,
    received_at TEXT NOT NULL,
    content_type TEXT NOT NULL,
    headers {blob} NOT NULL,
    body {blob} NOT NULL,
    dedupe_key TEXT NOT NULL UNIQUE,
    subject TEXT,
    state TEXT NOT NULL DEFAULT 'pending',
    dropped INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at {real} NOT NULL,
    lease_owner TEXT,
    lease_until {real},
    last_error TEXT,
    updated_at {real} NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_leased ON deliveries (lease_owner)
    WHERE lease_owner IS NOT NULL;
CREATE TABLE IF NOT EXISTS attempts (
    delivery_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    owner TEXT NOT NULL,
    started_at {real} NOT NULL,
    finished_at {real},
    outcome TEXT,
    error TEXT,
    PRIMARY KEY (delivery_id, attempt)
);
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    delivery_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    body {blob} NOT NULL,
    route TEXT,
    vendor TEXT,
    kind TEXT,
    task_id TEXT,
    batch_id TEXT,
    workspace_id TEXT,
    external_id TEXT,
    display_name TEXT
);
CREATE INDEX IF NOT EXISTS events_order ON events (delivery_id, position);
CREATE TABLE IF NOT EXISTS sends (
    id {serial},
    delivery_id TEXT NOT NULL,
    event_index INTEGER NOT NULL,
    sink TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at {real} NOT NULL,
    lease_owner TEXT,
    lease_until {real},
    last_error TEXT,
    delivered_at {real},
    updated_at {real} NOT NULL,
    files TEXT,
    code TEXT,
    event_id TEXT,
    UNIQUE (delivery_id, event_index, sink)
);
CREATE INDEX IF NOT EXISTS sends_delivery ON sends (delivery_id);
CREATE INDEX IF NOT EXISTS sends_due ON sends (sink, next_attempt_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS sends_leased ON sends (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE INDEX IF NOT EXISTS sends_dead ON sends (sink) WHERE state = 'dead';
CREATE TABLE IF NOT EXISTS send_attempts (
    send_id BIGINT NOT NULL,
    attempt INTEGER NOT NULL,
    owner TEXT NOT NULL,
    started_at {real} NOT NULL,
    finished_at {real},
    outcome TEXT,
    error TEXT,
    PRIMARY KEY (send_id, attempt)
);
CREATE TABLE IF NOT EXISTS stopped_sinks (
    sink TEXT PRIMARY KEY,
    stopped_at {real} NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS processes (
    owner TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    role TEXT NOT NULL,
    started_at {real} NOT NULL,
    heartbeat_at {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS actions (
    id {serial},
    at {real} NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    delivery_id TEXT,
    event_id TEXT,
    sink TEXT,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS actions_delivery ON actions (delivery_id) WHERE delivery_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS named_leases (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    acquired_at {real} NOT NULL,
    lease_until {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS replay_jobs (
    id TEXT PRIMARY KEY,
    actor TEXT NOT NULL,
    filter TEXT NOT NULL,
    sink TEXT,
    state TEXT NOT NULL,
    matched INTEGER NOT NULL,
    replayed INTEGER NOT NULL DEFAULT 0,
    requeued INTEGER NOT NULL DEFAULT 0,
    created INTEGER NOT NULL DEFAULT 0,
    in_flight INTEGER NOT NULL DEFAULT 0,
    rerouted INTEGER NOT NULL DEFAULT 0,
    cursor TEXT,
    error TEXT,
    created_at {real} NOT NULL,
    updated_at {real} NOT NULL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    owner TEXT,
    lease_until {real},
    takeovers INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS replay_jobs_running ON replay_jobs (lease_until)
    WHERE state = 'running';
CREATE TABLE IF NOT EXISTS poller_state (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    polls INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    found INTEGER NOT NULL DEFAULT 0,
    calls INTEGER NOT NULL DEFAULT 0,
    last_run_at {real},
    last_ok_at {real},
    last_error TEXT,
    next_run_at {real} NOT NULL,
    updated_at {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS watches (
    poller TEXT NOT NULL,
    key TEXT NOT NULL,
    detail TEXT NOT NULL,
    added_at {real} NOT NULL,
    closed_at {real},
    PRIMARY KEY (poller, key)
);
CREATE INDEX IF NOT EXISTS watches_open ON watches (poller, added_at) WHERE closed_at IS NULL;
"""

# Deliveries of the SmartDocumentor sources journaled before subjects existed get theirs, or
# reconciliation's first poll after the upgrade would take every webhook of its window for
# lost.  Their dedupe key is "<route>:<kind>:<taskId>:<64 hex>" and the source is
# "smartdocumentor.<kind>" (16 characters before the kind), so the task id is cut out by
# lengths, in SQL both engines share.
_SD_SUBJECTS = (
    "UPDATE deliveries SET subject = 'smartdocumentor:task:' || substr(dedupe_key,"
    " length(route) + length(source) - 16 + 3,"
    " length(dedupe_key) - (length(route) + length(source) - 16 + 2) - 65)"
    " WHERE subject IS NULL AND source IN ('smartdocumentor.text_document',"
    " 'smartdocumentor.transcript', 'smartdocumentor.transcript_file',"
    " 'smartdocumentor.anonymization_file')"
    " AND length(dedupe_key) > length(route) + length(source) - 16 + 2 + 65"
)

EVENTLESS = "(state != 'routed' OR dropped = 1)"
"""A delivery without events, as the ``deliveries_eventless`` index has it: a query repeats it
word for word, the form both engines match to a partial index."""

_AFTER_COLUMNS = (
    "CREATE UNIQUE INDEX IF NOT EXISTS sends_event_sink ON sends (event_id, sink)",
    "CREATE INDEX IF NOT EXISTS deliveries_subject ON deliveries (subject)"
    " WHERE subject IS NOT NULL",
    # An operator's lookups by the vendor's ids; listing order is the events' primary key
    # order (delivery ids sort by time), so the rest filter a scan that stops at a page.
    "CREATE INDEX IF NOT EXISTS events_task ON events (task_id) WHERE task_id IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS events_batch ON events (batch_id) WHERE batch_id IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS events_external ON events (external_id)"
    " WHERE external_id IS NOT NULL",
    # The deliveries an operator's listing shows without events: not routed yet, not
    # routable, or routed with every event dropped by the rules.  Few, beside the rest.
    f"CREATE INDEX IF NOT EXISTS deliveries_eventless ON deliveries (id) WHERE {EVENTLESS}",
)
"""Made once every column exists, so that an older journal gets them after its columns."""

EVENT_FIELDS = (
    "route",
    "vendor",
    "kind",
    "task_id",
    "batch_id",
    "workspace_id",
    "external_id",
    "display_name",
)
"""The event's fields ``events`` keeps in columns of their own, beside its JSON, to filter on."""

TABLES = (
    "meta",
    "deliveries",
    "attempts",
    "events",
    "sends",
    "send_attempts",
    "stopped_sinks",
    "poller_state",
    "watches",
    "actions",
    "replay_jobs",
)
"""Every table of journaled work, parents first: the order ``hookdock journal copy`` fills
them in.  ``processes`` and ``named_leases`` are not copied: they describe running processes."""

_ADDED: dict[int, dict[str, tuple[str, ...]]] = {
    3: {"sends": ("files TEXT", "code TEXT")},
    4: {"sends": ("event_id TEXT",)},
    6: {"deliveries": ("subject TEXT",)},
    7: {"events": tuple(f"{name} TEXT" for name in EVENT_FIELDS)},
    8: {"deliveries": ("dropped INTEGER NOT NULL DEFAULT 0",)},
}
"""Columns each version added to tables an older version already had."""


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    found: int | None
    """The version in the database; None when it has no journal yet."""
    expected: int = SCHEMA_VERSION

    @property
    def current(self) -> bool:
        return self.found == self.expected


def _statements(tx: Tx) -> list[str]:
    text = _TABLES.format(**tx.dialect.types)
    return [s.strip() for s in text.split(";") if s.strip()]


def _version(tx: Tx) -> int | None:
    if not _has_table(tx, "deliveries"):
        return None
    if not _has_table(tx, "meta"):
        return 1
    row = tx.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 1


def _has_table(tx: Tx, table: str) -> bool:
    if tx.dialect.name == "sqlite":
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    else:
        sql = "SELECT 1 FROM pg_tables WHERE schemaname = current_schema() AND tablename = ?"
    return tx.execute(sql, (table,)).fetchone() is not None


def _columns(tx: Tx, table: str) -> set[str]:
    if tx.dialect.name == "sqlite":
        return {r[1] for r in tx.execute(f"PRAGMA table_info({table})")}
    rows = tx.execute(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = ?",
        (table,),
    )
    return {r[0] for r in rows}


def schema_status(tx: Tx) -> SchemaStatus:
    return SchemaStatus(_version(tx))


def _refuse_newer(found: int | None) -> None:
    if found is not None and found > SCHEMA_VERSION:
        raise SchemaMismatch(
            f"the journal's schema is version {found}, newer than this hookdock knows"
            f" (version {SCHEMA_VERSION}): run the newer hookdock that wrote it, or upgrade"
        )


def migrate(tx: Tx, *, lock: str | None = None) -> int | None:
    """Create what is missing and bring an older journal up to ``SCHEMA_VERSION``.

    Returns the version found before (None for a new journal).  Runs in its own transaction;
    ``lock`` is a statement that serializes migrations between processes (PostgreSQL's
    advisory lock; SQLite's ``BEGIN IMMEDIATE`` is one already).
    """
    found = _version(tx)
    _refuse_newer(found)
    if found == SCHEMA_VERSION:
        return found
    tx.execute(tx.dialect.begin)
    try:
        if lock is not None:
            tx.execute(lock)
        # Read again under the lock: another process (a worker next to the server, another
        # replica) may have migrated meanwhile, and adding a column twice is an error.
        found = _version(tx)
        _refuse_newer(found)
        if found != SCHEMA_VERSION:
            _upgrade(tx, found)
        tx.execute("COMMIT")
    except BaseException:
        try:
            tx.execute("ROLLBACK")
        except Exception:
            log.debug("rollback after a failed migration failed", exc_info=True)
        raise
    if found is not None and found != SCHEMA_VERSION:
        log.info("journal: schema migrated from version %d to %d", found, SCHEMA_VERSION)
    return found


def _upgrade(tx: Tx, found: int | None) -> None:
    for statement in _statements(tx):
        tx.execute(statement)
    version = found or SCHEMA_VERSION
    if version < 2:
        # Version 1 had one state per delivery: 'done' meant every sink had it, which is a
        # routed delivery whose sends are all delivered (there were none recorded then).
        tx.execute("UPDATE deliveries SET state = 'routed' WHERE state = 'done'")
    for added_in, tables in _ADDED.items():
        if version >= added_in:
            continue
        for table, columns in tables.items():
            have = _columns(tx, table)
            for column in columns:
                if column.split()[0] not in have:
                    tx.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
    if version < 4:
        # Sends made before events were stored name their event by position; the source made
        # its ids the same way, so the id is known.  Their event is normalized once more when
        # next claimed (and stored then).
        tx.execute(
            "UPDATE sends SET event_id = delivery_id || '-' || event_index WHERE event_id IS NULL"
        )
    if version < 6:
        tx.execute(_SD_SUBJECTS)
    if version < 7:
        # events_order (delivery_id, position) replaces it: the order operators list in.
        tx.execute("DROP INDEX IF EXISTS events_delivery")
        _fill_event_fields(tx)
    if version < 8:
        # Routed deliveries with neither events nor sends had every event dropped by rules.
        tx.execute(
            "UPDATE deliveries SET dropped = 1 WHERE state = 'routed'"
            " AND NOT EXISTS (SELECT 1 FROM events e WHERE e.delivery_id = deliveries.id)"
            " AND NOT EXISTS (SELECT 1 FROM sends s WHERE s.delivery_id = deliveries.id)"
        )
    for statement in _AFTER_COLUMNS:
        tx.execute(statement)
    if tx.dialect.name == "sqlite":
        make_text_index(tx)
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('schema_version', ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (str(SCHEMA_VERSION),),
    )


def event_columns(event: Any) -> tuple[str | None, ...]:
    """The ``EVENT_FIELDS`` of an event (an ``Event``, or its stored JSON as a dict)."""
    values = event if isinstance(event, dict) else {n: getattr(event, n) for n in EVENT_FIELDS}
    return tuple(None if (v := values.get(name)) is None else str(v) for name in EVENT_FIELDS)


def _fill_event_fields(tx: Tx) -> None:
    """Version 7 keeps an event's searchable fields in columns: fill them from the JSON of
    events stored before, a thousand at a time (ordered by id, so each pass moves on)."""
    sets = ", ".join(f"{name} = ?" for name in EVENT_FIELDS)
    after = ""
    while True:
        rows = tx.execute(
            "SELECT id, body FROM events WHERE id > ? ORDER BY id LIMIT 1000", (after,)
        ).fetchall()
        if not rows:
            return
        for event_id, body in rows:
            fields = event_columns(orjson.loads(bytes(body)))
            tx.execute(f"UPDATE events SET {sets} WHERE id = ?", (*fields, event_id))
        after = rows[-1][0]
