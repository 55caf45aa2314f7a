"""Lifecycle end to end: embedded defaults, ``check``, SIGTERM, ``worker``, retries, dead letters.

Each test starts its own processes (the configs differ), always on 127.0.0.1 and a free port.
The tests about what the journal keeps (a worker beside ``serve``, dead letters, retries,
pruning) run on both engines through the ``journal`` fixture.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import stat
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    CREDS,
    SD_ROUTES,
    HookdockProcess,
    delivery_id_from,
    export_path,
    make_config,
    pg_journal_table,
    route,
    run_cli,
    run_hookdock,
    wait_until,
)
from tests.sd_payloads import EXPECTED, KINDS, load

pytestmark = pytest.mark.e2e

JSON = {"content-type": "application/json"}


@pytest.fixture(params=["sqlite", "postgres"])
def journal(request: pytest.FixtureRequest) -> dict[str, Any]:
    """``make_config``'s ``journal=`` overrides: its SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return {}
    dsn: str = request.getfixturevalue("pg_dsn")
    schema: str = request.getfixturevalue("pg_schema")
    return {"path": None, **pg_journal_table(dsn, schema)}


def text_document(task_id: str | None = None, **fields: Any) -> bytes:
    body: dict[str, Any] = {
        "taskId": task_id or str(uuid.uuid4()),
        "workspaceId": "ws-life",
        "taskNumber": 11,
        "displayName": "lifecycle.pdf",
        "chunks": [],
    }
    body.update(fields)
    return json.dumps(body).encode()


def post(url: str, body: bytes) -> httpx.Response:
    return httpx.post(url, content=body, headers=JSON, timeout=10.0, trust_env=False)


def accepted(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    assert response.text.startswith("hookdock: accepted as "), response.text
    return delivery_id_from(response.text)


def sd_url(process: HookdockProcess, kind: str = "text_document") -> str:
    return f"{process.url}/hooks/{SD_ROUTES[kind]}/{CREDS.url_token}"


def full_status(config: Path) -> dict[str, Any]:
    result = run_cli("status", config=config)
    assert result.returncode == 0, result.stderr
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def status(config: Path) -> dict[str, int]:
    """Deliveries by overall state (pending, done, dead)."""
    return {k: v for k, v in full_status(config).items() if k in ("pending", "done", "dead")}


def dead_lines(config: Path) -> list[str]:
    result = run_cli("deliveries", "--state", "dead", config=config)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def exported_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.json")) if root.exists() else []


# --------------------------------------------------------------------------- embedded defaults

_URL_LINE = re.compile(
    r"^\s+smartdocumentor\.(?P<kind>\w+)\s+"
    r"(?P<url>http://localhost:(?P<port>\d+)/hooks/(?P<route>[^/\s]+)/(?P<token>\S+))$",
    re.MULTILINE,
)


def _printed_urls(process: HookdockProcess) -> dict[str, re.Match[str]]:
    def printed() -> str | None:
        out = process.stdout_text()
        return out if "(Use your public host name" in out else None

    text = wait_until(printed, 10.0, message=lambda: f"no URLs printed\n{process.describe()}")
    assert text is not None
    return {m["kind"]: m for m in _URL_LINE.finditer(text)}


def test_embedded_defaults_print_urls_and_keep_the_token(tmp_path: Path) -> None:
    data_dir = tmp_path / "hookdock-data"
    token_file = data_dir / "url-token"
    body = load("text_document", "baseline")
    expected = EXPECTED[("text_document", "baseline")]

    with run_hookdock(tmp_path, None) as server:
        urls = _printed_urls(server)
        assert sorted(urls) == sorted(KINDS)
        token = token_file.read_text(encoding="ascii").strip()
        assert len(token) >= 32
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        for kind, match in urls.items():
            assert match["token"] == token
            assert int(match["port"]) == server.port
            assert match["route"] == SD_ROUTES[kind]

        url = urls["text_document"]["url"].replace("//localhost:", "//127.0.0.1:", 1)
        delivery_id = accepted(post(url, body))
        path = export_path(
            data_dir / "exports",
            kind="text_document",
            task_id=expected["task_id"],
            delivery_id=delivery_id,
            workspace_id=expected["workspace_id"],
        )
        event = server.wait_export(path, delivery_id)
        assert event["payload"] == json.loads(body)
        assert (data_dir / "hookdock.db").is_file()
        assert token not in server.stderr_text()

    with run_hookdock(tmp_path, None) as restarted:
        again = _printed_urls(restarted)
        assert {k: m["token"] for k, m in again.items()} == dict.fromkeys(KINDS, token)
        assert token_file.read_text(encoding="ascii").strip() == token
        # The journal survived the restart too: the same body is a known delivery.
        url = again["text_document"]["url"].replace("//localhost:", "//127.0.0.1:", 1)
        response = post(url, body)
        assert response.status_code == 200
        assert response.text == f"hookdock: already accepted as {delivery_id}\n"
        assert token not in restarted.stderr_text()


def test_an_existing_journal_made_world_readable_is_made_the_owners_alone(tmp_path: Path) -> None:
    """A data folder left by an older hookdock (or copied under umask 022) is tightened on the
    next start, once, with one line naming each change."""
    data_dir = tmp_path / "hookdock-data"
    with run_hookdock(tmp_path, None) as first:
        _printed_urls(first)
    journal = data_dir / "hookdock.db"
    loose = [data_dir, journal, data_dir / "url-token"]
    for path in loose:
        path.chmod(0o755 if path.is_dir() else 0o644)
    (data_dir / "hookdock.db-wal").touch(mode=0o644)
    (data_dir / "hookdock.db-wal").chmod(0o664)

    with run_hookdock(tmp_path, None) as second:
        _printed_urls(second)
        modes = {
            p.name: stat.S_IMODE(p.stat().st_mode)
            for p in [*loose, journal.with_name("hookdock.db-wal")]
        }
        assert modes == {
            "hookdock-data": 0o700,
            "hookdock.db": 0o600,
            "url-token": 0o600,
            "hookdock.db-wal": 0o600,
        }
        lines = [line for line in second.stderr_text().splitlines() if "owner's alone now" in line]
        assert len(lines) == 2, second.stderr_text()
        assert "hookdock-data 0755 -> 0700" in lines[0]
        assert "url-token 0644 -> 0600" in lines[0]
        assert f"{journal} 0644 -> 0600" in lines[1]
        assert f"{journal}-wal 0664 -> 0600" in lines[1]

    with run_hookdock(tmp_path, None) as third:
        _printed_urls(third)
        assert "owner's alone now" not in third.stderr_text()


# --------------------------------------------------------------------------- hookdock check

SECRET = "s3cret-" + uuid.uuid4().hex


def _check(tmp_path: Path, config: str) -> tuple[int, str]:
    path = tmp_path / "hookdock.toml"
    path.write_text(config, encoding="utf-8")
    result = run_cli("check", config=path)
    return result.returncode, result.stdout + result.stderr


def test_check_accepts_a_valid_config(tmp_path: Path) -> None:
    code, output = _check(tmp_path, make_config(tmp_path))
    assert code == 0, output
    assert "configuration is valid: 9 routes, 1 sinks" in output


def _sd_route_with(auth: dict[str, Any]) -> dict[str, Any]:
    return {"routes": [route(SD_ROUTES["text_document"], auth)]}


CHECK_CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    # (id, make_config overrides, texts the error output must contain)
    ("typo-key", {"journal": {"pth": "x"}}, ["journal.pth", "unknown key"]),
    (
        "missing-env",
        _sd_route_with({"type": "url-token", "token": "${HOOKDOCK_E2E_UNSET_TOKEN}"}),
        ["routes[0].auth.token", "HOOKDOCK_E2E_UNSET_TOKEN", "is not set"],
    ),
    (
        "unknown-sink-type",
        {"sinks": {"archive": {"type": "s3-bucket"}}},
        ["sinks.archive.type", "unknown sink type 's3-bucket'"],
    ),
    (
        "undefined-sink",
        {"extra_routes": [route("orphan", {"type": "none"}, sinks=["nowhere"])]},
        ["routes[9].sinks", "no sink named 'nowhere'"],
    ),
    (
        "invalid-url-token",
        _sd_route_with({"type": "url-token", "token": f"{SECRET}/with+slash"}),
        ["routes[0].auth.token", "may use only letters, digits"],
    ),
    (
        "invalid-whsec",
        _sd_route_with({"type": "standard-webhooks", "secrets": [f"whsec_!{SECRET}!"]}),
        ["routes[0].auth.secrets[0]", "is not a valid secret"],
    ),
    (
        "typo-next-to-secret",
        _sd_route_with({"type": "basic", "username": "u", "pasword": SECRET}),
        ["routes[0].auth.pasword", "unknown key", "routes[0].auth.password"],
    ),
    (
        "short-secret",
        _sd_route_with({"type": "url-token", "token": SECRET[:12]}),
        ["routes[0].auth.token", "at least 16 characters"],
    ),
]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [case[1:] for case in CHECK_CASES],
    ids=[case[0] for case in CHECK_CASES],
)
def test_check_names_the_problem_and_never_the_secret(
    tmp_path: Path, overrides: dict[str, Any], expected: list[str]
) -> None:
    code, output = _check(tmp_path, make_config(tmp_path, **overrides))
    assert code != 0
    for text in expected:
        assert text in output, output
    assert "Traceback" not in output
    assert SECRET[:12] not in output
    for secret in CREDS.all():
        assert secret not in output


def test_check_names_every_problem_in_one_run_the_sink_plugins_too(tmp_path: Path) -> None:
    """A missing variable, a typo and a bad value in the config, and a weak signing secret
    the HTTP sink plugin refuses: one run names all of them."""
    config = make_config(
        tmp_path,
        server={"prot": 8080},
        extra_routes=[
            route("extra", {"type": "url-token", "token": "${HOOKDOCK_E2E_UNSET_TOKEN}"})
        ],
        sinks={
            "hook": {"type": "http", "url": "https://example.com/in", "secret": "hunter2"},
            "later": {"type": "http", "url": "${HOOKDOCK_E2E_UNSET_URL}", "sign": False},
        },
        dispatcher={"concurrency": 0},
    )
    code, output = _check(tmp_path, config)
    assert code == 2
    lines = output.splitlines()
    assert lines[0] == f"hookdock: invalid configuration in {tmp_path / 'hookdock.toml'}:"
    assert sorted(lines[1:]) == sorted(
        [
            "  routes[9].auth.token: environment variable HOOKDOCK_E2E_UNSET_TOKEN is not set",
            "  sinks.later.url: environment variable HOOKDOCK_E2E_UNSET_URL is not set",
            "  dispatcher.concurrency: Input should be greater than or equal to 1",
            "  server.prot: unknown key (check its spelling)",
            "  sinks.hook.secret: is too weak: expected 'whsec_' and the base64 of 24 random"
            " bytes or more (make one with `hookdock secret`) (plugin http)",
        ]
    )
    assert "hunter2" not in output


# --------------------------------------------------------------------------- SIGTERM


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def test_sigterm_drains_then_exits_within_grace(tmp_path: Path) -> None:
    drain, grace = 2.0, 5.0
    config = make_config(tmp_path, server={"drain_seconds": drain, "grace_seconds": grace})
    with run_hookdock(tmp_path, config) as server:
        port = server.port
        assert port is not None
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)

        def not_ready() -> httpx.Response | None:
            # A transport error here fails the test: the listener must stay open while draining.
            response = httpx.get(f"{server.url}/readyz", timeout=2.0, trust_env=False)
            return response if response.status_code == 503 else None

        response = wait_until(not_ready, drain, 0.02, "/readyz did not turn 503 after SIGTERM")
        assert response is not None
        assert response.text == "hookdock: shutting down\n"
        assert time.monotonic() - started < drain
        # Still draining: the listener is open and liveness is fine.
        assert httpx.get(f"{server.url}/healthz", timeout=2.0, trust_env=False).status_code == 200

        wait_until(lambda: not _listening(port), grace + 3.0, 0.05, "the listener never closed")
        assert time.monotonic() - started >= drain * 0.9
        code = server.wait(timeout=max(0.1, grace + 3.0 - (time.monotonic() - started)))
        assert time.monotonic() - started < grace + 3.0
        assert code == 0, server.describe()  # a clean shutdown exits 0
        assert "Traceback" not in server.stderr_text()


# --------------------------------------------------------------------------- hookdock worker


def test_worker_process_delivers_what_serve_journaled(
    tmp_path: Path, journal: dict[str, Any]
) -> None:
    config = make_config(tmp_path, journal=journal, dispatcher={"enabled": False})
    exports = tmp_path / "exports"
    body = text_document()
    with run_hookdock(tmp_path, config) as server:
        assert server.config_path is not None
        delivery_id = accepted(post(sd_url(server), body))
        assert status(server.config_path) == {"pending": 1, "done": 0, "dead": 0}
        assert exported_files(exports) == []

        path = export_path(
            exports,
            kind="text_document",
            task_id=json.loads(body)["taskId"],
            delivery_id=delivery_id,
            workspace_id="ws-life",
        )
        with run_hookdock(tmp_path, config, command="worker") as worker:
            event = worker.wait_export(path, delivery_id)
            assert event["payload"] == json.loads(body)
        assert worker.proc is not None and worker.proc.returncode == 0, worker.describe()
        assert exported_files(exports) == [path]
        assert status(server.config_path) == {"pending": 0, "done": 1, "dead": 0}

        # Retention: once older than the cut-off, the delivered one is pruned, export kept.
        def pruned() -> bool:
            result = run_cli("prune", "--older-than-days", "0.00001", config=server.config_path)
            assert result.returncode == 0, result.stderr
            return result.stdout.startswith("deleted 1 ")

        wait_until(pruned, 10.0, 0.2, "the delivered delivery was never pruned")
        assert status(server.config_path) == {"pending": 0, "done": 0, "dead": 0}
        assert exported_files(exports) == [path]
        bad = run_cli("prune", "--older-than-days", "0", config=server.config_path)
        assert bad.returncode == 2 and "must be more than 0" in bad.stderr


# --------------------------------------------------------------------------- retries, dead letters


def _parse_delivery_line(line: str) -> dict[str, str]:
    delivery_id, state, attempts, _date, _time, route_name, *error = line.split(maxsplit=6)
    return {
        "id": delivery_id,
        "state": state,
        "attempts": attempts,
        "route": route_name,
        "error": error[0] if error else "",
    }


def _wait_dead_letter(server: HookdockProcess, delivery_id: str) -> str:
    """The reason the server logged when it dead-lettered ``delivery_id``."""
    reason = wait_until(
        lambda: server.dead_lettered(delivery_id),
        15.0,
        0.05,
        lambda: f"never dead-lettered\n{server.describe()}",
    )
    assert reason is not None
    return reason


def test_retryable_failure_dead_letters_then_retry_delivers(
    tmp_path: Path, journal: dict[str, Any]
) -> None:
    blocker = tmp_path / "exports-is-a-file"
    blocker.write_text("not a folder\n")
    config = make_config(
        tmp_path,
        journal=journal,
        dispatcher={"retry": {"max_attempts": 3, "base_seconds": 0.2, "cap_seconds": 0.5}},
        sinks={"exports": {"root": str(blocker)}},
    )
    body = text_document()
    with run_hookdock(tmp_path, config) as server:
        assert server.config_path is not None
        delivery_id = accepted(post(sd_url(server), body))
        reason = _wait_dead_letter(server, delivery_id)
        assert "gave up after 3 attempts" in reason
        log = server.stderr_text()
        for attempt in (1, 2):
            assert (
                f"event {delivery_id}-0 (route sd-text-documents) to sink exports:"
                f" attempt {attempt} failed"
            ) in log

        assert status(server.config_path) == {"pending": 0, "done": 0, "dead": 1}
        sinks = full_status(server.config_path)["sinks"]
        assert sinks["exports"] == {
            "pending": 0,
            "delivered": 0,
            "dead": 1,
            "stopped": None,
            "backlog": {"pending": 0, "due": 0, "oldest_seconds": 0},
            "receipt_to_delivery": None,
        }
        [line] = dead_lines(server.config_path)
        dead = _parse_delivery_line(line)
        assert dead["id"] == delivery_id
        assert dead["state"] == "dead"
        assert dead["attempts"] == "3"
        assert dead["route"] == SD_ROUTES["text_document"]
        assert "sink exports" in dead["error"]

        blocker.unlink()
        result = run_cli("retry", "--all-dead", config=server.config_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "requeued 1 dead-lettered deliveries"

        path = export_path(
            blocker,
            kind="text_document",
            task_id=json.loads(body)["taskId"],
            delivery_id=delivery_id,
            workspace_id="ws-life",
        )
        wait_until(lambda: path.is_file(), 15.0, 0.05, lambda: server.describe())
        assert json.loads(path.read_bytes())["payload"] == json.loads(body)
        assert status(server.config_path) == {"pending": 0, "done": 1, "dead": 0}


def test_permanent_failure_dead_letters_after_one_attempt(
    tmp_path: Path, journal: dict[str, Any]
) -> None:
    named = tmp_path / "named"
    config = make_config(
        tmp_path,
        journal=journal,
        sinks={
            "named": {
                "type": "local",
                "root": str(named),
                "path_template": "{display_name}/{event_id}.json",
            }
        },
        extra_routes=[route("by-name", {"type": "none"}, sinks=["named"])],
    )
    with run_hookdock(tmp_path, config) as server:
        assert server.config_path is not None
        url = f"{server.url}/hooks/by-name"
        # The template works for a plain name...
        fine_id = accepted(post(url, text_document(displayName="march.pdf")))
        wait_until(lambda: (named / "march.pdf" / f"{fine_id}-0.json").is_file(), 15.0, 0.05)
        # ...and a "/" in the name can never be written: dead at once, no retries.
        bad_id = accepted(post(url, text_document(displayName="invoices/2024/march.pdf")))
        reason = _wait_dead_letter(server, bad_id)
        assert "display_name" in reason
        assert f"event {bad_id}-0 (route by-name) to sink named: attempt" not in (
            server.stderr_text()
        )

        [line] = dead_lines(server.config_path)
        dead = _parse_delivery_line(line)
        assert (dead["id"], dead["state"], dead["attempts"]) == (bad_id, "dead", "1")
        assert dead["route"] == "by-name"
        assert "sink named" in dead["error"] and "display_name" in dead["error"]
        assert status(server.config_path) == {"pending": 0, "done": 1, "dead": 1}
        assert [p.name for p in named.rglob("*.json")] == [f"{fine_id}-0.json"]
