"""The S3 sink: one JSON object per event in a bucket, on aiobotocore.

**Idempotent by key and by condition.**  The key comes from ``key_template`` and always holds
the event id, so a redelivery writes the same key.  The put carries ``If-None-Match: *``
(``conditional_put``, on by default): S3 then refuses to replace an existing object with 412
PreconditionFailed, which counts as delivered.  That keeps the first copy untouched even if
the event's JSON changed in between, and it makes botocore's own retry of a put whose answer
was lost harmless.  Stores that do not know the header either ignore it (a redelivery then
overwrites the object with the same bytes) or answer 501; set ``conditional_put = false``
for those.

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
import logging
import os
import secrets
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import TYPE_CHECKING, ClassVar, Literal

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

__all__ = ["S3Sink", "S3SinkConfig"]

log = logging.getLogger(__name__)

DEFAULT_KEY_TEMPLATE = "{vendor}/{workspace_id}/{task_id}/{kind}-{event_id}.json"
PROBE_PREFIX = ".hookdock-probe/"

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
        extra: dict[str, str] = {"ContentType": config.content_type}
        if config.sse is not None:
            extra["ServerSideEncryption"] = config.sse
        if config.sse_kms_key_id is not None:
            extra["SSEKMSKeyId"] = config.sse_kms_key_id
        if config.storage_class is not None:
            extra["StorageClass"] = config.storage_class
        if config.conditional_put:
            extra["IfNoneMatch"] = "*"
        self._put_args = extra

    def __repr__(self) -> str:
        return f"S3Sink(bucket={self.config.bucket!r}, endpoint_url={self.config.endpoint_url!r})"

    def key_for(self, event: Event) -> str:
        return self._template.render(event)

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
        async with self._lock:
            self._closed = True
            stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
