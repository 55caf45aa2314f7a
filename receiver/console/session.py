"""Console sessions: a signed cookie holding who logged in, with which token, until when.

Logging in takes one of the ``[admin] tokens`` (the admin API's), compared in constant time;
the cookie never holds the token, only its number, a random session id and the actor name.
The signing key is derived from all the tokens, so removing or rotating any token ends every
session, and replicas with the same tokens accept each other's cookies.  The cookie is
HttpOnly, SameSite=Strict, scoped to the console's path and Secure over HTTPS.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from itsdangerous import BadData, URLSafeTimedSerializer
from pydantic import SecretStr

from receiver.admin_tokens import actor_name, token_number

__all__ = ["COOKIE", "Session", "Sessions"]

COOKIE = "hookdock_console"
FLASH_COOKIE = "hookdock_console_flash"
FLASH_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Session:
    actor: str
    """The name actions are recorded under: ``ann (admin token 1)``."""
    session_id: str
    csrf: str
    """The form token every action of this session must carry."""


class Sessions:
    """Makes and reads session cookies for ``tokens``; a session lasts ``max_age`` seconds."""

    def __init__(self, tokens: Sequence[SecretStr], max_age: int) -> None:
        if not tokens:
            raise ValueError("the console needs [admin] tokens")
        self.tokens = tuple(tokens)
        self.max_age = max_age
        material = b"\0".join(t.get_secret_value().encode() for t in self.tokens)
        key = hashlib.sha256(b"hookdock console\0" + material).digest()
        self._cookies = URLSafeTimedSerializer(key, salt="hookdock-console-session")
        self._flash = URLSafeTimedSerializer(key, salt="hookdock-console-flash")
        self._csrf_key = hmac.new(key, b"csrf", hashlib.sha256).digest()

    def csrf_for(self, session_id: str) -> str:
        return hmac.new(self._csrf_key, session_id.encode(), hashlib.sha256).hexdigest()

    def login(self, presented: str, who: str = "") -> tuple[Session, str] | None:
        """The new session and its cookie value; None if ``presented`` is not a token."""
        number = token_number(presented, self.tokens)
        if number is None:
            return None
        session_id = secrets.token_urlsafe(16)
        actor = actor_name(who, number)
        value = self._cookies.dumps({"n": number, "a": actor, "s": session_id})
        return Session(actor, session_id, self.csrf_for(session_id)), value

    def read(self, cookie: str | None) -> Session | None:
        """The session of a cookie; None when absent, forged, expired or of another key."""
        if not cookie:
            return None
        try:
            data = self._cookies.loads(cookie, max_age=self.max_age)
        except BadData:
            return None
        if not isinstance(data, dict):
            return None
        number, actor, session_id = data.get("n"), data.get("a"), data.get("s")
        if not (isinstance(number, int) and 1 <= number <= len(self.tokens)):
            return None
        if not (isinstance(actor, str) and isinstance(session_id, str) and session_id):
            return None
        return Session(actor, session_id, self.csrf_for(session_id))

    def csrf_matches(self, session: Session, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(session.csrf.encode(), (given or "").encode())

    def flash(self, message: str) -> str:
        """A signed one-minute cookie value carrying ``message`` to the next page."""
        return self._flash.dumps(message[:500])

    def read_flash(self, cookie: str | None) -> str | None:
        if not cookie:
            return None
        try:
            message = self._flash.loads(cookie, max_age=FLASH_SECONDS)
        except BadData:
            return None
        return message if isinstance(message, str) else None
