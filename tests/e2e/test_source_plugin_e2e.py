"""A third-party source end to end: ``examples/hookdock-example-source`` installed for real
(``pip install --no-deps --target``, as the example sink is), its ``SourceContract`` tests run
against the installed copy, and real deliveries sent to it through ``hookdock serve``."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    delivery_id_from,
    make_config,
    run_cli,
    run_hookdock,
)
from tests.e2e.test_plugins_e2e import _builds_wheels_offline, _env_without_hookdock

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hookdock-example-source"
TOKEN = "uptime-" + uuid.uuid4().hex
PIP_TIMEOUT = 300.0


@pytest.fixture(scope="session")
def source_install(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(site folder the example is installed into, copy of its source with its tests)."""
    work = tmp_path_factory.mktemp("example-source")
    source = work / "source"
    shutil.copytree(
        EXAMPLE,
        source,
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache"),
    )
    site = work / "site"
    argv = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-input"]
    argv += ["--disable-pip-version-check", "--target", str(site), str(source)]
    if _builds_wheels_offline():
        argv.insert(4, "--no-build-isolation")
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=PIP_TIMEOUT, check=False, cwd=work
    )
    assert result.returncode == 0, f"pip install failed:\n{result.stdout}\n{result.stderr}"
    assert (site / "hookdock_example_source-0.1.0.dist-info").is_dir()
    return site, source


def uptime_config(folder: Path, **settings: object) -> str:
    route = {
        "name": "uptime",
        "source": "example.uptime",
        "auth": {"token": TOKEN},
        "settings": settings,
        "sinks": ["out"],
    }
    template = "{vendor}/{attributes.check_id}/{kind}-{event_id}.json"
    sinks = {"out": {"type": "local", "root": str(folder / "out"), "path_template": template}}
    return make_config(folder, routes=[route], sinks=sinks)


def test_the_examples_contract_tests_pass_against_the_installed_package(
    source_install: tuple[Path, Path], tmp_path: Path
) -> None:
    site, source = source_install
    project = tmp_path / "example-tests"
    shutil.copytree(source / "tests", project / "tests")
    shutil.copy(source / "pyproject.toml", project / "pyproject.toml")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "tests"],
        cwd=project,
        env={**_env_without_hookdock(), "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "TestUptimeSourceContract::test_admit_names_every_attempt_the_same PASSED" in output
    assert "TestUptimeSourceContract::test_refusals_are_one_short_plain_line PASSED" in output
    assert re.search(r"\b\d+ passed\b", output) and " failed" not in output


def test_the_installed_source_takes_real_deliveries(
    source_install: tuple[Path, Path], tmp_path: Path
) -> None:
    site, _ = source_install
    config = uptime_config(tmp_path, down_only=True)
    body = json.dumps({"id": "evt_e2e_1", "status": "down", "check": {"id": "chk-7"}}).encode()
    headers = {"content-type": "application/json", "x-uptime-token": TOKEN}
    with (
        run_hookdock(tmp_path, config, env={"PYTHONPATH": str(site)}) as server,
        httpx.Client(base_url=server.url, timeout=15.0, trust_env=False) as client,
    ):
        first = client.post("/hooks/uptime", content=body, headers=headers)
        assert first.status_code == 200, first.text
        delivery_id = delivery_id_from(first.text)
        retry = client.post(
            "/hooks/uptime", content=body, headers={**headers, "x-uptime-attempt": "2"}
        )
        assert retry.text == f"hookdock: already accepted as {delivery_id}\n"
        path = tmp_path / "out" / "uptime" / "chk-7" / f"check.down-{delivery_id}-0.json"
        event = server.wait_export(path, delivery_id)
        assert event["attributes"] == {"check_id": "chk-7", "check_name": None, "attempt": None}
        # The source's default scheme: the header token, checked before the source runs.
        wrong = client.post(
            "/hooks/uptime", content=body, headers={**headers, "x-uptime-token": "nope"}
        )
        assert (wrong.status_code, wrong.text) == (401, "hookdock: credentials do not match\n")
        odd = json.dumps({"id": "evt_e2e_2", "status": "sideways"}).encode()
        refused = client.post("/hooks/uptime", content=odd, headers=headers)
        assert (refused.status_code, refused.text) == (
            422,
            "hookdock: status must be down or up\n",
        )
        assert "loaded source plugin 'example.uptime'" in server.stderr_text()
        assert "hookdock-example-source 0.1.0" in server.stderr_text()
        assert TOKEN not in server.stderr_text()


def test_bad_settings_stop_check_naming_the_route_and_the_key(
    source_install: tuple[Path, Path], tmp_path: Path
) -> None:
    site, _ = source_install
    path = tmp_path / "hookdock.toml"
    path.write_text(uptime_config(tmp_path, down_onyl=True), encoding="utf-8")
    result = run_cli("check", config=path, env={"PYTHONPATH": str(site)})
    assert result.returncode == 2, result.stderr
    assert (
        "routes[0].settings.down_onyl: unknown key (check its spelling) (source example.uptime)"
        in result.stderr
    )
