"""``hookdock superoffice batch-task submit|watch``: SuperOffice batch tasks to be watched.

``submit --info FILE`` (or ``--name NAME`` for a minimal one) posts a ``BatchTaskInfo`` and
records the id SuperOffice answers as a ``batch_task.submitted`` event of the
``superoffice.batch_tasks`` poller, which watches it to a terminal state.  ``watch ID`` watches
a batch task started elsewhere.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from handlers.poller import PolledEvent, PollError
from handlers.superoffice.batch_tasks import VENDOR, BatchTasksSettings, task_subject
from handlers.superoffice.client import SuperOfficeClient
from receiver.cli_pollers import Command
from receiver.cli_watches import find_poller, record_watch

__all__ = ["add_commands"]

POLLER_TYPE = "superoffice.batch_tasks"


def _fail(message: str, code: int = 2) -> int:
    print(f"hookdock: {message}", file=sys.stderr)
    return code


def _info(args: argparse.Namespace) -> dict[str, Any]:
    if args.info is None:
        return {"Name": args.name}
    try:
        value = json.loads(Path(args.info).read_bytes())
    except OSError as exc:
        raise ValueError(f"--info {args.info}: cannot be read ({exc.strerror})") from None
    except ValueError as exc:
        raise ValueError(f"--info {args.info}: not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ValueError(f"--info {args.info}: a BatchTaskInfo is a JSON object")
    if args.name:
        value["Name"] = args.name
    return value


def _submit(args: argparse.Namespace) -> int:
    if args.info is None and not args.name:
        return _fail("batch-task submit needs --info FILE.json (a BatchTaskInfo) or --name")
    found = find_poller(args, POLLER_TYPE, BatchTasksSettings)
    if isinstance(found, str):
        return _fail(found)
    config, poller, settings = found
    try:
        info = _info(args)
    except ValueError as exc:
        return _fail(str(exc))

    async def post() -> int:
        client = SuperOfficeClient(settings.api)
        try:
            return await client.create_batch_task(info)
        finally:
            await client.aclose()

    try:
        task_id = asyncio.run(post())
    except PollError as exc:
        return _fail(exc.message, 1)
    event = PolledEvent(
        kind="batch_task.submitted",
        vendor=VENDOR,
        dedupe_key=f"{poller.name}:batch_task:{task_id}:submitted",
        task_id=str(task_id),
        display_name=info.get("Name") if isinstance(info.get("Name"), str) else None,
        payload={"batch_task_id": task_id, "request": info},
        subject=task_subject(poller.name, str(task_id)),
    )
    record_watch(config, poller.name, str(task_id), {"name": info.get("Name")}, event)
    print(json.dumps({"batch_task_id": task_id, "watched_by": poller.name}))
    return 0


def _watch(args: argparse.Namespace) -> int:
    if args.id is None or not args.id.isdigit() or int(args.id) <= 0:
        return _fail(f"batch-task watch: {args.id!r} is not a batch task id (a number)")
    found = find_poller(args, POLLER_TYPE, BatchTasksSettings)
    if isinstance(found, str):
        return _fail(found)
    config, poller, _ = found
    task_id = str(int(args.id))
    event = PolledEvent(
        kind="batch_task.watched",
        vendor=VENDOR,
        dedupe_key=f"{poller.name}:batch_task:{task_id}:watched",
        task_id=task_id,
        payload={"batch_task_id": int(task_id)},
        subject=task_subject(poller.name, task_id),
    )
    added = record_watch(config, poller.name, task_id, {}, event)
    print(json.dumps({"batch_task_id": int(task_id), "watched_by": poller.name, "new": added}))
    return 0


def add_commands(command: Command) -> None:
    so = command("superoffice", "start a SuperOffice batch task, or watch one, to its end")
    so.add_argument("what", choices=["batch-task"], help="what to work with")
    so.add_argument("action", choices=["submit", "watch"], help="what to do")
    so.add_argument("id", nargs="?", help="watch: the batch task id")
    so.add_argument("--poller", help="the superoffice.batch_tasks poller (default: the first)")
    so.add_argument("--info", help="submit: a JSON file with the BatchTaskInfo")
    so.add_argument("--name", help="submit: the task's Name (over the file's)")
    so.set_defaults(run=lambda args: _submit(args) if args.action == "submit" else _watch(args))
