"""Configuration loading: strict keys, ${ENV} secrets, relative paths, references."""

from __future__ import annotations

from pathlib import Path

import pytest

from receiver.config import load_config, parse_config
from receiver.defaults import default_config
from receiver.errors import ConfigError
from receiver.journal import SqliteConfig
from receiver.plugins import build_sinks, build_sources

TOKEN = "a-very-long-url-token-0123456789"

GOOD = """
[journal]
path = "data/hookdock.db"

[[routes]]
name = "sd-invoices"
source = "smartdocumentor.text_document"
auth = { type = "url-token", token = "${SD_TOKEN}" }
sinks = ["archive"]

[sinks.archive]
type = "local"
root = "exports"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hookdock.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load_all(path: Path) -> None:
    config, base = load_config(path, env={"SD_TOKEN": TOKEN})
    build_sources(config)
    build_sinks(config, base)


def error_of(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_all(path)
    return str(info.value)


def test_a_good_file_loads_with_paths_from_its_folder(tmp_path: Path) -> None:
    config, base = load_config(write(tmp_path, GOOD), env={"SD_TOKEN": TOKEN})
    assert isinstance(config.journal, SqliteConfig)
    assert config.journal.path == tmp_path / "data/hookdock.db"
    route = config.routes[0]
    assert route.max_body_bytes == 1024 * 1024
    assert route.auth.type == "url-token"
    assert TOKEN not in repr(config)
    sinks = build_sinks(config, base)
    assert sinks["archive"].root == (tmp_path / "exports").resolve()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('path = "data/hookdock.db"', 'pth = "x"'), "journal.pth: unknown key"),
        (('name = "sd-invoices"', 'name = "bad name!"'), "routes[0].name"),
        (('sinks = ["archive"]', 'sinks = ["archiv"]'), "no sink named 'archiv'"),
        (('type = "local"', 'type = "lcoal"'), "sinks.archive.type: unknown sink type 'lcoal'"),
        (('root = "exports"', 'rot = "exports"'), "sinks.archive.rot: unknown key"),
        (
            ('source = "smartdocumentor.text_document"', 'source = "smartdoc"'),
            "routes[0].source: unknown source 'smartdoc'",
        ),
        (('type = "url-token"', 'type = "tokn"'), "routes[0].auth"),
        (("[journal]", "[jornal]"), "jornal: unknown key"),
    ],
)
def test_mistakes_name_the_key(tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    message = error_of(tmp_path, GOOD.replace(*change))
    assert expected in message
    assert TOKEN not in message


def test_missing_env_reference_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"routes\[0\].auth.token: environment variable SD_TOKEN"):
        load_config(write(tmp_path, GOOD), env={})


def test_secret_never_in_errors(tmp_path: Path) -> None:
    text = GOOD.replace('token = "${SD_TOKEN}"', 'token = "${SD_TOKEN}", tokn = "${SD_TOKEN}"')
    message = error_of(tmp_path, text)
    assert "tokn" in message
    assert TOKEN not in message


def test_duplicate_route_names(tmp_path: Path) -> None:
    route = GOOD[GOOD.index("[[routes]]") : GOOD.index("[sinks.archive]")]
    message = error_of(tmp_path, GOOD + route)
    assert "route 'sd-invoices' is defined twice" in message


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    assert "not valid TOML" in error_of(tmp_path, "[journal")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml")


def test_parse_accepts_plain_dicts(tmp_path: Path) -> None:
    config = parse_config(
        {
            "routes": [
                {
                    "name": "x",
                    "source": "smartdocumentor.transcript",
                    "auth": {"type": "none"},
                    "sinks": ["s"],
                }
            ],
            "sinks": {"s": {"type": "local", "root": "out"}},
        },
        base_dir=tmp_path,
        env={},
    )
    assert config.route("x") is not None and config.route("y") is None


def test_embedded_defaults_keep_one_token(tmp_path: Path) -> None:
    data = tmp_path / "hookdock-data"
    config, _ = default_config(data)
    again, _ = default_config(data)
    assert [r.name for r in config.routes] == [
        "sd-text-documents",
        "sd-transcripts",
        "sd-transcript-files",
        "sd-anonymization-files",
    ]
    token_file = data / "url-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    token = token_file.read_text().strip()
    assert len(token) >= 40
    for route in (*config.routes, *again.routes):
        assert route.auth.type == "url-token"
        assert route.auth.token.get_secret_value() == token


def test_routes_fetch_exported_files_by_default_with_a_2_gib_cap(tmp_path: Path) -> None:
    config, _ = load_config(write(tmp_path, GOOD), env={"SD_TOKEN": TOKEN})
    files = config.routes[0].files
    assert files.fetch == ("exported",)
    assert files.max_bytes == 2 * 1024**3
    assert (files.allow_networks, files.allow_hosts) == ((), ())
    assert (files.connect_seconds, files.read_seconds, files.total_seconds) == (10, 60, 3600)


def test_the_files_table_names_each_bad_key(tmp_path: Path) -> None:
    text = GOOD.replace(
        'sinks = ["archive"]',
        'sinks = ["archive"]\n'
        'files = { fetch = ["Exported!"], max_bytes = 0, max_redirects = 5,'
        ' allow_networks = ["10.0.0.1/8"], allow_hosts = ["https://x.example"], timeout = 3 }',
    )
    message = error_of(tmp_path, text)
    assert "routes[0].files.fetch[0]: String should match pattern" in message
    assert "routes[0].files.max_bytes: Input should be greater than or equal to 1" in message
    assert "routes[0].files.max_redirects: Input should be less than or equal to 3" in message
    assert "routes[0].files.allow_networks[0]: must be an address or a network" in message
    assert "routes[0].files.allow_hosts[0]: 'https://x.example': write the host only" in message
    assert "routes[0].files.timeout: unknown key (check its spelling)" in message
