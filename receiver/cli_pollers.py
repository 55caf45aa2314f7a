"""``hookdock pollers`` and ``hookdock poll NAME``.

``pollers`` reads the journal only (no plugin is loaded).  ``poll NAME`` runs one poll in this
process when no running service holds the poller's lease; when one does, it asks that one to
poll now (the poller's next run is set to now in the journal) rather than poll beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from receiver.config import Config, load_config
from receiver.defaults import DEFAULT_DATA_DIR, default_config
from receiver.journal import make_journal
from receiver.journal.pollers import PollerState
from receiver.plugins import load_plugins
from receiver.pollers import PollerRunner, lease_name
from receiver.processes import Heartbeat, new_owner

__all__ = ["Command", "add_commands", "load_cli_config", "poller_summary"]

log = logging.getLogger("hookdock")

Command = Callable[[str, str], argparse.ArgumentParser]


def load_cli_config(args: argparse.Namespace) -> tuple[Config, Path]:
    path = args.config or os.environ.get("HOOKDOCK_CONFIG")
    if path:
        return load_config(Path(path))
    data_dir = Path(args.data_dir or os.environ.get("HOOKDOCK_DATA") or DEFAULT_DATA_DIR)
    return default_config(data_dir)


def poller_summary(state: PollerState) -> dict[str, Any]:
    """One poller's row as JSON, for ``hookdock pollers --json`` and ``hookdock status``."""
    saved = state.state or {}
    return {
        "polls": state.polls,
        "failures": state.failures,
        "found": state.found,
        "calls": state.calls,
        "last_run_at": _iso(state.last_run_at),
        "last_ok_at": _iso(state.last_ok_at),
        "last_error": state.last_error,
        "next_run_at": _iso(state.next_run_at),
        "totals": saved.get("totals", {}),
        # A poller may keep progress in its state (smartdocumentor.batches: per open batch),
        # and warnings an operator should see (superoffice.batch_tasks: stalled tasks).
        **({"progress": saved["progress"]} if "progress" in saved else {}),
        **({"warnings": saved["warnings"]} if saved.get("warnings") else {}),
    }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _cmd_pollers(args: argparse.Namespace) -> int:
    async def run() -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        config, _ = load_cli_config(args)
        journal = make_journal(config.journal, create=False)
        await asyncio.to_thread(journal.open)
        try:
            states = {s.name: s for s in await journal.poller_states()}
            holders = {lease.name: lease.owner for lease in await journal.named_leases()}
        finally:
            await journal.close()
        out: dict[str, dict[str, Any]] = {}
        for poller in config.pollers:
            row = states.get(poller.name)
            out[poller.name] = {
                "type": poller.type,
                "interval_seconds": poller.interval_seconds,
                "held_by": holders.get(lease_name(poller.name)),
                **(poller_summary(row) if row else {"polls": 0}),
            }
        return out, holders

    rows, _ = asyncio.run(run())
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print("no pollers configured ([[pollers]])")
        return 0
    print(f"{'poller':24} {'type':28} {'polls':>6} {'fails':>5} {'found':>6}  next run / error")
    for name, row in rows.items():
        tail = row.get("last_error") or row.get("next_run_at") or "due"
        print(
            f"{name:24} {row['type']:28} {row['polls']:>6} {row.get('failures', 0):>5}"
            f" {row.get('found', 0):>6}  {tail}"
        )
    return 0


def _cmd_poll(args: argparse.Namespace) -> int:
    config, base_dir = load_cli_config(args)
    poller_config = config.poller(args.name)
    if poller_config is None:
        names = ", ".join(p.name for p in config.pollers) or "none"
        print(f"hookdock: no poller named {args.name!r} (configured: {names})", file=sys.stderr)
        return 2
    plugins = load_plugins(config, base_dir, parts=("sources", "pollers"))
    plugins.raise_problems()

    async def run() -> int:
        journal = make_journal(config.journal)
        await asyncio.to_thread(journal.open)
        owner = new_owner()
        beat = Heartbeat(
            journal,
            owner,
            "poll",
            every_seconds=config.cluster.heartbeat_seconds,
            stale_seconds=config.cluster.stale_seconds,
        )
        runner = PollerRunner(
            journal,
            owner,
            {args.name: poller_config},
            {args.name: plugins.pollers[args.name]},
            {r.name: (r.source, plugins.sources[r.name]) for r in config.routes},
        )
        try:
            await beat.start()
            if not await journal.acquire_lease(lease_name(args.name), owner, 60):
                await journal.run_poller_now(args.name)
                print(f"poller {args.name} runs in another process: asked it to poll now")
                return 0
            report = await runner.run_once(args.name)
            print(
                json.dumps(
                    {
                        "poller": args.name,
                        "ok": report.ok,
                        "new": report.new,
                        "duplicates": report.duplicates,
                        "calls": report.calls,
                        "error": report.error,
                        "next_in_seconds": round(report.next_in_seconds, 1),
                    }
                )
            )
            return 0 if report.ok else 1
        finally:
            await runner.stop()
            await beat.stop()
            await journal.close()

    return asyncio.run(run())


def add_commands(command: Command) -> None:
    listing = command("pollers", "each poller's state: polls, failures, found, next run")
    listing.add_argument("--json", action="store_true", help="JSON, for scripts")
    listing.set_defaults(run=_cmd_pollers)
    poll = command("poll", "poll one poller now")
    poll.add_argument("name", help="the poller's name in the configuration")
    poll.set_defaults(run=_cmd_poll)
