"""SuperOffice through a real ``hookdock serve``: signed deliveries, exact answers, one event per
``EventId`` across retries, the test event, ``webhook.errors`` counted, rules on entity and event.

The route gives only its secret: the scheme (``X-SuperOffice-Signature``, base64 HMAC-SHA256 of
the raw body) is the source's default.  Every body is signed here as SuperOffice signs it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import (
    HookdockProcess,
    delivery_id_from,
    make_config,
    read_json,
    run_cli,
    run_hookdock,
    wait_until,
)
from tests.so_payloads import EXPECTED, all_cases, load

pytestmark = pytest.mark.e2e

SECRET = "so-e2e-" + uuid.uuid4().hex
TEMPLATE = "{vendor}/{attributes.tenant}/{attributes.entity}/{kind}-{event_id}.json"
EXPORT_TIMEOUT = 15.0


def sign(body: bytes, secret: str = SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def so_headers(body: bytes, **extra: str) -> dict[str, str]:
    """What SuperOffice sends with ``body``: its event headers and the signature."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = {}
    if not isinstance(parsed, dict):
        parsed = {}
    headers = {
        "content-type": "application/json; charset=utf-8",
        "x-superoffice-event": str(parsed.get("Event", "")),
        "x-superoffice-eventid": str(parsed.get("EventId", "")),
        "x-superoffice-retry": "0",
        "x-superoffice-signature": sign(body),
    }
    return {**headers, **extra}


@dataclass
class Server:
    process: HookdockProcess
    folder: Path
    client: httpx.Client

    def post(self, body: bytes, route: str = "so", **headers: str) -> httpx.Response:
        return self.client.post(
            f"/hooks/{route}", content=body, headers=so_headers(body, **headers)
        )

    def journal(self) -> sqlite3.Connection:
        return sqlite3.connect(self.folder / "hookdock.db", timeout=10.0)

    def deliveries(self) -> int:
        with contextlib.closing(self.journal()) as db:
            count: int = db.execute("SELECT count(*) FROM deliveries").fetchone()[0]
            return count

    def routed(self, delivery_id: str) -> bool:
        with contextlib.closing(self.journal()) as db:
            row = db.execute("SELECT state FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
            return row is not None and row[0] == "routed"

    def exports(self, root: str) -> list[Path]:
        return sorted((self.folder / root).rglob("*.json"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("superoffice")
    so_route = {
        "name": "so",
        "source": "superoffice.webhook",
        "auth": {"secret": SECRET},
        "sinks": ["so-all"],
        "rules": [
            {"kind": "sale.deleted", "sinks": ["so-deletes"]},
            {"attributes": {"entity": "contact", "tenant": "Cust54321"}, "sinks": ["so-contacts"]},
        ],
    }
    tests_route = {
        "name": "so-tests",
        "source": "superoffice.webhook",
        "auth": {"secret": SECRET},
        "settings": {"export_test_events": True},
        "sinks": ["so-all"],
    }
    sinks = {
        name: {"type": "local", "root": str(folder / name), "path_template": TEMPLATE}
        for name in ("so-all", "so-deletes", "so-contacts")
    }
    config = make_config(folder, routes=[so_route, tests_route], sinks=sinks)
    with (
        run_hookdock(folder, config) as process,
        httpx.Client(base_url=process.url, timeout=15.0, trust_env=False) as client,
    ):
        yield Server(process, folder, client)


def accepted(response: httpx.Response) -> str:
    # SuperOffice counts only 200 as success: not 201, not 202, not 204.
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    return delivery_id_from(response.text)


def fresh(name: str, variant: str = "baseline", **changes: Any) -> bytes:
    """A recorded body with a new ``EventId`` (so no other test's delivery joins it)."""
    body = orjson.loads(load(name, variant))
    body["EventId"] = str(uuid.uuid4())
    body.update(changes)
    return orjson.dumps(body)


def wait_export(server: Server, root: str, delivery_id: str) -> Any:
    def probe() -> Any:
        for path in server.exports(root):
            if delivery_id in path.name:
                return read_json(path)
        return None

    return wait_until(
        probe, EXPORT_TIMEOUT, message=lambda: f"no export in {root}\n{server.process.describe()}"
    )


SINK_OF = {
    "contact_changed": "so-contacts",
    "sale_deleted": "so-deletes",
    "webhook_errors": "so-all",
}


@pytest.mark.parametrize(
    ("stem", "body"),
    [case for case in all_cases() if not case[0].startswith("test__")],
    ids=[stem for stem, _ in all_cases() if not stem.startswith("test__")],
)
def test_each_recorded_payload_is_accepted_with_200_and_routed_by_entity_and_event(
    server: Server, stem: str, body: bytes
) -> None:
    expected = EXPECTED[stem]
    assert expected is not None
    delivery_id = accepted(server.post(body))
    sink = SINK_OF[stem.split("__")[0]]
    if stem == "contact_changed__optional_missing":
        sink = "so-all"  # no tenant: the contact rule does not match
    event = wait_export(server, sink, delivery_id)
    assert (event["vendor"], event["kind"], event["attributes"]) == (
        "superoffice",
        expected["kind"],
        expected["attributes"],
    )
    assert event["payload"] == orjson.loads(body), "the body goes out as sent"
    # The exported event keeps the fields SmartDocumentor's consumers read.
    assert {"task_id", "workspace_id", "display_name", "files"} <= set(event)
    tenant = expected["attributes"]["tenant"] or "none"
    entity = expected["attributes"]["entity"]
    folder = server.folder / sink / "superoffice" / tenant / entity
    assert [p.name for p in folder.glob(f"*{delivery_id}*")] == [
        f"{expected['kind']}-{delivery_id}-0.json"
    ]


def test_retries_are_one_event(server: Server) -> None:
    body = fresh("contact_changed")
    first = accepted(server.post(body))
    # SuperOffice's next attempts: another retry count, and a newer timestamp in the body.
    later = orjson.loads(body)
    later["Timestamp"] = "2026-03-14T09:46:17Z"
    retry_body = orjson.dumps(later)
    for attempt, payload in (("1", body), ("2", retry_body)):
        response = server.post(payload, **{"x-superoffice-retry": attempt})
        assert response.status_code == 200
        assert response.text == f"hookdock: already accepted as {first}\n"
    wait_export(server, "so-contacts", first)
    event_id = orjson.loads(body)["EventId"]
    copies = [
        path
        for root in ("so-all", "so-contacts", "so-deletes")
        for path in server.exports(root)
        if event_id in path.read_text(encoding="utf-8")
    ]
    assert len(copies) == 1, copies


def test_the_test_event_is_recorded_and_not_exported(server: Server) -> None:
    before = {root: server.exports(root) for root in ("so-all", "so-contacts", "so-deletes")}
    body = fresh("test")
    delivery_id = accepted(server.post(body, **{"x-hook-test": "true"}))
    # Recorded: the delivery is in the journal, and routing finishes with nothing to send.
    wait_until(lambda: server.routed(delivery_id), EXPORT_TIMEOUT, message="test event not routed")
    after = {root: server.exports(root) for root in before}
    assert after == before
    status = json.loads(run_cli("status", config=server.folder / "hookdock.toml").stdout)
    assert status["done"] >= 1


def test_the_test_event_is_exported_when_the_route_asks(server: Server) -> None:
    delivery_id = accepted(server.post(fresh("test"), route="so-tests"))
    event = wait_export(server, "so-all", delivery_id)
    assert event["kind"] == "test"
    assert event["attributes"]["tenant"] == "Cust54321"


def test_a_header_only_test_event_gets_its_200(server: Server) -> None:
    # Whatever the body holds, X-Hook-Test makes it SuperOffice's test: it must get a 200.
    body = orjson.dumps({"Event": "contact.changed", "EventId": str(uuid.uuid4())})
    delivery_id = accepted(server.post(body, **{"x-hook-test": "true"}))
    wait_until(lambda: server.routed(delivery_id), EXPORT_TIMEOUT, message="not routed")


def test_webhook_errors_are_exported_logged_and_counted(server: Server) -> None:
    config = server.folder / "hookdock.toml"

    def alerts() -> int:
        status = json.loads(run_cli("status", config=config).stdout)
        count: int = status["alerts"].get("superoffice webhook.errors", 0)
        return count

    before = alerts()
    delivery_id = accepted(server.post(fresh("webhook_errors")))
    event = wait_export(server, "so-all", delivery_id)
    assert event["alert"] and "'hookdock export'" in event["alert"]

    def logged() -> str:
        for line in server.process.stderr_text().splitlines():
            if f"delivery {delivery_id})" in line and "alert from superoffice" in line:
                return line
        return ""

    line = wait_until(logged, EXPORT_TIMEOUT, message="the alert was not logged")
    assert "ERROR" in line and "webhook.errors" in line
    assert alerts() == before + 1


REFUSALS: list[tuple[str, bytes, dict[str, str], int, str]] = [
    ("no signature", b"{}", {"x-superoffice-signature": ""}, 401,
     "hookdock: signature header missing\n"),
    ("wrong secret", b"{}", {"x-superoffice-signature": sign(b"{}", "another")}, 401,
     "hookdock: signature does not match\n"),
    ("not base64", b"{}", {"x-superoffice-signature": "%%%"}, 401,
     "hookdock: signature does not match\n"),
    ("text/plain", b"{}", {"content-type": "text/plain"}, 415,
     "hookdock: content type must be application/json\n"),
    ("not json", b"Event=contact.changed", {}, 400, "hookdock: body is not JSON\n"),
    ("array", b"[]", {}, 422, "hookdock: body is not a JSON object\n"),
    ("no Event", orjson.dumps({"EventId": "e-1"}), {"x-superoffice-event": ""}, 422,
     "hookdock: Event missing\n"),
    ("no EventId", orjson.dumps({"Event": "contact.changed"}), {"x-superoffice-eventid": ""},
     422, "hookdock: EventId missing\n"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "headers", "status", "text"),
    [case[1:] for case in REFUSALS],
    ids=[case[0] for case in REFUSALS],
)
def test_refusals_are_exact_never_410_and_never_journaled(
    server: Server, body: bytes, headers: dict[str, str], status: int, text: str
) -> None:
    before = server.deliveries()
    response = server.post(body, **headers)
    assert (response.status_code, response.text) == (status, text)
    assert response.status_code != 410, "410 would disable the webhook in SuperOffice for good"
    assert server.deliveries() == before


def test_a_body_changed_after_signing_is_refused(server: Server) -> None:
    body = fresh("contact_changed")
    headers = so_headers(body)
    tampered = body.replace(b"Acme Trading AS", b"Acme Trading AB")
    before = server.deliveries()
    response = server.client.post("/hooks/so", content=tampered, headers=headers)
    assert (response.status_code, response.text) == (401, "hookdock: signature does not match\n")
    assert server.deliveries() == before


def test_the_secret_and_signatures_never_reach_the_log_or_the_journal(server: Server) -> None:
    body = fresh("contact_changed")
    accepted(server.post(body))
    assert SECRET not in server.process.stderr_text()
    with contextlib.closing(server.journal()) as db:
        headers = [bytes(r[0]) for r in db.execute("SELECT headers FROM deliveries")]
    assert headers, "deliveries were journaled"
    assert all(b"x-superoffice-signature" not in h for h in headers)
    assert any(b"x-superoffice-retry" in h for h in headers), "the source's headers are kept"
