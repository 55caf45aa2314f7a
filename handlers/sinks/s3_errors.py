"""What a failed S3 call means for the S3 sink: retry it later, or tell a person what to fix.

What may pass is ``RetryableSinkError``: no connection, timeouts, throttling (SlowDown,
Throttling, RequestTimeout, 429), 5xx, and 409 ConditionalRequestConflict (two conditional
puts of one key racing).  What needs a person is ``PermanentSinkError``: a missing bucket,
refused or unknown credentials, any other 4xx, with a message that says what to fix.  Messages
name the bucket and key, never a credential.
"""

from __future__ import annotations

from handlers.errors import PermanentSinkError, RetryableSinkError, SinkError
from handlers.redact import redact_text

INSTALL_HINT = "install it with: pip install 'hookdock[s3]'"

try:
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionError,
        CredentialRetrievalError,
        HTTPClientError,
    )
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(f"the s3 sink needs aiobotocore ({exc}); {INSTALL_HINT}") from exc

__all__ = ["FAILURES", "INSTALL_HINT", "classify", "http_status"]

FAILURES = (ClientError, BotoCoreError, OSError)
"""What an S3 call can raise besides our own errors (TimeoutError is an OSError)."""

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


def http_status(exc: ClientError) -> int:
    """The HTTP status of the store's answer, 0 if there was none."""
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


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
