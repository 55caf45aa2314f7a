"""Finding and inspecting events, written once over a ``Dialect``: what the operator's event
listing, dead letters and "show one event" read.

Listings run in the order of the ``events_order`` index, newest delivery first (delivery ids
sort by time), and page with a keyset cursor (the last row's delivery id and position), so a
deep page costs what the first one does.  A time range is a range of delivery ids, on the same
index.  The filters on an event's fields read columns ``events`` keeps beside its JSON.
"""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime
from typing import Any

import orjson

from handlers.event import Event
from receiver.journal.admin import delivery_infos, send_infos
from receiver.journal.base import SendState
from receiver.journal.dialect import Tx
from receiver.journal.hotpath import RAW_COLUMNS, raw_delivery
from receiver.journal.rules import event_state
from receiver.journal.schema import EVENTLESS
from receiver.journal.text_index import MIN_CHARS, match_clause, text_indexed
from receiver.journal.views import (
    ActionInfo,
    AttemptInfo,
    DeliveryDetail,
    EventDetail,
    EventFilter,
    EventPage,
    EventRow,
    ListedState,
    SendDetail,
)

__all__ = ["Browse", "parse_cursor"]

_PENDING = "EXISTS (SELECT 1 FROM sends s WHERE s.event_id = e.id AND s.state = 'pending')"
_DEAD = "EXISTS (SELECT 1 FROM sends s WHERE s.event_id = e.id AND s.state = 'dead')"

_ROW_COLUMNS = (
    "e.id, e.delivery_id, e.position, e.route, e.vendor, e.kind, e.task_id, e.batch_id,"
    " e.workspace_id, e.external_id, e.display_name, d.received_at"
)
_EQUAL = ("route", "vendor", "kind", "task_id", "batch_id", "workspace_id", "external_id")
_EVENT_ONLY = ("vendor", "kind", "sink", "batch_id", "workspace_id", "external_id", "text")
"""Filters on what only an event has: a delivery without events never matches them."""
_BARE_COLUMNS = (
    "NULL, d.id, -1, d.route, NULL, NULL, d.subject, NULL, NULL, NULL, NULL, d.received_at,"
    " d.state, d.last_error"
)
"""A delivery without events as a listing's row: ``_ROW_COLUMNS``' places (position -1, after
any event of its delivery; the subject where the task goes), then its state and error."""
_SUBJECT_TASK = re.compile(r":task:([^:]+)")
_CURSOR = re.compile(r"^([0-9a-f]{26})\.([0-9]{1,9})$")


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def parse_cursor(cursor: str) -> tuple[str, int]:
    """(delivery id, position) of a cursor; ``ValueError`` for anything else."""
    match = _CURSOR.match(cursor)
    if match is None:
        raise ValueError("not a cursor this journal made")
    return match.group(1), int(match.group(2))


def _id_bound(moment: datetime) -> str:
    """The smallest delivery id made at ``moment`` (ids start with their milliseconds)."""
    return f"{max(0, int(moment.timestamp() * 1000)):012x}"


def _text_match(tx: Tx, text: str | None) -> tuple[str, str] | None:
    """The condition narrowing to the events whose name may hold ``text`` through SQLite's
    own index of it (``text_index``), and its parameter; None where it does not answer (a
    text shorter than a trigram, no index): the ``LIKE`` alone decides, as it always does."""
    lowered = (text or "").lower()
    if len(lowered) < MIN_CHARS or not text_indexed(tx):
        return None
    return match_clause(lowered)


def _like(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def task_of_subject(subject: str | None) -> str | None:
    """The task id a delivery's subject names (``smartdocumentor:task:42[:missing]``)."""
    found = None if subject is None else _SUBJECT_TASK.search(subject)
    return None if found is None else found.group(1)


def subject_patterns(task_id: str) -> list[str]:
    """LIKE patterns (escaped with ``\\``) for the subjects that name ``task_id``."""
    escaped = task_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return [f"%:task:{escaped}", f"%:task:{escaped}:%"]


def _wants_events(f: EventFilter) -> bool:
    """False when only deliveries whose events were all dropped are wanted."""
    return not (f.dropped and not f.states)


def _eventless(f: EventFilter) -> tuple[list[str], list[Any]] | None:
    """The conditions on ``d`` for the deliveries without events a listing shows; None when
    none can match (a filter only events answer, or only events' states wanted)."""
    if any(getattr(f, name) is not None for name in _EVENT_ONLY):
        return None
    clauses = [
        EVENTLESS,  # unprefixed, as the partial index has it: ``d`` alone has these columns
        "NOT EXISTS (SELECT 1 FROM events x WHERE x.delivery_id = d.id)",
    ]
    params: list[Any] = []
    wanted = {s.value for s in f.states} | ({"dropped"} if f.dropped else set())
    if wanted:
        cases = {
            "pending": "d.state = 'pending'",
            "dead": "d.state = 'dead'",
            "dropped": "(d.state = 'routed' AND d.dropped = 1)",
        }
        chosen = [sql for name, sql in cases.items() if name in wanted]
        if not chosen:
            return None
        clauses.append("(" + " OR ".join(chosen) + ")")
    if f.since is not None:
        clauses.append("d.id >= ?")
        params.append(_id_bound(f.since))
    if f.until is not None:
        clauses.append("d.id < ?")
        params.append(_id_bound(f.until))
    if f.route is not None:
        clauses.append("d.route = ?")
        params.append(f.route)
    if f.task_id is not None:
        clauses.append("(d.subject LIKE ? ESCAPE '\\' OR d.subject LIKE ? ESCAPE '\\')")
        params += subject_patterns(f.task_id)
    return clauses, params


def _bare_state(routing: str) -> ListedState:
    return "pending" if routing == "pending" else "dead" if routing == "dead" else "dropped"


def _candidates(tx: Tx, f: EventFilter) -> tuple[str, list[Any], bool]:
    """Where a listing starts: every event (in index order), or, when only rare states are
    wanted (pending, dead: never delivered), the events of the sends in those states, read
    first, through their partial indexes: scanning every event in order for a few dead ones
    took 0.3 to 0.6 s at a million events (``bench/operator_list.py``).  Each state is its
    own ``state = '<literal>'`` select, the form SQLite matches to a partial index; an event
    may come twice (dead at two sinks), so the third value says the rows need DISTINCT."""
    states = {s for s in f.states if s is not SendState.DELIVERED}
    if not states or len(states) < len(set(f.states)):
        return "events e", [], False
    sink = " AND s.sink = ?" if f.sink is not None else ""
    selects = [
        f"SELECT s.event_id AS id FROM sends s WHERE s.state = '{state.value}'{sink}"
        for state in sorted(states)
    ]
    return (
        f"({' UNION ALL '.join(selects)}) c {tx.dialect.ordered_join} events e ON e.id = c.id",
        [] if f.sink is None else [f.sink] * len(selects),
        True,
    )


def _where(
    f: EventFilter, *, from_sends: bool = False, text_met: bool = False
) -> tuple[list[str], list[Any]]:
    """The conditions on ``e``; ``from_sends``: the listing starts from the sends of the
    wanted states at ``f.sink`` already, which is that condition met; ``text_met``: from the
    events whose name holds the text already."""
    clauses: list[str] = []
    params: list[Any] = []
    if f.since is not None:
        clauses.append("e.delivery_id >= ?")
        params.append(_id_bound(f.since))
    if f.until is not None:
        clauses.append("e.delivery_id < ?")
        params.append(_id_bound(f.until))
    for name in _EQUAL:
        value = getattr(f, name)
        if value is not None:
            clauses.append(f"e.{name} = ?")
            params.append(value)
    if f.text and not text_met:
        clauses.append("lower(e.display_name) LIKE ? ESCAPE '\\'")
        params.append(_like(f.text))
    states = list(dict.fromkeys(f.states))
    if f.sink is not None:
        if not from_sends:
            only = f" AND s.state IN ({','.join('?' * len(states))})" if states else ""
            clauses.append(f"e.id IN (SELECT s.event_id FROM sends s WHERE s.sink = ?{only})")
            params += [f.sink, *(s.value for s in states)]
    elif states:
        # The event's state, by the rule: every (any pending, any dead) it maps to a wanted
        # state, made from ``event_state`` itself.
        cases = [
            (pending, dead)
            for pending, dead in itertools.product((False, True), repeat=2)
            if event_state(pending, dead) in states
        ]
        clauses.append("(" + " OR ".join(f"({_PENDING} = ? AND {_DEAD} = ?)" for _ in cases) + ")")
        params += [v for case in cases for v in case]
    return clauses, params


def _attempts(rows: list[Any]) -> list[AttemptInfo]:
    """Attempt rows (attempt, owner, started, finished, outcome, error), numbered in order.

    Stored numbers are not shown: those of a send replayed are moved below its new ones."""
    ordered = sorted(rows, key=lambda r: r[0])
    return [
        AttemptInfo(
            number=n,
            started_at=datetime.fromtimestamp(r[2], UTC),
            finished_at=_ts(r[3]),
            outcome=r[4],
            error=r[5],
            owner=r[1],
        )
        for n, r in enumerate(ordered, start=1)
    ]


def _events_sql(tx: Tx, where: EventFilter, after: tuple[str, int] | None) -> tuple[str, list[Any]]:
    """The events a listing shows, unordered (``_page_rows`` orders and cuts)."""
    source, params, distinct = _candidates(tx, where)
    clauses, more_params = _where(where, from_sends=distinct)
    params += more_params
    if after is not None:
        clauses.append("e.delivery_id <= ? AND (e.delivery_id < ? OR e.position < ?)")
        params += [after[0], after[0], after[1]]
        # The same bound on the joined deliveries: without it PostgreSQL merge-joins
        # from the newest delivery down to the cursor (0.1 s at a million).
        clauses.append("d.id <= ?")
        params.append(after[0])
    if where.until is not None:
        clauses.append("d.id < ?")
        params.append(_id_bound(where.until))
    if where.since is not None:
        clauses.append("d.id >= ?")
        params.append(_id_bound(where.since))
    sql = (
        f"SELECT {'DISTINCT ' if distinct else ''}{_ROW_COLUMNS}, NULL, NULL FROM {source}"
        " JOIN deliveries d ON d.id = e.delivery_id"
        f"{' WHERE ' + ' AND '.join(clauses) if clauses else ''}"
    )
    return sql, params


TEXT_WINDOW = 2_000
"""Free text is first looked for in this many events, in order, from where the page starts."""
_WINDOW_COLUMNS = (
    "e.id, e.delivery_id, e.position, e.route, e.vendor, e.kind, e.task_id, e.batch_id,"
    " e.workspace_id, e.external_id, e.display_name"
)


def _text_page(
    tx: Tx, where: EventFilter, after: tuple[str, int] | None, limit: int
) -> list[Any] | None:
    """A page of a free-text listing, found in two steps, or None where they do not apply.

    Text in many names ("invoice") fills a page within the next few thousand events, which an
    ordered scan reads in milliseconds, while a trigram index would intersect lists of most
    events; rare text is the other way round.  So the next ``TEXT_WINDOW`` events are read in
    order first, and only if the page is not full by then is the rest asked the usual way
    (through the trigram index on PostgreSQL), after the window's last event."""
    if not where.text or not _wants_events(where):
        return None
    source, _, distinct = _candidates(tx, where)
    if distinct or source != "events e":
        return None
    bounds: list[str] = []
    params: list[Any] = []
    if after is not None:
        bounds.append("e.delivery_id <= ? AND (e.delivery_id < ? OR e.position < ?)")
        params += [after[0], after[0], after[1]]
    if where.until is not None:
        bounds.append("e.delivery_id < ?")
        params.append(_id_bound(where.until))
    if where.since is not None:
        bounds.append("e.delivery_id >= ?")
        params.append(_id_bound(where.since))
    bounded = f" WHERE {' AND '.join(bounds)}" if bounds else ""
    in_order = " ORDER BY e.delivery_id DESC, e.position DESC"
    window = f"(SELECT {_WINDOW_COLUMNS} FROM events e{bounded}{in_order} LIMIT {TEXT_WINDOW}) e"
    clauses, more = _where(where)
    rows = tx.execute(
        f"SELECT {_ROW_COLUMNS}, NULL, NULL FROM {window} JOIN deliveries d ON d.id = e.delivery_id"
        f" WHERE {' AND '.join(clauses)}{_ORDER} LIMIT ?",
        [*params, *more, limit + 1],
    ).fetchall()
    if len(rows) > limit:
        return rows
    edge = tx.execute(
        f"SELECT e.delivery_id, e.position FROM events e{bounded}{in_order}"
        f" LIMIT 1 OFFSET {TEXT_WINDOW - 1}",
        params,
    ).fetchone()
    if edge is None:
        return rows  # the window held every event there is to look at
    wanted = limit + 1 - len(rows)
    narrow = _text_match(tx, where.text)
    if tx.dialect.text_first or narrow is not None:
        return rows + _matches_first(tx, where, (edge[0], edge[1]), wanted, narrow)
    sql, rest = _events_sql(tx, where, (edge[0], edge[1]))
    return rows + tx.execute(f"{sql}{_ORDER} LIMIT ?", [*rest, wanted]).fetchall()


def _matches_first(
    tx: Tx,
    where: EventFilter,
    after: tuple[str, int],
    wanted: int,
    narrow: tuple[str, str] | None,
) -> list[Any]:
    """Up to ``wanted`` events after ``after`` whose name holds ``where.text``, the matches
    found through the text's own index first (``Dialect.text_first``; on SQLite ``narrow``,
    from ``_text_match``), then filtered, ordered and cut, and only those joined to their
    deliveries."""
    bounds = ["lower(e.display_name) LIKE ? ESCAPE '\\'"]
    params: list[Any] = [_like(where.text or "")]
    if narrow is not None:
        bounds.insert(0, narrow[0])
        params.insert(0, narrow[1])
    bounds.append("e.delivery_id <= ? AND (e.delivery_id < ? OR e.position < ?)")
    params += [after[0], after[0], after[1]]
    clauses, more = _where(where, text_met=True)
    found = (
        f"WITH m AS MATERIALIZED (SELECT {_WINDOW_COLUMNS} FROM events e"
        f" WHERE {' AND '.join(bounds)})"
        " SELECT * FROM m e"
        f"{' WHERE ' + ' AND '.join(clauses) if clauses else ''}"
        " ORDER BY e.delivery_id DESC, e.position DESC LIMIT ?"
    )
    rows: list[Any] = tx.execute(
        f"SELECT {_ROW_COLUMNS}, NULL, NULL FROM ({found}) e"
        f" JOIN deliveries d ON d.id = e.delivery_id{_ORDER}",
        [*params, *more, wanted],
    ).fetchall()
    return rows


_ORDER = " ORDER BY 2 DESC, 3 DESC"
"""Newest delivery first, then its events last to first: the ``events_order`` index's order
(and the deliveries' key's, for those without events, placed at position -1)."""


def _page_rows(selects: list[tuple[str, list[Any]]], limit: int, offset: int, tx: Tx) -> list[Any]:
    """Up to ``limit + 1`` rows from ``offset`` of the union of ``selects``, in order.

    From the start (a first page, a cursor's page) each select runs on its own, ordered and
    cut, and the few rows are merged here: each then walks its own index and stops at the
    page.  A page number deep down (an offset) leaves the union to the database."""
    if not selects:
        return []
    if len(selects) == 1 or offset:
        sql = " UNION ALL ".join(sql for sql, _ in selects)
        params = [p for _, ps in selects for p in ps]
        return list(tx.execute(f"{sql}{_ORDER} LIMIT ? OFFSET ?", [*params, limit + 1, offset]))
    rows: list[Any] = []
    for sql, params in selects:
        rows += tx.execute(f"{sql}{_ORDER} LIMIT ?", [*params, limit + 1]).fetchall()
    rows.sort(key=lambda r: (r[1], r[2]), reverse=True)
    return rows[: limit + 1]


def _event_row(r: Any, sends: dict[str, dict[str, SendState]]) -> EventRow:
    if r[0] is None:
        return EventRow(
            event_id=None,
            delivery_id=r[1],
            route=r[3],
            vendor=None,
            kind=None,
            task_id=task_of_subject(r[6]),
            batch_id=None,
            workspace_id=None,
            external_id=None,
            display_name=None,
            received_at=datetime.fromisoformat(r[11]),
            state=_bare_state(r[12]),
            sends={},
            last_error=r[13],
        )
    mine = sends[r[0]]
    return EventRow(
        event_id=r[0],
        delivery_id=r[1],
        route=r[3],
        vendor=r[4],
        kind=r[5],
        task_id=r[6],
        batch_id=r[7],
        workspace_id=r[8],
        external_id=r[9],
        display_name=r[10],
        received_at=datetime.fromisoformat(r[11]),
        state=event_state(
            SendState.PENDING in mine.values(), SendState.DEAD in mine.values()
        ).value,
        sends=mine,
    )


def _selects(
    tx: Tx, where: EventFilter, after: tuple[str, int] | None
) -> list[tuple[str, list[Any]]]:
    """The events, and the deliveries without events, a listing shows: a select for each."""
    selects = [_events_sql(tx, where, after)] if _wants_events(where) else []
    bare = _eventless(where)
    if bare is not None:
        clauses, params = bare
        if after is not None:
            # A delivery has events or none: after any row of delivery X come the deliveries
            # before X.
            clauses.append("d.id < ?")
            params.append(after[0])
        sql = f"SELECT {_BARE_COLUMNS} FROM deliveries d WHERE {' AND '.join(clauses)}"
        selects.append((sql, params))
    return selects


class Browse:
    """Mixed into ``SqlJournal``."""

    async def _read(self, fn: Any) -> Any:
        raise NotImplementedError

    async def events(
        self, where: EventFilter, limit: int = 50, *, cursor: str | None = None, offset: int = 0
    ) -> EventPage:
        after = None if cursor is None else parse_cursor(cursor)

        def work(tx: Tx) -> EventPage:
            # Free text is an event's: no delivery without events matches it.
            rows = None if offset else _text_page(tx, where, after, limit)
            if rows is None:
                rows = _page_rows(_selects(tx, where, after), limit, offset, tx)
            more = len(rows) > limit
            rows = rows[:limit]
            event_ids = [r[0] for r in rows if r[0] is not None]
            sends: dict[str, dict[str, SendState]] = {i: {} for i in event_ids}
            if event_ids:
                for event_id, sink, state in tx.execute(
                    f"SELECT event_id, sink, state FROM sends WHERE event_id IN"
                    f" ({tx.marks(len(event_ids))}) ORDER BY sink",
                    event_ids,
                ):
                    sends[event_id][sink] = SendState(state)
            items = [_event_row(r, sends) for r in rows]
            last = rows[-1] if rows else None
            next_cursor = None
            if more and last is not None:
                next_cursor = f"{last[1]}.{max(0, last[2])}"
            return EventPage(items, next_cursor)

        page: EventPage = await self._read(work)
        return page

    async def count_events(self, where: EventFilter) -> int:
        def work(tx: Tx) -> int:
            total = 0
            if _wants_events(where):
                source, params, distinct = _candidates(tx, where)
                clauses, more_params = _where(where, from_sends=distinct)
                narrow = None if distinct else _text_match(tx, where.text)
                if narrow is not None:
                    clauses.append(narrow[0])
                    more_params.append(narrow[1])
                counted = "count(DISTINCT e.id)" if distinct else "count(*)"
                sql = f"SELECT {counted} FROM {source}" + (
                    " WHERE " + " AND ".join(clauses) if clauses else ""
                )
                total += int(tx.execute(sql, [*params, *more_params]).fetchone()[0])
            bare = _eventless(where)
            if bare is not None:
                sql = f"SELECT count(*) FROM deliveries d WHERE {' AND '.join(bare[0])}"
                total += int(tx.execute(sql, bare[1]).fetchone()[0])
            return total

        count: int = await self._read(work)
        return count

    async def detail(self, ref: str) -> DeliveryDetail | None:
        def work(tx: Tx) -> DeliveryDetail | None:
            found = tx.execute("SELECT delivery_id FROM events WHERE id = ?", (ref,)).fetchone()
            delivery_id, event_id = (found[0], ref) if found else (ref, None)
            infos = delivery_infos(tx, [delivery_id])
            if not infos:
                return None
            raw = raw_delivery(
                tx.execute(
                    f"SELECT {RAW_COLUMNS} FROM deliveries d WHERE d.id = ?", (delivery_id,)
                ).fetchone()
            )
            sends = send_infos(tx, delivery_id)
            attempts: dict[int, list[Any]] = {s.send_id: [] for s in sends}
            if sends:
                for r in tx.execute(
                    "SELECT send_id, attempt, owner, started_at, finished_at, outcome, error"
                    f" FROM send_attempts WHERE send_id IN ({tx.marks(len(attempts))})",
                    list(attempts),
                ):
                    attempts[r[0]].append(r[1:])
            events = []
            for eid, body in tx.execute(
                "SELECT id, body FROM events WHERE delivery_id = ? ORDER BY position",
                (delivery_id,),
            ).fetchall():
                if event_id is not None and eid != event_id:
                    continue
                events.append(
                    EventDetail(
                        eid,
                        Event.model_validate_json(bytes(body)),
                        [
                            SendDetail(s, _attempts(attempts[s.send_id]))
                            for s in sends
                            if s.event_id == eid
                        ],
                    )
                )
            routing = tx.execute(
                "SELECT attempt, owner, started_at, finished_at, outcome, error FROM attempts"
                " WHERE delivery_id = ?",
                (delivery_id,),
            ).fetchall()
            return DeliveryDetail(
                delivery=infos[0],
                raw=raw,
                event_id=event_id,
                events=events,
                routing_attempts=_attempts(routing),
                actions=_actions(tx, delivery_id),
            )

        detail: DeliveryDetail | None = await self._read(work)
        return detail

    async def batch(self, batch_id: str) -> dict[SendState, int]:
        """How many events of a vendor batch are in each state (all zero: no such batch)."""

        def work(tx: Tx) -> dict[SendState, int]:
            out = dict.fromkeys(SendState, 0)
            for _, pending, dead in tx.execute(
                f"SELECT e.id, {_PENDING}, {_DEAD} FROM events e WHERE e.batch_id = ?",
                (batch_id,),
            ):
                out[event_state(bool(pending), bool(dead))] += 1
            return out

        counts: dict[SendState, int] = await self._read(work)
        return counts

    async def actions(self, limit: int = 100) -> list[ActionInfo]:
        """The latest operators' actions, newest first."""

        def work(tx: Tx) -> list[ActionInfo]:
            rows = tx.execute(
                f"SELECT {_ACTION_COLUMNS} FROM actions ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
            return [_action(r) for r in rows]

        found: list[ActionInfo] = await self._read(work)
        return found


_ACTION_COLUMNS = "id, at, actor, action, delivery_id, event_id, sink, detail"


def _action(r: Any) -> ActionInfo:
    detail = {} if r[7] is None else orjson.loads(r[7])
    return ActionInfo(r[0], datetime.fromtimestamp(r[1], UTC), r[2], r[3], r[4], r[5], r[6], detail)


def _actions(tx: Tx, delivery_id: str) -> list[ActionInfo]:
    rows = tx.execute(
        f"SELECT {_ACTION_COLUMNS} FROM actions WHERE delivery_id = ? ORDER BY id",
        (delivery_id,),
    ).fetchall()
    return [_action(r) for r in rows]
