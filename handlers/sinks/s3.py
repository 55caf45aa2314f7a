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
conditional put with all its metadata.  A larger one is a multipart upload
(``s3_multipart``): the stream is cut into parts of exactly ``part_size_mb`` (constant parts
keep the multipart ETag checkable by the usual tools), at most ``upload_concurrency`` go up at
once, and reading waits for a free slot, so a file never takes more than about
``upload_concurrency`` parts of memory, whatever its size.  Any failure (of the download, of
S3, a cancellation) aborts the upload, shielded from cancellation, so no parts are left behind
to be billed; errors of the download itself propagate as they are.  The completion is
conditional like the put.

S3 fixes an object's metadata when the upload starts, before the SHA-256 and size are known,
so with ``sha256_metadata`` (on by default) a completed upload is then copied onto itself
(server-side, no bytes pass through hookdock) with those added.  CopyObject stops at 5 GiB: a
larger file keeps the metadata it started with, and its SHA-256 is in the event JSON only.  A
retry that finds the object already completed (412) but without its SHA-256, because the copy
never happened, adds it when the object's multipart ETag shows that it holds the very bytes
just uploaded.

**Errors** (``s3_errors``): ``RetryableSinkError`` for what may pass, ``PermanentSinkError``
with what to fix for the rest.  botocore retries a few times itself (``client_attempts``)
before the host's backoff takes over.

One client per sink, made on first use on the running loop and closed by ``aclose()``.
"""

from __future__ import annotations

import asyncio
import base64
import io
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

from handlers.errors import RetryableSinkError
from handlers.event import Event
from handlers.files import FileInfo, IncomingFile, format_bytes, stored_name
from handlers.name_limits import NameLimits
from handlers.redact import SECRETS
from handlers.sinks.s3_errors import FAILURES, INSTALL_HINT, classify, http_status
from handlers.sinks.s3_multipart import COPY_LIMIT, MAX_PARTS, MultipartUpload, too_many_parts
from handlers.templates import EventTemplate, check_template

try:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import AioSession
    from botocore.exceptions import ClientError
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(f"the s3 sink needs aiobotocore ({exc}); {INSTALL_HINT}") from exc

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

__all__ = ["COPY_LIMIT", "MAX_PARTS", "S3Sink", "S3SinkConfig", "classify"]

log = logging.getLogger(__name__)

_ENV_SECRETS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")

KEY_MAX_BYTES = 960
"""Bytes an event's rendered key may take: S3's 1,024 less room for a stored file's suffix."""

DEFAULT_KEY_TEMPLATE = "{vendor}/{workspace_id}/{task_id}/{kind}-{event_id}.json"
PROBE_PREFIX = ".hookdock-probe/"
MIB = 1024 * 1024


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
    upload_concurrency: int = Field(default=2, ge=1, le=64)
    """Parts of one file uploading at once; a file holds about this many parts in memory.
    2 reads one part while another goes up, and is about as fast as more against a store
    on the same machine; over a network with latency, to AWS, 4 to 8 go faster per file, at
    one more part of memory each."""
    sha256_metadata: bool = True
    """After a multipart upload, copy the object onto itself server-side to add ``sha256``
    and ``size`` to its metadata; false leaves them in the event JSON only and saves one
    CopyObject per large file.  A file stored with one put always has them."""

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


class S3Sink:
    """Puts each event as JSON at ``key_template`` in ``bucket``."""

    config_model: ClassVar[type[BaseModel]] = S3SinkConfig

    def __init__(self, config: S3SinkConfig) -> None:
        self.config = config
        self._template = EventTemplate(config.key_template, sink="s3 sink", what="key")
        # S3 takes keys of up to 1,024 bytes; a stored file's key adds ``.<role>.<ext>``.
        self._limits = NameLimits(total_bytes=KEY_MAX_BYTES)
        self._client: S3Client | None = None
        self._stack: AsyncExitStack | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        # Aborts of multipart uploads that outlived the delivery that started them (it was
        # cancelled): aclose waits for them, so that closing the client does not cut them off.
        self._aborting: set[asyncio.Task[None]] = set()
        self._told_copy_limit = False
        # Scrubbed from every log line and error, whoever prints them (botocore at debug
        # level prints the session token): the configured keys and the environment's.
        SECRETS.add(
            *(v.get_secret_value() for v in (config.secret_access_key, config.session_token) if v),
            *(os.environ.get(name) for name in _ENV_SECRETS),
        )
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
        key = self._template.render(event)
        return self._limits.check(key, self.config.key_template, event, sink="s3 sink", what="key")

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
            if self.config.conditional_put and http_status(exc) == 412:
                return  # an object is already at this key: this event was delivered before
            raise classify(exc, self.config.bucket, key) from exc
        except FAILURES as exc:
            raise classify(exc, self.config.bucket, key) from exc

    async def deliver_file(self, event: Event, file: IncomingFile) -> None:
        bucket = self.config.bucket
        key = self.file_key_for(event, file.role, file.filename)
        part_size = self.config.part_size_mb * MIB
        if file.declared_size is not None and file.declared_size > MAX_PARTS * part_size:
            raise too_many_parts(file, part_size)
        try:
            client = await self.client()
        except FAILURES as exc:
            raise classify(exc, bucket, key) from exc
        # The first part grows with the file, so a small one takes no more than its size; once
        # the file turns out larger, the upload hands out the buffers of the parts after it.
        part = io.BytesIO()
        upload: MultipartUpload | None = None
        try:
            async for chunk in file:
                view = memoryview(chunk)
                while view:
                    if part.tell() == part_size:  # a full part with more after it: multipart
                        if upload is None:
                            upload = await MultipartUpload.start(
                                client,
                                bucket,
                                key,
                                content_type=file.content_type,
                                metadata=file_metadata(event, file),
                                store=self._store_args,
                                limit=self.config.upload_concurrency,
                                part_size=part_size,
                            )
                        elif len(upload) >= MAX_PARTS - 1:  # this one, and the last after it
                            raise too_many_parts(file, part_size)
                        upload.send(part)
                        part = await upload.part_buffer()
                    view = view[part.write(view[: part_size - part.tell()]) :]
                if upload is not None:
                    upload.raise_failure()  # stop downloading as soon as a part has failed
            info = file.info()
            meta = file_metadata(event, file, info)
            if upload is None:
                part.seek(0)
                await self._put_file(client, key, part, file.content_type, meta)
                return
            upload.send(part)
            del part  # the upload's now: not to be held through the completion and the copy
            etag = await upload.complete(self._condition)
            if etag is None:
                await self._shielded(upload.abort())  # its parts are not needed: drop them
        except BaseException:
            if upload is not None and not upload.finished:
                await self._shielded(upload.abort())
            raise
        if not self.config.sha256_metadata:
            return
        # A refused completion (412) found the file stored before, perhaps by an attempt cut
        # off before its copy: the sums are added only to an object made of these very parts.
        if etag is not None or await upload.stored_without_sums():
            await self._add_sums(upload, info.size, file.content_type, meta)

    async def _put_file(
        self, client: S3Client, key: str, body: io.BytesIO, content_type: str, meta: dict[str, str]
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
            if self.config.conditional_put and http_status(exc) == 412:
                return  # stored before: the key holds the event id and the role
            raise classify(exc, self.config.bucket, key) from exc
        except FAILURES as exc:
            raise classify(exc, self.config.bucket, key) from exc

    async def _add_sums(
        self, upload: MultipartUpload, size: int, content_type: str, meta: dict[str, str]
    ) -> None:
        """Copy the object onto itself with ``meta``, which now holds its size and SHA-256."""
        if size <= COPY_LIMIT:
            await upload.copy_onto_itself(content_type, meta, self._store_args)
        elif not self._told_copy_limit:
            self._told_copy_limit = True
            log.info(
                "s3 sink: files over %s (CopyObject's limit), such as s3://%s/%s, get no"
                " sha256 and size metadata; their SHA-256 is in the event JSON only",
                format_bytes(COPY_LIMIT),
                self.config.bucket,
                upload.key,
            )

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
            if http_status(exc) != 403:
                return [str(classify(exc, bucket))]
        except FAILURES as exc:
            return [str(classify(exc, bucket))]
        probe = f"{PROBE_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
        try:
            await client.put_object(
                Bucket=bucket,
                Key=probe,
                Body=b"",
                **self._put_args,  # type: ignore[arg-type]
            )
        except FAILURES as exc:
            return [f"{classify(exc, bucket, probe)} (a probe object written by `check`)"]
        try:
            await client.delete_object(Bucket=bucket, Key=probe)
        except FAILURES as exc:
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
