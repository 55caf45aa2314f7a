"""``hookdock smartdocumentor create-batch`` and ``submit``: start work at SmartDocumentor.

They reach the API with the ``api`` settings of a configured SmartDocumentor poller
(``--poller``, by default the first one), so the credentials live in one place, and print what
they created as JSON.  A batch created here is watched by ``smartdocumentor.batches``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from pydantic import ValidationError

from handlers.smartdocumentor.client import ApiSettings, SmartDocumentorClient
from handlers.smartdocumentor.submit import Document, create_batch, submit
from receiver.cli_pollers import Command, load_cli_config
from receiver.config import format_validation_error

__all__ = ["add_commands"]


def _api(args: argparse.Namespace) -> ApiSettings | str:
    config, _ = load_cli_config(args)
    candidates = [p for p in config.pollers if p.type.startswith("smartdocumentor.")]
    if args.poller is not None:
        candidates = [p for p in candidates if p.name == args.poller]
    if not candidates:
        return "no SmartDocumentor poller in the configuration to take the API settings from"
    poller = candidates[0]
    try:
        return ApiSettings.model_validate(poller.settings.get("api"))
    except ValidationError as exc:
        lines = format_validation_error(exc, prefix=f"pollers.{poller.name}.settings.api")
        return "; ".join(lines)


def _run(args: argparse.Namespace, work: Any) -> int:
    api = _api(args)
    if isinstance(api, str):
        print(f"hookdock: {api}", file=sys.stderr)
        return 2

    async def go() -> Any:
        client = SmartDocumentorClient(api)
        try:
            return await work(client)
        finally:
            await client.aclose()

    try:
        print(json.dumps(asyncio.run(go()), indent=2))
    except Exception as exc:  # the poll errors carry a plain message without secrets
        print(f"hookdock: {getattr(exc, 'message', None) or exc}", file=sys.stderr)
        return 1
    return 0


def _cmd(args: argparse.Namespace) -> int:
    if args.action == "create-batch":
        if not args.display_name:
            print("hookdock: create-batch needs --display-name", file=sys.stderr)
            return 2
        return _run(
            args,
            lambda c: create_batch(c, args.display_name, args.description, args.workspace),
        )
    if not args.url:
        print("hookdock: submit needs at least one --url", file=sys.stderr)
        return 2
    if (args.batch is None) == (args.display_name is None):
        print(
            "hookdock: submit needs --batch ID or --display-name for a new batch", file=sys.stderr
        )
        return 2
    metadata = json.loads(args.metadata) if args.metadata else None
    documents = [
        Document(url, None, f"{args.external_id}{n}" if args.external_id else None)
        for n, url in enumerate(args.url, 1)
    ]
    return _run(
        args,
        lambda c: submit(
            c,
            documents,
            batch_id=args.batch,
            batch_name=args.display_name,
            description=args.description,
            workspace_id=args.workspace,
            metadata=metadata,
        ),
    )


def add_commands(command: Command) -> None:
    sd = command("smartdocumentor", "create a batch, or submit documents as tasks of one")
    sd.add_argument("action", choices=["create-batch", "submit"], help="what to do")
    sd.add_argument("--poller", help="the poller whose api settings to use (default: the first)")
    sd.add_argument("--display-name", help="the new batch's name")
    sd.add_argument("--description", help="the batch's description")
    sd.add_argument("--workspace", type=int, help="the workspace id")
    sd.add_argument("--batch", type=int, help="submit: add the tasks to this batch")
    sd.add_argument("--url", action="append", help="submit: a document URL (repeat)")
    sd.add_argument("--external-id", help="submit: external ids are this prefix and 1, 2, ...")
    sd.add_argument("--metadata", help="submit: a JSON object given to every task")
    sd.set_defaults(run=_cmd)
