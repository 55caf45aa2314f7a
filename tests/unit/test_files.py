"""The files kit: names, the counted and capped stream, spooling, and events that record files."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from handlers.errors import FileUnavailable, HandlerError, RetryableSinkError
from handlers.event import FileRef
from handlers.files import (
    FileInfo,
    IncomingFile,
    filename_from_url,
    format_bytes,
    sanitize_filename,
    stored_name,
)
from handlers.testing import make_event

pytestmark = pytest.mark.anyio

SAS = "https://acct.blob.core.windows.net/c/Scan%201.pdf?sv=2022-11-02&se=2030-01-01T00:00:00Z&sr=b&sp=r&sig=S3CRETsig%2Bx"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("invoice.pdf", "invoice.pdf"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\x\\report.docx", "report.docx"),
        (".bashrc", "bashrc"),
        ("a\x00b\x1fc.pdf", "a_b_c.pdf"),
        ('we<i>rd:na*me?.pdf"', "we_i_rd_na_me_.pdf_"),
        ("trailing. ", "trailing"),
        ("", "file"),
        ("..", "file"),
        ("Cafe\u0301.pdf", "Caf\u00e9.pdf"),
        ("Fa\u0308ktura \u00e5r 2026.pdf", "F\u00e4ktura \u00e5r 2026.pdf"),
    ],
)
def test_sanitize_filename(given: str, expected: str) -> None:
    assert sanitize_filename(given) == expected


def test_a_long_name_is_cut_to_200_bytes_keeping_its_extension() -> None:
    name = sanitize_filename("\u00e9" * 300 + ".pdf")
    assert name.endswith(".pdf")
    assert len(name.encode()) <= 200


def test_filename_from_url_decodes_and_never_keeps_the_query() -> None:
    assert filename_from_url(SAS) == "Scan 1.pdf"
    assert filename_from_url("https://h/") == "file"
    assert filename_from_url("https://h/a/%2e%2e%2fsecret") == "secret"


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("Scan 1.pdf", "evt.exported.pdf"),
        ("archive.TAR", "evt.exported.tar"),
        ("no-extension", "evt.exported"),
        ("x.p df", "evt.exported"),
        ("x.waytoolongextension", "evt.exported"),
    ],
)
def test_stored_name_keeps_only_a_plain_extension(filename: str, expected: str) -> None:
    assert stored_name("evt", "exported", filename) == expected


def test_format_bytes() -> None:
    assert format_bytes(512) == "512 bytes"
    assert format_bytes(2 * 1024**3) == "2.0 GiB"
    assert format_bytes(1536 * 1024) == "1.5 MiB"


async def _read(incoming: IncomingFile) -> bytes:
    return b"".join([chunk async for chunk in incoming])


async def test_the_stream_counts_and_hashes_what_passes() -> None:
    data = os.urandom(200_001)
    incoming = IncomingFile.from_bytes("exported", data, filename="a.pdf", content_type="x/y")
    assert await _read(incoming) == data
    assert incoming.done
    assert incoming.info() == FileInfo(
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        content_type="x/y",
        filename="a.pdf",
    )


async def test_info_before_the_end_is_an_error() -> None:
    incoming = IncomingFile.from_bytes("exported", b"abc")
    with pytest.raises(RuntimeError, match="not read to the end"):
        incoming.info()


async def test_the_stream_is_one_shot() -> None:
    incoming = IncomingFile.from_bytes("exported", b"abc")
    await _read(incoming)
    with pytest.raises(RuntimeError, match="one-shot"):
        await _read(incoming)


async def _pieces(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def test_the_cap_stops_the_stream_with_a_reason() -> None:
    incoming = IncomingFile(
        "exported", _pieces(b"x" * 600, b"x" * 600), filename="big.pdf", max_bytes=1000
    )
    with pytest.raises(FileUnavailable, match=r"larger than the route's cap of 1000 bytes") as err:
        await _read(incoming)
    assert err.value.code == "file_too_large"
    assert incoming.failure is err.value
    assert not incoming.done


async def test_a_body_shorter_than_announced_is_an_error() -> None:
    incoming = IncomingFile("exported", _pieces(b"x" * 10), filename="a", declared_size=20)
    with pytest.raises(HandlerError, match="ended after 10 of 20 bytes"):
        await _read(incoming)
    assert not incoming.done


async def test_a_download_error_is_kept_as_the_failure() -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"x"
        raise RetryableSinkError("cut")

    incoming = IncomingFile("exported", broken(), filename="a")
    with pytest.raises(RetryableSinkError):
        await _read(incoming)
    assert isinstance(incoming.failure, RetryableSinkError)


async def test_spooled_gives_the_whole_file_from_an_anonymous_file(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 5)
    incoming = IncomingFile.from_bytes("exported", data, chunk_size=1 << 20)
    incoming.spool_dir = tmp_path
    async with incoming.spooled() as spool:
        assert os.listdir(tmp_path) == [], "a spool has no name on disk"
        assert spool.read() == data
    assert incoming.info().sha256 == hashlib.sha256(data).hexdigest()


def test_with_files_records_each_stored_file_and_redacts_its_link() -> None:
    other = "https://acct.blob.core.windows.net/c/orig.pdf?se=2030-01-01T00:00:00Z&sig=OTHERsig"
    event = make_event(
        files=(FileRef(role="exported", url=SAS), FileRef(role="original", url=other)),
        payload={"exportedFileUrl": SAS, "originalFileUrl": other, "nested": [{"u": SAS}]},
    )
    info = FileInfo(size=3, sha256="a" * 64, content_type="application/pdf", filename="Scan 1.pdf")
    recorded = event.with_files({"exported": info})
    exported, original = recorded.files
    assert (exported.size, exported.sha256, exported.filename) == (3, "a" * 64, "Scan 1.pdf")
    assert "S3CRETsig" not in recorded.to_json().decode()
    assert "sig=REDACTED" in exported.url
    assert recorded.payload["nested"][0]["u"] == exported.url
    # A file not stored keeps its link: whoever reads the event may still fetch it.
    assert original.url == other
    assert recorded.payload["originalFileUrl"] == other
    assert original.size is None
    assert event.with_files({}) is event


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "refused http://h/x?se=1&sig=S3cr%2Bt: it is",
            "refused http://h/x?se=1&sig=REDACTED: it is",
        ),
        ("x sig=ab%2Bc/d==&sp=r", "x sig=REDACTED&sp=r"),
        ("(see sig=abc), then", "(see sig=REDACTED), then"),
        ("sig=abc:def more", "sig=REDACTED more"),
        ("end sig=abc", "end sig=REDACTED"),
    ],
)
def test_redact_text_hides_the_signature_and_keeps_the_sentence(text: str, expected: str) -> None:
    from handlers.redact import redact_text

    assert redact_text(text) == expected
