"""Normal POSTs with and without 200 slow clients: request latency and POST to file, side by side.

    python bench/slow_clients.py                    # 200 slow clients, 3 rounds of 300 POSTs
    python bench/slow_clients.py --slow 500 --posts 1000 --concurrency 8 --rounds 5

One ``hookdock serve`` on its defaults (header deadline 10 s, body deadline 60 s).  First the
POSTs alone, then the same number while ``--slow`` clients hold connections open, half in
their headers and half in a body that promised 1,000 bytes, each sending one more byte every
half second.  POST latency is timed by the client; POST to file is the journal's time from
receipt to the file's delivery.  The slow clients must outlast the measurement (the header
deadline is 10 s): the last line says how many were still open at its end.  The two take
turns ``--rounds`` times, fresh slow clients each round, and the figures pool every round,
so that a machine busy with something else weighs on both columns alike.
"""

from __future__ import annotations

import argparse
import shutil

from common import free_port, hookdock_server, table, work_folder, write_config

from tests.slow_clients import Figures, SlowClients, measure, percentile


def rows(alone: Figures, crowded: Figures) -> list[list[str]]:
    out = []
    for name, before, after in (
        ("POST", alone.post_ms, crowded.post_ms),
        ("POST to file", alone.to_file_ms, crowded.to_file_ms),
    ):
        for p in (50, 90, 99):
            a, b = percentile(before, p), percentile(after, p)
            out.append([f"{name} p{p}", f"{a:.1f}", f"{b:.1f}", f"{b / a:.2f}"])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", type=int, default=200, help="slow clients (200)")
    parser.add_argument("--posts", type=int, default=300, help="POSTs each way per round (300)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, alternating (3)")
    parser.add_argument("--concurrency", type=int, default=4, help="POSTs in flight (4)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    folder = work_folder("hookdock-slow-")
    try:
        setup = write_config(folder)
        port = free_port()
        with hookdock_server(setup, port, folder) as server:
            measure(server.base_url, setup.hook_path, setup.journal, 50, args.concurrency)
            alone, crowded = Figures([], []), Figures([], [])
            still_open = []
            posts = (server.base_url, setup.hook_path, setup.journal, args.posts, args.concurrency)
            for _ in range(args.rounds):
                run = measure(*posts)
                alone.post_ms += run.post_ms
                alone.to_file_ms += run.to_file_ms
                with SlowClients(port, setup.hook_path, args.slow) as slow:
                    run = measure(*posts)
                    still_open.append(slow.still_open())
                crowded.post_ms += run.post_ms
                crowded.to_file_ms += run.to_file_ms
        heads = ["ms", "alone", f"{args.slow} slow clients", "ratio"]
        print(table(heads, rows(alone, crowded)))
        print(
            f"{args.rounds} x {args.posts} POSTs each way, {args.concurrency} in flight;"
            f" slow clients still open at the end of each round: {still_open} of {args.slow}"
        )
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
