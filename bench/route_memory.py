"""How much memory the dispatcher takes to drain large bodies, with and without its byte budget.

``hookdock worker`` drains N deliveries of large bodies (``--body-kib``, 900 KiB: near the
default ``max_body_bytes``) on SQLite into a sink that does nothing, with
``dispatcher.route_bytes`` at its default (64 MiB) and at 16 GiB (no budget in practice,
``route_concurrency`` deliveries routed at once whatever their size); beside them, the same
drain of small bodies (3 KB), the worker's footprint when bodies cost nothing.  Each drain
runs in a process of its own, so that each peak (the worker's maximum resident set) is its own.

    python bench/route_memory.py                  # 1000 deliveries
    python bench/route_memory.py -n 300 --body-kib 500

``route_bytes`` bounds the deliveries being routed, not what comes after them: the events of
the sends in flight (up to the sink's ``concurrency``, 256 for ``bench/null_sink.py``, each
holding its payload) and what the allocator keeps stay above the small-body floor.
A benchmark, not a test: it asserts nothing about the figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path

from common import NULL_SINK, BodyTemplate, body_template, table, work_folder, write_config
from journal_scale import measure_dispatch

MiB = 1024 * 1024
NO_BUDGET = 16 * 1024 * MiB
RUNS = [
    ("small bodies", 0, 64 * MiB),
    ("large, budget 64 MiB", 1, 64 * MiB),
    ("large, no budget", 1, NO_BUDGET),
]
"""(name, bodies large or not, route_bytes) of each drain."""


def one(n: int, body_bytes: int, route_bytes: int, timeout: float) -> dict[str, float | None]:
    """One drain in this process: its rate and the worker's peak resident set."""
    work = work_folder("hookdock-bench-route-memory-")
    try:
        template = body_template()
        if body_bytes:
            pad = b"x" * body_bytes
            template = BodyTemplate(
                b'{"workspaceId": 7, "pad": "' + pad + b'", "taskId": "', b'"}', "7"
            )
        setup = write_config(
            work / "drain",
            dispatcher=False,
            sink_type=NULL_SINK,
            dispatcher_options=f"route_bytes = {route_bytes}\n",
        )
        drain = measure_dispatch(setup, n, template, work, timeout)
        # The worker was the only child: the children's peak is its peak.
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        return {"rate": drain.rate, "peak_mib": peak}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", "--deliveries", type=int, default=1000, help="(default 1000)")
    parser.add_argument("--body-kib", type=int, default=900, help="(default 900)")
    parser.add_argument("--timeout", type=float, default=300.0, help="per drain (default 300 s)")
    parser.add_argument("--one", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        body_bytes, route_bytes = args.one
        print(json.dumps(one(args.deliveries, body_bytes, route_bytes, args.timeout)))
        return 0
    rows = []
    for name, large, route_bytes in RUNS:
        body_bytes = args.body_kib * 1024 * large
        argv = [sys.executable, str(Path(__file__)), "-n", str(args.deliveries)]
        argv += ["--timeout", str(args.timeout), "--one", str(body_bytes), str(route_bytes)]
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        rate = result["rate"]
        rows.append(
            [
                name,
                "none" if route_bytes == NO_BUDGET else f"{route_bytes // MiB} MiB",
                f"{result['peak_mib']:.0f}",
                "-" if rate is None else f"{rate:.0f}",
            ]
        )
        print(f"  {name}: worker peak {result['peak_mib']:.0f} MiB", flush=True)
    print(f"\ndrain of {args.deliveries} deliveries ({args.body_kib} KiB bodies), SQLite:\n")
    print(table(["bodies", "route_bytes", "worker peak MiB", "events/s"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
