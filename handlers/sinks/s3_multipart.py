"""One multipart upload of a file to S3: its parts under way, their buffers, its completion or
abort, and the copy onto itself that adds what is known only once the last part is read.

**Memory.**  A part is read straight into a buffer of the upload (an ``io.BytesIO`` that owns
its bytes), which goes to botocore as the body: botocore reads its checksums from it and aiohttp
sends it, both a slice at a time, so no second copy of a part is made (``bytes`` would be
wrapped in a ``BytesIO`` that shares them, which aiohttp then copies whole to own them).  A
buffer is handed out only when fewer than ``limit`` parts are under way, and once its part is
up it is reused for a later one: an upload holds at most ``limit`` buffers, uploading or being
filled, and allocates each once, which keeps the allocator's heap from growing with holes as
parts come and go.  They are dropped when the upload ends, before the copy.

**Checksums.**  Like boto3's transfer manager, the upload declares CRC32 when botocore computes
checksums (``request_checksum_calculation``, ``when_supported`` by default), gives each part's
back at completion, and the copy makes it a CRC32 of the whole object; ``when_required`` (for
stores that refuse flexible checksums) turns all of that off.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from handlers.errors import PermanentSinkError
from handlers.files import IncomingFile, format_bytes
from handlers.redact import redact_text
from handlers.sinks.s3_errors import FAILURES, classify, http_status

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

__all__ = ["COPY_LIMIT", "MAX_PARTS", "MultipartUpload", "too_many_parts"]

log = logging.getLogger(__name__)

MAX_PARTS = 10_000
"""S3's limit on the parts of one multipart upload."""
COPY_LIMIT = 5 * 1024**3
"""The largest object CopyObject copies: beyond it the SHA-256 is not added as metadata."""


def too_many_parts(file: IncomingFile, part_size: int) -> PermanentSinkError:
    return PermanentSinkError(
        f"s3 sink: the {file.role} file is larger than {MAX_PARTS} parts of"
        f" {format_bytes(part_size)} ({format_bytes(MAX_PARTS * part_size)}), the most S3 takes"
        " in one upload; raise part_size_mb"
    )


def _part_buffer(size: int) -> io.BytesIO:
    # Sized at once: growing write by write would reallocate, and copy, as it goes.
    buffer = io.BytesIO()
    buffer.seek(size - 1)
    buffer.write(b"\0")
    buffer.seek(0)
    return buffer


class MultipartUpload:
    """One multipart upload under way: parts go up as tasks, at most ``limit`` at once."""

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        key: str,
        upload_id: str,
        *,
        limit: int,
        part_size: int,
        crc32: bool,
    ) -> None:
        self._client = client
        self._bucket = bucket
        self.key = key
        self._upload_id = upload_id
        self._limit = limit
        self._part_size = part_size
        self.checksum: dict[str, str] = {"ChecksumAlgorithm": "CRC32"} if crc32 else {}
        """What the upload's calls (and the copy after it) declare of checksums."""
        self._parts: dict[int, CompletedPartTypeDef] = {}
        self._running: set[asyncio.Task[CompletedPartTypeDef]] = set()
        self._spare: list[io.BytesIO] = []
        self._failure: BaseException | None = None
        self.finished = False
        """Completed or aborted: nothing is left to abort."""

    @classmethod
    async def start(
        cls,
        client: S3Client,
        bucket: str,
        key: str,
        *,
        content_type: str,
        metadata: dict[str, str],
        store: dict[str, str],
        limit: int,
        part_size: int,
    ) -> MultipartUpload:
        """Create the upload; ``metadata`` and ``store`` (encryption, class) are fixed here."""
        # The same setting botocore reads to add CRC32 to each part; declaring it at the start
        # is what lets S3 check the parts' checksums at completion, as boto3's uploads do.
        setting = getattr(client.meta.config, "request_checksum_calculation", None)
        crc32 = setting == "when_supported"
        extra: dict[str, str] = {"ChecksumAlgorithm": "CRC32"} if crc32 else {}
        try:
            answer = await client.create_multipart_upload(
                Bucket=bucket,
                Key=key,
                ContentType=content_type,
                Metadata=metadata,
                **store,  # type: ignore[arg-type]
                **extra,  # type: ignore[arg-type]
            )
        except FAILURES as exc:
            raise classify(exc, bucket, key) from exc
        return cls(
            client,
            bucket,
            key,
            answer["UploadId"],
            limit=limit,
            part_size=part_size,
            crc32=crc32,
        )

    def __len__(self) -> int:
        """Parts sent so far."""
        return len(self._parts) + len(self._running)

    def raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def part_buffer(self) -> io.BytesIO:
        """An empty buffer for the next part, once fewer than ``limit`` parts are under way:
        reading waits here, so the download is held back instead of piling up in memory."""
        while len(self._running) >= self._limit:
            await self._reap(asyncio.FIRST_COMPLETED)
        self.raise_failure()
        if self._spare:
            buffer = self._spare.pop()
            buffer.seek(0)
            return buffer
        return _part_buffer(self._part_size)

    def send(self, buffer: io.BytesIO) -> None:
        """Upload ``buffer``, up to its position, as the next part (the buffer is the upload's
        from now on).  A buffer comes from ``part_buffer``, so a slot is free for it."""
        buffer.truncate()  # a reused buffer holds the longer part before it beyond this one
        buffer.seek(0)
        task = asyncio.create_task(self._upload(len(self) + 1, buffer))
        self._running.add(task)
        task.add_done_callback(self._note_failure)

    async def _upload(self, number: int, buffer: io.BytesIO) -> CompletedPartTypeDef:
        try:
            answer = await self._client.upload_part(
                Bucket=self._bucket,
                Key=self.key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=buffer,
                **self.checksum,  # type: ignore[arg-type]
            )
        except FAILURES as exc:
            raise classify(exc, self._bucket, self.key) from exc
        # Only now: botocore may read the body again, to retry the part, until it answers.
        self._spare.append(buffer)
        part: CompletedPartTypeDef = {"PartNumber": number, "ETag": answer["ETag"]}
        if self.checksum and "ChecksumCRC32" in answer:
            part["ChecksumCRC32"] = answer["ChecksumCRC32"]
        return part

    def _note_failure(self, task: asyncio.Task[CompletedPartTypeDef]) -> None:
        if not task.cancelled() and self._failure is None:
            self._failure = task.exception()

    async def _reap(self, when: str) -> None:
        done, _ = await asyncio.wait(self._running, return_when=when)
        for task in done:
            self._running.discard(task)
            if not task.cancelled() and task.exception() is None:
                part = task.result()
                self._parts[part["PartNumber"]] = part
        self.raise_failure()

    async def complete(self, condition: dict[str, str]) -> str | None:
        """Complete the upload once every part is up: the object's ETag, or None when
        ``condition`` (If-None-Match) found an object there already (412)."""
        while self._running:
            await self._reap(asyncio.FIRST_EXCEPTION)
        self._spare.clear()
        parts = [self._parts[n] for n in sorted(self._parts)]
        try:
            answer = await self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=self.key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": parts},
                **condition,  # type: ignore[arg-type]
            )
        except ClientError as exc:
            if condition and http_status(exc) == 412:
                return None  # the upload stays open: the caller aborts it
            raise classify(exc, self._bucket, self.key) from exc
        except FAILURES as exc:
            raise classify(exc, self._bucket, self.key) from exc
        self.finished = True
        return answer.get("ETag", "")

    def expected_etag(self) -> str:
        """The ETag S3 gives the object these parts make: MD5 of the parts' MD5s, ``-N``."""
        digests = b"".join(
            bytes.fromhex(self._parts[n]["ETag"].strip('"')) for n in sorted(self._parts)
        )
        return f"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-{len(self._parts)}"

    async def abort(self) -> None:
        """Stop the parts under way and abort the upload; S3 then drops the parts it has."""
        self.finished = True  # one abort is enough, even if this one is cut short
        for task in self._running:
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        self._running.clear()
        self._spare.clear()
        try:
            await self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=self.key, UploadId=self._upload_id
            )
        except FAILURES as exc:
            # Its parts stay (and are billed) until a lifecycle rule removes them.
            log.warning(
                "s3 sink: could not abort the upload of s3://%s/%s (id %s): %s",
                self._bucket,
                self.key,
                self._upload_id,
                redact_text(str(exc)),
            )

    async def copy_onto_itself(
        self, content_type: str, metadata: dict[str, str], store: dict[str, str]
    ) -> None:
        """Replace the completed object's metadata with ``metadata``: a copy inside S3, no
        bytes pass through hookdock.  Objects up to ``COPY_LIMIT`` only."""
        # The copy gets a CRC32 of the whole object, which any reader can check, where the
        # upload's is a CRC32 of its parts' CRC32s.  (moto also needs it: it keeps that
        # composite value on a copy but forgets it is one, and then fails boto3's check.)
        try:
            await self._client.copy_object(
                Bucket=self._bucket,
                Key=self.key,
                CopySource={"Bucket": self._bucket, "Key": self.key},
                MetadataDirective="REPLACE",
                ContentType=content_type,
                Metadata=metadata,
                **store,  # type: ignore[arg-type]
                **self.checksum,  # type: ignore[arg-type]
            )
        except FAILURES as exc:
            raise classify(exc, self._bucket, self.key) from exc

    async def stored_without_sums(self) -> bool:
        """After a completion refused with 412 (an object is at the key already): whether that
        object lacks its sha256 metadata and is the very one these parts make, as when an
        attempt was cut off between its completion and its copy."""
        try:
            head = await self._client.head_object(Bucket=self._bucket, Key=self.key)
        except FAILURES as exc:
            raise classify(exc, self._bucket, self.key) from exc
        if "sha256" in head.get("Metadata", {}):
            return False
        if head.get("ETag", "").strip('"') != self.expected_etag():
            log.warning(
                "s3 sink: s3://%s/%s was stored before with other bytes or parts; it is kept"
                " as it is, without sha256 metadata",
                self._bucket,
                self.key,
            )
            return False
        return True
