"""Request verification: every scheme, table-driven, plus config validation and cross-checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr, ValidationError
from standardwebhooks.webhooks import Webhook
from starlette.datastructures import Headers

from receiver.auth import (
    AuthConfig,
    BasicAuth,
    HeaderTokenAuth,
    HmacBase64Auth,
    NoAuth,
    StandardWebhooksAuth,
    UrlTokenAuth,
    parse_auth,
    sign_hmac_base64,
    sign_standard_webhook,
    uses_path_token,
    verify,
)
from receiver.errors import AuthFailed

NOW = 1_700_000_000
BODY = b'{"EventId":"0f8fad5b-d9cb-469f-a165-70867728950e","Event":"contact.changed"}'

URL_TOKEN = "Zq3-uV8_pLx2.Wm9~kR4tYb7"
WRONG_URL_TOKEN = "Zq3-uV8_pLx2.Wm9~kR4tYb8"
USER, PASSWORD = "smartdoc", "pa:ss:w0rd-with-colons"
API_TOKEN = "tok_4f9c2b7e1d6a8350"
SO_SECRET = "superoffice-shared-secret"
# Two Standard Webhooks secrets: the first with the "whsec_" prefix, the second bare base64.
KEY_OLD, KEY_NEW = bytes(range(32)), bytes(range(100, 132))
WH_OLD = "whsec_" + base64.b64encode(KEY_OLD).decode()
WH_NEW = base64.b64encode(KEY_NEW).decode()
MSG_ID = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"

URL = UrlTokenAuth(token=SecretStr(URL_TOKEN))
BASIC = BasicAuth(username=USER, password=SecretStr(PASSWORD))
BEARER = HeaderTokenAuth(token=SecretStr(API_TOKEN), prefix="Bearer ")
API_KEY = HeaderTokenAuth(header="X-Api-Key", token=SecretStr(API_TOKEN))
SUPEROFFICE = HmacBase64Auth(secret=SecretStr(SO_SECRET))
STANDARD = StandardWebhooksAuth(secrets=[SecretStr(WH_OLD), SecretStr(WH_NEW)])
NONE = NoAuth()
ALL_SCHEMES: list[AuthConfig] = [URL, BASIC, BEARER, API_KEY, SUPEROFFICE, STANDARD, NONE]
SECRETS = [URL_TOKEN, PASSWORD, API_TOKEN, SO_SECRET, WH_OLD, WH_NEW]


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def superoffice_sig(secret: str, body: bytes) -> str:
    """Computed here independently of receiver.auth."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def wh_headers(
    secret: str = WH_NEW, *, stamp: int = NOW, body: bytes = BODY, sig: str | None = None
) -> dict[str, str]:
    signature = sig if sig is not None else sign_standard_webhook(secret, MSG_ID, stamp, body)
    return {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(stamp),
        "webhook-signature": signature,
    }


def run(
    auth: AuthConfig,
    *,
    path_token: str | None = None,
    query: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    body: bytes = BODY,
    now: float = NOW,
) -> None:
    verify(
        auth,
        path_token=path_token,
        query=query or {},
        headers=headers or {},
        body=body,
        now=now,
    )


SO_SIG = superoffice_sig(SO_SECRET, BODY)
GOOD_SIG = wh_headers()["webhook-signature"]
B64 = GOOD_SIG.removeprefix("v1,")  # a valid MAC under the wrong version tag
MISSING, MISMATCH = "credentials missing", "credentials do not match"
SIG_MISSING, SIG_MISMATCH = "signature header missing", "signature does not match"
WH_MISSING = "webhook signature headers missing"
WH_TOLERANCE = "webhook timestamp outside tolerance"
WH_INVALID = "webhook timestamp invalid"

# (auth, verify keyword arguments, expected AuthFailed message or None for success)
CASES: list[Any] = [
    # url-token
    pytest.param(URL, {"path_token": URL_TOKEN}, None, id="url-path"),
    pytest.param(URL, {"query": {"token": URL_TOKEN}}, None, id="url-query"),
    pytest.param(URL, {}, MISSING, id="url-missing"),
    pytest.param(URL, {"query": {"token": ""}}, MISSING, id="url-query-empty"),
    pytest.param(URL, {"query": {"other": URL_TOKEN}}, MISSING, id="url-query-other-name"),
    pytest.param(URL, {"path_token": WRONG_URL_TOKEN}, MISMATCH, id="url-path-wrong"),
    pytest.param(URL, {"query": {"token": WRONG_URL_TOKEN}}, MISMATCH, id="url-query-wrong"),
    pytest.param(URL, {"path_token": URL_TOKEN[:-1]}, MISMATCH, id="url-path-prefix"),
    pytest.param(
        URL,
        {"path_token": WRONG_URL_TOKEN, "query": {"token": URL_TOKEN}},
        MISMATCH,
        id="url-path-wins-over-query",
    ),
    pytest.param(URL, {"path_token": "t\u00f6k\udcff"}, MISMATCH, id="url-odd-unicode"),
    # basic
    pytest.param(BASIC, {"headers": {"authorization": basic(USER, PASSWORD)}}, None, id="basic"),
    pytest.param(
        BASIC,
        {"headers": {"Authorization": "basic " + basic(USER, PASSWORD).split()[1]}},
        None,
        id="basic-lowercase-scheme",
    ),
    pytest.param(BASIC, {}, MISSING, id="basic-missing"),
    pytest.param(BASIC, {"headers": {"authorization": ""}}, MISSING, id="basic-empty"),
    pytest.param(BASIC, {"headers": {"authorization": "Basic"}}, MISSING, id="basic-no-creds"),
    pytest.param(
        BASIC, {"headers": {"authorization": f"Bearer {PASSWORD}"}}, MISSING, id="basic-bearer"
    ),
    pytest.param(
        BASIC, {"headers": {"authorization": basic(USER, "wrong")}}, MISMATCH, id="basic-wrong-pw"
    ),
    pytest.param(
        BASIC,
        {"headers": {"authorization": basic("someone", PASSWORD)}},
        MISMATCH,
        id="basic-wrong-user",
    ),
    pytest.param(
        BASIC,
        {"headers": {"authorization": basic(USER, "pa")}},
        MISMATCH,
        id="basic-password-cut-at-colon",
    ),
    pytest.param(
        BASIC, {"headers": {"authorization": "Basic !!not*base64"}}, MISMATCH, id="basic-bad-b64"
    ),
    pytest.param(
        BASIC, {"headers": {"authorization": "Basic YWJj="}}, MISMATCH, id="basic-bad-padding"
    ),
    pytest.param(
        BASIC,
        {"headers": {"authorization": "Basic " + base64.b64encode(b"nocolon").decode()}},
        MISMATCH,
        id="basic-no-colon",
    ),
    pytest.param(
        BASIC,
        {"headers": {"authorization": "Basic " + base64.b64encode(b"\xff\xfe:\x00").decode()}},
        MISMATCH,
        id="basic-not-utf8",
    ),
    pytest.param(
        BASIC,
        {"headers": {"authorization": "Basic \u00e9\u00e9\u00e9\u00e9"}},
        MISMATCH,
        id="basic-non-ascii",
    ),
    # header-token
    pytest.param(BEARER, {"headers": {"authorization": f"Bearer {API_TOKEN}"}}, None, id="bearer"),
    pytest.param(BEARER, {}, MISSING, id="bearer-missing"),
    pytest.param(
        BEARER, {"headers": {"authorization": API_TOKEN}}, MISMATCH, id="bearer-no-prefix"
    ),
    pytest.param(
        BEARER, {"headers": {"authorization": "Bearer nope"}}, MISMATCH, id="bearer-wrong"
    ),
    pytest.param(
        BEARER, {"headers": {"authorization": "Bearer t\u00f6k"}}, MISMATCH, id="bearer-non-ascii"
    ),
    pytest.param(API_KEY, {"headers": {"x-api-key": API_TOKEN}}, None, id="api-key"),
    pytest.param(API_KEY, {"headers": {"authorization": API_TOKEN}}, MISSING, id="api-key-other"),
    # hmac-sha256-base64 (SuperOffice)
    pytest.param(SUPEROFFICE, {"headers": {"x-superoffice-signature": SO_SIG}}, None, id="so"),
    pytest.param(SUPEROFFICE, {}, SIG_MISSING, id="so-missing"),
    pytest.param(
        SUPEROFFICE,
        {"headers": {"x-superoffice-signature": superoffice_sig("other", BODY)}},
        SIG_MISMATCH,
        id="so-wrong-secret",
    ),
    pytest.param(
        SUPEROFFICE,
        {"headers": {"x-superoffice-signature": SO_SIG}, "body": BODY + b" "},
        SIG_MISMATCH,
        id="so-body-changed",
    ),
    pytest.param(
        SUPEROFFICE,
        {"headers": {"x-superoffice-signature": "sha256=" + SO_SIG}},
        SIG_MISMATCH,
        id="so-prefixed",
    ),
    # standard-webhooks
    pytest.param(STANDARD, {"headers": wh_headers(WH_OLD)}, None, id="wh-first-secret"),
    pytest.param(STANDARD, {"headers": wh_headers(WH_NEW)}, None, id="wh-rotated-secret"),
    pytest.param(
        STANDARD,
        {"headers": wh_headers(sig=f"v1,bm9wZQ== v2,{B64} v1a,{B64} v1,*** {GOOD_SIG}")},
        None,
        id="wh-several-entries",
    ),
    pytest.param(STANDARD, {"headers": wh_headers(stamp=NOW - 240)}, None, id="wh-4min-old"),
    pytest.param(STANDARD, {"headers": wh_headers(stamp=NOW + 240)}, None, id="wh-4min-new"),
    pytest.param(STANDARD, {"headers": wh_headers(stamp=NOW - 300)}, None, id="wh-edge-old"),
    pytest.param(
        STANDARD, {"headers": wh_headers(stamp=NOW - 360)}, WH_TOLERANCE, id="wh-6min-old"
    ),
    pytest.param(
        STANDARD, {"headers": wh_headers(stamp=NOW + 360)}, WH_TOLERANCE, id="wh-6min-new"
    ),
    pytest.param(
        STANDARD,
        {"headers": {**wh_headers(), "webhook-timestamp": f"{NOW}.5"}},
        WH_INVALID,
        id="wh-fractional-stamp",
    ),
    pytest.param(
        STANDARD,
        {"headers": {**wh_headers(), "webhook-timestamp": "yesterday"}},
        WH_INVALID,
        id="wh-text-stamp",
    ),
    pytest.param(
        STANDARD,
        {"headers": {**wh_headers(), "webhook-timestamp": f"+{NOW}"}},
        WH_INVALID,
        id="wh-signed-stamp",
    ),
    pytest.param(STANDARD, {}, WH_MISSING, id="wh-missing"),
    *(
        pytest.param(
            STANDARD,
            {"headers": {k: v for k, v in wh_headers().items() if k != drop}},
            WH_MISSING,
            id=f"wh-no-{drop}",
        )
        for drop in ("webhook-id", "webhook-timestamp", "webhook-signature")
    ),
    pytest.param(
        STANDARD,
        {"headers": wh_headers("whsec_" + base64.b64encode(b"x" * 32).decode())},
        SIG_MISMATCH,
        id="wh-unknown-secret",
    ),
    pytest.param(
        STANDARD, {"headers": wh_headers(), "body": BODY + b"\n"}, SIG_MISMATCH, id="wh-body"
    ),
    pytest.param(
        STANDARD,
        {"headers": wh_headers(sig=f"v2,{B64} v1a,{B64} {B64}")},
        SIG_MISMATCH,
        id="wh-only-other-version",
    ),
    pytest.param(
        STANDARD,
        {"headers": {**wh_headers(), "webhook-id": "msg_other"}},
        SIG_MISMATCH,
        id="wh-id-changed",
    ),
    # none
    pytest.param(NONE, {}, None, id="none"),
    # a path token is only meaningful for url-token routes
    *(
        pytest.param(auth, {"path_token": URL_TOKEN}, MISMATCH, id=f"path-token-on-{auth.type}")
        for auth in (BASIC, BEARER, SUPEROFFICE, STANDARD, NONE)
    ),
]


@pytest.mark.parametrize(("auth", "kwargs", "expected"), CASES)
def test_verify(auth: AuthConfig, kwargs: dict[str, Any], expected: str | None) -> None:
    if expected is None:
        run(auth, **kwargs)
        return
    with pytest.raises(AuthFailed) as caught:
        run(auth, **kwargs)
    assert caught.value.message == expected
    assert str(caught.value) == expected
    assert caught.value.status == 401


@pytest.mark.parametrize(("auth", "kwargs", "expected"), [c for c in CASES if c.values[2]])
def test_failures_never_echo_credentials(
    auth: AuthConfig, kwargs: dict[str, Any], expected: str
) -> None:
    with pytest.raises(AuthFailed) as caught:
        run(auth, **kwargs)
    presented = [kwargs.get("path_token"), *kwargs.get("query", {}).values()]
    presented += list(kwargs.get("headers", {}).values())
    for value in [*SECRETS, *presented]:
        if value:
            assert value not in str(caught.value)


HEADER_CASES = [
    pytest.param(SUPEROFFICE, "X-SuperOffice-Signature", SO_SIG, id="superoffice"),
    pytest.param(BEARER, "Authorization", f"Bearer {API_TOKEN}", id="bearer"),
    pytest.param(API_KEY, "X-Api-Key", API_TOKEN, id="api-key"),
    pytest.param(BASIC, "Authorization", basic(USER, PASSWORD), id="basic"),
]


@pytest.mark.parametrize(("auth", "name", "value"), HEADER_CASES)
@pytest.mark.parametrize("spell", [str.lower, str.upper, str.title, lambda s: s])
def test_header_names_are_case_insensitive(
    auth: AuthConfig, name: str, value: str, spell: Any
) -> None:
    run(auth, headers={spell(name): value})
    run(auth, headers=Headers(headers={spell(name): value}))


@pytest.mark.parametrize("spell", [str.lower, str.upper, str.title])
def test_standard_webhooks_headers_are_case_insensitive(spell: Any) -> None:
    headers = {spell(k): v for k, v in wh_headers().items()}
    run(STANDARD, headers=headers)
    run(STANDARD, headers=Headers(headers=headers))


def test_custom_tolerance() -> None:
    strict = StandardWebhooksAuth(secrets=[SecretStr(WH_OLD)], tolerance_seconds=10)
    run(strict, headers=wh_headers(WH_OLD, stamp=NOW - 10))
    with pytest.raises(AuthFailed, match="outside tolerance"):
        run(strict, headers=wh_headers(WH_OLD, stamp=NOW - 11))


# --- cross-checks against independent implementations ---------------------------------------


@pytest.mark.parametrize("secret", [WH_OLD, WH_NEW, "whsec_" + WH_NEW])
@pytest.mark.parametrize("body", [BODY, b"", "caf\u00e9 \u2603".encode()])
def test_standard_signature_matches_reference_library(secret: str, body: bytes) -> None:
    when = datetime.fromtimestamp(NOW, UTC)
    reference = Webhook(secret).sign(MSG_ID, when, body.decode())
    assert sign_standard_webhook(secret, MSG_ID, NOW, body) == reference
    run(STANDARD, headers=wh_headers(sig=reference, body=body), body=body)


def test_reference_library_accepts_our_signature() -> None:
    stamp = int(datetime.now(UTC).timestamp())
    headers = wh_headers(WH_OLD, stamp=stamp)
    Webhook(WH_OLD).verify(BODY, headers, json_parse=False)


def test_standard_whsec_prefix_is_optional() -> None:
    assert sign_standard_webhook(WH_NEW, MSG_ID, NOW, BODY) == sign_standard_webhook(
        "whsec_" + WH_NEW, MSG_ID, NOW, BODY
    )


def test_superoffice_signature_matches_independent_hmac() -> None:
    expected = superoffice_sig(SO_SECRET, BODY)
    assert len(expected) == 44
    assert expected.endswith("=")
    assert sign_hmac_base64(SO_SECRET, BODY) == expected
    assert sign_hmac_base64(SO_SECRET, BODY) != sign_hmac_base64(SO_SECRET, BODY + b" ")


# --- configuration -----------------------------------------------------------------------------


def test_parse_auth_builds_each_scheme() -> None:
    parsed = [
        parse_auth({"type": "url-token", "token": URL_TOKEN}),
        parse_auth({"type": "basic", "username": USER, "password": PASSWORD}),
        parse_auth({"type": "header-token", "token": API_TOKEN, "prefix": "Bearer "}),
        parse_auth({"type": "hmac-sha256-base64", "secret": SO_SECRET}),
        parse_auth({"type": "standard-webhooks", "secrets": [WH_OLD, WH_NEW]}),
        parse_auth({"type": "none"}),
    ]
    assert parsed == [URL, BASIC, BEARER, SUPEROFFICE, STANDARD, NONE]
    assert SUPEROFFICE.header == "X-SuperOffice-Signature"
    assert STANDARD.tolerance_seconds == 300


def test_uses_path_token() -> None:
    assert [uses_path_token(a) for a in ALL_SCHEMES] == [True] + [False] * 6


BAD_CONFIGS = [
    pytest.param(
        {"type": "standard-webhooks", "secrets": [WH_OLD, "whsec_not*base64!"]},
        ["secrets.1", "whsec_<base64>"],
        "whsec_not*base64!",
        id="bad-whsec",
    ),
    pytest.param(
        {"type": "standard-webhooks", "secrets": ["whsec_"]},
        ["secrets.0", "not a valid secret"],
        None,
        id="empty-whsec",
    ),
    pytest.param(
        {"type": "standard-webhooks", "secrets": []},
        ["secrets", "at least 1"],
        None,
        id="no-secrets",
    ),
    pytest.param(
        {"type": "standard-webhooks", "secrets": [WH_OLD], "tolerance_seconds": 0},
        ["tolerance_seconds"],
        WH_OLD,
        id="zero-tolerance",
    ),
    pytest.param(
        {"type": "oauth", "token": URL_TOKEN},
        ["'oauth'", "'url-token'", "'none'"],
        URL_TOKEN,
        id="unknown-type",
    ),
    pytest.param({"token": URL_TOKEN}, ["type"], URL_TOKEN, id="no-type"),
    pytest.param(
        {"type": "hmac-sha256-base64", "scret": SO_SECRET},
        ["scret", "Extra inputs are not permitted", "secret"],
        SO_SECRET,
        id="extra-key",
    ),
    pytest.param(
        {"type": "none", "token": URL_TOKEN},
        ["none.token", "Extra inputs"],
        URL_TOKEN,
        id="extra-key-on-none",
    ),
    pytest.param(
        {"type": "url-token", "token": "short-token-15c"},
        ["token", "at least 16"],
        "short-token-15c",
        id="short-url-token",
    ),
    pytest.param(
        {"type": "url-token", "token": "abc+def/ghi=jkl0123"},
        ["token", "letters, digits"],
        "abc+def/ghi=jkl0123",
        id="url-unsafe-token",
    ),
    pytest.param(
        {"type": "basic", "username": "a:b", "password": PASSWORD},
        ["username", "':'"],
        PASSWORD,
        id="colon-in-username",
    ),
    pytest.param(
        {"type": "basic", "username": USER, "password": ""},
        ["password", "empty"],
        None,
        id="empty-password",
    ),
    pytest.param(
        {"type": "header-token", "token": " padded "},
        ["token", "printable ASCII"],
        None,
        id="padded-header-token",
    ),
    pytest.param(
        {"type": "header-token", "header": "X Api Key", "token": API_TOKEN},
        ["header", "header name"],
        API_TOKEN,
        id="bad-header-name",
    ),
    pytest.param(
        {"type": "header-token", "token": API_TOKEN, "prefix": " Bearer "},
        ["prefix", "leading spaces"],
        API_TOKEN,
        id="padded-prefix",
    ),
    pytest.param(
        {"type": "hmac-sha256-base64", "secret": ""}, ["secret", "empty"], None, id="empty-secret"
    ),
]


@pytest.mark.parametrize(("data", "mentions", "secret"), BAD_CONFIGS)
def test_bad_config_is_rejected_clearly(
    data: dict[str, Any], mentions: list[str], secret: str | None
) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_auth(data)
    text = str(caught.value)
    for fragment in mentions:
        assert fragment in text
    if secret is not None:
        assert secret not in text


def test_model_validation_does_not_print_secrets() -> None:
    with pytest.raises(ValidationError) as caught:
        HmacBase64Auth.model_validate({"scret": SO_SECRET})
    assert "scret" in str(caught.value)
    assert SO_SECRET not in str(caught.value)


@pytest.mark.parametrize("auth", ALL_SCHEMES, ids=lambda a: a.type)
def test_secrets_do_not_leak_through_repr_or_dump(auth: BaseModel) -> None:
    for shown in (repr(auth), str(auth), auth.model_dump_json(), str(auth.model_dump())):
        for secret in SECRETS:
            assert secret not in shown
            assert secret.removeprefix("whsec_") not in shown


@pytest.mark.parametrize("auth", ALL_SCHEMES, ids=lambda a: a.type)
def test_models_are_frozen(auth: BaseModel) -> None:
    with pytest.raises(ValidationError):
        setattr(auth, "type", "none")  # noqa: B010 - mypy rightly refuses the plain assignment


def test_non_ascii_message_id_as_it_arrives_over_asgi() -> None:
    msg_id = "msg_caf\u00e9"
    sig = Webhook(WH_OLD).sign(msg_id, datetime.fromtimestamp(NOW, UTC), BODY.decode())
    assert sign_standard_webhook(WH_OLD, msg_id, NOW, BODY) == sig
    # Starlette decodes raw header bytes as latin-1, which is what the host hands to verify().
    raw = [
        (b"webhook-id", msg_id.encode()),
        (b"webhook-timestamp", str(NOW).encode()),
        (b"webhook-signature", sig.encode()),
    ]
    run(STANDARD, headers=Headers(raw=raw))
