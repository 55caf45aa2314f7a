"""``[admin]``: tokens of its own (never a webhook's), strict keys, secrets never shown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from receiver.config import parse_config
from receiver.errors import ConfigError

WEBHOOK_TOKEN = "a-very-long-url-token-0123456789"
ADMIN_TOKEN = "adm-0123456789abcdefghijklmnop"


def _config(tmp_path: Path, admin: dict[str, Any]) -> dict[str, Any]:
    return {
        "admin": admin,
        "routes": [
            {
                "name": "r",
                "source": "smartdocumentor.text_document",
                "auth": {"type": "url-token", "token": "${T}"},
                "sinks": ["s"],
            }
        ],
        "sinks": {"s": {"type": "local", "root": str(tmp_path)}},
    }


def _error(tmp_path: Path, admin: dict[str, Any], env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(_config(tmp_path, admin), base_dir=tmp_path, env={"T": WEBHOOK_TOKEN, **env})
    return str(caught.value)


def test_tokens_come_from_the_environment(tmp_path: Path) -> None:
    config = parse_config(
        _config(tmp_path, {"tokens": ["${A}"], "port": 9001}),
        base_dir=tmp_path,
        env={"T": WEBHOOK_TOKEN, "A": ADMIN_TOKEN},
    )
    assert [t.get_secret_value() for t in config.admin.tokens] == [ADMIN_TOKEN]
    assert (config.admin.host, config.admin.port) == ("127.0.0.1", 9001)
    assert ADMIN_TOKEN not in repr(config)


def test_a_webhook_token_is_never_an_admin_token(tmp_path: Path) -> None:
    message = _error(tmp_path, {"tokens": ["${A}"]}, {"A": WEBHOOK_TOKEN})
    assert "admin.tokens[0]: the same as the token of route 'r'" in message
    assert WEBHOOK_TOKEN not in message


def test_short_tokens_and_typos_are_named(tmp_path: Path) -> None:
    message = _error(tmp_path, {"tokens": ["${A}"], "prot": 1}, {"A": "short"})
    assert "admin.tokens[0]: an admin token needs 24 characters or more" in message
    assert "admin.prot: unknown key (check its spelling)" in message
    assert "short" not in message
