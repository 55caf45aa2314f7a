"""Standard Webhooks (https://www.standardwebhooks.com) ``v1`` signatures, for both directions.

The receiver verifies them on the way in (``receiver.auth``) and the HTTP sink signs with them on
the way out (``handlers.sinks.http``); both share this one implementation.  A signature is
``v1,`` + base64(HMAC-SHA256(key, ``{webhook-id}.{webhook-timestamp}.{body}``)), where the key is
the base64 part of a ``whsec_...`` secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

__all__ = [
    "decode_whsec",
    "sign_standard_webhook",
    "standard_webhook_hmac",
    "standard_webhook_mac",
    "standard_webhook_v1",
    "v1_signature",
]


def decode_whsec(secret: str) -> bytes:
    """Key bytes of a Standard Webhooks secret, ``whsec_<base64>`` or bare base64.

    Raises ``ValueError`` (``binascii.Error`` is one) when it is not valid base64 or is empty.
    """
    raw = secret.removeprefix("whsec_")
    # Padding is optional in the wild (the reference library adds it too).
    key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    if not key:
        raise ValueError("empty key")
    return key


def standard_webhook_mac(key: bytes, msg_id: bytes, stamp: str, body: bytes) -> bytes:
    """The raw HMAC-SHA256 over ``msg_id.stamp.body``."""
    return hmac.new(key, msg_id + f".{stamp}.".encode() + body, hashlib.sha256).digest()


def standard_webhook_hmac(key: bytes, msg_id: str, timestamp: int) -> hmac.HMAC:
    """An HMAC-SHA256 fed with ``msg_id.timestamp.``: feed it the body piece by piece (a file
    too large for memory), then take ``v1_signature(mac)``."""
    return hmac.new(key, f"{msg_id}.{timestamp}.".encode(), hashlib.sha256)


def v1_signature(mac: hmac.HMAC) -> str:
    """The ``webhook-signature`` value of an HMAC made by ``standard_webhook_hmac``."""
    return "v1," + base64.b64encode(mac.digest()).decode("ascii")


def standard_webhook_v1(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for already decoded key bytes (decode once, sign often)."""
    mac = standard_webhook_mac(key, msg_id.encode(), str(timestamp), body)
    return "v1," + base64.b64encode(mac).decode("ascii")


def sign_standard_webhook(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value (``v1,<base64>``) for one message."""
    return standard_webhook_v1(decode_whsec(secret), msg_id, timestamp, body)
