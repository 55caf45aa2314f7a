"""``hookdock documill`` and ``hookdock emulate``: what a person typing them sees."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.conftest import free_port, make_config, run_cli, run_hookdock, wait_until

POLLER = {
    "name": "dynamo",
    "type": "documill.batches",
    "sinks": ["exports"],
    "settings": {"api": {"tenant_id": "t", "api_key": "k-secret-1"}},
}


def config_file(tmp_path: Path, **overrides: object) -> Path:
    path = tmp_path / "hookdock.toml"
    path.write_text(make_config(tmp_path, **overrides))
    return path


def test_an_invalid_batch_is_refused_with_every_problem(tmp_path: Path) -> None:
    config = config_file(tmp_path, pollers=[POLLER])
    batch = tmp_path / "batch.json"
    batch.write_text(json.dumps({"tasks": [{"params": {"id": "a"}}, {"params": {"n": 1}}]}))
    done = run_cli("documill", "submit", "--batch", str(batch), config=config)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "hookdock: template: missing (a template id, or a template file to embed)",
        "hookdock: tasks[1].params.id: missing (the record the document is for)",
    ]
    done = run_cli("documill", "submit", "--batch", str(batch), "--part", "x", config=config)
    assert (done.returncode, done.stderr) == (2, "hookdock: --part 'x': write NAME=FILE.json\n")
    done = run_cli("documill", "submit", "--batch", str(tmp_path / "nope.json"), config=config)
    assert done.returncode == 2 and "nope.json: cannot be read" in done.stderr


def test_without_a_poller_it_says_which_is_missing(tmp_path: Path) -> None:
    done = run_cli("documill", "watch", "abc", config=config_file(tmp_path))
    assert (done.returncode, done.stderr) == (
        2,
        "hookdock: no documill.batches poller in the configuration ([[pollers]])\n",
    )
    done = run_cli("superoffice", "batch-task", "watch", "x1", config=config_file(tmp_path))
    assert done.returncode == 2 and "is not a batch task id" in done.stderr


def test_watch_records_the_batch_once(tmp_path: Path) -> None:
    config = config_file(tmp_path, pollers=[POLLER])
    first = run_cli("documill", "watch", "b-123", config=config)
    again = run_cli("documill", "watch", "b-123", config=config)
    assert json.loads(first.stdout) == {"batch_id": "b-123", "watched_by": "dynamo", "new": True}
    assert json.loads(again.stdout)["new"] is False


def test_the_emulators_run_from_the_command_line(tmp_path: Path) -> None:
    for vendor, path, headers in (
        ("documill", "/v1/batch/none", {"x-dynamo-tenant-id": "emulator-tenant"}),
        ("superoffice", "/api/v1/BatchTask/1", {"authorization": "Bearer emulator-token"}),
    ):
        port = free_port()
        args = [vendor, "--port", str(port)]
        with run_hookdock(tmp_path / vendor, None, command="emulate", args=args) as emulator:

            def answer(p: int = port, h: dict[str, str] = headers, u: str = path) -> int:
                try:
                    return httpx.get(f"http://127.0.0.1:{p}{u}", headers=h).status_code
                except httpx.TransportError:
                    return 0

            # Documill without its API key: 401; SuperOffice with a token, no such task: 404.
            assert wait_until(answer, 15, 0.05, emulator.describe) in (401, 404)
            assert answer() == (401 if vendor == "documill" else 404)


def test_poller_credentials_are_scrubbed_from_logs(tmp_path: Path) -> None:
    from handlers.redact import basic_credentials
    from receiver.config import load_config
    from receiver.secrets import secrets_of

    superoffice = {
        "name": "so",
        "type": "superoffice.batch_tasks",
        "sinks": ["exports"],
        "settings": {
            "api": {
                "base_url": "https://so.example/Cust1",
                "auth": {"type": "basic", "username": "u", "password": "so-pass-9"},
                "app_token": "app-tok-9",
            }
        },
    }
    ticket = {**superoffice, "name": "so2"}
    ticket["settings"] = {
        "api": {"base_url": "https://x.example", "auth": {"type": "soticket", "ticket": "7T:t9"}}
    }
    config, _ = load_config(config_file(tmp_path, pollers=[POLLER, superoffice, ticket]))
    found = secrets_of(config)
    for value in (
        "k-secret-1",
        "so-pass-9",
        "app-tok-9",
        "7T:t9",
        basic_credentials("u", "so-pass-9"),
    ):
        assert value in found
