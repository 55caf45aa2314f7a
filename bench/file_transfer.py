"""One large file behind a SAS link, into the local folder sink and into S3, vs curl.

Writes a ``--size-mib`` file (default 1024) once into a temporary folder and serves it with
``python -m tests.file_server`` (a subprocess on 127.0.0.1 that checks the link's ``sig`` and
``se`` like Azure Blob Storage), downloads it once with curl unmeasured (``--warmup``), then,
``--runs`` times, in this order:

  curl          ``curl -sS -o FILE URL`` from the same server into the same file system;
                also the time of curl plus an fsync of the file (hookdock's local sink fsyncs)
  folder        ``hookdock serve`` (a subprocess) with one SmartDocumentor route for
                ``anonymization_file`` whose ``[routes.files]`` fetches ``exported``, into a
                ``local`` sink: the time from the POST of the webhook until the event JSON
                appears (the sink writes it after the file)
  s3 bare       boto3 ``upload_file`` of the file into a moto server (a subprocess), with
                the S3 sink's default part size and parts in flight: what moto can take
  s3            the same route into an ``s3`` sink on that moto server: until the event
                object appears; the file's object size is read back with boto3

Each hookdock run is a fresh process, so its peak RSS (``VmHWM`` from ``/proc/PID/status``
after the transfer) is that transfer's; ``VmRSS`` is also sampled every 20 ms during it.  Each
row checks what was stored: size and SHA-256 in the event JSON, the file's size on disk or in
S3, and how many GETs the file server saw (1 unless a transfer was retried).

    python bench/file_transfer.py                     # 1 GiB, one run
    python bench/file_transfer.py --size-mib 256 --runs 3 --keep
    python bench/file_transfer.py --only curl --only folder     # leave out S3

Linux only (``/proc``).  Needs curl, moto[server] and boto3 (``pip install -e '.[test]'``).
A benchmark, not a test: it asserts nothing about the figures.  Everything talks to 127.0.0.1
only, every wait has a deadline, and every process it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import shutil
import statistics
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
from common import HOST, Server, free_port, table, work_folder

from tests.conftest import to_toml
from tests.file_server import make_sas_url
from tests.s3server import S3_ENV, MotoServer, moto_server
from tests.sd_payloads import load

T = TypeVar("T")

MiB = 1024 * 1024
GiB = 1024 * MiB
FILE_NAME = "export.pdf"
PROBE_NAME = "ready.txt"
ROUTE = "sd"
SOURCE = "smartdocumentor.anonymization_file"
BUCKET = "bench-files"
TEMPLATE = "{task_id}/{event_id}.json"
S3_KEYS = {"access_key_id": "testing", "secret_access_key": "testing"}
# The S3 sink's defaults (part_size_mb, upload_concurrency), for the boto3 baseline.
SINK_PART_BYTES = 8 * MiB
SINK_UPLOAD_CONCURRENCY = 2


class BenchError(RuntimeError):
    """A run that could not be measured; the message says why."""


# ---------------------------------------------------------------- the file


@dataclass(frozen=True)
class Source:
    path: Path
    size: int
    sha256: str


def write_source(path: Path, size_mib: int) -> Source:
    """``size_mib`` MiB: one random MiB repeated, each copy stamped with its index so that no
    two MiB are alike (nothing along the way can dedupe or compress it to nothing)."""
    block = bytearray(os.urandom(MiB))
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for index in range(size_mib):
            struct.pack_into("<Q", block, 0, index)
            out.write(block)
            digest.update(block)
        out.flush()
        os.fsync(out.fileno())
    return Source(path, size_mib * MiB, digest.hexdigest())


# ---------------------------------------------------------------- /proc


def proc_status_kib(pid: int, key: str) -> int | None:
    """A ``kB`` field of ``/proc/PID/status`` (``VmRSS``, ``VmHWM``), None once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of ``pid`` so far."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            # The command name is in parentheses and may hold spaces: split after it.
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RssSampler:
    """Samples ``VmRSS`` of a process on a thread until stopped; keeps the largest."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.max_kib = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while True:
            rss = proc_status_kib(self.pid, "VmRSS")
            if rss is not None:
                self.max_kib = max(self.max_kib, rss)
                self.samples += 1
            if self._stop.wait(self.interval):
                return


# ---------------------------------------------------------------- waiting


def wait_until(
    predicate: Callable[[], T | None],
    deadline: float,
    what: str,
    *,
    interval: float = 0.01,
    check: Callable[[], None] | None = None,
    check_every: float = 1.0,
) -> T:
    """Poll ``predicate`` until it returns a value (returned) or ``deadline`` (monotonic)
    passes; ``check`` runs every ``check_every`` seconds and may raise to give up early."""
    next_check = time.monotonic() + check_every
    while True:
        value = predicate()
        if value is not None:
            return value
        now = time.monotonic()
        if now >= deadline:
            raise BenchError(f"timed out waiting for {what}")
        if check is not None and now >= next_check:
            check()
            next_check = now + check_every
        time.sleep(min(interval, max(0.0, deadline - now)))


# ---------------------------------------------------------------- results


@dataclass
class Row:
    name: str
    run: int
    seconds: float
    size: int
    verified: str
    peak_rss_kib: int | None = None
    sampled_rss_kib: int | None = None
    cpu: float | None = None
    gets: int | None = None
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def mb_per_s(self) -> float:
        return self.size / self.seconds / 1e6 if self.seconds else 0.0


def _mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.0f}"


def report(rows: list[Row]) -> str:
    def same_run(row: Row, name: str) -> Row | None:
        return next((r for r in rows if r.name == name and r.run == row.run), None)

    def ratio(row: Row, name: str) -> str:
        base = same_run(row, name)
        if base is None or not row.seconds:
            return "-"
        return f"{base.seconds / row.seconds:.2f}"

    body = [
        [
            r.name,
            str(r.run),
            f"{r.seconds:.2f}",
            f"{r.mb_per_s:.0f}",
            ratio(r, "curl"),
            ratio(r, "curl+fsync"),
            ratio(r, "s3 bare") if r.name.startswith("s3") and r.name != "s3 bare" else "-",
            _mib(r.peak_rss_kib),
            _mib(r.sampled_rss_kib),
            "-" if r.cpu is None else f"{r.cpu:.1f}",
            "-" if r.gets is None else str(r.gets),
            r.verified,
        ]
        for r in rows
    ]
    headers = [
        "row",
        "run",
        "seconds",
        "MB/s",
        "x curl",
        "x curl+fsync",
        "x s3 bare",
        "peak RSS MiB",
        "max sampled RSS MiB",
        "CPU s",
        "GETs",
        "stored",
    ]
    lines = [table(headers, body), ""]
    lines.append(
        "MB/s = 10^6 bytes/s.  x curl: throughput relative to curl in the same run (1.00 is as"
        " fast).  peak RSS: VmHWM of the process after the transfer."
    )
    medians: dict[str, float] = {}
    rows_in_order = (
        "curl",
        "curl+fsync",
        "folder",
        "folder-nosync",
        "s3 bare",
        "s3",
        "s3-nocopy",
    )
    for name in rows_in_order:
        measured = [r for r in rows if r.name == name]
        if measured:
            medians[name] = statistics.median(r.seconds for r in measured)
            lines.append(
                f"median {name}: {medians[name]:.2f} s,"
                f" {measured[0].size / medians[name] / 1e6:.0f} MB/s over {len(measured)} run(s)"
            )
    pairs = (
        ("folder", "curl"),
        ("folder", "curl+fsync"),
        ("folder-nosync", "curl"),
        ("s3", "s3 bare"),
        ("s3-nocopy", "s3 bare"),
    )
    for name, base in pairs:
        if name in medians and base in medians:
            lines.append(
                f"{name} / {base} throughput (medians): {medians[base] / medians[name]:.2f}"
            )
    return "\n".join(lines)


# ---------------------------------------------------------------- curl


def run_curl(url: str, out: Path, source: Source, run: int, deadline: float) -> list[Row]:
    """curl into ``out``, then an fsync of it: a row for each."""
    argv = [
        "curl",
        "-sS",
        "--noproxy",
        "*",
        "--max-time",
        f"{max(1, int(deadline - time.monotonic()))}",
        "-o",
        str(out),
        "-w",
        "%{http_code} %{size_download}",
        url,
    ]
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    # Sampled, since curl's ru_maxrss counts the forked Python it was before its exec.
    with RssSampler(proc.pid) as sampler:
        written = proc.stdout.read()
        proc.stdout.close()
        # wait4 reaps curl with its own rusage: its CPU time, not that of every child so far.
        _, status, usage = os.wait4(proc.pid, 0)
        curl_seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    code, _, downloaded = written.decode().partition(" ")
    if proc.returncode != 0 or code != "200":
        raise BenchError(f"curl exited with {proc.returncode}, HTTP {code}")
    fd = os.open(out, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    synced_seconds = time.perf_counter() - start
    size = out.stat().st_size
    verified = "size ok" if size == source.size == int(downloaded or 0) else f"SIZE {size}"
    cpu = usage.ru_utime + usage.ru_stime
    rows = [
        Row("curl", run, curl_seconds, size, verified, None, sampler.max_kib, cpu),
        Row("curl+fsync", run, synced_seconds, size, verified, None, sampler.max_kib, cpu),
    ]
    out.unlink()
    return rows


# ---------------------------------------------------------------- S3 without hookdock


def run_s3_bare(moto: MotoServer, source: Source, run: int) -> Row:
    """boto3's ``upload_file`` of the same file into the same moto server, with the S3 sink's
    default part size and parts in flight: what moto itself can take."""
    from boto3.s3.transfer import TransferConfig  # type: ignore[import-untyped]

    s3 = moto.boto3_client()
    key = f"bare-{run}-{uuid.uuid4()}.pdf"
    config = TransferConfig(
        multipart_threshold=SINK_PART_BYTES,
        multipart_chunksize=SINK_PART_BYTES,
        max_concurrency=SINK_UPLOAD_CONCURRENCY,
    )
    start = time.perf_counter()
    s3.upload_file(str(source.path), BUCKET, key, Config=config)
    seconds = time.perf_counter() - start
    size = int(s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"])
    s3.delete_object(Bucket=BUCKET, Key=key)
    verified = "size ok" if size == source.size else f"STORED SIZE {size}"
    return Row("s3 bare", run, seconds, source.size, verified)


# ---------------------------------------------------------------- hookdock


def hookdock_config(sink: str, size: int, token: str, moto_url: str | None) -> str:
    sinks: dict[str, Any]
    if sink.startswith("folder"):
        # "folder-nosync": the same without fsync, to compare the pipeline with curl alone.
        options = {"type": "local", "root": "exports", "path_template": TEMPLATE}
        sinks = {"folder": {**options, "fsync": sink == "folder"}}
        sink = "folder"
    else:
        assert moto_url is not None
        # "s3-nocopy": without the copy in place that adds sha256 to a multipart object.
        copy = sink == "s3"
        sink = "s3"
        sinks = {
            "s3": {
                "sha256_metadata": copy,
                "type": "s3",
                "bucket": BUCKET,
                "key_template": TEMPLATE,
                "endpoint_url": moto_url,
                "region": "us-east-1",
                "addressing_style": "path",
                **S3_KEYS,
            }
        }
    doc = {
        "server": {"host": HOST, "grace_seconds": 5.0},
        "journal": {"path": "data/hookdock.db"},
        "routes": [
            {
                "name": ROUTE,
                "source": SOURCE,
                "auth": {"type": "url-token", "token": token},
                "sinks": [sink],
                "files": {
                    "fetch": ["exported"],
                    "max_bytes": max(2 * GiB, size),
                    "allow_networks": [f"{HOST}/32"],
                },
            }
        ],
        "sinks": sinks,
    }
    return "# Written by bench/file_transfer.py; everything under this folder.\n" + to_toml(doc)


def webhook_body(task_id: str, file_url: str) -> bytes:
    """SmartDocumentor's anonymization export (recorded shape) pointing at the local file."""
    doc: dict[str, Any] = orjson.loads(load("anonymization_file", "baseline"))
    doc["taskId"] = task_id
    doc["exportedFileUrl"] = file_url
    # Only the exported file is fetched, but no link in the body points anywhere else either.
    doc.pop("originalFileUrl", None)
    return orjson.dumps(doc)


def post(url: str, body: bytes, timeout: float) -> str:
    # No proxy: the request must go to 127.0.0.1 whatever the environment says.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(  # noqa: S310 (always http://127.0.0.1:...)
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with opener.open(request, timeout=timeout) as answer:
            text: str = answer.read().decode()
    except urllib.error.HTTPError as exc:
        raise BenchError(f"hookdock answered {exc.code}: {exc.read().decode()[:200]}") from None
    if "accepted as" not in text:
        raise BenchError(f"hookdock answered {text[:200]!r}")
    return text


def dead_letter_check(server: Server) -> Callable[[], None]:
    def check() -> None:
        if server.proc is not None and server.proc.poll() is not None:
            raise BenchError(f"hookdock exited with {server.proc.returncode}:\n{server.log_tail()}")
        tail = server.log_tail(200)
        for line in tail.splitlines():
            if "dead-lettered" in line:
                raise BenchError(f"hookdock dead-lettered the send: {line}")

    return check


def folder_event(exports: Path, task_id: str) -> Path | None:
    try:
        names = os.listdir(exports / task_id)
    except FileNotFoundError:
        return None
    for name in names:
        if name.endswith(".json") and not name.startswith("."):
            return exports / task_id / name
    return None


def s3_event(client: Any, task_id: str) -> str | None:
    listing = client.list_objects_v2(Bucket=BUCKET, Prefix=f"{task_id}/")
    for item in listing.get("Contents", []):
        key: str = item["Key"]
        if key.endswith(".json"):
            return key
    return None


def check_event(event: dict[str, Any], source: Source) -> str:
    files = [f for f in event.get("files", []) if f.get("role") == "exported"]
    if not files:
        return "NO FILE IN EVENT"
    info = files[0]
    if info.get("size") != source.size:
        return f"EVENT SIZE {info.get('size')}"
    if info.get("sha256") != source.sha256:
        return "EVENT SHA-256 DIFFERS"
    return "ok"


def file_gets(log: Path) -> int:
    """GETs of the big file in the file server's access log (``GET /container/... 200``)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return 0
    return sum(1 for line in text.splitlines() if line.startswith(f"GET /container/{FILE_NAME} "))


@contextmanager
def hookdock(folder: Path, config: str) -> Iterator[Server]:
    folder.mkdir(parents=True)
    config_path = folder / "hookdock.toml"
    config_path.write_text(config, encoding="utf-8")
    port = free_port()
    argv = [sys.executable, "-m", "receiver", "serve", "--config", str(config_path)]
    argv += ["--port", str(port)]
    with Server("hookdock", argv, port=port, ready_path="/readyz", log_dir=folder, cwd=folder) as s:
        yield s


def run_hookdock(
    sink: str,
    run: int,
    work: Path,
    file_url: str,
    source: Source,
    files_log: Path,
    moto: MotoServer | None,
    deadline: float,
) -> Row:
    token = secrets.token_urlsafe(24)
    folder = work / f"hookdock-{sink}-{run}"
    config = hookdock_config(sink, source.size, token, moto.url if moto else None)
    s3 = moto.boto3_client() if moto is not None else None
    with hookdock(folder, config) as server:
        assert server.proc is not None
        pid = server.proc.pid
        task_id = str(uuid.uuid4())
        body = webhook_body(task_id, file_url)
        gets_before = file_gets(files_log)
        cpu_before = cpu_seconds(pid) or 0.0
        check = dead_letter_check(server)
        found: Path | None = None
        found_key: str | None = None
        with RssSampler(pid) as sampler:
            start = time.perf_counter()
            post(f"{server.base_url}/hooks/{ROUTE}/{token}", body, timeout=30)
            if s3 is None:
                exports = folder / "exports"
                found = wait_until(
                    lambda: folder_event(exports, task_id), deadline, "the event JSON", check=check
                )
            else:
                found_key = wait_until(
                    lambda: s3_event(s3, task_id),
                    deadline,
                    "the event object",
                    interval=0.05,
                    check=check,
                )
            seconds = time.perf_counter() - start
        peak = proc_status_kib(pid, "VmHWM")
        cpu_after = cpu_seconds(pid)
        cpu = None if cpu_after is None else cpu_after - cpu_before
        if found is not None:
            event = orjson.loads(found.read_bytes())
            stored = [p for p in found.parent.iterdir() if ".exported" in p.name]
            size = stored[0].stat().st_size if stored else -1
            for path in stored:  # 1 GiB copies add up over runs
                path.unlink()
        else:
            assert s3 is not None and found_key is not None
            event = orjson.loads(s3.get_object(Bucket=BUCKET, Key=found_key)["Body"].read())
            prefix = found_key.removesuffix(".json")
            listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{task_id}/")
            keys = [
                o["Key"]
                for o in listing.get("Contents", [])
                if o["Key"].startswith(f"{prefix}.exported")
            ]
            size = -1
            for key in keys:  # one, unless something stored the file twice
                size = int(s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"])
                s3.delete_object(Bucket=BUCKET, Key=key)
        verified = check_event(event, source)
        if size != source.size:
            verified = f"STORED SIZE {size}"
        gets = file_gets(files_log) - gets_before
    return Row(sink, run, seconds, source.size, verified, peak, sampler.max_kib, cpu, gets)


# ---------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--size-mib", type=int, default=1024, help="file size (default 1024)")
    parser.add_argument("--runs", type=int, default=1, help="rounds of all rows (default 1)")
    parser.add_argument(
        "--deadline", type=float, default=900.0, help="seconds per transfer at most (default 900)"
    )
    parser.add_argument(
        "--only", choices=["curl", "folder", "s3"], action="append", help="run only these rows"
    )
    parser.add_argument(
        "--warmup", type=int, default=1, help="unmeasured curl downloads first (default 1)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    wanted = set(args.only or ["curl", "folder", "s3"])

    if not sys.platform.startswith("linux"):
        print("bench/file_transfer.py reads /proc: Linux only", file=sys.stderr)
        return 2
    if shutil.which("curl") is None:
        print("bench/file_transfer.py needs curl on PATH", file=sys.stderr)
        return 2
    # Nothing but the local moto server: no AWS config files, no instance metadata.
    os.environ.update(S3_ENV)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        os.environ.pop(name, None)

    work = work_folder("hookdock-bench-files-")
    rows: list[Row] = []
    try:
        files = work / "files"
        files.mkdir()
        (files / PROBE_NAME).write_text("ready\n")
        started = time.perf_counter()
        source = write_source(files / FILE_NAME, args.size_mib)
        print(
            f"wrote {args.size_mib} MiB in {time.perf_counter() - started:.1f} s"
            f" (sha256 {source.sha256[:16]}...)",
            flush=True,
        )
        sig = secrets.token_urlsafe(32)
        port = free_port()
        probe = make_sas_url("", PROBE_NAME, sig=sig)
        argv = [sys.executable, "-m", "tests.file_server", "--root", str(files)]
        argv += ["--port", str(port), f"--sig={sig}", "--access-log"]
        with ExitStack() as stack:
            file_server = stack.enter_context(
                Server("file-server", argv, port=port, ready_path=probe, log_dir=work)
            )
            url = make_sas_url(file_server.base_url, FILE_NAME, sig=sig, expires_in=6 * 3600)
            moto = None
            if "s3" in wanted:
                moto = stack.enter_context(moto_server(work))
                moto.boto3_client().create_bucket(Bucket=BUCKET)
            for _ in range(args.warmup):
                # The first read of a fresh 1 GiB file (and the server's first sendfile) ran
                # up to three times slower than the next; only the steady state is measured.
                run_curl(url, work / "curl.out", source, 0, time.monotonic() + args.deadline)
            for run in range(1, args.runs + 1):
                names = ("curl", "folder", "folder-nosync", "s3 bare", "s3", "s3-nocopy")
                for name in names:
                    if name.split()[0].split("-")[0] not in wanted:
                        continue
                    deadline = time.monotonic() + args.deadline
                    if name == "curl":
                        new = run_curl(url, work / "curl.out", source, run, deadline)
                    elif name == "s3 bare":
                        assert moto is not None
                        new = [run_s3_bare(moto, source, run)]
                    else:
                        new = [
                            run_hookdock(
                                name,
                                run,
                                work,
                                url,
                                source,
                                file_server.log_path,
                                moto if name.startswith("s3") else None,
                                deadline,
                            )
                        ]
                    for row in new:
                        print(
                            f"  run {run} {row.name:10} {row.seconds:7.2f} s"
                            f" {row.mb_per_s:6.0f} MB/s  peak RSS {_mib(row.peak_rss_kib)} MiB"
                            f" (sampled {_mib(row.sampled_rss_kib)})"
                            f"  {row.verified}",
                            flush=True,
                        )
                    rows += new
    except BenchError as exc:
        print(f"bench/file_transfer.py: {exc}", file=sys.stderr)
        if rows:
            print(report(rows))
        return 1
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(report(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
