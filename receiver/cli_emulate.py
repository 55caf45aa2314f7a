"""``hookdock emulate VENDOR``: a stand-in for a vendor's API on this machine, for a trial.

``smartdocumentor`` (its API and export webhooks), ``documill`` (Dynamo batches and their
result files) and ``superoffice`` (batch tasks, JSON or XML).  Each prints where it listens and
the credentials it takes; secrets come from the environment when set.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

__all__ = ["add_commands"]


def _serve(app: web.Application, args: argparse.Namespace) -> int:
    web.run_app(app, host=args.host, port=args.port, print=None)
    return 0


def _smartdocumentor(args: argparse.Namespace) -> int:
    from handlers.smartdocumentor.emulator import Emulator, EmulatorSettings

    urls = {}
    for item in args.webhook_url or []:
        kind, sep, url = item.partition("=")
        if not sep:
            print("hookdock: --webhook-url takes KIND=URL", file=sys.stderr)
            return 2
        urls[kind] = url
    settings = EmulatorSettings(
        client_id=args.client_id,
        client_secret=os.environ.get("SD_EMULATOR_SECRET", "emulator-secret"),
        token_seconds=args.token_seconds,
        webhook_urls=urls,
        review_every=args.review_every,
        file_link_seconds=args.file_link_seconds,
        public_url=f"http://{args.host}:{args.port}",
    )
    emulator = Emulator(settings)
    if args.exported:
        # Already exported, every --drop-every-th webhook lost: a backlog to reconcile.
        emulator.seed_exported(args.exported, args.drop_every)
    elif args.drop_every:
        emulator.set_faults(drop_every=args.drop_every)
    for _ in range(args.tasks):
        emulator.add_task(workspace_id=1)
    started = datetime.now(UTC).isoformat()
    print(f"SmartDocumentor emulator on http://{args.host}:{args.port} (since {started})")
    return _serve(emulator.app(), args)


def _documill(args: argparse.Namespace) -> int:
    from handlers.documill.emulator import DocumillEmulator, EmulatorSettings

    settings = EmulatorSettings(
        tenant_id=args.tenant_id,
        api_key=os.environ.get("DOCUMILL_EMULATOR_KEY", "emulator-key"),
        task_seconds=args.task_seconds,
        link_seconds=args.link_seconds,
        window_seconds=args.window_seconds,
        public_url=f"http://{args.host}:{args.port}",
    )
    emulator = DocumillEmulator(settings)
    emulator.set_faults(fail_every=args.fail_every, never_complete=args.never_complete)
    print(
        f"Documill Dynamo emulator on http://{args.host}:{args.port}: tenant {args.tenant_id},"
        " API key from $DOCUMILL_EMULATOR_KEY (default emulator-key)"
    )
    return _serve(emulator.app(), args)


def _superoffice(args: argparse.Namespace) -> int:
    from handlers.superoffice.emulator import EmulatorSettings, SuperOfficeEmulator

    settings = EmulatorSettings(
        password=os.environ.get("SO_EMULATOR_PASSWORD", "emulator-password"),
        app_token=os.environ.get("SO_EMULATOR_APP_TOKEN"),
        step_seconds=args.step_seconds,
    )
    print(
        f"SuperOffice batch task emulator on http://{args.host}:{args.port}: Basic emulator"
        " (password from $SO_EMULATOR_PASSWORD), Bearer emulator-token, SOTicket"
        " 7T:emulator-ticket; task names starting fail/stall/manual take that course"
    )
    return _serve(SuperOfficeEmulator(settings).app(), args)


def _vendor(commands: Any, name: str, port: int, help: str) -> argparse.ArgumentParser:
    sub: argparse.ArgumentParser = commands.add_parser(name, help=help, description=help)
    sub.add_argument("--host", default="127.0.0.1", help="address to listen on")
    sub.add_argument("--port", type=int, default=port, help=f"port to listen on ({port})")
    return sub


def add_commands(commands: Any) -> None:
    emulate = commands.add_parser(
        "emulate",
        help="run a vendor emulator for a local trial",
        description="Run a stand-in for a vendor's API (and webhooks) on this machine.",
    )
    vendors = emulate.add_subparsers(dest="vendor", required=True, metavar="VENDOR")
    sd = _vendor(vendors, "smartdocumentor", 8090, "SmartDocumentor: API and export webhooks")
    sd.add_argument("--client-id", default="emulator", help="the OAuth client id it accepts")
    sd.add_argument(
        "--token-seconds", type=int, default=3600, help="lifetime of the tokens it issues"
    )
    sd.add_argument(
        "--webhook-url", action="append", help="KIND=URL, e.g. text_document=http://..."
    )
    sd.add_argument(
        "--review-every", type=float, default=5.0, help="seconds between simulated reviews"
    )
    sd.add_argument("--file-link-seconds", type=int, default=3600, help="how long file links work")
    sd.add_argument("--drop-every", type=int, default=0, help="drop every n-th webhook")
    sd.add_argument("--tasks", type=int, default=0, help="tasks to review, to start with")
    sd.add_argument(
        "--exported", type=int, default=0, help="tasks exported already (see --drop-every)"
    )
    sd.set_defaults(run=_smartdocumentor)

    dm = _vendor(vendors, "documill", 8091, "Documill Dynamo: batches and result files")
    dm.add_argument("--tenant-id", default="emulator-tenant", help="the tenant id it accepts")
    dm.add_argument("--task-seconds", type=float, default=0.5, help="time each task takes")
    dm.add_argument("--link-seconds", type=float, default=3600, help="how long result links work")
    dm.add_argument(
        "--window-seconds", type=float, default=86400, help="how long a batch's status is kept"
    )
    dm.add_argument("--fail-every", type=int, default=0, help="every n-th task fails")
    dm.add_argument(
        "--never-complete", action="store_true", help="batches never complete (last task)"
    )
    dm.set_defaults(run=_documill)
    so = _vendor(vendors, "superoffice", 8092, "SuperOffice: batch tasks, JSON or XML")
    so.add_argument("--step-seconds", type=float, default=1.0, help="time between progress steps")
    so.set_defaults(run=_superoffice)
