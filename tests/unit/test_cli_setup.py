"""``hookdock secret`` and ``hookdock urls``."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from handlers.sinks.http import HttpSinkConfig
from receiver.cli import main
from receiver.config import parse_config
from receiver.defaults import DEFAULT_ROUTES, load_or_create_token

TOKEN = "t0ken-abcdefghijklmnopqrstuvwxyz"


def test_secret_makes_what_the_config_accepts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["secret"]) == 0
    made = capsys.readouterr().out.strip()
    assert made.startswith("whsec_") and len(base64.b64decode(made[6:])) == 32
    assert main(["secret"]) == 0
    assert capsys.readouterr().out.strip() != made
    HttpSinkConfig.model_validate({"url": "https://example.com/in", "secret": made})
    assert main(["secret", "token"]) == 0
    token = capsys.readouterr().out.strip()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)
    config = parse_config(
        {
            "admin": {"tokens": [token + "-admin"]},
            "routes": [
                {
                    "name": "r",
                    "source": "smartdocumentor.text_document",
                    "auth": {"type": "url-token", "token": token},
                    "sinks": ["s"],
                }
            ],
            "sinks": {"s": {"type": "local", "root": str(tmp_path)}},
        },
        base_dir=tmp_path,
    )
    assert config.routes[0].name == "r"


def test_urls_masks_tokens_unless_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "hookdock.toml"
    config.write_text(
        '[server]\nport = 9999\n[[routes]]\nname = "sd"\nsource = "smartdocumentor.text_document"\n'
        f'auth = {{ type = "url-token", token = "{TOKEN}" }}\nsinks = ["s"]\n'
        '[[routes]]\nname = "open"\nsource = "smartdocumentor.transcript"\n'
        'auth = { type = "none" }\nsinks = ["s"]\n'
        f'[sinks.s]\ntype = "local"\nroot = "{tmp_path}"\n',
        encoding="utf-8",
    )
    assert main(["urls", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert TOKEN not in out
    assert out.splitlines() == [
        "sd    url-token  http://localhost:9999/hooks/sd/t0ke…********",
        "open  none       http://localhost:9999/hooks/open",
        "(tokens masked: --show prints them; keep them secret)",
    ]
    argv = ["urls", "--show", "--host", "hooks.example.com", "--port", "443"]
    assert main([*argv, "--config", str(config)]) == 0
    assert f"http://hooks.example.com:443/hooks/sd/{TOKEN}" in capsys.readouterr().out


def test_urls_of_the_embedded_defaults_name_their_routes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    # From the wrong folder nothing is made up (nor made): it says where it looked.
    assert main(["urls", "--data-dir", str(data)]) == 1
    assert capsys.readouterr().err == (
        f"hookdock: there is no URL token at {data.resolve()}/url-token: run `hookdock serve`"
        " once to make one, or pass --data-dir or --config\n"
    )
    assert not data.exists()
    load_or_create_token(data)  # what the first `hookdock serve` does
    assert main(["urls", "--data-dir", str(data)]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()[:-1]]
    assert names == list(DEFAULT_ROUTES)
