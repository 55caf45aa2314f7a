"""The highest sustained rate at which POST to file stays under a second at p99.

Runs ``post_to_file.py`` once per rate of a ladder (each its own ``hookdock serve``, fresh
journal and folder, ``--seconds`` of sending at that rate), on SQLite and on PostgreSQL, and
prints for each rate the POST round trip's p99 and the POST-to-file p50/p99/max (the
clock-corrected mtime row), then per engine the highest rate whose p99 stayed under the limit.
A rate at which the exports fall behind shows it plainly: the p99 grows with the run's length.
Each row also shows hookdock's CPU per request and what a folder and a file cost the disk in
that run (``common.create_cost_us``): on a journal-less ext4 that cost moves 10 to 30 times with
what earlier runs deleted, and the rates it allows move with it.

    python bench/sustained_rate.py                              # 200..1000/s, 30 s each
    python bench/sustained_rate.py --rates 400,500,600 --seconds 60 --engines sqlite

A benchmark, not a test: it asserts nothing.  Needs aiohttp (pip install -e '.[bench]').
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import table

BENCH_DIR = Path(__file__).resolve().parent


def run_one(
    engine: str, rate: float, seconds: float, extra: list[str], trash: Path
) -> dict[str, float | None] | None:
    with tempfile.TemporaryDirectory(prefix="hookdock-bench-rate-") as folder:
        summary = Path(folder) / "summary.json"
        argv = [
            sys.executable,
            str(BENCH_DIR / "post_to_file.py"),
            "--rate",
            f"{rate:g}",
            "--requests",
            str(int(rate * seconds)),
            "--deadline",
            str(max(60.0, seconds * 2)),
            "--summary",
            str(summary),
            # Deleted once the ladder is done: a run's deletions would tax the next rung.
            "--defer-cleanup",
            str(trash),
            *(["--postgres"] if engine == "postgres" else []),
            *extra,
        ]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not summary.exists():
            print(f"  {engine} {rate:g}/s failed:\n{done.stdout}\n{done.stderr}", file=sys.stderr)
            return None
        figures: dict[str, float | None] = json.loads(summary.read_text(encoding="utf-8"))
        return figures


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", default="200,300,400,500,600,800,1000", help="events/s")
    parser.add_argument("--seconds", type=float, default=30.0, help="sending per rate (30)")
    parser.add_argument("--engines", default="sqlite,postgres", help="(default both)")
    parser.add_argument("--limit-ms", type=float, default=1000.0, help="p99 limit (1000 ms)")
    parser.add_argument(
        "--pass", dest="extra", action="append", default=[], help="an option for post_to_file"
    )
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    rows: list[list[str]] = []
    best: dict[str, float | None] = {}
    with tempfile.TemporaryDirectory(prefix="hookdock-bench-ladder-") as ladder:
        trash = Path(ladder) / "to-delete"
        try:
            ladder_rows(args, rates, rows, best, trash)
        finally:
            if trash.exists():
                for line in trash.read_text(encoding="utf-8").splitlines():
                    shutil.rmtree(line, ignore_errors=True)
    report(args, rows, best)
    return 0


def ladder_rows(
    args: argparse.Namespace,
    rates: list[float],
    rows: list[list[str]],
    best: dict[str, float | None],
    trash: Path,
) -> None:
    for engine in args.engines.split(","):
        best[engine] = None
        for rate in rates:
            figures = run_one(engine, rate, args.seconds, args.extra, trash)
            if figures is None:
                rows.append([engine, f"{rate:g}", "-", "-", "-", "-", "-", "-", "-", "failed"])
                continue
            p99 = figures["file_p99_ms"]
            complete = figures["exported"] == figures["requests"]
            under = complete and p99 is not None and p99 < args.limit_ms
            if under and (best[engine] is None or rate > (best[engine] or 0)):
                best[engine] = rate
            row = [
                engine,
                f"{rate:g}",
                f"{figures['exported']:.0f}/{figures['requests']:.0f}",
                _ms(figures["post_p99_ms"]),
                _ms(figures["file_p50_ms"]),
                _ms(p99),
                _ms(figures["file_max_ms"]),
                f"{figures['cpu_us_per_request']:.0f}",
                f"{figures['create_us']:.0f}",
                "yes" if under else "no",
            ]
            rows.append(row)
            print("  " + " ".join(row), flush=True)


def report(args: argparse.Namespace, rows: list[list[str]], best: dict[str, float | None]) -> None:
    print()
    print(
        f"POST to file at a sustained rate, {args.seconds:g} s of sending per rate"
        f" (p99 limit {args.limit_ms:g} ms):"
    )
    headers = ["journal", "rate/s", "exported", "POST p99 ms", "file p50 ms", "file p99 ms"]
    headers += ["file max ms", "hookdock CPU µs/request", "disk: folder+file µs CPU"]
    print(table([*headers, f"p99 < {args.limit_ms:g} ms"], rows))
    for engine, highest in best.items():
        shown = "none of the rates" if highest is None else f"{highest:g}/s"
        print(f"{engine}: highest sustained rate with p99 under {args.limit_ms:g} ms: {shown}")


if __name__ == "__main__":
    sys.exit(main())
