"""What watching a full Dynamo batch costs: ``documill.batches`` against bare reads of the API.

A batch of 1,000 tasks (Dynamo's maximum) is posted to the emulator (``hookdock emulate
documill``'s app, on a thread of this process) and left to finish.  Then, side by side:

* **bare**: the ceiling, in the same run: one aiohttp session reads the batch and each of its
  1,000 tasks, nothing else (no guard, no events);
* **poll**: one ``documill.batches`` poll that reads them and makes the 1,000 task events and
  ``batch.completed``, with its API calls, the size of the state it would save, and this
  process's peak RSS;
* **again**: the next poll over a batch still watched with every task reported (what each poll
  of an open batch costs once its tasks are out): one call.

Run: ``python bench/documill_batch.py [--tasks 1000] [--rounds 3]``.  Prints one JSON line per
round, then the medians.  Only 127.0.0.1 is contacted; nothing is left running.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp

from handlers.documill.batches import BatchesPoller, BatchesSettings
from handlers.documill.emulator import DocumillEmulator, EmulatorSettings
from handlers.emulation import serve_in_thread
from handlers.poller import Watched

HEADERS = {"x-dynamo-tenant-id": "emulator-tenant", "x-dynamo-api-key": "emulator-key"}


class Context:
    poller = "bench"

    def __init__(self, batch_id: str) -> None:
        self.batch_id = batch_id

    async def seen(self, subjects: Any) -> set[str]:
        return set()

    async def watches(self) -> list[Watched]:
        return [Watched(key=self.batch_id, added_at=datetime.now(UTC))]


async def bare(url: str, batch_id: str) -> float:
    began = time.perf_counter()
    async with aiohttp.ClientSession(headers=HEADERS) as session:
        async with session.get(f"{url}/v1/batch/{batch_id}") as response:
            batch = await response.json()
        for task in batch["tasks"]:
            async with session.get(f"{url}/v1/batch/{batch_id}/{task['id']}") as response:
                await response.read()
    return time.perf_counter() - began


async def one_round(url: str, tasks: int) -> dict[str, Any]:
    settings = BatchesSettings.model_validate(
        {
            "api": {
                "base_url": url,
                "tenant_id": "emulator-tenant",
                "api_key": "emulator-key",
                "allow_networks": ["127.0.0.1/32"],
            },
            "max_task_reads": tasks,
        }
    )
    poller = BatchesPoller(settings)
    try:
        answer = await poller.client.post_batch(
            {"template": "t", "tasks": [{"params": {"id": f"r{n}"}} for n in range(tasks)]}
        )
        batch_id = answer["id"]
        ceiling = await bare(url, batch_id)
        # A batch still open (one never-finishing task would do the same): the batch.completed
        # event closes it, so "again" is measured with the state as it was after the first poll.
        began = time.perf_counter()
        first = await poller.poll(None, Context(batch_id))
        took = time.perf_counter() - began
        state = dict(first.state)
        state["batches"] = {batch_id: {"ok": [str(t) for t in answer["tasks"]], "failed": []}}
        began = time.perf_counter()
        again = await poller.poll(state, Context(batch_id))
        again_took = time.perf_counter() - began
    finally:
        await poller.aclose()
    return {
        "tasks": tasks,
        "bare_seconds": round(ceiling, 3),
        "poll_seconds": round(took, 3),
        "poll_over_bare": round(took / ceiling, 2),
        "poll_calls": first.calls,
        "events": len(first.found),
        "state_bytes": len(json.dumps(state)),
        "again_seconds": round(again_took, 4),
        "again_calls": again.calls,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    emu = DocumillEmulator(EmulatorSettings(task_seconds=0.0))
    rows = []
    with serve_in_thread(emu.app, "documill-bench") as url:
        emu.settings = emu.settings.model_copy(update={"public_url": url})
        for _ in range(max(1, min(args.rounds, 10))):
            row = asyncio.run(one_round(url, max(1, min(args.tasks, 1000))))
            print(json.dumps(row), flush=True)
            rows.append(row)
    medians = {
        key: statistics.median(r[key] for r in rows)
        for key in ("bare_seconds", "poll_seconds", "poll_over_bare", "again_seconds")
    }
    print(json.dumps({"median": medians}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
