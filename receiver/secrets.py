"""Every secret a configuration holds or implies, registered for redaction as it loads.

Routes' credentials (URL tokens, passwords, header tokens, HMAC and Standard Webhooks
secrets), the journal's (a database URL's password), and the secret-looking options of
every sink and poller (``secret``, ``password``, ``ticket``, ``api_key``, ``session_token``,
``secret_access_key``, any ``headers`` value, a URL's user info and the ``Basic`` value a
client makes of a user and password) go into
``handlers.redact.SECRETS``, so that ``redact_text`` and the logging filter scrub them from
whatever text carries them, whichever library wrote it.  Sinks register what they derive
themselves (credentials from the environment, for one); this covers third-party sinks'
options too, by their keys' names.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, SecretStr

from handlers.redact import SECRETS, basic_credentials
from receiver.config import Config

__all__ = ["register_config_secrets", "secrets_of"]

_SECRET_KEYS = (
    "secret",
    "password",
    "passwd",
    "token",
    "ticket",
    "credential",
    "private",
    "api_key",
)


def _is_secret_key(key: str) -> bool:
    lowered = key.lower()
    return any(part in lowered for part in _SECRET_KEYS)


def _from_url(value: str) -> Iterator[str]:
    try:
        parts = urlsplit(value)
    except ValueError:
        return
    if "@" not in parts.netloc:
        return
    user = unquote(parts.username or "")
    password = unquote(parts.password or "")
    yield password
    yield basic_credentials(user, password)
    yield parts.netloc.rsplit("@", 1)[0]


def _walk(value: Any, secret: bool) -> Iterator[str]:
    if isinstance(value, SecretStr):
        text = value.get_secret_value()
        yield text
        if "://" in text:
            yield from _from_url(text)  # a DSN's password, on its own too
    elif isinstance(value, BaseModel):
        yield from _walk(dict(value), secret)
    elif isinstance(value, str):
        if secret:
            yield value
        if "://" in value:
            yield from _from_url(value)
    elif isinstance(value, dict):
        user, password = value.get("username"), value.get("password")
        if isinstance(user, str) and isinstance(password, str) and password:
            yield basic_credentials(user, password)  # what a client sends made of them
        for key, item in value.items():
            # Every header value may be a credential (an API key, a Bearer token).
            yield from _walk(item, secret or _is_secret_key(str(key)) or key == "headers")
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _walk(item, secret)


def secrets_of(config: Config) -> list[str]:
    """The secret values in ``config`` and those they imply."""
    found: list[str] = []
    for route in config.routes:
        auth = route.auth
        found += _walk(dict(auth), False)
        username, password = getattr(auth, "username", None), getattr(auth, "password", None)
        if isinstance(username, str) and isinstance(password, SecretStr):
            found.append(basic_credentials(username, password.get_secret_value()))
    for options in config.sinks.values():
        found += _walk(options, False)
    for poller in config.pollers:
        found += _walk(poller.settings, False)  # API keys, client secrets, tickets
    found += _walk(config.journal, False)  # a database URL's password, where there is one
    return [value for value in found if value]


def register_config_secrets(config: Config) -> None:
    SECRETS.add(*secrets_of(config))
