"""The fetcher against a real Azure-like file server on 127.0.0.1 (tests/file_server.py)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from handlers.errors import FileUnavailable, PermanentSinkError, RetryableSinkError
from handlers.event import FileRef
from handlers.files import IncomingFile
from handlers.redact import sas_expiry
from receiver.config import FilesConfig
from receiver.fetch import Fetcher, FetchRetryable
from tests.file_server import Fault, FileServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def server() -> Iterator[FileServer]:
    with FileServer() as files:
        yield files


@pytest.fixture
async def fetcher() -> AsyncIterator[Fetcher]:
    fetcher = Fetcher("r", FilesConfig(allow_networks=("127.0.0.1/32",), read_seconds=0.5), None)
    yield fetcher
    await fetcher.aclose()


def ref(url: str) -> FileRef:
    return FileRef(role="exported", url=url, expires_at=sas_expiry(url))


class Collect:
    """A sink's deliver_file in miniature: read every chunk."""

    def __init__(self) -> None:
        self.data = b""
        self.chunks = 0

    async def __call__(self, incoming: IncomingFile) -> None:
        async for chunk in incoming:
            self.data += chunk
            self.chunks += 1


def name() -> str:
    return f"f-{os.urandom(4).hex()}.pdf"


async def test_a_file_arrives_whole_with_its_type_and_name(
    server: FileServer, fetcher: Fetcher
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 11)
    blob = name()
    server.add(
        blob,
        data,
        content_type="application/pdf",
        disposition="attachment; filename*=UTF-8''r%C3%A4kning%20%2F%20..%2Fx.pdf",
    )
    got = Collect()
    info = await fetcher.transfer(ref(server.sas_url(blob)), got)
    assert got.data == data
    assert got.chunks >= 3, "streamed in chunks, not in one piece"
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert (info.size, info.content_type) == (len(data), "application/pdf")
    assert info.filename == "x.pdf", "the header's name is sanitized to its last component"


async def test_without_a_disposition_the_name_comes_from_the_url(
    server: FileServer, fetcher: Fetcher
) -> None:
    blob = "scan 2026.pdf"
    server.add(blob, b"x")
    info = await fetcher.transfer(ref(server.sas_url(blob)), Collect())
    assert info.filename == "scan 2026.pdf"


async def test_an_expired_link_says_when_it_expired(server: FileServer, fetcher: Fetcher) -> None:
    blob = name()
    server.add(blob, b"x")
    url = server.sas_url(blob, expires_in=-600)
    with pytest.raises(FileUnavailable) as err:
        await fetcher.transfer(ref(url), Collect())
    assert err.value.code == "link_expired"
    message = str(err.value)
    assert "expired at" in message and "HTTP 403 AuthenticationFailed" in message
    assert url.split("sig=")[1] not in message


async def test_a_link_refused_before_its_expiry_says_so(
    server: FileServer, fetcher: Fetcher
) -> None:
    blob = name()
    server.add(blob, b"x")
    url = server.sas_url(blob).replace("sig=", "sig=WRONG")
    with pytest.raises(FileUnavailable, match="although it is valid until") as err:
        await fetcher.transfer(ref(url), Collect())
    assert err.value.code == "link_expired"


async def test_a_deleted_file(server: FileServer, fetcher: Fetcher) -> None:
    url = server.sas_url("never-there.pdf")
    with pytest.raises(
        FileUnavailable, match=r"deleted at the vendor \(HTTP 404 BlobNotFound"
    ) as err:
        await fetcher.transfer(ref(url), Collect())
    assert err.value.code == "file_deleted"


async def test_a_file_over_the_cap_is_refused_before_its_body_is_read(server: FileServer) -> None:
    blob = name()
    server.add(blob, b"x" * 5000)
    fetcher = Fetcher("r", FilesConfig(allow_networks=("127.0.0.1/32",), max_bytes=4096), None)
    got = Collect()
    try:
        with pytest.raises(FileUnavailable, match=r"4.9 KiB, over the route's cap of 4.0 KiB"):
            await fetcher.transfer(ref(server.sas_url(blob)), got)
    finally:
        await fetcher.aclose()
    assert got.chunks == 0


async def test_5xx_is_retryable_with_retry_after_and_the_links_expiry(
    server: FileServer, fetcher: Fetcher
) -> None:
    blob = name()
    server.add(blob, b"x")
    server.script(blob, [Fault(status=503, retry_after=7)])
    r = ref(server.sas_url(blob))
    with pytest.raises(FetchRetryable, match="HTTP 503") as err:
        await fetcher.transfer(r, Collect())
    assert err.value.retry_after == 7
    assert err.value.expires_at == r.expires_at
    assert r.expires_at is not None
    assert r.expires_at - datetime.now(UTC) < timedelta(hours=1, minutes=1)


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        (Fault(stall_after=100), "timed out"),
        (Fault(cut_after=100), "broke off"),
        (Fault(delay=1.5), "timed out"),
    ],
)
async def test_a_slow_or_cut_download_is_retryable(
    server: FileServer, fetcher: Fetcher, fault: Fault, words: str
) -> None:
    blob = name()
    server.add(blob, os.urandom(200_000))
    server.script(blob, [fault])
    with pytest.raises(FetchRetryable, match=words):
        await fetcher.transfer(ref(server.sas_url(blob)), Collect())
    server.release_stalls()


async def test_the_total_timeout_bounds_a_trickle(server: FileServer) -> None:
    blob = name()
    server.add(blob, b"x" * 100)
    server.script(blob, [Fault(delay=2.0)])
    config = FilesConfig(allow_networks=("127.0.0.1/32",), total_seconds=0.5, read_seconds=10)
    fetcher = Fetcher("r", config, None)
    try:
        with pytest.raises(FetchRetryable, match="timed out"):
            await fetcher.transfer(ref(server.sas_url(blob)), Collect())
    finally:
        await fetcher.aclose()


async def test_redirects_on_allowed_addresses_are_followed(
    server: FileServer, fetcher: Fetcher
) -> None:
    blob, moved = name(), name()
    server.add(moved, b"moved here")
    target = server.sas_url(moved)
    server.add(blob, b"old")
    server.script(blob, [Fault(redirect=target, redirect_status=307)])
    got = Collect()
    await fetcher.transfer(ref(server.sas_url(blob)), got)
    assert got.data == b"moved here"


async def test_the_downloads_own_error_wins_over_what_the_sink_made_of_it(
    server: FileServer, fetcher: Fetcher
) -> None:
    blob = name()
    server.add(blob, os.urandom(500_000))
    server.script(blob, [Fault(cut_after=1000)])

    async def wrapping_sink(incoming: IncomingFile) -> None:
        try:
            async for _ in incoming:
                pass
        except Exception as exc:
            raise PermanentSinkError("my sink: upload failed") from exc

    with pytest.raises(RetryableSinkError, match="broke off"):
        await fetcher.transfer(ref(server.sas_url(blob)), wrapping_sink)


async def test_a_sink_that_stops_reading_early_is_a_bug_reported_as_such(
    server: FileServer, fetcher: Fetcher
) -> None:
    blob = name()
    server.add(blob, os.urandom(3 * 1024 * 1024))

    async def lazy_sink(incoming: IncomingFile) -> Any:
        async for _ in incoming:
            return

    with pytest.raises(PermanentSinkError, match="before reading the exported file to its end"):
        await fetcher.transfer(ref(server.sas_url(blob)), lazy_sink)
