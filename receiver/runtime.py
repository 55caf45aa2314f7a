"""Everything a running hookdock holds: config, journal, sources, sinks, dispatcher, state.

``Runtime.build`` validates everything that can be checked without I/O (it is what
``hookdock check`` runs); ``start`` opens the journal and starts the dispatcher; ``stop`` undoes
both within a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from handlers.poller import PolledEventSource, Poller
from handlers.sink import FileSink, Sink
from handlers.source import Source
from receiver.alerts import AlertingSource
from receiver.auth import AuthConfig, credential_headers
from receiver.bulk_replays import BulkReplays
from receiver.config import Config, FilesConfig, RouteConfig
from receiver.dispatcher import Dispatcher, RouteTarget, SinkTarget
from receiver.fetch import Fetcher
from receiver.journal import SqliteConfig, SqlJournal, make_journal
from receiver.metrics import Metrics
from receiver.named_jobs import NamedJob, NamedJobs
from receiver.open_files import raise_open_files_limit
from receiver.operator import Operator
from receiver.ops_webhooks import OpsWebhooks
from receiver.plugins import Plugins, close_sinks, load_plugins
from receiver.pollers import PollerRunner
from receiver.processes import Heartbeat, new_owner
from receiver.retry import RetryPolicy
from receiver.routing import Router

__all__ = ["IngestRoute", "Runtime"]

log = logging.getLogger("hookdock")

# Worth keeping with every delivery, whatever its source: who sent it, for the operator.
_ALWAYS_KEPT = frozenset({"user-agent"})

# A write that has not committed within this long is answered 503: the sender retries later.
JOURNAL_STALL_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class IngestRoute:
    config: RouteConfig
    source: Source
    source_name: str
    media_types: frozenset[str]
    auth: AuthConfig
    """The route's scheme, its source's default filled in."""
    kept_headers: frozenset[str]
    """Lower-case names of the headers kept with a delivery: what the source reads, never a
    credential."""

    @classmethod
    def make(cls, config: RouteConfig, source: Source, auth: AuthConfig) -> IngestRoute:
        # getattr: kept_headers is optional (handlers.source), and sources written before it
        # existed need not subclass SourceBase.
        wanted = {h.lower() for h in getattr(source, "kept_headers", ())} | _ALWAYS_KEPT
        return cls(
            config=config,
            source=source,
            source_name=config.source,
            media_types=frozenset(source.content_types),
            auth=auth,
            kept_headers=frozenset(wanted - credential_headers(auth)),
        )


@dataclass
class Runtime:
    config: Config
    base_dir: Path
    journal: SqlJournal
    routes: dict[str, IngestRoute]
    sinks: dict[str, Sink]
    run_dispatcher: bool
    pollers: dict[str, Poller] = field(default_factory=dict)
    poller_runner: PollerRunner | None = None
    dispatcher: Dispatcher | None = None
    draining: bool = False
    ingest_inflight: int = 0
    """Requests whose body has arrived, being checked and journaled: the work the dispatcher
    yields to.  A request whose body still trickles in is not counted: it costs nothing."""
    shutdown_deadline: float | None = None
    role: str = "serve"
    owner: str = ""
    """This process's name in the journal: its leases and its heartbeat carry it."""
    heartbeat: Heartbeat | None = None
    jobs: NamedJobs | None = None
    replays: BulkReplays | None = None
    """Bulk-replay jobs this process runs or took over (``receiver.bulk_replays``)."""
    metrics: Metrics = field(default_factory=Metrics)
    alerts: OpsWebhooks | None = None
    _started: bool = field(default=False, repr=False)
    _fetchers: dict[str, Fetcher] = field(default_factory=dict, repr=False)
    _watchdog: asyncio.Task[None] | None = field(default=None, repr=False)

    @classmethod
    def build(
        cls,
        config: Config,
        base_dir: Path,
        *,
        journal: SqlJournal | None = None,
        run_dispatcher: bool | None = None,
        plugins: Plugins | None = None,
        log_plugins: bool = True,
    ) -> Runtime:
        """Load every plugin the config names; ``ConfigError`` lists every problem at once."""
        if plugins is None:
            plugins = load_plugins(config, base_dir)
            plugins.raise_problems()
            if log_plugins:
                plugins.log_loaded()
        sources, sinks = plugins.sources, plugins.sinks
        routes = {
            r.name: IngestRoute.make(r, sources[r.name], plugins.auths[r.name])
            for r in config.routes
        }
        return cls(
            config=config,
            base_dir=base_dir,
            journal=journal or make_journal(config.journal),
            routes=routes,
            sinks=sinks,
            pollers=plugins.pollers,
            run_dispatcher=config.dispatcher.enabled if run_dispatcher is None else run_dispatcher,
            metrics=Metrics(frozenset(routes)),
        )

    @property
    def spool_dir(self) -> Path:
        """Where sinks that must read a file twice spool it (anonymous files only)."""
        if isinstance(self.config.journal, SqliteConfig):
            return self.config.journal.path.parent / "spool"
        return Path(tempfile.gettempdir()) / "hookdock-spool"

    def route_targets(self) -> dict[str, RouteTarget]:
        targets = {
            name: RouteTarget(
                AlertingSource(route.source),
                Router(route.config.rules, route.config.sinks),
                self._fetcher(route.config.name, route.config.files, route.config.sink_names()),
            )
            for name, route in self.routes.items()
        }
        # A poller's own events are deliveries on a route named after it.
        for poller in self.config.pollers:
            targets[poller.name] = RouteTarget(
                PolledEventSource(),
                Router(poller.rules, poller.sinks),
                self._fetcher(poller.name, poller.files, poller.sink_names()),
            )
        return targets

    def make_poller_runner(self) -> PollerRunner:
        configs = {p.name: p for p in self.config.pollers if p.name in self.pollers}
        # Look at due times at least as often as the shortest interval (5 s at most).
        tick = min([5.0, *(p.interval_seconds for p in configs.values())])
        return PollerRunner(
            self.journal,
            self.owner,
            configs,
            self.pollers,
            {name: (route.source_name, route.source) for name, route in self.routes.items()},
            self.dispatcher,
            tick_seconds=tick,
        )

    def _fetcher(self, route: str, files: FilesConfig, names: list[str]) -> Fetcher | None:
        """The route's fetcher, if it fetches files and one of its sinks takes them."""
        if not files.fetch:
            return None
        takers = [name for name in names if isinstance(self.sinks.get(name), FileSink)]
        others = [name for name in names if name not in takers]
        if others:
            log.info(
                "route %s: no files for sinks that take none (%s): they get events with links",
                route,
                ", ".join(others),
            )
        if not takers:
            return None
        fetcher = self._fetchers.get(route)
        if fetcher is None:
            fetcher = Fetcher(route, files, self.spool_dir)
            self._fetchers[route] = fetcher
        return fetcher

    def sink_targets(self) -> dict[str, SinkTarget]:
        targets = {}
        for name, sink in self.sinks.items():
            host = self.config.sink_host(name)
            policy = RetryPolicy.from_config(self.config.sink_retry(name))
            # A plugin may know better than the general default (a local disk is not a remote
            # service to spare, and the more writes wait, the more share a group's fsyncs).
            slots = (
                host.concurrency
                or getattr(sink, "default_concurrency", None)
                or self.config.dispatcher.concurrency
            )
            targets[name] = SinkTarget(sink, policy, slots)
        return targets

    async def start(self) -> None:
        raise_open_files_limit()
        self.journal.observe_commits(self.metrics.committed)
        if self.config.alerts.urls:
            self.alerts = OpsWebhooks(self.config.alerts, self.metrics)
        await asyncio.to_thread(self.journal.open)
        self._watchdog = asyncio.create_task(
            self.journal.watchdog(JOURNAL_STALL_SECONDS), name="hookdock-journal-watchdog"
        )
        self._started = True
        cluster = self.config.cluster
        self.owner = self.owner or new_owner(cluster.node)
        self.heartbeat = Heartbeat(
            self.journal,
            self.owner,
            self.role,
            every_seconds=cluster.heartbeat_seconds,
            stale_seconds=cluster.stale_seconds,
            node=cluster.node,
        )
        await self.heartbeat.start()
        self.jobs = NamedJobs(self.journal, self.owner, self.named_jobs())
        self.jobs.start()
        self.replays = BulkReplays(
            self.operator(),
            self.owner,
            busy=self.ingest_busy,
            is_gone=self.heartbeat.is_gone,
            stale_seconds=cluster.stale_seconds,
            chunk=self.config.admin.replay_chunk,
        )
        self.replays.start()
        if self.run_dispatcher:
            await asyncio.to_thread(self.spool_dir.mkdir, parents=True, exist_ok=True)
            self.dispatcher = Dispatcher(
                self.journal,
                self.route_targets(),
                self.sink_targets(),
                self.config.dispatcher,
                ingest_load=lambda: self.ingest_inflight,
                owner=self.owner,
                stale_seconds=cluster.stale_seconds,
                is_dead_owner=self.heartbeat.is_gone,
                metrics=self.metrics,
                alerts=self.alerts,
            )
            await self.dispatcher.start()
        if self.pollers:
            self.poller_runner = self.make_poller_runner()
            self.poller_runner.start()

    def operator(self) -> Operator:
        """The operator service over this journal and the configured sinks' names."""
        sinks = {name: str(options.get("type")) for name, options in self.config.sinks.items()}
        return Operator(self.journal, sinks)

    def ingest_busy(self) -> bool:
        """Webhooks are pouring in: what bulk replays wait on to ease."""
        busy_at = self.config.dispatcher.busy_requests
        return busy_at > 0 and self.ingest_inflight >= busy_at

    def named_jobs(self) -> list[NamedJob]:
        """What one process at a time does, whichever replica it is."""
        jobs = []
        retention = self.config.retention
        if retention.delivered_days > 0 or retention.dead_days > 0:

            async def prune() -> None:
                now = time.time()
                if retention.delivered_days > 0:
                    done = await self.journal.prune(now - retention.delivered_days * 86400)
                    if done:
                        log.info("retention: deleted %d delivered deliveries", done)
                if retention.dead_days > 0:
                    dead = await self.journal.prune_dead(now - retention.dead_days * 86400)
                    if dead:
                        log.info("retention: deleted %d dead deliveries", dead)

            jobs.append(NamedJob("retention", retention.every_seconds, prune))
        return jobs

    def begin_shutdown(self) -> None:
        """Readiness goes false and the dispatcher claims nothing more; in-flight work goes on."""
        if not self.draining:
            self.draining = True
            self.shutdown_deadline = time.monotonic() + self.config.server.grace_seconds
            if self.dispatcher is not None:
                self.dispatcher.stop_claiming()

    async def stop(self) -> None:
        self.begin_shutdown()
        deadline = self.shutdown_deadline or time.monotonic()
        if self.poller_runner is not None:
            await self.poller_runner.stop()
        if self.dispatcher is not None:
            await self.dispatcher.stop(max(0.5, deadline - time.monotonic()))
        await close_sinks(self.sinks)
        if self.alerts is not None:
            await self.alerts.aclose()
        for fetcher in self._fetchers.values():
            await fetcher.aclose()
        if self.jobs is not None:
            await self.jobs.stop()
        if self.replays is not None:
            await self.replays.stop()
        if self.heartbeat is not None:
            await self.heartbeat.stop()
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        if self._started:
            await self.journal.close()
