"""Plugins end to end: a third-party sink installed for real, and broken plugins in real processes.

The example package (``examples/hookdock-example-sink``) is installed once per session with
``pip install --no-deps --target <tmp>`` and put on the children's ``PYTHONPATH``.  When this
venv's setuptools can build a wheel by itself (setuptools >= 70.1, or the ``wheel`` package is
there) the install uses ``--no-build-isolation`` and needs no index; otherwise pip builds in
isolation and fetches setuptools from the package index.  The example is copied first, so the
build's ``build/`` and ``*.egg-info`` never land in the work tree.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    CREDS,
    delivery_id_from,
    make_config,
    route,
    run_cli,
    run_hookdock,
    wait_until,
)
from tests.sd_payloads import load

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hookdock-example-sink"
ROUTE = "sd-lines"
PIP_TIMEOUT = 300.0
EXIT_TIMEOUT = 20.0

BROKEN_MODULE = "hd_e2e_broken_plugin"
BROKEN_DIST = "hookdock-broken-e2e"
BROKEN_VERSION = "6.6.6"


@pytest.fixture(scope="session")
def example_install(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(site folder the example is installed into, copy of its source with its tests)."""
    work = tmp_path_factory.mktemp("example-sink")
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
    assert (site / "hookdock_example_sink-0.1.0.dist-info").is_dir()
    assert (site / "hookdock_example_sink" / "__init__.py").is_file()
    return site, source


def _builds_wheels_offline() -> bool:
    """Whether this venv's setuptools can build a wheel without pip fetching anything."""
    if importlib.util.find_spec("setuptools") is None:
        return False
    if importlib.util.find_spec("wheel") is not None:
        return True
    numbers = re.findall(r"\d+", metadata.version("setuptools"))[:2]
    return tuple(int(n) for n in numbers) >= (70, 1)


@pytest.fixture
def broken_site(tmp_path: Path) -> Path:
    """A 'distribution' whose sink entry point imports a module that raises."""
    site = tmp_path / "broken-site"
    site.mkdir()
    (site / f"{BROKEN_MODULE}.py").write_text(
        "raise RuntimeError('broken on purpose')\n", encoding="utf-8"
    )
    dist = site / f"{BROKEN_DIST.replace('-', '_')}-{BROKEN_VERSION}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {BROKEN_DIST}\nVersion: {BROKEN_VERSION}\n",
        encoding="utf-8",
    )
    (dist / "entry_points.txt").write_text(
        f"[hookdock.sinks]\nbroken = {BROKEN_MODULE}:Sink\n", encoding="utf-8"
    )
    return site


def lines_config(folder: Path, **sink: Any) -> str:
    """The test config with one more route, ``ROUTE``, that sends to the sink ``lines``."""
    return make_config(
        folder,
        sinks={"lines": sink},
        extra_routes=[
            route(ROUTE, {"type": "url-token", "token": CREDS.url_token}, sinks=["lines"])
        ],
    )


def records(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# --------------------------------------------------------------------------- the example sink


def test_installed_example_sink_receives_a_real_delivery(
    example_install: tuple[Path, Path], tmp_path: Path
) -> None:
    site, _ = example_install
    out = tmp_path / "lines" / "events.jsonl"
    config = lines_config(tmp_path, type="jsonl", path=str(out))
    body = load("text_document", "baseline")
    task_id = json.loads(body)["taskId"]
    with run_hookdock(tmp_path, config, env={"PYTHONPATH": str(site)}) as server:
        url = f"{server.url}/hooks/{ROUTE}/{CREDS.url_token}"
        headers = {"content-type": "application/json"}
        response = httpx.post(url, content=body, headers=headers, trust_env=False)
        assert response.status_code == 200, response.text
        delivery_id = delivery_id_from(response.text)

        def landed() -> list[dict[str, Any]]:
            return [r for r in records(out) if r.get("delivery_id") == delivery_id]

        found = wait_until(landed, 15.0, message=lambda: f"no line in {out}\n{server.describe()}")
        again = httpx.post(url, content=body, headers=headers, trust_env=False)
        assert again.status_code == 200 and delivery_id_from(again.text) == delivery_id
        stderr = server.stderr_text()
    assert len(found) == 1
    assert found[0]["event_id"] == f"{delivery_id}-0"
    assert (found[0]["kind"], found[0]["task_id"], found[0]["route"]) == (
        "text_document",
        task_id,
        ROUTE,
    )
    assert len(records(out)) == 1
    assert (
        "loaded sink plugin 'jsonl' (hookdock_example_sink:JsonlSink, "
        "from hookdock-example-sink 0.1.0)"
    ) in stderr


def test_example_contract_tests_pass_against_the_installed_package(
    example_install: tuple[Path, Path], tmp_path: Path
) -> None:
    site, source = example_install
    # Only the tests and their pytest settings: the installed copy is what is under test.
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
    assert "TestJsonlSinkContract::test_the_same_event_at_once_is_one_copy PASSED" in output
    assert "TestJsonlSinkContract::test_is_idempotent_on_the_event_id PASSED" in output
    assert re.search(r"\b\d+ passed\b", output) and " failed" not in output


def _env_without_hookdock() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("HOOKDOCK_", "PYTEST_"))}


def test_plugins_command_lists_the_example_with_its_distribution(
    example_install: tuple[Path, Path],
) -> None:
    site, _ = example_install
    env = {"PYTHONPATH": str(site)}
    listed = run_cli("plugins", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = {(r["group"], r["name"]): r for r in json.loads(listed.stdout)}
    assert rows[("hookdock.sinks", "jsonl")] == {
        "name": "jsonl",
        "group": "hookdock.sinks",
        "distribution": "hookdock-example-sink",
        "version": "0.1.0",
        "value": "hookdock_example_sink:JsonlSink",
    }
    table = run_cli("plugins", env=env)
    assert table.returncode == 0, table.stderr
    line = next(x for x in table.stdout.splitlines() if x.startswith("jsonl "))
    assert line.split() == [
        "jsonl",
        "hookdock.sinks",
        "hookdock-example-sink",
        "0.1.0",
        "hookdock_example_sink:JsonlSink",
    ]
    checked = run_cli("plugins", "--check", "--json", env=env)
    rows = {(r["group"], r["name"]): r for r in json.loads(checked.stdout)}
    assert rows[("hookdock.sinks", "jsonl")]["status"] == "ok"
    assert checked.returncode == (0 if all(r["status"] == "ok" for r in rows.values()) else 1)


# --------------------------------------------------------------------------- broken plugins


def test_a_broken_plugin_the_config_does_not_name_cannot_stop_the_service(
    broken_site: Path, tmp_path: Path
) -> None:
    env = {"PYTHONPATH": str(broken_site)}
    with run_hookdock(tmp_path / "serve", make_config(tmp_path), env=env) as server:
        ready = httpx.get(f"{server.url}/readyz", timeout=5.0, trust_env=False)
        assert ready.status_code == 200
    assert "broken on purpose" not in server.stderr_text()

    listed = run_cli("plugins", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = {(r["group"], r["name"]): r for r in json.loads(listed.stdout)}
    assert rows[("hookdock.sinks", "broken")]["distribution"] == BROKEN_DIST

    checked = run_cli("plugins", "--check", env=env)
    assert checked.returncode == 1
    line = next(x for x in checked.stdout.splitlines() if x.startswith("broken "))
    assert f"ERROR cannot import sink plugin 'broken' from {BROKEN_DIST} {BROKEN_VERSION}" in line
    assert "RuntimeError: broken on purpose" in line


def _fails_to_start(folder: Path, config: str, env: dict[str, str]) -> tuple[int, str, str]:
    """``check`` must exit 2 and ``serve`` must exit non-zero without ever answering.

    Returns serve's exit code, check's stderr and serve's stderr.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "check.toml"
    path.write_text(config, encoding="utf-8")
    check = run_cli("check", config=path, env=env)
    assert check.returncode == 2, f"check exited {check.returncode}:\n{check.stderr}"
    with run_hookdock(folder / "serve", config, env=env, wait_ready=False) as server:
        code = server.wait(EXIT_TIMEOUT)
        assert code != 0, server.describe()
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{server.url}/readyz", timeout=2.0, trust_env=False)
        serve_stderr = server.stderr_text()
    return code, check.stderr, serve_stderr


@pytest.fixture
def both_sites(example_install: tuple[Path, Path], broken_site: Path) -> dict[str, str]:
    """The example and the broken distribution, both on the children's path."""
    return {"PYTHONPATH": os.pathsep.join([str(example_install[0]), str(broken_site)])}


@pytest.mark.parametrize(
    ("sink", "expected"),
    [
        (
            {"type": "broken"},
            [
                f"sinks.lines.type: cannot import sink plugin 'broken' from {BROKEN_DIST} "
                f"{BROKEN_VERSION} ({BROKEN_MODULE}:Sink): RuntimeError: broken on purpose"
            ],
        ),
        (
            {"type": "jsonx", "path": "x.jsonl"},
            ["sinks.lines.type: unknown sink type 'jsonx' (available: ", "jsonl"],
        ),
        (
            {"type": "jsonl", "pth": "x.jsonl"},
            [
                "sinks.lines.path: Field required (plugin jsonl)",
                "sinks.lines.pth: unknown key (check its spelling) (plugin jsonl)",
            ],
        ),
    ],
    ids=["import-raises", "unknown-name", "bad-config-key"],
)
def test_a_named_plugin_that_cannot_load_stops_check_and_serve(
    both_sites: dict[str, str], tmp_path: Path, sink: dict[str, str], expected: list[str]
) -> None:
    _, check_err, serve_err = _fails_to_start(tmp_path, lines_config(tmp_path, **sink), both_sites)
    for text in (check_err, serve_err):
        assert "invalid configuration" in text
        for part in expected:
            assert part in text, text
        assert "Traceback" not in text


def test_check_reports_every_plugin_problem_at_once(
    both_sites: dict[str, str], tmp_path: Path
) -> None:
    config = make_config(
        tmp_path,
        sinks={
            "one": {"type": "broken"},
            "two": {"type": "jsonx"},
            "three": {"type": "jsonl", "pth": "x"},
        },
        extra_routes=[
            route(
                ROUTE,
                {"type": "url-token", "token": CREDS.url_token},
                sinks=["one", "two", "three"],
                source="smartdocumentor.nope",
            )
        ],
    )
    path = tmp_path / "check.toml"
    path.write_text(config, encoding="utf-8")
    check = run_cli("check", config=path, env=both_sites)
    assert check.returncode == 2
    for where in ("sinks.one.type", "sinks.two.type", "sinks.three.path", "sinks.three.pth"):
        assert f"\n  {where}: " in check.stderr, check.stderr
    assert "source: unknown source 'smartdocumentor.nope'" in check.stderr
