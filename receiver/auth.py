"""How a route checks that a request comes from its sender.

Each scheme is a frozen pydantic model; ``AuthConfig`` is their union, told apart by ``type``::

    url-token            a long random token in the URL (SmartDocumentor: the URL is all it has)
    basic                ``Authorization: Basic base64(user:pass)``
    header-token         a fixed header value, e.g. ``Authorization: Bearer <token>``
    standard-webhooks    HMAC-SHA256 over ``id.timestamp.body``, several secrets for rotation
    hmac                 the HMAC family: header, prefix, hex or base64, raw body or
                         ``{id}.{timestamp}.{body}`` with a tolerance (GitHub, SuperOffice, ...)
    hmac-sha256-base64   the name SuperOffice's settings of ``hmac`` had first; still works
    none                 nothing; a route has to say so, there is no default

``verify`` raises ``AuthFailed`` with a short message the sender may see.  Messages never hold a
secret nor what the sender presented, and every comparison is constant-time.

Pydantic prints the offending input in a validation error unless the *outermost* model sets
``hide_input_in_errors=True``; a misspelt key would then print a secret.  The models here set it,
``parse_auth`` uses it, and a config model that embeds ``AuthConfig`` should set it too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, assert_never

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    TypeAdapter,
    model_validator,
)

from handlers.signing import decode_whsec as _decode_whsec
from handlers.signing import sign_standard_webhook
from handlers.signing import standard_webhook_mac as _standard_mac
from receiver.errors import AuthFailed

__all__ = [
    "AuthConfig",
    "BasicAuth",
    "HeaderTokenAuth",
    "HmacAuth",
    "HmacBase64Auth",
    "NoAuth",
    "RouteAuth",
    "SourceDefaultAuth",
    "StandardWebhooksAuth",
    "UrlTokenAuth",
    "credential_headers",
    "parse_auth",
    "resolve_auth",
    "route_auth",
    "sign_hmac_base64",
    "sign_standard_webhook",
    "uses_path_token",
    "verify",
]

_MISSING = "credentials missing"
_MISMATCH = "credentials do not match"
_SIG_MISSING = "signature header missing"
_SIG_MISMATCH = "signature does not match"
_WH_MISSING = "webhook signature headers missing"
_WH_BAD_TIMESTAMP = "webhook timestamp invalid"
_WH_TOLERANCE = "webhook timestamp outside tolerance"

# RFC 3986 unreserved characters: a token made of them needs no escaping in a path or a query,
# whereas "+" in a query arrives as a space and "/" splits the path.
_URL_SAFE = re.compile(r"[A-Za-z0-9._~-]+")
# RFC 9110 field-name ("token").
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Servers strip whitespace around header values, so a token cannot start or end with it.
_HEADER_VALUE = re.compile(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?")


def _url_token(value: SecretStr) -> SecretStr:
    token = value.get_secret_value()
    if len(token) < 16:
        raise ValueError("must be at least 16 characters")
    if not _URL_SAFE.fullmatch(token):
        raise ValueError("may use only letters, digits and - . _ ~ (it travels in the URL)")
    return value


def _header_token(value: SecretStr) -> SecretStr:
    if not _HEADER_VALUE.fullmatch(value.get_secret_value()):
        raise ValueError("must be printable ASCII without leading or trailing spaces")
    return value


def _prefix(value: str) -> str:
    if value and not _HEADER_VALUE.fullmatch(value + "x"):
        raise ValueError("must be printable ASCII without leading spaces")
    return value


def _non_empty(value: SecretStr) -> SecretStr:
    if not value.get_secret_value():
        raise ValueError("must not be empty")
    return value


def _whsec(value: SecretStr) -> SecretStr:
    try:
        _decode_whsec(value.get_secret_value())
    except (ValueError, binascii.Error):
        raise ValueError("is not a valid secret: expected 'whsec_<base64>' or base64") from None
    return value


def _basic_username(value: str) -> str:
    if not value or ":" in value:
        raise ValueError("must be non-empty and must not contain ':' (RFC 7617)")
    return value


def _header_name(value: str) -> str:
    if not _HEADER_NAME.fullmatch(value):
        raise ValueError("is not a valid HTTP header name")
    return value


class _Scheme(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


class UrlTokenAuth(_Scheme):
    """A token as the last path segment (``/hooks/{route}/{token}``) or as query ``token``."""

    type: Literal["url-token"] = "url-token"
    token: Annotated[SecretStr, AfterValidator(_url_token)]


class BasicAuth(_Scheme):
    """HTTP Basic authentication (RFC 7617)."""

    type: Literal["basic"] = "basic"
    username: Annotated[str, AfterValidator(_basic_username)]
    password: Annotated[SecretStr, AfterValidator(_non_empty)]


class HeaderTokenAuth(_Scheme):
    """A header whose value must equal ``prefix + token``."""

    type: Literal["header-token"] = "header-token"
    header: Annotated[str, AfterValidator(_header_name)] = "Authorization"
    token: Annotated[SecretStr, AfterValidator(_header_token)]
    prefix: Annotated[str, AfterValidator(_prefix)] = ""


class StandardWebhooksAuth(_Scheme):
    """Standard Webhooks (svix): any ``v1`` signature matching any secret is accepted."""

    type: Literal["standard-webhooks"] = "standard-webhooks"
    secrets: Annotated[list[Annotated[SecretStr, AfterValidator(_whsec)]], Field(min_length=1)]
    tolerance_seconds: Annotated[int, Field(gt=0)] = 300


class HmacBase64Auth(_Scheme):
    """base64(HMAC-SHA256(secret, raw body)) in a header: SuperOffice's scheme, by its first
    name.  The same as ``hmac`` with ``encoding = "base64"`` and this header."""

    type: Literal["hmac-sha256-base64"] = "hmac-sha256-base64"
    header: Annotated[str, AfterValidator(_header_name)] = "X-SuperOffice-Signature"
    secret: Annotated[SecretStr, AfterValidator(_non_empty)]

    _family: HmacAuth | None = PrivateAttr(default=None)

    def model_post_init(self, context: Any, /) -> None:
        # Once, not per request: validating a model costs more than the HMAC it checks.
        self._family = HmacAuth(header=self.header, encoding="base64", secret=self.secret)

    def as_family(self) -> HmacAuth:
        assert self._family is not None
        return self._family


class HmacAuth(_Scheme):
    """An HMAC of the request in a header, in whichever of the common forms the sender uses.

    GitHub: ``header = "X-Hub-Signature-256", prefix = "sha256=", encoding = "hex"``.
    SuperOffice: ``header = "X-SuperOffice-Signature", encoding = "base64"``.
    Signed ``id.timestamp.body`` (Standard Webhooks' layout with a sender's own headers):
    ``signed = "id.timestamp.body"``, ``id_header``, ``timestamp_header`` and a tolerance.
    """

    type: Literal["hmac"] = "hmac"
    header: Annotated[str, AfterValidator(_header_name)]
    prefix: Annotated[str, AfterValidator(_prefix)] = ""
    """Text before the MAC in the header, such as ``sha256=``."""
    encoding: Literal["hex", "base64"] = "hex"
    algorithm: Literal["sha256", "sha1", "sha512"] = "sha256"
    secret: Annotated[SecretStr, AfterValidator(_non_empty)] | None = None
    secrets: list[Annotated[SecretStr, AfterValidator(_non_empty)]] = []
    """Several secrets, any of which may match: for rotation (instead of ``secret``)."""
    signed: Literal["body", "id.timestamp.body"] = "body"
    id_header: Annotated[str, AfterValidator(_header_name)] = "webhook-id"
    timestamp_header: Annotated[str, AfterValidator(_header_name)] = "webhook-timestamp"
    tolerance_seconds: Annotated[int, Field(gt=0)] = 300
    """With ``signed = "id.timestamp.body"``: how far the timestamp may be from now, either way."""

    @model_validator(mode="after")
    def _one_secret_form(self) -> HmacAuth:
        if (self.secret is None) == (not self.secrets):
            raise ValueError("give secret or secrets (a list, for rotation), one of them")
        return self

    def secret_keys(self) -> list[bytes]:
        secrets = [self.secret] if self.secret is not None else self.secrets
        return [s.get_secret_value().encode() for s in secrets]


class SourceDefaultAuth(_Scheme):
    """A route's ``auth`` without a ``type``: its source's scheme (``Source.default_auth``)
    with ``options`` on top.  Resolved into a real scheme when the source is loaded
    (``resolve_auth``); ingest never sees one."""

    type: Literal["source-default"] = "source-default"
    options: dict[str, Any] = Field(default_factory=dict, repr=False)


class NoAuth(_Scheme):
    """No verification at all; only for senders that cannot do better and a trusted network."""

    type: Literal["none"] = "none"


AuthConfig = Annotated[
    UrlTokenAuth
    | BasicAuth
    | HeaderTokenAuth
    | StandardWebhooksAuth
    | HmacAuth
    | HmacBase64Auth
    | NoAuth,
    Field(discriminator="type"),
]

_ADAPTER: TypeAdapter[AuthConfig] = TypeAdapter(
    AuthConfig, config=ConfigDict(hide_input_in_errors=True)
)


RouteAuth = Annotated[
    UrlTokenAuth
    | BasicAuth
    | HeaderTokenAuth
    | StandardWebhooksAuth
    | HmacAuth
    | HmacBase64Auth
    | NoAuth
    | SourceDefaultAuth,
    Field(discriminator="type"),
]
"""What a route's ``auth`` table holds once validated: a scheme, or "the source's"."""


def route_auth(data: object) -> object:
    """Before validation: a table without ``type`` (or none at all) means the source's scheme."""
    if data is None:
        return SourceDefaultAuth()
    if isinstance(data, Mapping) and "type" not in data:
        return SourceDefaultAuth(options=dict(data))
    return data


def resolve_auth(
    auth: AuthConfig | SourceDefaultAuth, default: Mapping[str, Any] | None
) -> AuthConfig:
    """The scheme a route uses.  ``ValueError`` when it gives no type and its source has no
    default; pydantic's ``ValidationError`` (locations under ``auth``) for a bad table."""
    if not isinstance(auth, SourceDefaultAuth):
        return auth
    if default is None:
        raise ValueError("type missing, and the route's source has no scheme of its own")
    return parse_auth({**default, **auth.options})


def parse_auth(data: object) -> AuthConfig:
    """Validate one route's ``auth`` table; errors name the key and never print the input."""
    return _ADAPTER.validate_python(data)


def uses_path_token(auth: AuthConfig) -> bool:
    """Whether the route also answers on ``/hooks/{route}/{token}``."""
    return isinstance(auth, UrlTokenAuth)


_ALWAYS_SECRET = frozenset({"authorization", "proxy-authorization", "cookie", "webhook-signature"})


def credential_headers(auth: AuthConfig) -> frozenset[str]:
    """Lower-case names of headers that carry credentials for ``auth``: never journaled."""
    header = getattr(auth, "header", None)
    return _ALWAYS_SECRET | ({header.lower()} if isinstance(header, str) else set())


def sign_hmac_base64(secret: str, body: bytes) -> str:
    """base64(HMAC-SHA256(secret, body)): the SuperOffice signature, 44 characters."""
    return _b64(hmac.new(secret.encode(), body, hashlib.sha256).digest())


def verify(
    auth: AuthConfig,
    *,
    path_token: str | None,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    body: bytes,
    now: float,
) -> None:
    """Return if the request passes ``auth``, else raise ``AuthFailed`` (401)."""
    if path_token is not None and not isinstance(auth, UrlTokenAuth):
        raise AuthFailed(_MISMATCH)
    match auth:
        case UrlTokenAuth():
            presented = path_token if path_token else query.get("token")
            _expect(presented, auth.token.get_secret_value(), _MISSING, _MISMATCH)
        case BasicAuth():
            _verify_basic(auth, _header(headers, "Authorization"))
        case HeaderTokenAuth():
            expected = auth.prefix + auth.token.get_secret_value()
            _expect(_header(headers, auth.header), expected, _MISSING, _MISMATCH)
        case StandardWebhooksAuth():
            _verify_standard(auth, headers, body, now)
        case HmacAuth():
            _verify_hmac(auth, headers, body, now)
        case HmacBase64Auth():
            _verify_hmac(auth.as_family(), headers, body, now)
        case NoAuth():
            pass
        case _:
            assert_never(auth)


def _verify_basic(auth: BasicAuth, value: str | None) -> None:
    scheme, _, encoded = (value or "").strip().partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        raise AuthFailed(_MISSING)
    try:
        presented = base64.b64decode(encoded.strip(), validate=True)
    except (ValueError, binascii.Error):
        raise AuthFailed(_MISMATCH) from None
    # The username cannot hold a colon, so comparing "user:pass" whole is the same as splitting
    # at the first colon, and it does not reveal which half was wrong.
    expected = f"{auth.username}:{auth.password.get_secret_value()}"
    if not hmac.compare_digest(presented, _bytes(expected)):
        raise AuthFailed(_MISMATCH)


def _verify_standard(
    auth: StandardWebhooksAuth, headers: Mapping[str, str], body: bytes, now: float
) -> None:
    msg_id = _header(headers, "webhook-id")
    stamp = _header(headers, "webhook-timestamp")
    signature = _header(headers, "webhook-signature")
    if not (msg_id and stamp and signature):
        raise AuthFailed(_WH_MISSING)
    stamp = stamp.strip()
    # int() would also take "+1", "1_0" or " 1"; the spec says decimal seconds.
    if not (stamp.isascii() and stamp.isdigit()) or len(stamp) > 12:
        raise AuthFailed(_WH_BAD_TIMESTAMP)
    if abs(now - int(stamp)) > auth.tolerance_seconds:
        raise AuthFailed(_WH_TOLERANCE)
    expected = [
        _standard_mac(_decode_whsec(s.get_secret_value()), _wire(msg_id), stamp, body)
        for s in auth.secrets
    ]
    for entry in signature.split():
        version, _, encoded = entry.partition(",")
        if version != "v1":
            continue
        try:
            presented = base64.b64decode(encoded, validate=True)
        except (ValueError, binascii.Error):
            continue
        if any(hmac.compare_digest(presented, mac) for mac in expected):
            return
    raise AuthFailed(_SIG_MISMATCH)


def _verify_hmac(auth: HmacAuth, headers: Mapping[str, str], body: bytes, now: float) -> None:
    value = _header(headers, auth.header)
    if not value:
        raise AuthFailed(_SIG_MISSING)
    message = body
    if auth.signed == "id.timestamp.body":
        msg_id = _header(headers, auth.id_header)
        stamp = (_header(headers, auth.timestamp_header) or "").strip()
        if not (msg_id and stamp):
            raise AuthFailed(_WH_MISSING)
        if not (stamp.isascii() and stamp.isdigit()) or len(stamp) > 12:
            raise AuthFailed(_WH_BAD_TIMESTAMP)
        if abs(now - int(stamp)) > auth.tolerance_seconds:
            raise AuthFailed(_WH_TOLERANCE)
        message = b"%s.%s.%s" % (_wire(msg_id), stamp.encode(), body)
    value = value.strip()
    # A prefix such as "sha256=" names the algorithm; senders agree on its case, but a proxy
    # or a hand-made test may not, and the prefix is no secret.
    if not value.lower().startswith(auth.prefix.lower()):
        raise AuthFailed(_SIG_MISMATCH)
    presented = _decode_mac(value[len(auth.prefix) :], auth.encoding)
    digest = getattr(hashlib, auth.algorithm)
    # Every key is compared, even after a match, so timing says nothing about which matched.
    matched = False
    for key in auth.secret_keys():
        mac = hmac.new(key, message, digest).digest()
        matched |= presented is not None and hmac.compare_digest(presented, mac)
    if not matched:
        raise AuthFailed(_SIG_MISMATCH)


def _decode_mac(text: str, encoding: str) -> bytes | None:
    try:
        if encoding == "hex":
            # fromhex would skip spaces between the digits; a MAC has none.
            return bytes.fromhex(text) if text.isascii() and text.isalnum() else None
        return base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        return None


def _expect(presented: str | None, expected: str, missing: str, mismatch: str) -> None:
    if not presented:
        raise AuthFailed(missing)
    if not hmac.compare_digest(_bytes(presented), _bytes(expected)):
        raise AuthFailed(mismatch)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    if value is None:
        # A plain dict with mixed-case keys: rare, so the scan only runs on a miss.
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


def _bytes(text: str) -> bytes:
    # surrogatepass: odd input from a sender must fail the comparison, not crash the request.
    return text.encode("utf-8", "surrogatepass")


def _wire(text: str) -> bytes:
    # ASGI servers decode header bytes as latin-1; encoding back gives what the sender signed.
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return _bytes(text)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
