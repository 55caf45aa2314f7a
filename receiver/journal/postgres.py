"""The journal on PostgreSQL: for several replicas, or a team that keeps its state there.

The same SQL and rules as SQLite, through psycopg 3: writes go through two group-commit
threads, each on its own connection, one for the dispatcher's writes and one for the rest
(a batch of appends is one multi-row INSERT and one COMMIT), claims lock
their rows with ``FOR UPDATE SKIP LOCKED`` so replicas never wait on each other, and leases
and due times are compared on the database's clock.  Operators' reads run on a small pool of
their own.  A dropped connection fails the batch in flight (ingest answers 503) and is opened
again when the database is back, without a restart.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from receiver.journal.dialect import Dialect, Tx
from receiver.journal.errors import JournalError, JournalUnavailable, one_line
from receiver.journal.schema import migrate
from receiver.journal.sql import SqlJournal

try:
    import psycopg
    import psycopg_pool
    from psycopg.conninfo import conninfo_to_dict
except ImportError as exc:  # pragma: no cover - the dependency is a hard one
    raise ImportError("the PostgreSQL journal needs psycopg: pip install hookdock") from exc

__all__ = ["POSTGRES", "PostgresJournal", "describe_dsn"]

POSTGRES = Dialect(
    name="postgres",
    placeholder="$",
    skip_locked=" FOR UPDATE SKIP LOCKED",
    begin="BEGIN",
    statement_rollback=False,
    max_params=65_535,
    types={"blob": "BYTEA", "real": "DOUBLE PRECISION", "serial": "BIGSERIAL PRIMARY KEY"},
    unavailable=(psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout),
    now_sql="SELECT extract(epoch FROM clock_timestamp())::float8",
    text_first=True,
)

_KEEPALIVES: dict[str, Any] = {
    # A connection whose peer vanished without a reset (a dead host, a network split) would
    # otherwise block a commit until the kernel gives up, a quarter of an hour later.
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}

log = logging.getLogger("hookdock.journal")

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_MIGRATION_LOCK = "SELECT pg_advisory_xact_lock(hashtext('hookdock journal ' || current_schema()))"


TRIGRAM_INDEX = "events_display_trgm"


_EXTENSION_SCHEMA = (
    "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
    " WHERE e.extname = 'pg_trgm'"
)


def _trigram_index(conn: psycopg.Connection[Any]) -> bool:
    """Free-text search (``q``: ``lower(display_name) LIKE '%text%'``) through a trigram index,
    which ``pg_trgm`` gives: without it a rare text scans every event (seconds at a million).

    The extension is the database's, made once, in ``public`` where it may be (a schema of a
    journal's own would take it along when dropped), else in the journal's schema.  Where it
    cannot be made (no right to), search still works, by a scan, and one line says so.  Both
    are made under the migration lock, so replicas starting together make each once."""
    found = conn.execute(_EXTENSION_SCHEMA).fetchone()
    if found is None:
        reasons = []
        for where in (" SCHEMA public", ""):
            try:
                with conn.transaction():
                    conn.execute(_MIGRATION_LOCK)
                    conn.execute(f"CREATE EXTENSION IF NOT EXISTS pg_trgm{where}")
            except psycopg.Error as exc:
                reasons.append(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
                continue
            break
        found = conn.execute(_EXTENSION_SCHEMA).fetchone()
        if found is None:
            log.warning(
                "journal: free-text search (q) scans every event: the pg_trgm extension cannot"
                " be created (%s); ask the database's owner to run CREATE EXTENSION pg_trgm",
                "; ".join(reasons),
            )
            return False
    have = conn.execute(
        "SELECT 1 FROM pg_indexes WHERE schemaname = current_schema() AND indexname = $1",
        (TRIGRAM_INDEX,),
    ).fetchone()
    if have is None:
        began = time.monotonic()
        with conn.transaction():
            conn.execute(_MIGRATION_LOCK)
            # Made once over every event there is: longer than a statement may take.
            conn.execute("SET LOCAL statement_timeout = 0")
            conn.execute(
                f"CREATE INDEX IF NOT EXISTS {TRIGRAM_INDEX} ON events"
                f' USING gin (lower(display_name) "{found[0]}".gin_trgm_ops)'
            )
        log.info(
            "journal: made the trigram index for free-text search in %.1f s",
            time.monotonic() - began,
        )
    return True


QUEUE_VACUUM = {"autovacuum_vacuum_scale_factor": "0", "autovacuum_vacuum_threshold": "10000"}
"""Autovacuum for the tables the dispatcher works through: once 10,000 row versions are dead,
not once a fifth of the table is (PostgreSQL's default, millions in a journal that keeps weeks).
Every delivery and send is updated a few times, and the indexes of pending ones keep an entry
for each old version until a vacuum: each sweep of due work reads them all (``claim``)."""


def _queue_vacuum(conn: psycopg.Connection[Any]) -> None:
    """Give ``deliveries`` and ``sends`` ``QUEUE_VACUUM``, unless an autovacuum setting of
    the operator's own is there already.  A role that may not alter them (it does not own
    them) runs all the same, and one line says what to ask the tables' owner for."""
    rows = conn.execute(
        "SELECT relname, reloptions FROM pg_class"
        " WHERE relnamespace = current_schema()::regnamespace"
        " AND relname IN ('deliveries', 'sends') AND relkind = 'r'"
    ).fetchall()
    options = ", ".join(f"{k} = {v}" for k, v in QUEUE_VACUUM.items())
    for table, reloptions in rows:
        if any(o.startswith("autovacuum_vacuum_") for o in reloptions or ()):
            continue
        statement = f"ALTER TABLE {table} SET ({options})"
        try:
            with conn.transaction():
                conn.execute(_MIGRATION_LOCK)
                conn.execute(statement)
        except psycopg.Error as exc:
            log.warning(
                "journal: %s is vacuumed on PostgreSQL's defaults (%s); ask its owner to run %s",
                table,
                one_line(exc),
                statement,
            )


def describe_dsn(dsn: str) -> str:
    """``host:port/dbname`` of a DSN: never its password, for logs and errors."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(an invalid DSN)"
    host = parts.get("host") or "localhost"
    port = parts.get("port") or "5432"
    return f"postgresql://{parts.get('user') or ''}@{host}:{port}/{parts.get('dbname') or ''}"


class PostgresJournal(SqlJournal):
    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        pool_size: int = 4,
        statement_timeout_ms: int = 10_000,
        connect_timeout_seconds: float = 5.0,
        migrate_schema: bool = True,
    ) -> None:
        if schema is not None and not _SCHEMA_NAME.match(schema):
            raise JournalError(f"journal.schema: {schema!r} is not a plain lower-case name")
        self._dsn = dsn
        self.schema = schema
        self.description = f"the PostgreSQL journal at {describe_dsn(dsn)}"
        self._statement_timeout_ms = statement_timeout_ms
        self._connect_timeout = connect_timeout_seconds
        self._migrate = migrate_schema
        self._migrated = False
        self._pool = psycopg_pool.ConnectionPool(
            dsn,
            min_size=0,
            max_size=pool_size,
            open=False,
            timeout=connect_timeout_seconds,
            configure=self._configure,
            kwargs={
                "autocommit": True,
                "connect_timeout": max(1, round(connect_timeout_seconds)),
                "cursor_factory": psycopg.RawCursor,
                **_KEEPALIVES,
            },
        )
        # Two writers of this process's own (ingest's and the dispatcher's), as two replicas'
        # would be: the journal's statements already take concurrent transactions.
        super().__init__(self._connect, POSTGRES, dispatch_lane=True)

    def _cannot_open(self, exc: BaseException) -> str:
        reason = one_line(exc)
        return (
            f"{self.description} cannot be opened: {reason}: check `journal.dsn`,"
            " and that the database is up and reachable"
        )

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(f"SET statement_timeout = {int(self._statement_timeout_ms)}")
        if self.schema is not None:
            # Made only when missing: CREATE SCHEMA, even IF NOT EXISTS, needs the right to
            # create in the database, which a role that owns only its schema does not have.
            known = "SELECT 1 FROM pg_namespace WHERE nspname = $1"
            if conn.execute(known, (self.schema,)).fetchone() is None:
                conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            conn.execute(f'SET search_path TO "{self.schema}"')

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(
            self._dsn,
            autocommit=True,
            connect_timeout=max(1, round(self._connect_timeout)),
            cursor_factory=psycopg.RawCursor,
            **_KEEPALIVES,
        )
        try:
            self._configure(conn)
            if not self._migrated:
                tx = Tx(conn, POSTGRES, lambda: 0.0)
                if self._migrate:
                    migrate(tx, lock=_MIGRATION_LOCK)
                    _trigram_index(conn)
                    _queue_vacuum(conn)
                self._migrated = True
        except BaseException:
            conn.close()
            raise
        return conn

    def connect_for_check(self) -> psycopg.Connection[Any]:
        """A connection that creates and migrates nothing, for ``hookdock migrate --check``."""
        try:
            conn = psycopg.connect(
                self._dsn,
                autocommit=True,
                connect_timeout=max(1, round(self._connect_timeout)),
                cursor_factory=psycopg.RawCursor,
            )
        except psycopg.Error as exc:
            raise JournalError(self._cannot_open(exc)) from exc
        conn.execute(f"SET statement_timeout = {int(self._statement_timeout_ms)}")
        if self.schema is not None:
            conn.execute(f'SET search_path TO "{self.schema}"')
        return conn

    def open(self) -> PostgresJournal:
        super().open()
        self._pool.open(wait=False)
        return self

    async def _read(self, fn: Callable[[Tx], Any]) -> Any:
        return await asyncio.to_thread(self._read_now, fn)

    def _read_now(self, fn: Callable[[Tx], Any]) -> Any:
        try:
            with self._pool.connection() as conn:
                return fn(Tx(conn, POSTGRES, self._committer.now))
        except POSTGRES.unavailable as exc:
            raise JournalUnavailable(f"{self.description} cannot be read: {exc}") from exc

    async def close(self) -> None:
        await super().close()
        await asyncio.to_thread(self._pool.close)
