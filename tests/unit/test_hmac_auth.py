"""The HMAC family (``type = "hmac"``): GitHub's and SuperOffice's settings, signed ids and
timestamps, rotation, and the old ``hmac-sha256-base64`` name."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import pytest
from pydantic import ValidationError

from receiver.auth import HmacAuth, HmacBase64Auth, parse_auth, sign_hmac_base64, verify
from receiver.errors import AuthFailed

NOW = 1_700_000_000

# GitHub's published known-answer vector ("Validating webhook deliveries").
GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_PAYLOAD = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

GITHUB = parse_auth(
    {
        "type": "hmac",
        "header": "X-Hub-Signature-256",
        "prefix": "sha256=",
        "encoding": "hex",
        "secret": GITHUB_SECRET,
    }
)
SO_SECRET = "so-shared-secret"
SUPEROFFICE = parse_auth(
    {"type": "hmac", "header": "X-SuperOffice-Signature", "encoding": "base64", "secret": SO_SECRET}
)
BODY = b'{"EventId":"0f8fad5b-d9cb-469f-a165-70867728950e","Event":"contact.changed"}'


def check(auth: Any, headers: dict[str, str], body: bytes = BODY, now: float = NOW) -> None:
    verify(auth, path_token=None, query={}, headers=headers, body=body, now=now)


def refused(auth: Any, headers: dict[str, str], body: bytes = BODY, now: float = NOW) -> str:
    with pytest.raises(AuthFailed) as caught:
        check(auth, headers, body, now)
    assert caught.value.status == 401
    return caught.value.message


def test_githubs_known_answer_vector_passes() -> None:
    check(GITHUB, {"X-Hub-Signature-256": GITHUB_SIGNATURE}, GITHUB_PAYLOAD)


def test_githubs_vector_fails_with_one_byte_changed() -> None:
    assert refused(GITHUB, {"X-Hub-Signature-256": GITHUB_SIGNATURE}, b"Hello, World?") == (
        "signature does not match"
    )
    wrong = GITHUB_SIGNATURE[:-1] + "f"
    assert refused(GITHUB, {"X-Hub-Signature-256": wrong}, GITHUB_PAYLOAD) == (
        "signature does not match"
    )


@pytest.mark.parametrize(
    "value",
    [
        GITHUB_SIGNATURE.removeprefix("sha256="),  # the prefix is required
        "sha1=" + GITHUB_SIGNATURE.removeprefix("sha256="),
        GITHUB_SIGNATURE + "00",
        "sha256=" + "zz" * 32,
        "sha256=757107ea 0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
    ],
)
def test_githubs_header_must_be_exactly_the_prefixed_hex_mac(value: str) -> None:
    assert refused(GITHUB, {"X-Hub-Signature-256": value}, GITHUB_PAYLOAD) == (
        "signature does not match"
    )


def test_hex_case_and_prefix_case_do_not_matter() -> None:
    check(GITHUB, {"X-Hub-Signature-256": GITHUB_SIGNATURE.upper()}, GITHUB_PAYLOAD)


def test_a_missing_header_says_so() -> None:
    assert refused(GITHUB, {}, GITHUB_PAYLOAD) == "signature header missing"


def test_superoffice_is_base64_of_the_raw_body() -> None:
    signature = base64.b64encode(hmac.new(SO_SECRET.encode(), BODY, hashlib.sha256).digest())
    assert len(signature) == 44
    check(SUPEROFFICE, {"X-SuperOffice-Signature": signature.decode()})
    assert refused(SUPEROFFICE, {"X-SuperOffice-Signature": signature.decode()}, BODY + b" ") == (
        "signature does not match"
    )


def test_the_old_name_is_the_same_scheme() -> None:
    old = parse_auth({"type": "hmac-sha256-base64", "secret": SO_SECRET})
    assert isinstance(old, HmacBase64Auth)
    assert old.as_family() == SUPEROFFICE
    signature = sign_hmac_base64(SO_SECRET, BODY)
    check(old, {"x-superoffice-signature": signature})
    assert refused(old, {"X-SuperOffice-Signature": sign_hmac_base64("other", BODY)}) == (
        "signature does not match"
    )


SIGNED_ID = parse_auth(
    {
        "type": "hmac",
        "header": "X-Signature",
        "prefix": "v1=",
        "encoding": "base64",
        "secrets": ["old-secret", "new-secret"],
        "signed": "id.timestamp.body",
        "id_header": "X-Message-Id",
        "timestamp_header": "X-Timestamp",
        "tolerance_seconds": 60,
    }
)


def signed_id_headers(secret: str, msg_id: str = "m1", stamp: int = NOW) -> dict[str, str]:
    mac = hmac.new(secret.encode(), f"{msg_id}.{stamp}.".encode() + BODY, hashlib.sha256)
    return {
        "X-Signature": "v1=" + base64.b64encode(mac.digest()).decode(),
        "X-Message-Id": msg_id,
        "X-Timestamp": str(stamp),
    }


@pytest.mark.parametrize("secret", ["old-secret", "new-secret"])
def test_id_timestamp_body_with_either_secret(secret: str) -> None:
    check(SIGNED_ID, signed_id_headers(secret))


def test_id_timestamp_body_refusals() -> None:
    good = signed_id_headers("new-secret")
    assert refused(SIGNED_ID, signed_id_headers("third-secret")) == "signature does not match"
    assert refused(SIGNED_ID, {**good, "X-Message-Id": "m2"}) == "signature does not match"
    missing = {k: v for k, v in good.items() if k != "X-Timestamp"}
    assert refused(SIGNED_ID, missing) == "webhook signature headers missing"
    assert refused(SIGNED_ID, {**good, "X-Timestamp": "+1"}) == "webhook timestamp invalid"
    late = signed_id_headers("new-secret", stamp=NOW - 61)
    early = signed_id_headers("new-secret", stamp=NOW + 61)
    assert refused(SIGNED_ID, late) == "webhook timestamp outside tolerance"
    assert refused(SIGNED_ID, early) == "webhook timestamp outside tolerance"
    check(SIGNED_ID, signed_id_headers("new-secret", stamp=NOW - 60))


@pytest.mark.parametrize(
    ("table", "where"),
    [
        ({"header": "X-Sig"}, "give secret or secrets"),
        ({"header": "X-Sig", "secret": "a", "secrets": ["b"]}, "give secret or secrets"),
        ({"secret": "a"}, "header"),
        ({"header": "X Sig", "secret": "a"}, "header"),
        ({"header": "X-Sig", "secret": "a", "encoding": "base32"}, "encoding"),
        ({"header": "X-Sig", "secret": ""}, "must not be empty"),
        ({"header": "X-Sig", "secret": "a", "signed": "timestamp.body"}, "signed"),
    ],
)
def test_bad_tables_are_refused_without_printing_the_secret(
    table: dict[str, Any], where: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_auth({"type": "hmac", **table})
    assert where in str(caught.value)
    assert "'a'" not in str(caught.value)


def test_secrets_never_show_in_reprs() -> None:
    assert GITHUB_SECRET not in repr(GITHUB)
    assert isinstance(GITHUB, HmacAuth)
    assert "old-secret" not in repr(SIGNED_ID)
