"""``hookdock check`` names every problem of a configuration in one run: each missing
variable, each unknown key, each bad value, each sink a route names that is not defined."""

from __future__ import annotations

from pathlib import Path

import pytest

from receiver.cli import main

MANY_TYPOS = """\
[servr]
port = 1

[journal]
path = "j.db"
busy_timout_ms = 5

[dispatcher]
concurency = 3

[[routes]]
name = "r"
source = "smartdocumentor.text_document"
auth = { type = "url-token", token = "${HOOKDOCK_TEST_UNSET_A}" }
sinks = ["s", "nope"]

[[routes]]
name = "r2"
source = "smartdocumentor.text_document"
auth = { type = "url-token", token = "${HOOKDOCK_TEST_UNSET_B}" }
sinks = ["s"]
max_body_bytes = -1

[sinks.s]
type = "local"
root = "x"
"""


def test_check_names_every_problem_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HOOKDOCK_TEST_UNSET_A", raising=False)
    monkeypatch.delenv("HOOKDOCK_TEST_UNSET_B", raising=False)
    config = tmp_path / "bad.toml"
    config.write_text(MANY_TYPOS, encoding="utf-8")
    assert main(["check", "--config", str(config)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"hookdock: invalid configuration in {config}:\n"
        "  routes[0].auth.token: environment variable HOOKDOCK_TEST_UNSET_A is not set\n"
        "  routes[1].auth.token: environment variable HOOKDOCK_TEST_UNSET_B is not set\n"
        "  journal.busy_timout_ms: unknown key (check its spelling)\n"
        "  dispatcher.concurency: unknown key (check its spelling)\n"
        "  routes[1].max_body_bytes: Input should be greater than or equal to 1\n"
        "  servr: unknown key (check its spelling)\n"
        "  routes[0].sinks: no sink named 'nope' (defined: s)\n"
    )


def test_every_bad_reference_once_the_rest_is_valid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "refs.toml"
    config.write_text(
        '[[routes]]\nname = "r"\nsource = "smartdocumentor.text_document"\n'
        'auth = { type = "none" }\nsinks = ["a", "b"]\n'
        'rules = [{ kind = "x", sinks = ["c"] }]\n'
        '[[routes]]\nname = "r"\nsource = "smartdocumentor.text_document"\n'
        'auth = { type = "none" }\nsinks = ["s"]\n'
        f'[sinks.s]\ntype = "local"\nroot = "{tmp_path}"\n',
        encoding="utf-8",
    )
    assert main(["check", "--config", str(config)]) == 2
    assert capsys.readouterr().err.splitlines()[1:] == [
        "  routes[0].sinks: no sink named 'a' (defined: s)",
        "  routes[0].sinks: no sink named 'b' (defined: s)",
        "  routes[0].rules[0].sinks: no sink named 'c' (defined: s)",
        "  routes[1].name: route 'r' is defined twice",
    ]
