"""The console's templates and static files are package data, so an install from a wheel (not
only an editable one) serves them."""

from __future__ import annotations

import tomllib
from fnmatch import fnmatch
from pathlib import Path

import receiver.console

ROOT = Path(__file__).resolve().parents[2]


def test_every_template_and_static_file_is_package_data() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    globs = pyproject["tool"]["setuptools"]["package-data"]["receiver.console"]
    folder = Path(receiver.console.__file__).parent
    files = sorted(
        path.relative_to(folder).as_posix()
        for sub in ("templates", "static")
        for path in (folder / sub).rglob("*")
        if path.is_file()
    )
    assert "templates/base.html" in files and "static/console.js" in files
    assert [f for f in files if not any(fnmatch(f, glob) for glob in globs)] == []
