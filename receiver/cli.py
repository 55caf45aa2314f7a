"""``hookdock``: serve, run a worker, check a config, and look after the journal."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from receiver.config import Config, load_config
from receiver.defaults import DEFAULT_DATA_DIR, default_config
from receiver.errors import ConfigError, ReceiverError
from receiver.journal.base import DeliveryState
from receiver.runtime import Runtime

__all__ = ["main"]

log = logging.getLogger("hookdock")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _resolve(args: argparse.Namespace) -> tuple[Config, Path, bool]:
    """The config to run: --config, else $HOOKDOCK_CONFIG, else the embedded defaults."""
    path = args.config or os.environ.get("HOOKDOCK_CONFIG")
    if path:
        config, base_dir = load_config(Path(path))
        return config, base_dir, False
    data_dir = Path(args.data_dir or os.environ.get("HOOKDOCK_DATA") or DEFAULT_DATA_DIR)
    config, base_dir = default_config(data_dir)
    return config, base_dir, True


def _print_default_urls(config: Config, host: str, port: int) -> None:
    shown = "localhost" if host in ("0.0.0.0", "::", "127.0.0.1") else host
    print("hookdock is running on its embedded defaults.", flush=True)
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
    runtime = Runtime.build(config, base_dir)
    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port
    if embedded:
        _print_default_urls(config, host, port)
    serve(runtime, host=host, port=port)
    return 0


async def _run_worker(runtime: Runtime) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await runtime.start()
    log.info("worker running (owner %s)", runtime.dispatcher.owner if runtime.dispatcher else "")
    try:
        await stop.wait()
    finally:
        await runtime.stop()


def _cmd_worker(args: argparse.Namespace) -> int:
    config, base_dir, _ = _resolve(args)
    runtime = Runtime.build(config, base_dir, run_dispatcher=True)
    asyncio.run(_run_worker(runtime))
    return 0


async def _sink_checks(runtime: Runtime) -> list[str]:
    problems: list[str] = []
    for name, sink in runtime.sinks.items():
        check = getattr(sink, "check", None)
        if check is not None:
            problems.extend(f"sinks.{name}: {p}" for p in await check())
    return problems


def _cmd_check(args: argparse.Namespace) -> int:
    config, base_dir, _ = _resolve(args)
    runtime = Runtime.build(config, base_dir)
    problems = asyncio.run(_sink_checks(runtime))
    if problems:
        print("configuration is valid, but:", *problems, sep="\n  ", file=sys.stderr)
        return 1
    print(f"configuration is valid: {len(config.routes)} routes, {len(config.sinks)} sinks")
    return 0


async def _with_journal(args: argparse.Namespace) -> Runtime:
    config, base_dir, _ = _resolve(args)
    runtime = Runtime.build(config, base_dir, run_dispatcher=False)
    await runtime.start()
    return runtime


def _cmd_status(args: argparse.Namespace) -> int:
    async def run() -> dict[str, int]:
        runtime = await _with_journal(args)
        try:
            return {state.value: n for state, n in (await runtime.journal.counts()).items()}
        finally:
            await runtime.stop()

    print(json.dumps(asyncio.run(run())))
    return 0


def _cmd_deliveries(args: argparse.Namespace) -> int:
    async def run() -> None:
        runtime = await _with_journal(args)
        try:
            state = DeliveryState(args.state) if args.state else None
            for info in await runtime.journal.list(state, args.limit):
                error = f"  {info.last_error}" if info.last_error else ""
                print(
                    f"{info.delivery_id}  {info.state.value:7}  {info.attempts:3}  "
                    f"{info.received_at:%Y-%m-%d %H:%M:%S}  {info.route}{error}"
                )
        finally:
            await runtime.stop()

    asyncio.run(run())
    return 0


def _cmd_retry(args: argparse.Namespace) -> int:
    if not args.ids and not args.all_dead:
        print("hookdock retry: name delivery ids, or pass --all-dead", file=sys.stderr)
        return 2

    async def run() -> int:
        runtime = await _with_journal(args)
        try:
            return await runtime.journal.requeue(None if args.all_dead else args.ids)
        finally:
            await runtime.stop()

    count = asyncio.run(run())
    print(f"requeued {count} dead-lettered deliveries")
    return 0 if count or args.all_dead else 1


def _cmd_prune(args: argparse.Namespace) -> int:
    if args.older_than_days <= 0:
        print("hookdock prune: --older-than-days must be more than 0", file=sys.stderr)
        return 2

    async def run() -> int:
        runtime = await _with_journal(args)
        try:
            return await runtime.journal.prune(time.time() - args.older_than_days * 86400)
        finally:
            await runtime.stop()

    count = asyncio.run(run())
    print(f"deleted {count} delivered deliveries older than {args.older_than_days:g} days")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hookdock", description=__doc__)
    parser.add_argument("--log-level", default=os.environ.get("HOOKDOCK_LOG_LEVEL", "info"))
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument("--config", help="TOML file (default: $HOOKDOCK_CONFIG, else defaults)")
        sub.add_argument(
            "--data-dir", help="data folder for the embedded defaults (default: ./hookdock-data)"
        )
        return sub

    serve = command("serve", "run the webhook receiver (and the dispatcher)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(run=_cmd_serve)
    command("worker", "run only the dispatcher").set_defaults(run=_cmd_worker)
    command("check", "validate the configuration and check every sink").set_defaults(run=_cmd_check)
    command("status", "count deliveries by state, as JSON").set_defaults(run=_cmd_status)
    listing = command("deliveries", "list deliveries, newest first")
    listing.add_argument("--state", choices=[s.value for s in DeliveryState])
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(run=_cmd_deliveries)
    retry = command("retry", "send dead-lettered deliveries through the dispatcher again")
    retry.add_argument("ids", nargs="*", help="delivery ids")
    retry.add_argument("--all-dead", action="store_true")
    retry.set_defaults(run=_cmd_retry)
    prune = command("prune", "delete delivered deliveries (raw bodies included) past an age")
    prune.add_argument("--older-than-days", type=float, required=True)
    prune.set_defaults(run=_cmd_prune)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(args.log_level)
    try:
        code: int = args.run(args)
    except ConfigError as exc:
        print(f"hookdock: {exc}", file=sys.stderr)
        return 2
    except ReceiverError as exc:
        print(f"hookdock: {exc}", file=sys.stderr)
        return 1
    return code
