"""The S3 sink: one JSON object per event in a bucket, and the event's files beside it.

**Idempotent by key and by condition.**  The key comes from ``key_template`` and always holds
the event id, so a redelivery writes the same key.  The put carries ``If-None-Match: *``
(``conditional_put``, on by default): S3 then refuses to replace an existing object with 412
PreconditionFailed, which counts as delivered.  That keeps the first copy untouched even if
the event's JSON changed in between, and it makes botocore's own retry of a put whose answer
was lost harmless.  Stores that do not know the header either ignore it (a redelivery then
overwrites the object with the same bytes) or answer 501; set ``conditional_put = false``
for those.

**Files** (``deliver_file``) go next to the event: ``<event key without .json>.<role><.ext>``
(``handlers.files.stored_name``).  A file that ends within one part (``part_size_mb``) is one
conditional put with all its metadata.  A larger one is a multipart upload: the stream is cut
into parts of exactly ``part_size_mb`` (constant parts keep the multipart ETag checkable by
the usual tools), at most ``upload_concurrency`` go up at once, and reading waits for a free
slot, so a file never takes more than about (``upload_concurrency`` + 1) parts of memory,
whatever its size.  Any failure (of the download, of S3, a cancellation) aborts the upload,
shielded from cancellation, so no parts are left behind to be billed; errors of the download
itself propagate as they are.  The completion is conditional like the put.  S3 fixes an
object's metadata when the upload starts, before the SHA-256 and size are known, so a
completed upload is then copied onto itself (server-side, no bytes pass through hookdock)
with those added.  CopyObject stops at 5 GiB: a larger file keeps the metadata it started
with, and its SHA-256 is in the event JSON only.  A retry that finds the object already
completed (412) but without its SHA-256, because the copy never happened, adds it when the
object's multipart ETag shows that it holds the very bytes just uploaded.

Parts go to botocore as ``bytes``, joined once from the downloaded chunks, and the sink keeps
no reference to them: botocore wraps them in a ``BytesIO`` that shares them (a ``bytearray``
would be copied whole there) and takes its checksums in place; over HTTPS it streams them
aws-chunked, 1 MiB at a time, and over plain HTTP aiohttp copies the ``BytesIO`` once, after
which the original can go.  Like boto3's transfer manager, the upload declares CRC32 when
botocore computes checksums (``request_checksum_calculation``, ``when_supported`` by default),
gives each part's back at completion, and the copy makes it a CRC32 of the whole object;
``when_required`` (for stores that refuse flexible checksums) turns all of that off.

**Errors.**  What may pass is ``RetryableSinkError``: no connection, timeouts, throttling
(SlowDown, Throttling, RequestTimeout, 429), 5xx, and 409 ConditionalRequestConflict (two
conditional puts of one key racing).  What needs a person is ``PermanentSinkError``: a missing
bucket, refused or unknown credentials, any other 4xx, with a message that says what to fix.
botocore retries a few times itself (``client_attempts``) before the host's backoff takes over.
Messages name the bucket and key, never a credential.

One client per sink, made on first use on the running loop and closed by ``aclose()``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import secrets
from collections.abc import Coroutine
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from handlers.errors import PermanentSinkError, RetryableSinkError, SinkError
from handlers.event import Event
from handlers.files import FileInfo, IncomingFile, format_bytes, stored_name
from handlers.redact import redact_text
from handlers.templates import EventTemplate, check_template

try:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import AioSession
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionError,
        CredentialRetrievalError,
        HTTPClientError,
    )
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        f"the s3 sink needs aiobotocore ({exc}); install it with: pip install 'hookdock[s3]'"
    ) from exc

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

__all__ = ["S3Sink", "S3SinkConfig"]

log = logging.getLogger(__name__)

DEFAULT_KEY_TEMPLATE = "{vendor}/{workspace_id}/{task_id}/{kind}-{event_id}.json"
PROBE_PREFIX = ".hookdock-probe/"
MIB = 1024 * 1024
MAX_PARTS = 10_000
"""S3's limit on the parts of one multipart upload."""
COPY_LIMIT = 5 * 1024**3
"""The largest object CopyObject copies: beyond it the SHA-256 is not added as metadata."""

# What an S3 call can raise besides our own errors (TimeoutError is an OSError).
_FAILURES = (ClientError, BotoCoreError, OSError)
_THROTTLED = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout"}
_RETRYABLE_409 = {"ConditionalRequestConflict", "OperationAborted"}
_HINTS = {
    "NoSuchBucket": "bucket {bucket} does not exist (check bucket, region and endpoint_url)",
    "AccessDenied": "access denied writing {where} (the credentials need s3:PutObject there)",
    "InvalidAccessKeyId": "the store does not know the access key id used for {where}",
    "SignatureDoesNotMatch": "the secret access key does not match its key id, for {where}",
    "ExpiredToken": "the session token has expired, writing {where}",
    "InvalidToken": "the session token is not valid, writing {where}",
    "PermanentRedirect": "bucket {bucket} is in another region: set region to the bucket's",
    "AuthorizationHeaderMalformed": "bucket {bucket} is in another region: set region",
    "NotImplemented": "the store cannot do this request for {where} (if it is the conditional"
    " put, set conditional_put = false)",
}


class S3SinkConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    bucket: str = Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.\-_]*[a-z0-9]$")
    key_template: str = DEFAULT_KEY_TEMPLATE
    """Object key with ``{field}`` placeholders, the same fields and rules as the local sink."""
    content_type: str = "application/json"
    conditional_put: bool = True
    sse: Literal["AES256", "aws:kms"] | None = None
    sse_kms_key_id: str | None = None
    storage_class: str | None = Field(default=None, pattern=r"^[A-Z_]+$")
    endpoint_url: str | None = Field(default=None, pattern=r"^https?://")
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    region: str | None = None
    profile: str | None = None
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    max_connections: int = Field(default=32, ge=1, le=1024)
    client_attempts: int = Field(default=3, ge=1, le=10)
    """Tries per delivery inside botocore, before the host's own backoff and retry."""
    connect_timeout_seconds: float = Field(default=10.0, gt=0)
    read_timeout_seconds: float = Field(default=30.0, gt=0)
    part_size_mb: int = Field(default=8, ge=5, le=512)
    """Files up to this size (MiB) are one put; larger ones go up in parts of this size.
    5 is S3's smallest part; a file can have at most 10,000 parts."""
    upload_concurrency: int = Field(default=4, ge=1, le=64)
    """Parts of one file uploading at once: a file holds about this many parts plus one in
    memory."""

    @field_validator("key_template")
    @classmethod
    def _check_template(cls, template: str) -> str:
        return check_template(template)

    @field_validator("sse_kms_key_id")
    @classmethod
    def _key_needs_kms(cls, key_id: str | None, info: ValidationInfo) -> str | None:
        if key_id is not None and info.data.get("sse") != "aws:kms":
            raise ValueError('a KMS key id needs sse = "aws:kms"')
        return key_id

    @model_validator(mode="after")
    def _credentials_are_whole(self) -> S3SinkConfig:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key must be given together")
        if self.session_token is not None and self.access_key_id is None:
            raise ValueError("session_token needs access_key_id and secret_access_key")
        if self.profile is not None and self.access_key_id is not None:
            raise ValueError("give either profile or access_key_id/secret_access_key, not both")
        return self


def _ascii(value: str) -> str:
    """S3 metadata travels in HTTP headers: ASCII only, so anything else goes as RFC 2047
    (``=?UTF-8?B?...?=``), the form S3 itself uses when it returns such metadata."""
    if value.isascii() and value.isprintable() and value == value.strip():
        return value
    return f"=?UTF-8?B?{base64.b64encode(value.encode()).decode()}?="


def metadata(event: Event) -> dict[str, str]:
    """The user metadata stored with each object (``x-amz-meta-*``)."""
    meta = {"event-id": event.event_id, "vendor": event.vendor, "kind": event.kind}
    if event.task_id is not None:
        meta["task-id"] = event.task_id
    return {k: _ascii(v) for k, v in meta.items()}


def file_metadata(event: Event, file: IncomingFile, info: FileInfo | None = None) -> dict[str, str]:
    """The event's metadata, plus the file's role and name, and its size and SHA-256 once known."""
    meta = metadata(event)
    meta["file-role"] = _ascii(file.role)
    meta["filename"] = _ascii(file.filename)
    if info is not None:
        meta["size"] = str(info.size)
        meta["sha256"] = info.sha256
    return meta


def classify(exc: BaseException, bucket: str, key: str | None = None) -> SinkError:
    """The sink error for a failed S3 call: retryable if it may pass, else what to fix."""
    where = f"s3://{bucket}/{key}" if key else f"bucket {bucket}"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        meta = exc.response.get("ResponseMetadata", {})
        code, status = str(error.get("Code", "")), int(meta.get("HTTPStatusCode", 0))
        if status == 404 and code in ("", "404", "NotFound") and key is None:
            code = "NoSuchBucket"  # HEAD answers have no body, so no code
        hint = _HINTS.get(code)
        if code in _THROTTLED or status in (408, 429) or (status == 409 and code in _RETRYABLE_409):
            after = meta.get("HTTPHeaders", {}).get("retry-after")
            wait = float(after) if after and after.isdigit() else None
            return RetryableSinkError(
                f"s3 sink: {code or status} writing {where}", retry_after=wait
            )
        if status >= 500 and code != "NotImplemented":
            return RetryableSinkError(f"s3 sink: the store answered {status} {code} for {where}")
        if hint is not None:
            return PermanentSinkError(
                f"s3 sink: {hint.format(bucket=bucket, where=where)} [{code}]"
            )
        # Other codes keep the store's own message: it says what is wrong with the request.
        message = redact_text(str(error.get("Message", "")))[:200]
        return PermanentSinkError(f"s3 sink: {code or status} for {where}: {message}")
    if isinstance(exc, HTTPClientError | ConnectionError | CredentialRetrievalError):
        return RetryableSinkError(
            f"s3 sink: cannot reach the store for {where}: {redact_text(str(exc))}"
        )
    if isinstance(exc, OSError):  # timeouts included
        return RetryableSinkError(f"s3 sink: network error for {where}: {type(exc).__name__}")
    if isinstance(exc, BotoCoreError):
        # No credentials anywhere in the chain, an unknown profile, a bad parameter: config.
        return PermanentSinkError(f"s3 sink: cannot write {where}: {redact_text(str(exc))}")
    return RetryableSinkError(f"s3 sink: {type(exc).__name__} writing {where}")


class S3Sink:
    """Puts each event as JSON at ``key_template`` in ``bucket``."""

    config_model: ClassVar[type[BaseModel]] = S3SinkConfig

    def __init__(self, config: S3SinkConfig) -> None:
        self.config = config
        self._template = EventTemplate(config.key_template, sink="s3 sink", what="key")
        self._client: S3Client | None = None
        self._stack: AsyncExitStack | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        # Aborts of multipart uploads that outlived the delivery that started them (it was
        # cancelled): aclose waits for them, so that closing the client does not cut them off.
        self._aborting: set[asyncio.Task[None]] = set()
        self._told_copy_limit = False
        store: dict[str, str] = {}
        if config.sse is not None:
            store["ServerSideEncryption"] = config.sse
        if config.sse_kms_key_id is not None:
            store["SSEKMSKeyId"] = config.sse_kms_key_id
        if config.storage_class is not None:
            store["StorageClass"] = config.storage_class
        self._store_args = store
        """What every object gets, events and files, and their copies: encryption and class."""
        self._condition = {"IfNoneMatch": "*"} if config.conditional_put else {}
        self._put_args = {"ContentType": config.content_type, **store, **self._condition}

    def __repr__(self) -> str:
        return f"S3Sink(bucket={self.config.bucket!r}, endpoint_url={self.config.endpoint_url!r})"

    def key_for(self, event: Event) -> str:
        return self._template.render(event)

    def file_key_for(self, event: Event, role: str, filename: str) -> str:
        """Beside the event's object: its key without ``.json``, then ``.<role><.ext>``."""
        return stored_name(self.key_for(event).removesuffix(".json"), role, filename)

    async def client(self) -> S3Client:
        """The sink's one client, made on first use (on the running loop) and then reused."""
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._closed:
                raise RetryableSinkError("s3 sink: closed (hookdock is shutting down)")
            if self._client is None:
                stack = AsyncExitStack()
                try:
                    self._client = await stack.enter_async_context(self._open_client())
                except BaseException:
                    await stack.aclose()
                    raise
                self._stack = stack
        return self._client

    def _open_client(self) -> AbstractAsyncContextManager[S3Client]:
        c = self.config
        session = AioSession(profile=c.profile)
        config = AioConfig(
            s3={"addressing_style": c.addressing_style},
            retries={"max_attempts": c.client_attempts, "mode": "standard"},
            connect_timeout=c.connect_timeout_seconds,
            read_timeout=c.read_timeout_seconds,
            max_pool_connections=c.max_connections,
        )
        secret = c.secret_access_key
        return session.create_client(
            "s3",
            region_name=c.region,
            endpoint_url=c.endpoint_url,
            aws_access_key_id=c.access_key_id.get_secret_value() if c.access_key_id else None,
            aws_secret_access_key=secret.get_secret_value() if secret else None,
            aws_session_token=c.session_token.get_secret_value() if c.session_token else None,
            config=config,
        )

    async def deliver(self, event: Event) -> None:
        key = self.key_for(event)
        body = event.to_json(indent=True)
        try:
            client = await self.client()
            await client.put_object(
                Bucket=self.config.bucket,
                Key=key,
                Body=body,
                Metadata=metadata(event),
                **self._put_args,  # type: ignore[arg-type]
            )
        except ClientError as exc:
            if self.config.conditional_put and _status(exc) == 412:
                return  # an object is already at this key: this event was delivered before
            raise classify(exc, self.config.bucket, key) from exc
        except _FAILURES as exc:
            raise classify(exc, self.config.bucket, key) from exc

    async def deliver_file(self, event: Event, file: IncomingFile) -> None:
        bucket = self.config.bucket
        key = self.file_key_for(event, file.role, file.filename)
        part_size = self.config.part_size_mb * MIB
        if file.declared_size is not None and file.declared_size > MAX_PARTS * part_size:
            raise _too_many_parts(file, part_size)
        try:
            client = await self.client()
        except _FAILURES as exc:
            raise classify(exc, bucket, key) from exc
        # Views into the downloaded chunks, joined only when the part goes up: one copy each.
        pieces: list[memoryview] = []
        filled = 0
        upload: _Multipart | None = None
        try:
            async for chunk in file:
                view = memoryview(chunk)
                while view:
                    if filled == part_size:  # a full part with more after it: multipart
                        if upload is None:
                            upload = await self._start_multipart(client, key, event, file)
                        elif len(upload) >= MAX_PARTS - 1:  # this one, and the last after it
                            raise _too_many_parts(file, part_size)
                        await upload.send(pieces)
                        filled = 0
                    take = min(len(view), part_size - filled)
                    pieces.append(view[:take])
                    filled += take
                    view = view[take:]
                if upload is not None:
                    upload.raise_failure()  # stop downloading as soon as a part has failed
            info = file.info()
            meta = file_metadata(event, file, info)
            if upload is None:
                await self._put_file(client, key, b"".join(pieces), file.content_type, meta)
                return
            await upload.send(pieces)
            etag = await upload.complete(self._condition)
            if etag is None:
                await self._shielded(upload.abort())  # its parts are not needed: drop them
        except BaseException:
            if upload is not None and not upload.finished:
                await self._shielded(upload.abort())
            raise
        if etag is not None:
            await self._add_sums(client, upload, info.size, file.content_type, meta)
        else:
            await self._add_missing_sums(client, upload, info, file.content_type, meta)

    async def _put_file(
        self, client: S3Client, key: str, body: bytes, content_type: str, meta: dict[str, str]
    ) -> None:
        try:
            await client.put_object(
                Bucket=self.config.bucket,
                Key=key,
                Body=body,
                ContentType=content_type,
                Metadata=meta,
                **self._store_args,  # type: ignore[arg-type]
                **self._condition,  # type: ignore[arg-type]
            )
        except ClientError as exc:
            if self.config.conditional_put and _status(exc) == 412:
                return  # stored before: the key holds the event id and the role
            raise classify(exc, self.config.bucket, key) from exc
        except _FAILURES as exc:
            raise classify(exc, self.config.bucket, key) from exc

    async def _start_multipart(
        self, client: S3Client, key: str, event: Event, file: IncomingFile
    ) -> _Multipart:
        # The same setting botocore reads to add CRC32 to each part; declaring it at the start
        # is what lets S3 check the parts' checksums at completion, as boto3's uploads do.
        setting = getattr(client.meta.config, "request_checksum_calculation", None)
        crc32 = setting == "when_supported"
        extra: dict[str, str] = {"ChecksumAlgorithm": "CRC32"} if crc32 else {}
        try:
            answer = await client.create_multipart_upload(
                Bucket=self.config.bucket,
                Key=key,
                ContentType=file.content_type,
                Metadata=file_metadata(event, file),
                **self._store_args,  # type: ignore[arg-type]
                **extra,  # type: ignore[arg-type]
            )
        except _FAILURES as exc:
            raise classify(exc, self.config.bucket, key) from exc
        return _Multipart(
            client,
            self.config.bucket,
            key,
            answer["UploadId"],
            limit=self.config.upload_concurrency,
            crc32=crc32,
        )

    async def _add_sums(
        self,
        client: S3Client,
        upload: _Multipart,
        size: int,
        content_type: str,
        meta: dict[str, str],
    ) -> None:
        """Copy the object onto itself with ``meta``, which now holds its size and SHA-256."""
        key = upload.key
        if size > COPY_LIMIT:
            if not self._told_copy_limit:
                self._told_copy_limit = True
                log.info(
                    "s3 sink: files over %s (CopyObject's limit), such as s3://%s/%s, get no"
                    " sha256 and size metadata; their SHA-256 is in the event JSON only",
                    format_bytes(COPY_LIMIT),
                    self.config.bucket,
                    key,
                )
            return
        # The copy gets a CRC32 of the whole object, which any reader can check, where the
        # upload's is a CRC32 of its parts' CRC32s.  (moto also needs it: it keeps that
        # composite value on a copy but forgets it is one, and then fails boto3's check.)
        try:
            await client.copy_object(
                Bucket=self.config.bucket,
                Key=key,
                CopySource={"Bucket": self.config.bucket, "Key": key},
                MetadataDirective="REPLACE",
                ContentType=content_type,
                Metadata=meta,
                **self._store_args,  # type: ignore[arg-type]
                **upload.checksum,  # type: ignore[arg-type]
            )
        except _FAILURES as exc:
            raise classify(exc, self.config.bucket, key) from exc

    async def _add_missing_sums(
        self,
        client: S3Client,
        upload: _Multipart,
        info: FileInfo,
        content_type: str,
        meta: dict[str, str],
    ) -> None:
        """The completion found an object at ``key`` (412): stored before.  An attempt cut off
        between its completion and its copy left it without its SHA-256; add it, but only when
        the object's ETag shows that it holds the very parts this attempt uploaded."""
        key = upload.key
        try:
            head = await client.head_object(Bucket=self.config.bucket, Key=key)
        except _FAILURES as exc:
            raise classify(exc, self.config.bucket, key) from exc
        if "sha256" in head.get("Metadata", {}):
            return
        if head.get("ETag", "").strip('"') != upload.expected_etag():
            log.warning(
                "s3 sink: s3://%s/%s was stored before with other bytes or parts; it is kept"
                " as it is, without sha256 metadata",
                self.config.bucket,
                key,
            )
            return
        await self._add_sums(client, upload, info.size, content_type, meta)

    async def _shielded(self, cleanup: Coroutine[Any, Any, None]) -> None:
        """Run ``cleanup`` to its end even if the caller is cancelled while it waits."""
        task = asyncio.ensure_future(cleanup)
        self._aborting.add(task)
        task.add_done_callback(self._aborting.discard)
        await asyncio.shield(task)

    async def check(self) -> list[str]:
        bucket = self.config.bucket
        try:
            client = await self.client()
            await client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            # 403 on HEAD can mean only s3:ListBucket is missing; the probe put below decides.
            if _status(exc) != 403:
                return [str(classify(exc, bucket))]
        except _FAILURES as exc:
            return [str(classify(exc, bucket))]
        probe = f"{PROBE_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
        try:
            await client.put_object(
                Bucket=bucket,
                Key=probe,
                Body=b"",
                **self._put_args,  # type: ignore[arg-type]
            )
        except _FAILURES as exc:
            return [f"{classify(exc, bucket, probe)} (a probe object written by `check`)"]
        try:
            await client.delete_object(Bucket=bucket, Key=probe)
        except _FAILURES as exc:
            # The sink never deletes, so a missing s3:DeleteObject is no problem for it.
            log.warning("s3 sink: could not delete the probe s3://%s/%s: %s", bucket, probe, exc)
        return []

    async def aclose(self) -> None:
        if self._aborting:
            await asyncio.gather(*self._aborting, return_exceptions=True)
        async with self._lock:
            self._closed = True
            stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _too_many_parts(file: IncomingFile, part_size: int) -> PermanentSinkError:
    return PermanentSinkError(
        f"s3 sink: the {file.role} file is larger than {MAX_PARTS} parts of"
        f" {format_bytes(part_size)} ({format_bytes(MAX_PARTS * part_size)}), the most S3 takes"
        " in one upload; raise part_size_mb"
    )


class _Multipart:
    """One multipart upload under way: parts go up as tasks, at most ``limit`` at once."""

    def __init__(
        self, client: S3Client, bucket: str, key: str, upload_id: str, *, limit: int, crc32: bool
    ) -> None:
        self._client = client
        self._bucket = bucket
        self.key = key
        self._upload_id = upload_id
        self._limit = limit
        self.checksum: dict[str, str] = {"ChecksumAlgorithm": "CRC32"} if crc32 else {}
        """What the upload's calls (and the copy after it) declare of checksums."""
        self._parts: dict[int, CompletedPartTypeDef] = {}
        self._running: set[asyncio.Task[CompletedPartTypeDef]] = set()
        self._failure: BaseException | None = None
        self.finished = False
        """Completed or aborted: nothing is left to abort."""

    def __len__(self) -> int:
        """Parts sent so far."""
        return len(self._parts) + len(self._running)

    def raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def send(self, pieces: list[memoryview]) -> None:
        """Upload ``pieces`` (emptied) as the next part once a slot is free."""
        while len(self._running) >= self._limit:
            await self._reap(asyncio.FIRST_COMPLETED)
        self.raise_failure()
        number = len(self) + 1
        # Joined only now that a slot is free, so that at most ``limit`` parts and the one
        # being read are in memory; clearing drops the views, and with them the chunks.
        body = [b"".join(pieces)]
        pieces.clear()
        task = asyncio.create_task(self._upload(number, body))
        self._running.add(task)
        task.add_done_callback(self._note_failure)

    async def _upload(self, number: int, body: list[bytes]) -> CompletedPartTypeDef:
        try:
            answer = await self._client.upload_part(
                Bucket=self._bucket,
                Key=self.key,
                UploadId=self._upload_id,
                PartNumber=number,
                # Handed over, not kept: botocore wraps the bytes in a BytesIO that shares
                # them, and when aiohttp (BytesIOPayload) makes that BytesIO copy them, the
                # original can go, instead of staying as a second copy until the answer.
                Body=body.pop(),
                **self.checksum,  # type: ignore[arg-type]
            )
        except _FAILURES as exc:
            raise classify(exc, self._bucket, self.key) from exc
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
            if condition and _status(exc) == 412:
                return None  # the upload stays open: the caller aborts it
            raise classify(exc, self._bucket, self.key) from exc
        except _FAILURES as exc:
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
        try:
            await self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=self.key, UploadId=self._upload_id
            )
        except _FAILURES as exc:
            # Its parts stay (and are billed) until a lifecycle rule removes them.
            log.warning(
                "s3 sink: could not abort the upload of s3://%s/%s (id %s): %s",
                self._bucket,
                self.key,
                self._upload_id,
                redact_text(str(exc)),
            )
