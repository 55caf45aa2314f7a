"""The soft limit of open files is raised to the hard one when a process starts."""

from __future__ import annotations

import resource
import subprocess
import sys
from collections.abc import Iterator

import pytest

from receiver.open_files import CAP, raise_open_files_limit


@pytest.fixture
def limits() -> Iterator[tuple[int, int]]:
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield before
    resource.setrlimit(resource.RLIMIT_NOFILE, before)


def test_the_soft_limit_is_raised_to_the_hard_one(limits: tuple[int, int]) -> None:
    _, hard = limits
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    wanted = CAP if hard == resource.RLIM_INFINITY else min(hard, CAP)
    assert raise_open_files_limit() == wanted
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (wanted, hard)


def test_a_low_hard_limit_is_kept_and_said() -> None:
    # In a child: a hard limit once lowered cannot be raised again without privileges.
    code = (
        "import logging, resource; logging.basicConfig();"
        " from receiver.open_files import raise_open_files_limit;"
        " print(raise_open_files_limit(), resource.getrlimit(resource.RLIMIT_NOFILE))"
    )
    child = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (200, 300)),
    )
    assert child.stdout.split() == ["300", "(300,", "300)"]
    assert "may open at most 300 files" in child.stderr
