"""``hookdock``: serve, run a worker, check a config, and look after the journal."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from handlers.files import format_bytes
from handlers.redact import redact_text
from handlers.sink import Sink
from receiver import cli_events, cli_setup
from receiver.cli_documill import add_commands as add_documill_commands
from receiver.cli_emulate import add_commands as add_emulate_commands
from receiver.cli_pollers import add_commands as add_poller_commands
from receiver.cli_pollers import poller_summary
from receiver.cli_smartdocumentor import add_commands as add_smartdocumentor_commands
from receiver.cli_superoffice import add_commands as add_superoffice_commands
from receiver.config import ClusterConfig, Config, load_config
from receiver.defaults import DEFAULT_DATA_DIR, default_config
from receiver.errors import BadRequest, ConfigError, OperatorError, ReceiverError
from receiver.heap import event_loop_factory, freeze_startup_heap
from receiver.journal import (
    JournalError,
    SqliteConfig,
    SqlJournal,
    make_journal,
)
from receiver.journal.backlog import sink_figures
from receiver.journal.base import DeliveryState, SendState
from receiver.logs import setup_logging
from receiver.operator import Operator
from receiver.operator.config import (
    OperatorConfig,
    embedded_operator_config,
    load_operator_config,
)
from receiver.plugins import (
    PluginError,
    available_plugins,
    close_sinks,
    load_plugin,
    load_plugins,
    sink_option_problems,
)
from receiver.runtime import Runtime
from receiver.secrets import register_config_secrets

__all__ = ["main"]

log = logging.getLogger("hookdock")


def _resolve(args: argparse.Namespace) -> tuple[Config, Path, bool]:
    """The config to run: --config, else $HOOKDOCK_CONFIG, else the embedded defaults."""
    path = args.config or os.environ.get("HOOKDOCK_CONFIG")
    if path:
        config, base_dir = load_config(Path(path))
        embedded = False
    else:
        data_dir = Path(args.data_dir or os.environ.get("HOOKDOCK_DATA") or DEFAULT_DATA_DIR)
        config, base_dir = default_config(data_dir)
        embedded = True
    register_config_secrets(config)
    return config, base_dir, embedded


def _print_default_urls(config: Config, host: str, port: int) -> None:
    shown = "localhost" if host in ("0.0.0.0", "::", "127.0.0.1") else host
    print("hookdock is running on its embedded defaults.", flush=True)
    if isinstance(config.journal, SqliteConfig):
        print(f"  journal: {config.journal.path}")
    print(f"  exports: {config.sinks['exports']['root']}")
    print("Paste these URLs into SmartDocumentor's export settings (keep them secret):")
    for route in config.routes:
        token = getattr(route.auth, "token", None)
        secret = token.get_secret_value() if token is not None else ""
        print(f"  {route.source:40} http://{shown}:{port}/hooks/{route.name}/{secret}")
    print("(Use your public host name in place of localhost; put TLS in front.)", flush=True)


def _cmd_serve(args: argparse.Namespace) -> int:
    from receiver.server import serve

    config, base_dir, embedded = _resolve(args)
    setup_logging(args.log_level, config.log)
    runtime = Runtime.build(config, base_dir)
    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port
    if embedded:
        _print_default_urls(config, host, port)
    else:
        shown = "localhost" if host in ("0.0.0.0", "::", "127.0.0.1") else host
        for name, kind, url in cli_setup.webhook_urls(
            config, f"http://{shown}:{port}", show_tokens=False
        ):
            log.info("route %s (%s): %s", name, kind, url)
    serve(runtime, host=host, port=port)
    return 0


async def _run_worker(runtime: Runtime) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await runtime.start()
    freeze_startup_heap()
    log.info("worker running (owner %s)", runtime.dispatcher.owner if runtime.dispatcher else "")
    try:
        await stop.wait()
    finally:
        await runtime.stop()


def _cmd_worker(args: argparse.Namespace) -> int:
    config, base_dir, _ = _resolve(args)
    setup_logging(args.log_level, config.log)
    runtime = Runtime.build(config, base_dir, run_dispatcher=True)
    runtime.role = "worker"
    # The same event loop as serve's (uvicorn's): its callbacks cost the dispatcher less.
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(_run_worker(runtime))
    return 0


SINK_CHECK_SECONDS = 60.0
"""How long one sink's ``check()`` may take before ``hookdock check`` reports it as hung."""


async def _check_one(name: str, sink: Sink) -> list[str]:
    check = getattr(sink, "check", None)
    if check is None:
        return []
    try:
        found = await asyncio.wait_for(check(), SINK_CHECK_SECONDS)
    except TimeoutError:
        return [f"sinks.{name}: check() did not finish within {SINK_CHECK_SECONDS:g} s"]
    except Exception as exc:
        return [f"sinks.{name}: check() failed: {type(exc).__name__}: {redact_text(str(exc))}"]
    return [f"sinks.{name}: {problem}" for problem in found]


async def _sink_checks(sinks: dict[str, Sink]) -> list[str]:
    """Every sink's ``check()``, all at once; every problem, in sink order; then close them."""
    try:
        results = await asyncio.gather(*(_check_one(n, s) for n, s in sinks.items()))
    finally:
        await close_sinks(sinks)
    # A sink's own words may quote its destination, which may quote its credentials back.
    return [redact_text(problem) for found in results for problem in found]


def _cmd_check(args: argparse.Namespace) -> int:
    """Exit 2: the configuration is invalid; 1: valid, but a sink check failed; 0: fine."""
    try:
        config, base_dir, _ = _resolve(args)
    except ConfigError as exc:
        # The sinks' own options are the plugins' to judge: named in this same run too.
        path = args.config or os.environ.get("HOOKDOCK_CONFIG")
        base = Path(path).resolve().parent if path else Path.cwd()
        more = sink_option_problems(exc, base)
        print(f"hookdock: {exc}", *more, sep="\n  ", file=sys.stderr)
        return 2
    # Every plugin problem at once; the sinks that did build are still checked.
    plugins = load_plugins(config, base_dir)
    if plugins.problems:
        checked = asyncio.run(_sink_checks(plugins.sinks))
        print("hookdock: invalid configuration:", *plugins.problems, sep="\n  ", file=sys.stderr)
        if checked:
            print("and the sinks that were built report:", *checked, sep="\n  ", file=sys.stderr)
        return 2
    problems = asyncio.run(_sink_checks(plugins.sinks))
    if problems:
        print("configuration is valid, but:", *problems, sep="\n  ", file=sys.stderr)
        return 1
    print(f"configuration is valid: {len(config.routes)} routes, {len(config.sinks)} sinks")
    return 0


def _missing_dependency(exc: PluginError, value: str) -> bool:
    """Whether a plugin failed to import only because a module it needs is not installed
    (not its own module: that would be a broken installation)."""
    own = value.partition(":")[0].strip()
    cause = exc.__cause__
    while cause is not None:
        if isinstance(cause, ModuleNotFoundError):
            name = cause.name or ""
            return bool(name) and not (own == name or own.startswith(f"{name}."))
        cause = cause.__cause__ or cause.__context__
    return False


def _cmd_plugins(args: argparse.Namespace) -> int:
    """Every installed sink and source plugin, from metadata; ``--check`` imports each one."""
    rows: list[dict[str, str | None]] = []
    failed = 0
    for info in available_plugins():
        row: dict[str, str | None] = {
            "name": info.name,
            "group": info.group,
            "distribution": info.distribution,
            "version": info.version,
            "value": info.value,
        }
        if args.check:
            try:
                load_plugin(info.group, info.name)
                row["status"], row["error"] = "ok", None
            except PluginError as exc:
                if _missing_dependency(exc, info.value):
                    # An optional extra that is not installed (S3 without hookdock[s3]) is
                    # information: the plugin cannot be used, but nothing is broken.
                    row["status"], row["error"] = "unavailable", str(exc)
                else:
                    row["status"], row["error"] = "error", str(exc)
                    failed += 1
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        heads = ["name", "group", "distribution", "version", "value"]
        table = [[str(r[h] or "-") for h in heads] for r in rows]
        widths = [max([len(h), *(len(t[i]) for t in table)]) for i, h in enumerate(heads)]
        print("  ".join(h.upper().ljust(w) for h, w in zip(heads, widths, strict=True)).rstrip())
        for row, cells in zip(rows, table, strict=True):
            line = "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))
            if args.check:
                line += {"ok": "  OK", "unavailable": "  NOT INSTALLED "}.get(
                    str(row["status"]), "  ERROR "
                ) + (row["error"] or "")
            print(line.rstrip())
        if args.check:
            missing = sum(1 for r in rows if r["status"] == "unavailable")
            summary = f"{len(rows) - failed - missing} of {len(rows)} plugins import cleanly"
            if missing:
                summary += f"; {missing} need an optional extra that is not installed"
            print(summary)
    return 1 if failed else 0


class _Operator:
    """What the operator's commands hold: the journal, opened without a dispatcher, and the
    little of the configuration they read (no plugin loaded, no webhook secret needed)."""

    def __init__(self, config: OperatorConfig, journal: SqlJournal) -> None:
        self.config = config
        self.journal = journal

    async def stop(self) -> None:
        await self.journal.close()


def _resolve_operator(args: argparse.Namespace) -> OperatorConfig:
    """The journal and sinks an operator's command works on: --config, else $HOOKDOCK_CONFIG,
    else the embedded defaults' data folder (found, never created)."""
    path = args.config or os.environ.get("HOOKDOCK_CONFIG")
    if path:
        return load_operator_config(Path(path))
    return embedded_operator_config(
        Path(args.data_dir or os.environ.get("HOOKDOCK_DATA") or DEFAULT_DATA_DIR)
    )


async def _with_journal(args: argparse.Namespace) -> _Operator:
    config = _resolve_operator(args)
    # create=False: run from the wrong folder, a command says so instead of counting an empty
    # journal it has just made.
    journal = make_journal(config.journal, create=False)
    await asyncio.to_thread(journal.open)
    return _Operator(config, journal)


async def _open_operator(args: argparse.Namespace) -> tuple[Operator, SqlJournal, ClusterConfig]:
    runtime = await _with_journal(args)
    sinks = {name: str(options.get("type")) for name, options in runtime.config.sinks.items()}
    return Operator(runtime.journal, sinks), runtime.journal, runtime.config.cluster


def _cmd_status(args: argparse.Namespace) -> int:
    async def run() -> dict[str, Any]:
        runtime = await _with_journal(args)
        try:
            journal = runtime.journal
            out: dict[str, Any] = {s.value: n for s, n in (await journal.counts()).items()}
            counts = await journal.sink_counts()
            stopped = {s.sink: s for s in await journal.stopped_sinks()}
            # How far behind each sink is: seen here before anyone misses an export.
            behind = sink_figures(await journal.sink_backlog(), await journal.recent_lags())
            out["sinks"] = {
                name: {
                    **{
                        s.value: n for s, n in counts.get(name, dict.fromkeys(SendState, 0)).items()
                    },
                    "stopped": None if name not in stopped else stopped[name].reason,
                    **behind(name),
                }
                for name in sorted({*runtime.config.sinks, *counts, *stopped})
            }
            # Dead sends by cause (link_expired, file_deleted, ...): what an operator acts on.
            out["failures"] = await journal.dead_codes()
            # Who is alive, and who does the work that runs once (retention, pollers).
            out["processes"] = [
                {
                    "owner": p.owner,
                    "role": p.role,
                    "host": p.host,
                    "pid": p.pid,
                    "started_at": p.started_at.isoformat(),
                    "heartbeat_at": p.heartbeat_at.isoformat(),
                    "alive": p.alive,
                }
                for p in await journal.processes(runtime.config.cluster.stale_seconds)
            ]
            out["leases"] = {
                lease.name: {"owner": lease.owner, "until": lease.lease_until.isoformat()}
                for lease in await journal.named_leases()
            }
            # Vendors reporting trouble of their own (receiver.alerts), such as SuperOffice's
            # webhook.errors: counted by vendor and kind.
            out["alerts"] = await journal.alert_counts()
            # Reconciliation's task.missing and recovered counts are in each poller's totals.
            out["pollers"] = {s.name: poller_summary(s) for s in await journal.poller_states()}
            return out
        finally:
            await runtime.stop()

    print(redact_text(json.dumps(asyncio.run(run()))))
    return 0


def _cmd_deliveries(args: argparse.Namespace) -> int:
    if args.id is not None:
        return cli_events.show(args)

    async def run() -> None:
        runtime = await _with_journal(args)
        try:
            state = DeliveryState(args.state) if args.state else None
            for info in await runtime.journal.list(state, args.limit):
                # Redacted again: a row stored by an earlier release may hold what is now known.
                error = f"  {redact_text(info.last_error)}" if info.last_error else ""
                print(
                    f"{info.delivery_id}  {info.state.value:7}  {info.attempts:3}  "
                    f"{info.received_at:%Y-%m-%d %H:%M:%S}  {info.route}{error}"
                )
                if args.sends:
                    for send in await runtime.journal.sends(info.delivery_id):
                        code = f"  [{send.code}]" if send.code else ""
                        why = f"{code}  {redact_text(send.last_error)}" if send.last_error else code
                        print(
                            f"    {send.event_id}  -> {send.sink:16} {send.state.value:9}"
                            f" {send.attempts:3}{why}"
                        )
                        for role, stored in sorted(send.files.items()):
                            print(
                                f"      file {role}: {format_bytes(stored.size)}"
                                f"  sha256 {stored.sha256[:12]}  {stored.filename}"
                            )
        finally:
            await runtime.stop()

    asyncio.run(run())
    return 0


def _cmd_retry(args: argparse.Namespace) -> int:
    if not args.ids and not args.all_dead:
        print("hookdock retry: name delivery ids, or pass --all-dead", file=sys.stderr)
        return 2

    async def run() -> tuple[int, list[str]]:
        runtime = await _with_journal(args)
        try:
            ops = Operator(runtime.journal, {})
            ids = None
            if not args.all_dead:
                # Either id: the delivery's (from "accepted as <id>") or one of its events'.
                ids = [await _delivery_of(runtime.journal, ref) for ref in args.ids]
            if args.renormalize:
                count = await runtime.journal.renormalize(ids)
            else:
                count = await runtime.journal.requeue(ids, sink=args.sink)
            reasons = []
            if not count and not args.all_dead:
                reasons = [await ops.why_not_retried(ref) for ref in args.ids]
            return count, reasons
        finally:
            await runtime.stop()

    if args.renormalize and args.sink:
        print("hookdock retry: --renormalize routes whole deliveries; drop --sink", file=sys.stderr)
        return 2
    count, reasons = asyncio.run(run())
    how = "to be normalized and routed again" if args.renormalize else "dead-lettered deliveries"
    print(f"requeued {count} {how}")
    for reason in reasons:
        print(f"  {reason}", file=sys.stderr)
    return 0 if count or args.all_dead else 1


async def _delivery_of(journal: SqlJournal, ref: str) -> str:
    """The delivery id ``ref`` names: itself, or the delivery of the event it is."""
    detail = await journal.detail(ref)
    return ref if detail is None else detail.delivery.delivery_id


def _cmd_sinks(args: argparse.Namespace) -> int:
    """List sinks with their sends by state; ``resume NAME`` restarts a stopped one."""

    async def run() -> int:
        runtime = await _with_journal(args)
        try:
            journal = runtime.journal
            if args.action == "resume":
                if not args.name:
                    print("hookdock sinks resume: name the sink", file=sys.stderr)
                    return 2
                if not await journal.resume_sink(args.name):
                    print(f"hookdock: sink {args.name} is not stopped", file=sys.stderr)
                    return 1
                print(f"resumed sink {args.name}: its waiting events go out now")
                return 0
            counts = await journal.sink_counts()
            stopped = {s.sink: s for s in await journal.stopped_sinks()}
            for name in sorted({*runtime.config.sinks, *counts, *stopped}):
                by_state = counts.get(name, {})  # no sends yet: nothing to count
                figures = "  ".join(f"{s.value} {n}" for s, n in by_state.items())
                note = ""
                if name in stopped:
                    note = f"  STOPPED since {stopped[name].stopped_at:%Y-%m-%d %H:%M:%S}: "
                    note += redact_text(stopped[name].reason)
                kind = runtime.config.sinks.get(name, {}).get("type", "(not configured)")
                print(f"{name:16} {kind:10} {figures or 'no sends yet'}{note}")
            return 0
        finally:
            await runtime.stop()

    return asyncio.run(run())


def _cmd_prune(args: argparse.Namespace) -> int:
    ages = {"--older-than-days": args.older_than_days, "--dead-older-than-days": args.dead_days}
    if all(age is None for age in ages.values()):
        print("hookdock prune: give --older-than-days, --dead-older-than-days or both",
              file=sys.stderr)  # fmt: skip
        return 2
    for flag, age in ages.items():
        if age is not None and age <= 0:
            print(f"hookdock prune: {flag} must be more than 0", file=sys.stderr)
            return 2

    async def run() -> tuple[int, int]:
        runtime = await _with_journal(args)
        try:
            now = time.time()
            done = dead = 0
            if args.older_than_days is not None:
                done = await runtime.journal.prune(now - args.older_than_days * 86400)
            if args.dead_days is not None:
                dead = await runtime.journal.prune_dead(now - args.dead_days * 86400)
            return done, dead
        finally:
            await runtime.stop()

    done, dead = asyncio.run(run())
    if args.older_than_days is not None:
        print(f"deleted {done} delivered deliveries older than {args.older_than_days:g} days")
    if args.dead_days is not None:
        print(f"deleted {dead} dead deliveries older than {args.dead_days:g} days")
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    from receiver.journal.migrate import check_schema, migrate_schema

    config, _, _ = _resolve(args)
    if args.check:
        status = check_schema(config.journal)
        if status.current:
            print(f"the journal's schema is current (version {status.expected})")
            return 0
        found = "no journal yet" if status.found is None else f"version {status.found}"
        print(
            f"the journal's schema needs migrating: {found}, this hookdock uses"
            f" version {status.expected}: run `hookdock migrate`"
        )
        return 1
    before, now = migrate_schema(config.journal)
    if before is None:
        print(f"created the journal's schema (version {now})")
    elif before == now:
        print(f"the journal's schema is current (version {now}); nothing to do")
    else:
        print(f"migrated the journal's schema from version {before} to {now}")
    return 0


def _cmd_journal(args: argparse.Namespace) -> int:
    from receiver.journal.copy import copy_journal
    from receiver.journal.postgres import PostgresJournal
    from receiver.journal.sqlite import SqliteJournal

    config, _, _ = _resolve(args)
    if not isinstance(config.journal, SqliteConfig):
        print("hookdock journal copy: the configured journal is not SQLite", file=sys.stderr)
        return 2
    if not config.journal.path.exists():
        print(f"hookdock: there is no journal at {config.journal.path}", file=sys.stderr)
        return 1
    source = SqliteJournal(config.journal.path, create=False)
    target = PostgresJournal(args.to, schema=args.schema)
    counts = copy_journal(source, target)
    figures = ", ".join(f"{table} {n}" for table, n in counts.items())
    print(f"copied {config.journal.path} into {target.description}: {figures}")
    print('now set [journal] type = "postgres" and dsn in the configuration')
    return 0


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _version() -> str:
    try:
        return importlib.metadata.version("hookdock")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hookdock", description=__doc__)
    parser.add_argument(
        "--log-level",
        default=os.environ.get("HOOKDOCK_LOG_LEVEL", "info"),
        help=f"one of {', '.join(LOG_LEVELS)} (default: $HOOKDOCK_LOG_LEVEL, else info)",
    )
    parser.add_argument("--version", action="version", version=f"hookdock {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument("--config", help="TOML file (default: $HOOKDOCK_CONFIG, else defaults)")
        sub.add_argument(
            "--data-dir", help="data folder for the embedded defaults (default: ./hookdock-data)"
        )
        return sub

    serve = command("serve", "run the webhook receiver (and the dispatcher)")
    serve.add_argument("--host", help="the address to listen on (default: [server] host)")
    serve.add_argument("--port", type=int, help="the port to listen on (default: [server] port)")
    serve.set_defaults(run=_cmd_serve)
    command("worker", "run only the dispatcher").set_defaults(run=_cmd_worker)
    command("check", "validate the configuration and check every sink").set_defaults(run=_cmd_check)
    command("status", "count deliveries by state, as JSON").set_defaults(run=_cmd_status)
    listing = command("deliveries", "list deliveries, newest first; or show one by its id")
    listing.add_argument(
        "id",
        nargs="?",
        help="a delivery id (from `accepted as <id>`) or an event id: show that one whole,"
        " as `hookdock events show` does",
    )
    listing.add_argument("--json", action="store_true", help="with an id: JSON, for scripts")
    listing.add_argument(
        "--state", choices=[s.value for s in DeliveryState], help="only deliveries in this state"
    )
    listing.add_argument("--limit", type=int, default=50, help="at most this many (50)")
    listing.add_argument("--sends", action="store_true", help="show each (event, sink) pair")
    listing.set_defaults(run=_cmd_deliveries, open_journal=_open_operator)
    retry = command("retry", "send dead-lettered deliveries through the dispatcher again")
    retry.add_argument("ids", nargs="*", help="delivery ids (or event ids: their deliveries)")
    retry.add_argument("--all-dead", action="store_true", help="every dead delivery")
    retry.add_argument("--sink", help="only what failed at this sink")
    retry.add_argument(
        "--renormalize",
        action="store_true",
        help="normalize and route the raw deliveries again (after a source was fixed);"
        " sinks that already have an event do not get it twice",
    )
    retry.set_defaults(run=_cmd_retry)
    sinks = command("sinks", "list sinks with their sends by state; resume a stopped sink")
    sinks.add_argument(
        "action", nargs="?", choices=["list", "resume"], default="list", help="list (default)"
    )
    sinks.add_argument("name", nargs="?", help="the sink to resume")
    sinks.set_defaults(run=_cmd_sinks)
    prune = command("prune", "delete delivered or dead deliveries (raw bodies too) past an age")
    prune.add_argument(
        "--older-than-days", type=float, help="delete delivered deliveries older than this"
    )
    prune.add_argument(
        "--dead-older-than-days",
        dest="dead_days",
        type=float,
        help="delete dead deliveries (dead letters, raw bodies included) older than this",
    )
    prune.set_defaults(run=_cmd_prune)
    migrate = command("migrate", "bring the journal's schema up to this version")
    migrate.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if a migration is due"
    )
    migrate.set_defaults(run=_cmd_migrate)
    journal = command("journal", "move the journal: `journal copy --to DSN`")
    journal.add_argument("action", choices=["copy"], help="copy: into an empty PostgreSQL")
    journal.add_argument("--to", required=True, help="an empty PostgreSQL database (DSN)")
    journal.add_argument("--schema", help="a schema of its own in that database")
    journal.set_defaults(run=_cmd_journal)
    cli_events.register(command, _open_operator)
    cli_setup.register(command, _resolve)
    add_poller_commands(command)
    add_emulate_commands(commands)
    add_smartdocumentor_commands(command)
    add_documill_commands(command)
    add_superoffice_commands(command)
    plugins = commands.add_parser(
        "plugins",
        help="list the installed sink, source and poller plugins",
        description="List every entry point in hookdock.sinks, hookdock.sources and "
        "hookdock.pollers, from metadata only; no configuration needed.",
    )
    plugins.add_argument(
        "--check", action="store_true", help="import each one; exit 1 if any fails"
    )
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.set_defaults(run=_cmd_plugins)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.log_level.lower() not in LOG_LEVELS:
        print(
            f"hookdock: --log-level (or HOOKDOCK_LOG_LEVEL) must be one of"
            f" {', '.join(LOG_LEVELS)}, not {args.log_level!r}",
            file=sys.stderr,
        )
        return 2
    setup_logging(args.log_level)
    try:
        code: int = args.run(args)
    except BrokenPipeError:
        # The reader went away (`| head`): nothing more to say, and no traceback at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except ConfigError as exc:
        print(f"hookdock: {exc}", file=sys.stderr)
        return 2
    except OperatorError as exc:
        print(f"hookdock: {exc.message}", file=sys.stderr)
        return 2 if isinstance(exc, BadRequest) else 1
    except (ReceiverError, JournalError) as exc:
        print(f"hookdock: {exc}", file=sys.stderr)
        return 1
    return code
