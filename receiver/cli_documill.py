"""``hookdock documill submit`` and ``hookdock documill watch``: Dynamo batches to be watched.

``submit --batch FILE`` posts the batch in FILE (JSON: ``template``, ``tasks``, optional
``integration``), as multipart when ``--template-file`` embeds a template or ``--part
NAME=FILE`` adds ``param.NAME`` JSON parts (mapped into tasks by their ``partParams``).  Every
problem is named before anything is sent.  The 202 answer's batch id and task ids are recorded
as a ``batch.submitted`` event of the ``documill.batches`` poller, which watches the batch to
its results.  ``watch BATCH_ID`` watches a batch posted elsewhere.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from handlers.documill.batches import VENDOR, BatchesSettings, batch_subject
from handlers.documill.client import DynamoClient
from handlers.documill.submit import BatchInvalid, Submitted, submit_batch
from handlers.poller import PolledEvent, PollError
from receiver.cli_pollers import Command
from receiver.cli_watches import find_poller, record_watch

__all__ = ["add_commands"]

POLLER_TYPE = "documill.batches"


def _fail(message: str, code: int = 2) -> int:
    print(f"hookdock: {message}", file=sys.stderr)
    return code


def _json_file(path: str, what: str) -> Any:
    try:
        return json.loads(Path(path).read_bytes())
    except OSError as exc:
        raise ValueError(f"{what} {path}: cannot be read ({exc.strerror})") from None
    except ValueError as exc:
        raise ValueError(f"{what} {path}: not JSON ({exc})") from None


def _inputs(args: argparse.Namespace) -> tuple[Any, tuple[str, bytes] | None, dict[str, Any]]:
    data = _json_file(args.batch, "--batch")
    if not isinstance(data, dict):
        raise ValueError(f"--batch {args.batch}: must be a JSON object with template and tasks")
    template = None
    if args.template_file:
        path = Path(args.template_file)
        try:
            template = (path.name, path.read_bytes())
        except OSError as exc:
            raise ValueError(f"--template-file {path}: cannot be read ({exc.strerror})") from None
    parts: dict[str, Any] = {}
    for item in args.part or []:
        name, sep, file = item.partition("=")
        if not sep or not name or not file:
            raise ValueError(f"--part {item!r}: write NAME=FILE.json")
        if name in parts:
            raise ValueError(f"--part {name}: given twice")
        parts[name] = _json_file(file, f"--part {name}:")
    return data, template, parts


def _submit(args: argparse.Namespace) -> int:
    found = find_poller(args, POLLER_TYPE, BatchesSettings)
    if isinstance(found, str):
        return _fail(found)
    config, poller, settings = found
    try:
        data, template, parts = _inputs(args)
    except ValueError as exc:
        return _fail(str(exc))

    async def post() -> Submitted:
        client = DynamoClient(settings.api)
        try:
            return await submit_batch(client, data, template=template, parts=parts)
        finally:
            await client.aclose()

    try:
        submitted = asyncio.run(post())
    except BatchInvalid as exc:
        for problem in exc.problems:
            print(f"hookdock: {problem}", file=sys.stderr)
        return 2
    except PollError as exc:
        return _fail(exc.message, 1)
    detail = {"tasks": submitted.tasks, "submitted_at": datetime.now(UTC).isoformat()}
    event = PolledEvent(
        kind="batch.submitted",
        vendor=VENDOR,
        dedupe_key=f"{poller.name}:batch.submitted:{submitted.batch_id}",
        batch_id=submitted.batch_id,
        payload={
            "batch_id": submitted.batch_id,
            "tasks": submitted.tasks,
            "multipart": template is not None or bool(parts),
            "answer": submitted.answer,
        },
        subject=batch_subject(poller.name, submitted.batch_id),
    )
    record_watch(config, poller.name, submitted.batch_id, detail, event)
    out = {"batch_id": submitted.batch_id, "tasks": submitted.tasks, "watched_by": poller.name}
    print(json.dumps(out, indent=2))
    return 0


def _watch(args: argparse.Namespace) -> int:
    found = find_poller(args, POLLER_TYPE, BatchesSettings)
    if isinstance(found, str):
        return _fail(found)
    config, poller, _ = found
    batch_id = args.batch_id
    if not batch_id or not batch_id.replace("-", "").isalnum():
        return _fail(f"watch: {batch_id!r} is not a Dynamo batch id")
    event = PolledEvent(
        kind="batch.watched",
        vendor=VENDOR,
        dedupe_key=f"{poller.name}:batch.watched:{batch_id}",
        batch_id=batch_id,
        payload={"batch_id": batch_id},
        subject=batch_subject(poller.name, batch_id),
    )
    added = record_watch(config, poller.name, batch_id, {"tasks": {}}, event)
    print(json.dumps({"batch_id": batch_id, "watched_by": poller.name, "new": added}))
    return 0


def _cmd(args: argparse.Namespace) -> int:
    if args.action == "submit":
        if not args.batch:
            return _fail("submit needs --batch FILE.json (template, tasks, integration)")
        return _submit(args)
    if not args.batch_id:
        return _fail("watch needs the batch id: hookdock documill watch BATCH_ID")
    return _watch(args)


def add_commands(command: Command) -> None:
    dm = command("documill", "submit a Documill Dynamo batch, or watch one, to its results")
    dm.add_argument("action", choices=["submit", "watch"], help="what to do")
    dm.add_argument("batch_id", nargs="?", help="watch: the batch id Dynamo answered")
    dm.add_argument("--poller", help="the documill.batches poller to use (default: the first)")
    dm.add_argument("--batch", help="submit: JSON file with template, tasks and integration")
    dm.add_argument("--template-file", help="submit: a template (.dap) to embed (multipart)")
    dm.add_argument(
        "--part", action="append", help="submit: NAME=FILE.json, a param.NAME part (repeat)"
    )
    dm.set_defaults(run=_cmd)
