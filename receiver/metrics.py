"""``GET /metrics``: Prometheus metrics, with ``prometheus-client``.

Two kinds, on purpose:

* what this process does, counted as it happens: ingest requests by route and status, journal
  commits (batch size and latency), send attempts by sink and outcome, the time from receipt
  to delivery per sink, file bytes stored per sink;
* what the journal holds (deliveries and sends by state, dead letters per sink and code,
  stopped sinks, each sink's due sends and the age of its oldest pending one, each poller's
  polls, failures in a row, findings, API calls and last success), read from the journal at
  scrape time, so every replica reports the same figures and none double-counts another's
  work.

Each app has a registry of its own (no process-wide globals), so tests and a worker beside a
server never mix figures.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from receiver.journal import JournalError, SqlJournal
from receiver.journal.backlog import SinkBacklog
from receiver.journal.pollers import PollerState

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_DELIVERY = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600, 21600, 86400)


@dataclass
class _Snapshot:
    deliveries: dict[str, int] = field(default_factory=dict)
    sends: dict[tuple[str, str], int] = field(default_factory=dict)
    dead: dict[tuple[str, str], int] = field(default_factory=dict)
    stopped: dict[str, bool] = field(default_factory=dict)
    backlog: dict[str, SinkBacklog] = field(default_factory=dict)
    read_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    pollers: list[PollerState] = field(default_factory=list)


class _JournalFigures(Collector):
    """Gauges of what the journal holds, from the snapshot the scrape has just read."""

    def __init__(self) -> None:
        self.snapshot = _Snapshot()

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        deliveries = GaugeMetricFamily(
            "hookdock_deliveries", "Deliveries in the journal by overall state", labels=["state"]
        )
        for state, n in sorted(snap.deliveries.items()):
            deliveries.add_metric([state], n)
        sends = GaugeMetricFamily(
            "hookdock_sends", "Sends in the journal by sink and state", labels=["sink", "state"]
        )
        for (sink, state), n in sorted(snap.sends.items()):
            sends.add_metric([sink, state], n)
        dead = GaugeMetricFamily(
            "hookdock_dead_letters",
            "Dead sends by sink and failure code (none: no code)",
            labels=["sink", "code"],
        )
        for (sink, code), n in sorted(snap.dead.items()):
            dead.add_metric([sink, code], n)
        stopped = GaugeMetricFamily(
            "hookdock_sink_stopped",
            "1 while a sink is stopped (a 410, or an operator)",
            labels=["sink"],
        )
        for sink, is_stopped in sorted(snap.stopped.items()):
            stopped.add_metric([sink], 1 if is_stopped else 0)
        due = GaugeMetricFamily(
            "hookdock_sink_due_sends",
            "Pending sends due now (waiting for a slot, not for a retry), by sink",
            labels=["sink"],
        )
        oldest = GaugeMetricFamily(
            "hookdock_sink_oldest_pending_seconds",
            "Age since receipt of a sink's oldest pending send (0 with none): how far behind",
            labels=["sink"],
        )
        for sink in sorted(snap.stopped):
            waiting = snap.backlog.get(sink, SinkBacklog(0, 0, None))
            due.add_metric([sink], waiting.due)
            oldest.add_metric([sink], waiting.oldest_seconds(snap.read_at))
        yield from (deliveries, sends, dead, stopped, due, oldest)
        yield from _poller_families(snap.pollers)


def _poller_families(pollers: list[PollerState]) -> Iterator[Metric]:
    """Each poller's figures as the journal keeps them (whichever replica polled)."""
    polls = CounterMetricFamily("hookdock_poller_polls", "Polls run, by poller", labels=["poller"])
    failing = GaugeMetricFamily(
        "hookdock_poller_failures_in_a_row",
        "Failed polls since the last success (0 while it works), by poller",
        labels=["poller"],
    )
    found = CounterMetricFamily(
        "hookdock_poller_found",
        "Deliveries and events its polls entered, by poller",
        labels=["poller"],
    )
    calls = CounterMetricFamily(
        "hookdock_poller_api_calls", "Vendor API calls its polls made, by poller", labels=["poller"]
    )
    last_ok = GaugeMetricFamily(
        "hookdock_poller_last_success_timestamp_seconds",
        "When its last successful poll ran (epoch seconds), by poller",
        labels=["poller"],
    )
    for state in sorted(pollers, key=lambda p: p.name):
        polls.add_metric([state.name], state.polls)
        failing.add_metric([state.name], state.failures)
        found.add_metric([state.name], state.found)
        calls.add_metric([state.name], state.calls)
        if state.last_ok_at is not None:
            last_ok.add_metric([state.name], state.last_ok_at.timestamp())
    yield from (polls, failing, found, calls, last_ok)


class Metrics:
    """This process's metrics, and the scrape that adds the journal's."""

    def __init__(self, routes: frozenset[str] = frozenset()) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.routes = routes
        self.ingest = Counter(
            "hookdock_ingest_requests",
            "Webhook requests answered, by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.commit_seconds = Histogram(
            "hookdock_journal_commit_seconds",
            "Time one group commit took (fsync included)",
            buckets=_LATENCY,
            registry=self.registry,
        )
        self.commit_batch = Histogram(
            "hookdock_journal_commit_batch_size",
            "Jobs (appends, outcomes, ...) in one group commit",
            buckets=_BATCH,
            registry=self.registry,
        )
        self.attempts = Counter(
            "hookdock_send_attempts",
            "Attempts at sends by sink and outcome (delivered, retry, dead, gone)",
            ["sink", "outcome"],
            registry=self.registry,
        )
        self.receipt_to_delivery = Histogram(
            "hookdock_receipt_to_delivery_seconds",
            "Time from a delivery's receipt to its event's delivery, by sink",
            ["sink"],
            buckets=_DELIVERY,
            registry=self.registry,
        )
        self.file_bytes = Counter(
            "hookdock_file_bytes_stored",
            "Bytes of files fetched and stored, by sink",
            ["sink"],
            registry=self.registry,
        )
        self.alerts = Counter(
            "hookdock_alerts",
            "Operational webhooks by type (send.dead, sink.stopped) and outcome",
            ["type", "outcome"],
            registry=self.registry,
        )
        self._journal_figures = _JournalFigures()
        self.registry.register(self._journal_figures)
        self._scrape = asyncio.Lock()

    # ------------------------------------------------------------------ what happens

    def request(self, route: str, status: int) -> None:
        # A route that does not exist is any string a caller sends: one label for them all.
        self.ingest.labels(route if route in self.routes else "(none)", str(status)).inc()

    def committed(self, batch: int, seconds: float) -> None:
        self.commit_batch.observe(batch)
        self.commit_seconds.observe(seconds)

    def attempt(self, sink: str, outcome: str, received_at: datetime | None) -> None:
        self.attempts.labels(sink, outcome).inc()
        if outcome == "delivered" and received_at is not None:
            waited = (datetime.now(UTC) - received_at).total_seconds()
            self.receipt_to_delivery.labels(sink).observe(max(0.0, waited))

    def stored_file(self, sink: str, size: int) -> None:
        self.file_bytes.labels(sink).inc(size)

    # ------------------------------------------------------------------ the scrape

    async def scrape(self, journal: SqlJournal, sinks: frozenset[str]) -> bytes:
        # One scrape at a time: each reads the journal into the snapshot it then renders.
        async with self._scrape:
            counts = await journal.counts()
            by_sink = await journal.sink_counts()
            snap = _Snapshot(
                deliveries={state.value: n for state, n in counts.items()},
                sends={
                    (sink, state.value): n
                    for sink, states in by_sink.items()
                    for state, n in states.items()
                },
                dead=await journal.dead_by_sink(),
            )
            stopped = {s.sink for s in await journal.stopped_sinks()}
            snap.stopped = {sink: sink in stopped for sink in sorted(sinks | stopped)}
            snap.backlog = await journal.sink_backlog()
            snap.pollers = await journal.poller_states()
            self._journal_figures.snapshot = snap
            return generate_latest(self.registry)

    def endpoint(self, journal: SqlJournal, sinks: frozenset[str]) -> Route:
        async def metrics(request: Request) -> Response:
            try:
                body = await self.scrape(journal, sinks)
            except JournalError as exc:
                # No partial figures: a scrape that fails is a gap Prometheus shows as such.
                return PlainTextResponse(f"hookdock: the journal cannot answer: {exc}\n", 503)
            return Response(body, media_type=CONTENT_TYPE)

        return Route("/metrics", metrics, methods=["GET"])
