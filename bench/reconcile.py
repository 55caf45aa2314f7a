"""Reconciliation over 10,000 and 100,000 tasks: time, API calls and peak RSS, side by side.

The emulator runs as its own process (``hookdock emulate smartdocumentor --exported N
--drop-every K``: N tasks already exported, every K-th webhook lost), so its memory is not the
poller's.  For each size a fresh Python process runs one ``smartdocumentor.reconcile`` poll
against it, with a stand-in for the journal that answers "seen" for every task whose webhook
was not dropped (by arithmetic, so the stand-in holds nothing), and prints the poll's wall
time, its API calls, what it found, and the process's peak RSS.  The poller streams one page
at a time and keeps only the tasks still waiting out their grace period, so its memory must
stay flat as the task count grows.

    python bench/reconcile.py                      # 10000 and 100000 tasks, 1% dropped
    python bench/reconcile.py --sizes 1000 --page-size 500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from handlers.poller import Watched

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


class ArithmeticJournal:
    """``seen`` is true for a task whose id is not a multiple of ``drop_every``."""

    poller = "bench"

    def __init__(self, drop_every: int) -> None:
        self.drop_every = drop_every

    async def seen(self, subjects: Collection[str]) -> set[str]:
        out = set()
        for subject in subjects:
            parts = subject.split(":")
            if len(parts) == 3 and int(parts[2]) % self.drop_every:
                out.add(subject)
        return out

    async def watches(self) -> list[Watched]:
        return []


async def one_poll(url: str, drop_every: int, page_size: int) -> dict[str, object]:
    sys.path.insert(0, str(ROOT))
    from handlers.poller import PolledDelivery
    from handlers.smartdocumentor.reconcile import ReconcilePoller, ReconcileSettings

    settings = ReconcileSettings.model_validate(
        {
            "api": {
                "base_url": url,
                "client_id": "emulator",
                "client_secret": "emulator-secret",
                "allow_networks": ["127.0.0.1/32"],
                "page_size": page_size,
            },
            "route": "sd-text",
            "grace_seconds": 0,
        }
    )
    poller = ReconcilePoller(settings)
    began = time.perf_counter()
    try:
        result = await poller.poll(None, ArithmeticJournal(drop_every))
    finally:
        await poller.aclose()
    took = time.perf_counter() - began
    recovered = sum(1 for item in result.found if isinstance(item, PolledDelivery))
    return {
        "seconds": round(took, 2),
        "api_calls": result.calls,
        "listed": result.state["listed"],
        "missing": len(result.found) - recovered,
        "recovered": recovered,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def run_size(size: int, drop_every: int, page_size: int) -> dict[str, object]:
    port = free_port()
    emulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "receiver",
            "--log-level",
            "warning",
            "emulate",
            "smartdocumentor",
            "--port",
            str(port),
            "--exported",
            str(size),
            "--drop-every",
            str(drop_every),
            "--review-every",
            "0",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    url = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/_emulator/state", timeout=5).read()  # noqa: S310
                break
            except OSError:
                if time.monotonic() > deadline or emulator.poll() is not None:
                    raise RuntimeError("the emulator did not start") from None
                time.sleep(0.2)
        child = subprocess.run(
            [sys.executable, __file__, "--child", url, str(drop_every), str(page_size)],
            capture_output=True,
            text=True,
            check=True,
            timeout=1800,
        )
        figures: dict[str, object] = json.loads(child.stdout)
        return {"tasks": size, **figures}
    finally:
        emulator.terminate()
        try:
            emulator.wait(10)
        except subprocess.TimeoutExpired:
            emulator.kill()
            emulator.wait(10)


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        url, drop_every, page_size = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        print(json.dumps(asyncio.run(one_poll(url, drop_every, page_size))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--drop-every", type=int, default=100)
    parser.add_argument("--page-size", type=int, default=100)
    args = parser.parse_args()
    rows = [run_size(size, args.drop_every, args.page_size) for size in args.sizes]
    columns = list(rows[0])
    print(" | ".join(f"{c:>12}" for c in columns))
    for row in rows:
        print(" | ".join(f"{row[c]!s:>12}" for c in columns))


if __name__ == "__main__":
    main()
