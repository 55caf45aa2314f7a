"""The ``[admin] tokens`` check and the actor name an action is recorded under, written once
for the admin API (a bearer token per request) and the console (a token at login)."""

from __future__ import annotations

import hmac
import re
from collections.abc import Sequence

from pydantic import SecretStr

__all__ = ["actor_name", "token_number"]

_ACTOR = re.compile(r"^[\w .@+-]{1,64}$")


def token_number(presented: str, tokens: Sequence[SecretStr]) -> int | None:
    """Which of ``tokens`` (from 1) ``presented`` is, compared in constant time; None: none."""
    given = presented.strip().encode()
    matched = None
    for number, token in enumerate(tokens, start=1):
        # Every token is compared, so the time taken does not tell which one came close.
        if hmac.compare_digest(given, token.get_secret_value().encode()):
            matched = number
    return matched if given else None


def actor_name(who: str, number: int) -> str:
    """``ann@ops (admin token 2)``: the person named (when the name is plain) and the token."""
    who = who.strip()
    if who and _ACTOR.match(who):
        return f"{who} (admin token {number})"
    return f"admin token {number}"
