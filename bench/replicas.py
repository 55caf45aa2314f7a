"""One hookdock replica against two behind HAProxy: requests/s and p50/p99, in one run.

Rows, one after the other, each on 127.0.0.1 with wrk at the same fixed concurrency and the
same distinct ~3 KB bodies as bench/ingest.py (its Lua script and wrk runner):

  bare             bench/bare_app.py alone: the server stack with no work at all
  haproxy+bare     HAProxy (infra/haproxy.cfg, as shipped) in front of that bare endpoint:
                   the ceiling of anything behind the balancer on this machine
  1 replica        hookdock serve on the PostgreSQL journal (a fresh schema), direct
  haproxy+1        the same replica behind HAProxy (both of its server entries point at it):
                   what the balancer itself costs
  haproxy+2        two replicas on one PostgreSQL schema and one export folder, behind HAProxy

Every hookdock row runs the dispatcher (exports to a local folder) as ``hookdock serve`` does
by default.  HAProxy logs one line per request to a file, as the shipped config does.

    python bench/replicas.py                        # wrk -t1 -c32 -d10s, 2 s warm-up per row
    python bench/replicas.py -c 64 -d 20s --rows "haproxy+1,haproxy+2"

Needs wrk and haproxy on PATH (apt-get install -y wrk haproxy) and PostgreSQL
($HOOKDOCK_TEST_PG_DSN or the local test database).  A benchmark: it asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    HOST,
    BodyTemplate,
    HookdockSetup,
    PgTarget,
    Server,
    bare_server,
    body_template,
    drop_pg_schema,
    free_port,
    new_pg_target,
    pg_dsn,
    pg_problem,
    table,
    work_folder,
    write_config,
)
from ingest import LUA, run_wrk

from tests.haproxy import HAPROXY_MISSING, SERVER_NAMES, HAProxy, haproxy_binary

ROWS = ("bare", "haproxy+bare", "1 replica", "haproxy+1", "haproxy+2")


@dataclass
class Row:
    name: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    codes: dict[int, int]
    socket_errors: int
    notes: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def non_2xx(self) -> int:
        return sum(n for code, n in self.codes.items() if not 200 <= code < 300)


def hookdock_replica(setup: HookdockSetup, n: int, port: int, log_dir: Path) -> Server:
    argv = [sys.executable, "-m", "receiver", "serve", "--config", str(setup.config)]
    argv += ["--port", str(port)]
    return Server(
        f"hookdock-{n}",
        argv,
        port=port,
        ready_path="/readyz",
        log_dir=log_dir,
        cwd=setup.config.parent,
    )


@contextlib.contextmanager
def target(name: str, work: Path, dsn: str) -> Iterator[tuple[int, str]]:
    """Start what row ``name`` measures; yields the port and path wrk posts to."""
    folder = work / name.replace(" ", "-").replace("+", "-")
    folder.mkdir()
    with contextlib.ExitStack() as stack:
        if "bare" in name:
            bare = stack.enter_context(bare_server(free_port(), folder))
            ports = [bare.port]
            path = "/hooks/bare/token"
        else:
            pg: PgTarget = new_pg_target(dsn, "replicas")
            stack.callback(drop_pg_schema, pg)
            setup = write_config(folder, pg=pg)
            count = 2 if name == "haproxy+2" else 1
            ports = []
            for n in range(1, count + 1):
                # One at a time: the first creates the schema, the next finds it.
                server = hookdock_replica(setup, n, free_port(), folder)
                stack.enter_context(server)
                ports.append(server.port)
            path = setup.hook_path
        if not name.startswith("haproxy"):
            yield ports[0], path
            return
        # infra/haproxy.cfg names two servers: one port twice puts one replica behind both.
        lb = stack.enter_context(
            HAProxy(folder, [ports[0], ports[-1]], check_inter="1s", check_downinter="1s")
        )
        for server_name in SERVER_NAMES:
            lb.wait_status(server_name, "UP", 15)
        yield lb.port, path


def measure(
    args: argparse.Namespace, name: str, script: Path, body: tuple[Path, Path], work: Path
) -> Row:
    with target(name, work, args.dsn) as (port, path):
        url = f"http://{HOST}:{port}{path}"
        log = work / f"wrk-{name.replace(' ', '-')}"
        if args.warmup not in ("0", "0s"):
            run_wrk(args, url, script, body, args.warmup, log.with_suffix(".warmup.txt"))
        raw, _ = run_wrk(args, url, script, body, args.duration, log.with_suffix(".txt"))
    lat = raw["latency_us"]
    return Row(
        name=name,
        requests=raw["requests"],
        seconds=raw["duration_us"] / 1e6,
        p50_ms=lat["p50"] / 1000,
        p99_ms=lat["p99"] / 1000,
        max_ms=lat["max"] / 1000,
        codes={int(k): v for k, v in raw["codes"].items()},
        socket_errors=sum(n for k, n in raw["errors"].items() if k != "status"),
    )


def report(rows: list[Row]) -> str:
    headers = ["row", "requests/s", "p50 ms", "p99 ms", "max ms", "requests", "non-2xx"]
    headers.append("socket errors")
    lines = [
        table(
            headers,
            [
                [
                    r.name,
                    f"{r.rps:.0f}",
                    f"{r.p50_ms:.2f}",
                    f"{r.p99_ms:.2f}",
                    f"{r.max_ms:.1f}",
                    str(r.requests),
                    str(r.non_2xx),
                    str(r.socket_errors),
                ]
                for r in rows
            ],
        )
    ]
    by_name = {r.name: r for r in rows}
    for over, under in (
        ("haproxy+2", "haproxy+1"),
        ("haproxy+1", "1 replica"),
        ("haproxy+2", "haproxy+bare"),
        ("haproxy+bare", "bare"),
    ):
        if over in by_name and under in by_name and by_name[under].rps:
            ratio = by_name[over].rps / by_name[under].rps
            lines.append(
                f"{over} / {under}: {ratio:.2f}"
                f"  ({by_name[over].rps:.0f} / {by_name[under].rps:.0f} req/s)"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-t", "--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("-c", "--connections", type=int, default=32, help="default 32")
    parser.add_argument("-d", "--duration", default="10s", help="measured run (default 10s)")
    parser.add_argument("--warmup", default="2s", help="warm-up run before each (default 2s)")
    parser.add_argument("--timeout", default="5s", help="wrk request timeout (default 5s)")
    parser.add_argument("--body-bytes", type=int, default=3072, help="body size (default 3072)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"of {', '.join(ROWS)}")
    parser.add_argument("--dsn", help="PostgreSQL DSN (default: $HOOKDOCK_TEST_PG_DSN or local)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    args.dsn = pg_dsn(args.dsn)

    names = [n.strip() for n in args.rows.split(",") if n.strip()]
    unknown = [n for n in names if n not in ROWS]
    if unknown or not names:
        parser.error(f"--rows: unknown {', '.join(unknown)} (of {', '.join(ROWS)})")
    missing = [tool for tool in ("wrk",) if shutil.which(tool) is None]
    if missing or haproxy_binary() is None:
        print(f"bench/replicas.py needs wrk and haproxy: {HAPROXY_MISSING}", file=sys.stderr)
        print("  (wrk: apt-get install -y wrk)", file=sys.stderr)
        return 2
    if any("bare" not in n for n in names) and (problem := pg_problem(args.dsn)) is not None:
        print(f"PostgreSQL is not reachable ({problem})", file=sys.stderr)
        return 2

    work = work_folder("hookdock-bench-replicas-")
    template: BodyTemplate = body_template(args.body_bytes)
    body = (work / "body-prefix.json", work / "body-suffix.json")
    body[0].write_bytes(template.prefix)
    body[1].write_bytes(template.suffix)
    script = work / "post.lua"
    script.write_text(LUA, encoding="utf-8")
    print(
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration} (warm-up {args.warmup}),"
        f" body {template.size} bytes, distinct per request; journal: PostgreSQL",
        flush=True,
    )
    rows: list[Row] = []
    try:
        for name in names:
            row = measure(args, name, script, body, work)
            rows.append(row)
            print(
                f"  {name:13} {row.rps:8.0f} req/s  p50 {row.p50_ms:6.2f} ms"
                f"  p99 {row.p99_ms:6.2f} ms  non-2xx {row.non_2xx}",
                flush=True,
            )
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(report(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
