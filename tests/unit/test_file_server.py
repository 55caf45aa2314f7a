"""The Azure-Blob-like file server of tests/file_server.py, with real HTTP requests."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from multidict import CIMultiDict

from tests.file_server import Fault, FileServer, make_sas_url

REPO = Path(__file__).resolve().parents[2]
PDF = b"%PDF-1.7\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    """Case-insensitive, as HTTP header names are."""
    body: bytes
    error: Exception | None
    """What reading the body raised (a cut or a timeout), after ``body`` bytes."""
    seconds: float


async def _fetch(
    url: str,
    method: str,
    headers: Mapping[str, str],
    limits: aiohttp.ClientTimeout,
    allow_redirects: bool,
) -> Answer:
    start = time.monotonic()
    async with (
        aiohttp.ClientSession(timeout=limits, trust_env=False) as session,
        session.request(
            method, url, headers=dict(headers), allow_redirects=allow_redirects
        ) as response,
    ):
        body = bytearray()
        error: Exception | None = None
        try:
            async for chunk in response.content.iter_any():
                body += chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = exc
        return Answer(
            response.status,
            CIMultiDict(response.headers),
            bytes(body),
            error,
            time.monotonic() - start,
        )


def fetch(
    url: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    total: float = 10.0,
    sock_read: float | None = None,
    allow_redirects: bool = True,
) -> Answer:
    """One request with a fresh aiohttp session, the way a fetcher would make it."""
    timeout = aiohttp.ClientTimeout(total=total, sock_read=sock_read)
    return asyncio.run(_fetch(url, method, headers or {}, timeout, allow_redirects))


def fetch_in_thread(url: str, results: list[Answer | Exception]) -> threading.Thread:
    """``fetch(url)`` on a thread of its own; its answer or error goes into ``results``."""

    def run() -> None:
        try:
            results.append(fetch(url, total=30))
        except (aiohttp.ClientError, TimeoutError) as exc:
            results.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.fixture
def srv() -> Iterator[FileServer]:
    with FileServer() as server:
        yield server


# --------------------------------------------------------------------------- serving


@pytest.mark.parametrize("backing", ["bytes", "path"])
def test_serves_identical_bytes_with_azure_headers(
    srv: FileServer, tmp_path: Path, backing: str
) -> None:
    data: bytes | Path = PDF
    if backing == "path":
        data = tmp_path / "scan.pdf"
        data.write_bytes(PDF)
    srv.add("ws/scan 1.pdf", data, disposition='attachment; filename="scan 1.pdf"')
    url = srv.sas_url("ws/scan 1.pdf")
    assert "/container/ws/scan%201.pdf?sv=2022-11-02&se=" in url
    assert "&sr=b&sp=r&sig=" in url

    answer = fetch(url)

    assert answer.status == 200 and answer.error is None
    assert hashlib.sha256(answer.body).digest() == hashlib.sha256(PDF).digest()
    headers = answer.headers
    assert headers["Content-Type"] == "application/pdf"
    assert headers["Content-Length"] == str(len(PDF))
    assert headers["Content-Disposition"] == 'attachment; filename="scan 1.pdf"'
    assert headers["ETag"].startswith('"') and headers["Last-Modified"].endswith(" GMT")
    assert headers["x-ms-request-id"] and headers["x-ms-blob-type"] == "BlockBlob"

    head = fetch(url, method="HEAD")
    assert head.status == 200 and head.body == b""
    assert head.headers["Content-Length"] == str(len(PDF))


@pytest.mark.parametrize("backing", ["bytes", "path"])
def test_a_single_range_answers_206(srv: FileServer, tmp_path: Path, backing: str) -> None:
    data: bytes | Path = PDF
    if backing == "path":
        data = tmp_path / "scan.pdf"
        data.write_bytes(PDF)
    srv.add("scan.pdf", data)
    url = srv.sas_url("scan.pdf")

    tail = fetch(url, headers={"Range": "bytes=100-"})
    assert tail.status == 206 and tail.body == PDF[100:]
    assert tail.headers["Content-Range"] == f"bytes 100-{len(PDF) - 1}/{len(PDF)}"
    assert fetch(url, headers={"Range": "bytes=-7"}).body == PDF[-7:]
    assert fetch(url, headers={"Range": f"bytes={len(PDF)}-"}).status == 416
    assert [r.status for r in srv.requests("scan.pdf")] == [206, 206, 416]


def test_wrong_or_missing_sig_is_403_authentication_failed(srv: FileServer) -> None:
    srv.add("a.pdf", PDF)
    good = srv.sas_url("a.pdf")
    base, _, sig = good.rpartition("&sig=")
    other_expiry = srv.sas_url("a.pdf", expires_in=7200).rpartition("&sig=")[0] + f"&sig={sig}"

    for url in (f"{base}&sig=x{sig}", base, srv.blob_url("a.pdf"), other_expiry):
        answer = fetch(url)
        assert answer.status == 403, url
        assert answer.headers["x-ms-error-code"] == "AuthenticationFailed"
        assert answer.headers["Content-Type"] == "application/xml"
        assert b"<Error><Code>AuthenticationFailed</Code><Message>" in answer.body
        assert sig.encode() not in answer.body
    assert b"Signature did not match" in fetch(f"{base}&sig=x{sig}").body
    assert fetch(good).body == PDF


def test_expired_link_is_403_with_azures_expiry_detail(srv: FileServer) -> None:
    srv.add("a.pdf", PDF)
    answer = fetch(srv.sas_url("a.pdf", expires_in=-60))
    assert answer.status == 403
    text = answer.body.decode("utf-8-sig")
    assert text.startswith('<?xml version="1.0" encoding="utf-8"?><Error>')
    assert "<Code>AuthenticationFailed</Code>" in text
    assert "<AuthenticationErrorDetail>Signed expiry time [" in text
    assert "GMT] must be after signed start time [" in text


def test_unknown_blob_is_404_blob_not_found(srv: FileServer) -> None:
    answer = fetch(srv.sas_url("missing.pdf"))
    assert answer.status == 404
    assert answer.headers["x-ms-error-code"] == "BlobNotFound"
    assert b"<Code>BlobNotFound</Code>" in answer.body
    srv.add("gone.pdf", PDF)
    url = srv.sas_url("gone.pdf")
    srv.remove("gone.pdf")
    assert fetch(url).status == 404


def test_root_serves_files_under_it_and_nothing_outside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "doc.pdf").write_bytes(PDF)
    (tmp_path / "secret.txt").write_text("outside the root")
    with FileServer(root=root, sig="fixed-sig") as server:
        url = make_sas_url(server.url, "sub/doc.pdf", sig="fixed-sig")
        assert fetch(url).body == PDF
        query = url.partition("?")[2]
        # Raw, so that no client normalizes the dots away before the server sees them.
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        try:
            conn.request("GET", f"/container/sub/..%2F..%2Fsecret.txt?{query}")
            response = conn.getresponse()
            assert response.status == 404
            assert b"outside" not in response.read()
        finally:
            conn.close()


# --------------------------------------------------------------------------- faults


def test_scripted_503_with_retry_after_then_the_file(srv: FileServer) -> None:
    srv.add("a.pdf", PDF)
    srv.script("a.pdf", [Fault(status=503, retry_after=7), Fault(status=500)])
    url = srv.sas_url("a.pdf")

    busy = fetch(url)
    assert busy.status == 503 and busy.headers["Retry-After"] == "7"
    assert b"<Code>ServerBusy</Code>" in busy.body
    assert fetch(url).status == 500
    assert fetch(url).body == PDF
    assert [r.status for r in srv.requests("a.pdf")] == [503, 500, 200]


def test_delay_holds_back_the_headers(srv: FileServer) -> None:
    srv.add("a.pdf", PDF)
    srv.script("a.pdf", [Fault(delay=30.0), Fault(delay=0.3)])
    url = srv.sas_url("a.pdf")

    with pytest.raises(TimeoutError):
        fetch(url, total=0.5)
    late = fetch(url)
    assert late.body == PDF and late.seconds >= 0.3


def test_stall_trips_the_clients_idle_read_timeout(srv: FileServer) -> None:
    srv.add("a.pdf", PDF)
    srv.script("a.pdf", [Fault(stall_after=1000)])

    answer = fetch(srv.sas_url("a.pdf"), sock_read=0.3)

    assert answer.status == 200 and answer.headers["Content-Length"] == str(len(PDF))
    assert isinstance(answer.error, aiohttp.ServerTimeoutError)
    assert answer.body == PDF[:1000]


def test_released_stall_ends_the_response_short(srv: FileServer) -> None:
    srv.add("a.pdf", PDF)
    srv.script("a.pdf", [Fault(stall_after=10)])
    results: list[Answer | Exception] = []
    client = fetch_in_thread(srv.sas_url("a.pdf"), results)
    srv.wait_for(lambda: srv.requests("a.pdf"))
    srv.release_stalls()
    client.join(10)
    assert not client.is_alive()
    (answer,) = results
    assert isinstance(answer, Answer) and isinstance(answer.error, aiohttp.ClientPayloadError)
    assert answer.body == PDF[:10]


def test_cut_closes_mid_body(srv: FileServer) -> None:
    srv.add("a.pdf", PDF)
    srv.script("a.pdf", [Fault(cut_after=500)])
    url = srv.sas_url("a.pdf")

    cut = fetch(url)

    assert cut.status == 200 and cut.headers["Content-Length"] == str(len(PDF))
    assert isinstance(cut.error, aiohttp.ClientPayloadError)
    assert cut.body == PDF[:500]
    assert fetch(url).body == PDF


def test_redirect(srv: FileServer) -> None:
    srv.add("a.pdf", b"first")
    srv.add("b.pdf", b"second")
    target = srv.sas_url("b.pdf")
    srv.script("a.pdf", [Fault(redirect=target), Fault(redirect=target, redirect_status=307)])
    url = srv.sas_url("a.pdf")

    moved = fetch(url, allow_redirects=False)
    assert moved.status == 302 and moved.headers["Location"] == target
    followed = fetch(url)
    assert followed.status == 200 and followed.body == b"second"
    assert [(r.name, r.status) for r in srv.requests()] == [
        ("a.pdf", 302),
        ("a.pdf", 307),
        ("b.pdf", 200),
    ]


def test_fault_takes_one_kind() -> None:
    with pytest.raises(ValueError, match="one of"):
        Fault(status=503, cut_after=1)
    with pytest.raises(ValueError, match="error status"):
        Fault(status=302)


# --------------------------------------------------------------------------- records, stop


def test_requests_are_recorded_without_showing_the_sig(srv: FileServer) -> None:
    srv.add("a.pdf", PDF)
    url = srv.sas_url("a.pdf", sig="s3cret-sig-value")
    before = time.monotonic()
    fetch(url, headers={"X-Probe": "1"})
    fetch(srv.sas_url("b.pdf"))

    (record,) = srv.requests("a.pdf")
    assert record.method == "GET" and record.path == "/container/a.pdf"
    assert record.query["sig"] == "s3cret-sig-value" and record.query["sp"] == "r"
    assert record.headers["x-probe"] == "1"
    assert before <= record.received_at <= time.monotonic()
    assert record.status == 200 and record.fault is None
    assert "s3cret" not in repr(record)
    assert [r.status for r in srv.requests()] == [200, 404]


def test_close_ends_stalled_and_kept_alive_connections_and_joins() -> None:
    server = FileServer()
    server.start()
    name = f"file-server-{server.port}"
    server.add("a.pdf", PDF)
    server.script("a.pdf", [Fault(stall_after=10), Fault(delay=60.0)])
    url = server.sas_url("a.pdf")
    idle = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    results: list[Answer | Exception] = []
    clients: list[threading.Thread] = []
    try:
        clients = [fetch_in_thread(url, results) for _ in range(2)]
        server.wait_for(lambda: len(server.requests("a.pdf")) == 2)
        idle.request("GET", url.removeprefix(server.url))
        assert idle.getresponse().read() == PDF  # served; the connection stays open

        start = time.monotonic()
        server.close()
        assert time.monotonic() - start < 5.0
        assert name not in {t.name for t in threading.enumerate()}
        for client in clients:
            client.join(10)
        # The stalled response ends short; the delayed one ends before its headers.
        stalled = [r for r in results if isinstance(r, Answer)]
        assert len(stalled) == 1 and isinstance(stalled[0].error, aiohttp.ClientPayloadError)
        (delayed,) = [r for r in results if not isinstance(r, Answer)]
        assert isinstance(delayed, aiohttp.ClientConnectionError)

        def reuse() -> None:
            idle.request("GET", url.removeprefix(server.url))
            idle.getresponse()

        with pytest.raises((ConnectionError, http.client.HTTPException)):
            reuse()
    finally:
        server.close()
        idle.close()
        for client in clients:
            client.join(10)


# --------------------------------------------------------------------------- command line


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            break
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            byte = os.read(proc.stdout.fileno(), 1)
            if not byte:
                break
            line += byte
    return line


def test_command_line_serves_a_folder_and_stops_on_sigterm(tmp_path: Path) -> None:
    (tmp_path / "doc.pdf").write_bytes(PDF)
    argv = [sys.executable, "-m", "tests.file_server", "--root", str(tmp_path), "--access-log"]
    proc = subprocess.Popen(
        argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        line = _read_line(proc, 20.0).decode()
        assert line.startswith("ready http://127.0.0.1:"), line
        base = line.split()[1]
        sig = "any-Sig-at-all"
        assert fetch(make_sas_url(base, "doc.pdf", sig=sig)).body == PDF
        assert fetch(make_sas_url(base, "doc.pdf", sig=sig, expires_in=-5)).status == 403
        assert fetch(make_sas_url(base, "nope.pdf", sig=sig)).status == 404

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert proc.stderr is not None
        log = proc.stderr.read().decode()
        assert "GET /container/doc.pdf 200" in log
        assert sig not in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
