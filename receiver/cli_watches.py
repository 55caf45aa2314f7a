"""What the vendor commands that start work share: the API settings of a configured poller,
and recording what they started as that poller's watch.

``hookdock documill submit`` and ``hookdock superoffice batch-task submit`` reach the vendor
with the ``api`` settings of a configured poller of theirs (``--poller``, by default the first),
so the credentials live in one place.  What they started is recorded in the journal in one
place too: a watch for the poller (``add_watch``; the same key twice is one watch) and an
event of the poller's own (``batch.submitted``...), deduped by its key; then the poller is made
due, so a running service looks at once.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from handlers.poller import PolledEvent
from receiver.cli_pollers import load_cli_config
from receiver.config import Config, PollerConfig, format_validation_error
from receiver.journal import make_journal
from receiver.pollers import start_watch

__all__ = ["find_poller", "record_watch"]

M = TypeVar("M", bound=BaseModel)


def find_poller(
    args: argparse.Namespace, poller_type: str, model: type[M]
) -> tuple[Config, PollerConfig, M] | str:
    """The poller ``--poller`` names (or the first of ``poller_type``), or why there is none."""
    config, _ = load_cli_config(args)
    candidates = [p for p in config.pollers if p.type == poller_type]
    if args.poller is not None:
        candidates = [p for p in candidates if p.name == args.poller]
    if not candidates:
        which = f" named {args.poller!r}" if args.poller else ""
        return f"no {poller_type} poller{which} in the configuration ([[pollers]])"
    poller = candidates[0]
    try:
        return config, poller, model.model_validate(poller.settings)
    except ValidationError as exc:
        return "; ".join(format_validation_error(exc, prefix=f"pollers.{poller.name}.settings"))


def record_watch(
    config: Config,
    poller: str,
    key: str,
    detail: Mapping[str, Any],
    event: PolledEvent,
) -> bool:
    """Watch ``key`` with ``poller`` and journal ``event``; False if it was watched already."""

    async def run() -> bool:
        journal = make_journal(config.journal)
        await asyncio.to_thread(journal.open)
        try:
            return await start_watch(journal, poller, key, detail, event)
        finally:
            await journal.close()

    return asyncio.run(run())
