"""``hookdock plugins --check`` right after a plain install: the S3 sink's optional extra is
absent, which is information, not a failure."""

from __future__ import annotations

import json
import sys

import pytest

from receiver.cli import main


def test_an_absent_optional_extra_is_not_a_failure(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # As if aiobotocore were not installed: importing it raises ModuleNotFoundError.
    # Its submodules too, should an earlier test have imported them (found by their names).
    for name in [n for n in sys.modules if n == "aiobotocore" or n.startswith("aiobotocore.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "aiobotocore", None)
    monkeypatch.delitem(sys.modules, "handlers.sinks.s3", raising=False)

    assert main(["plugins", "--check", "--json"]) == 0
    rows = {
        r["name"]: r for r in json.loads(capsys.readouterr().out) if r["group"].endswith("sinks")
    }
    assert rows["s3"]["status"] == "unavailable"
    assert "pip install 'hookdock[s3]'" in str(rows["s3"]["error"])
    assert rows["local"]["status"] == "ok"

    assert main(["plugins", "--check"]) == 0
    out = capsys.readouterr().out
    [s3] = [line for line in out.splitlines() if line.startswith("s3 ")]
    assert "NOT INSTALLED" in s3 and "ERROR" not in s3
    assert out.splitlines()[-1].endswith("; 1 need an optional extra that is not installed")
