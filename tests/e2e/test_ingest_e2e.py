"""Ingest end to end: one real server per journal engine, real HTTP, real exports.

``server`` journals to SQLite; ``any_server`` runs a test on both SQLite and PostgreSQL (a
schema of the module's own), for the tests whose outcome is the journal's: acceptance and
export, dedupe, a held lock, the operator's reads.  The rest (auth, refusals) never reach
the journal and run once.  Every test posts bodies no other test posts (fresh ``taskId``s),
so a shared journal's dedupe never joins two tests.  The last tests read each server's whole
output for secrets.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import secrets
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from standardwebhooks.webhooks import Webhook

from tests.conftest import (
    CREDS,
    ROUTE_BASIC,
    ROUTE_HEADER,
    ROUTE_HMAC,
    ROUTE_NONE,
    ROUTE_STANDARD,
    SD_ROUTES,
    HookdockProcess,
    delivery_id_from,
    drop_pg_schema,
    export_path,
    make_config,
    pg_journal_table,
    route,
    run_cli,
    run_hookdock,
    wait_until,
)
from tests.sd_payloads import EXPECTED, all_cases, load

pytestmark = pytest.mark.e2e

CAPPED_ROUTE = "sd-capped"
CAP = 1024
JSON = {"content-type": "application/json"}
# A wrong token of the same shape as the right one: it must never show up anywhere either.
WRONG_TOKEN = "t0ken-" + "W" * 40
FILE_KINDS = ("transcript_file", "anonymization_file")
EXPORT_TIMEOUT = 15.0
ENGINES = ("sqlite", "postgres")
# How long a write waits on a lock before it is refused (503): short, for the lock test.
# PostgreSQL's statement timeout covers every statement, so it gets a little more room.
SQLITE_LOCK_WAIT_MS = 200
PG_STATEMENT_TIMEOUT_MS = 500


@dataclass
class Server:
    process: HookdockProcess
    folder: Path
    client: httpx.Client
    engine: str = "sqlite"
    pg_dsn: str = ""
    pg_schema: str = ""

    @property
    def exports(self) -> Path:
        return self.folder / "exports"

    @property
    def journal(self) -> Path:
        return self.folder / "hookdock.db"

    @property
    def config(self) -> Path:
        assert self.process.config_path is not None
        return self.process.config_path


@contextlib.contextmanager
def _serve(folder: Path, journal: dict[str, Any], **pg: str) -> Iterator[Server]:
    config = make_config(
        folder,
        journal=journal,
        extra_routes=[
            route(
                CAPPED_ROUTE,
                {"type": "url-token", "token": CREDS.url_token},
                max_body_bytes=CAP,
            )
        ],
    )
    with (
        run_hookdock(folder, config) as process,
        httpx.Client(base_url=process.url, timeout=15.0, trust_env=False) as client,
    ):
        engine = "postgres" if pg else "sqlite"
        yield Server(process, folder, client, engine, **pg)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    journal = {"busy_timeout_ms": SQLITE_LOCK_WAIT_MS}
    with _serve(tmp_path_factory.mktemp("ingest"), journal) as server:
        yield server


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory: pytest.TempPathFactory, pg_dsn: str) -> Iterator[Server]:
    # The module's own schema (``pg_schema`` is per test); dropped once the server is gone.
    schema = f"hookdock_test_{secrets.token_hex(6)}"
    journal = {
        "path": None,
        **pg_journal_table(pg_dsn, schema, statement_timeout_ms=PG_STATEMENT_TIMEOUT_MS),
    }
    try:
        with _serve(
            tmp_path_factory.mktemp("ingest-pg"), journal, pg_dsn=pg_dsn, pg_schema=schema
        ) as server:
            yield server
    finally:
        drop_pg_schema(pg_dsn, schema)


@pytest.fixture(params=ENGINES)
def any_server(request: pytest.FixtureRequest) -> Server:
    """The module's server on each journal engine in turn (each started on first use)."""
    name = "server" if request.param == "sqlite" else "pg_server"
    found: Server = request.getfixturevalue(name)
    return found


def sd_path(kind: str = "text_document", token: str | None = CREDS.url_token) -> str:
    name = SD_ROUTES[kind]
    return f"/hooks/{name}/{token}" if token is not None else f"/hooks/{name}"


def text_document(task_id: str | None = None, **fields: Any) -> bytes:
    """A small text-document body with a fresh ``taskId`` (so it is never a duplicate)."""
    body: dict[str, Any] = {
        "taskId": task_id or str(uuid.uuid4()),
        "originalFileUrl": None,
        "workspaceId": "ws-e2e",
        "taskNumber": 7,
        "displayName": "e2e.pdf",
        "chunks": [],
    }
    body.update(fields)
    return json.dumps(body).encode()


def assert_plain(response: httpx.Response, status: int, text: str) -> None:
    """Exact status and exact one-line ``hookdock: ...`` body, with nothing secret in it."""
    assert response.status_code == status, response.text
    assert response.text == text
    assert response.text.startswith("hookdock: ")
    assert response.text.count("\n") == 1 and response.text.endswith("\n")
    assert response.headers["content-type"].startswith("text/plain")
    assert "Traceback" not in response.text
    for secret in [*CREDS.all(), WRONG_TOKEN]:
        assert secret not in response.text


def accepted(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    assert response.text.startswith("hookdock: accepted as "), response.text
    return delivery_id_from(response.text)


def wait_export(server: Server, body: bytes, delivery_id: str, kind: str = "text_document") -> Any:
    data = json.loads(body)
    workspace = data.get("workspaceId")
    path = export_path(
        server.exports,
        kind=kind,
        task_id=str(data["taskId"]),
        delivery_id=delivery_id,
        workspace_id=None if workspace is None else str(workspace),
    )
    return server.process.wait_export(path, delivery_id, EXPORT_TIMEOUT)


def task_files(server: Server, task_id: str, workspace: str = "ws-e2e") -> list[str]:
    folder = server.exports / "smartdocumentor" / workspace / task_id
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --------------------------------------------------------------------------- every payload


CASES = all_cases()


def _case_param(case: tuple[str, str, bytes]) -> Any:
    kind, variant, _ = case
    return pytest.param(*case, id=f"{kind}-{variant}")


def test_cases_cover_every_kind_and_the_large_document() -> None:
    assert {kind for kind, _, _ in CASES} == set(SD_ROUTES)
    assert {(kind, variant) for kind, variant, _ in CASES} == set(EXPECTED)
    large = [body for kind, variant, body in CASES if variant == "large_ocr"]
    assert len(large) == 1 and 900_000 < len(large[0]) <= 1024 * 1024  # under the default route cap


@pytest.mark.parametrize(("kind", "variant", "body"), [_case_param(c) for c in CASES])
def test_every_payload_is_accepted_and_exported(
    any_server: Server, kind: str, variant: str, body: bytes
) -> None:
    server = any_server
    response = server.client.post(sd_path(kind), content=body, headers=JSON)
    delivery_id = accepted(response)

    expected = EXPECTED[(kind, variant)]
    path = export_path(
        server.exports,
        kind=kind,
        task_id=expected["task_id"],
        delivery_id=delivery_id,
        workspace_id=expected["workspace_id"],
    )
    event = server.process.wait_export(path, delivery_id, EXPORT_TIMEOUT)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]

    posted = json.loads(body)
    assert event["event_id"] == f"{delivery_id}-0"
    assert event["delivery_id"] == delivery_id
    assert event["vendor"] == "smartdocumentor"
    assert event["kind"] == kind
    assert event["route"] == SD_ROUTES[kind]
    for name in ("task_id", "task_number", "workspace_id", "batch_id", "external_id"):
        assert event[name] == expected[name], name
    assert event["display_name"] == expected["display_name"]
    roles = (["exported"] if kind in FILE_KINDS else []) + (
        ["original"] if posted.get("originalFileUrl") is not None else []
    )
    assert [f["role"] for f in event["files"]] == roles
    assert len(event["files"]) == expected["file_count"]
    assert event["payload"] == posted


def test_slash_in_a_field_the_template_does_not_use_is_exported(server: Server) -> None:
    """Minimal reproduction: the default template has no {external_id}."""
    body = text_document(externalId="ERP/2024/0117")
    response = server.client.post(sd_path(), content=body, headers=JSON)
    assert wait_export(server, body, accepted(response))["external_id"] == "ERP/2024/0117"


# --------------------------------------------------------------------------- refusals


def _long_body() -> bytes:
    return text_document(description="x" * (2 * CAP))


ERROR_CASES: list[tuple[str, str, str, dict[str, str], bytes, int, str]] = [
    # (id, method, path, headers, body, status, exact body)
    ("unknown-route", "POST", "/hooks/no-such-route", JSON, text_document(), 404,
     "hookdock: no such webhook route\n"),
    ("unknown-route-with-token", "POST", f"/hooks/no-such-route/{CREDS.url_token}", JSON,
     text_document(), 404, "hookdock: no such webhook route\n"),
    ("path-token-on-basic-route", "POST", f"/hooks/{ROUTE_BASIC}/{CREDS.url_token}", JSON,
     text_document(), 404, "hookdock: no such webhook route\n"),
    ("path-token-on-none-route", "POST", f"/hooks/{ROUTE_NONE}/{CREDS.url_token}", JSON,
     text_document(), 404, "hookdock: no such webhook route\n"),
    ("unknown-path", "POST", "/elsewhere", JSON, text_document(), 404, "hookdock: not found\n"),
    ("get-hooks-x", "GET", "/hooks/x", {}, b"", 405, "hookdock: method not allowed\n"),
    ("get-with-token", "GET", sd_path(), {}, b"", 405, "hookdock: method not allowed\n"),
    ("too-large-content-length", "POST", f"/hooks/{CAPPED_ROUTE}/{CREDS.url_token}", JSON,
     _long_body(), 413, f"hookdock: body is larger than {CAP} bytes\n"),
    ("text-plain", "POST", sd_path(), {"content-type": "text/plain"}, text_document(), 415,
     "hookdock: content type must be application/json\n"),
    ("no-content-type", "POST", sd_path(), {}, text_document(), 415,
     "hookdock: content type must be application/json\n"),
    ("token-missing", "POST", sd_path(token=None), JSON, text_document(), 401,
     "hookdock: credentials missing\n"),
    ("token-empty-query", "POST", f"{sd_path(token=None)}?token=", JSON, text_document(), 401,
     "hookdock: credentials missing\n"),
    ("token-wrong-in-path", "POST", sd_path(token=WRONG_TOKEN), JSON, text_document(), 401,
     "hookdock: credentials do not match\n"),
    ("token-wrong-in-query", "POST", f"{sd_path(token=None)}?token={WRONG_TOKEN}", JSON,
     text_document(), 401, "hookdock: credentials do not match\n"),
    ("token-prefix-only", "POST", sd_path(token=CREDS.url_token[:-1]), JSON, text_document(),
     401, "hookdock: credentials do not match\n"),
    ("not-json", "POST", sd_path(), JSON, b"taskId=1&not=json", 400,
     "hookdock: body is not JSON\n"),
    ("truncated-json", "POST", sd_path(), JSON, text_document()[:-3], 400,
     "hookdock: body is not JSON\n"),
    ("json-array", "POST", sd_path(), JSON, b"[1, 2]", 422,
     "hookdock: body is not a JSON object\n"),
    ("task-id-missing", "POST", sd_path(), JSON, b'{"workspaceId": "ws-e2e"}', 422,
     "hookdock: taskId missing\n"),
    ("exported-file-url-missing", "POST", sd_path("transcript_file"), JSON,
     b'{"taskId": "t-e2e-no-file"}', 422, "hookdock: exportedFileUrl missing\n"),
    ("wrong-kind-text-to-file", "POST", sd_path("transcript_file"), JSON, text_document(), 422,
     "hookdock: this is a text document export; this URL takes transcript files (URL to file)\n"),
    ("wrong-kind-transcript-to-text", "POST", sd_path(), JSON,
     load("transcript", "baseline"), 422,
     "hookdock: this is a transcript export; this URL takes text documents\n"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status", "text"),
    [case[1:] for case in ERROR_CASES],
    ids=[case[0] for case in ERROR_CASES],
)
def test_refusals_are_exact_plain_lines(
    server: Server,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
    status: int,
    text: str,
) -> None:
    before = journaled(server)
    response = server.client.request(method, path, headers=headers, content=body or None)
    assert_plain(response, status, text)
    assert journaled(server) == before, "a refused request must leave nothing in the journal"


def journaled(server: Server) -> int:
    """How many deliveries the server's journal holds (read beside the running server)."""
    with contextlib.closing(sqlite3.connect(server.journal, timeout=10.0)) as db:
        count: int = db.execute("SELECT count(*) FROM deliveries").fetchone()[0]
        return count


def test_refused_bodies_are_not_stored(any_server: Server) -> None:
    """After all those refusals, a valid resend of a refused body is new, not a duplicate."""
    server = any_server
    body = text_document()
    refused = server.client.post(sd_path(token=WRONG_TOKEN), content=body, headers=JSON)
    assert_plain(refused, 401, "hookdock: credentials do not match\n")
    delivery_id = accepted(server.client.post(sd_path(), content=body, headers=JSON))
    assert wait_export(server, body, delivery_id)["payload"] == json.loads(body)


@dataclass
class LazyBody:
    """A chunked body that would be ``total`` bytes, produced only as the client sends it."""

    total: int = 50 * 1024 * 1024
    chunk: int = 64 * 1024
    sent: int = field(default=0, init=False)

    def __iter__(self) -> Iterator[bytes]:
        block = b" " * self.chunk
        while self.sent < self.total:
            self.sent += self.chunk
            yield block


def _post_lazy(server: Server, body: LazyBody) -> tuple[httpx.Response | None, float]:
    started = time.monotonic()
    try:
        with httpx.Client(timeout=10.0, trust_env=False) as client:
            response: httpx.Response | None = client.post(
                f"{server.process.url}/hooks/{CAPPED_ROUTE}/{CREDS.url_token}",
                content=iter(body),
                headers=JSON,
            )
    except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
        # The server may close the connection on a client still sending; then the answer can
        # be lost to the reset.  That is only acceptable if the server stopped reading early.
        response = None
    return response, time.monotonic() - started


def test_too_large_chunked_body_is_refused_quickly(server: Server) -> None:
    body = LazyBody()
    response, _ = _post_lazy(server, body)
    if response is None:
        assert body.sent < body.total
    else:
        assert_plain(response, 413, f"hookdock: body is larger than {CAP} bytes\n")


def test_too_large_chunked_body_is_not_drained(server: Server) -> None:
    body = LazyBody()
    response, _ = _post_lazy(server, body)
    if response is not None:
        assert response.status_code == 413
    assert body.sent < body.total, f"the server read all {body.total} bytes of the body"


def _read_http_response(sock: socket.socket, deadline: float) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a full answer: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    length = int(headers["content-length"])
    while len(rest) < length:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the answer's body"
        rest += chunk
    return int(status_line.split()[1]), headers, rest[:length]


def test_too_large_chunked_body_is_answered_before_it_ends(server: Server) -> None:
    """The 413 comes while the chunked body is still open: the server did not wait for it."""
    port = server.process.port
    assert port is not None
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as sock:
        sock.sendall(
            f"POST /hooks/{CAPPED_ROUTE}/{CREDS.url_token} HTTP/1.1\r\n"
            "Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        chunk = b" " * (2 * CAP)
        sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))  # and never the final 0-chunk
        status, _, body = _read_http_response(sock, time.monotonic() + 5.0)
    assert status == 413
    assert body == f"hookdock: body is larger than {CAP} bytes\n".encode()


# --------------------------------------------------------------------------- auth schemes


def test_url_token_in_query_is_accepted(server: Server) -> None:
    body = text_document()
    response = server.client.post(
        sd_path(token=None), params={"token": CREDS.url_token}, content=body, headers=JSON
    )
    assert wait_export(server, body, accepted(response))["route"] == SD_ROUTES["text_document"]


def test_basic_auth(server: Server) -> None:
    path = f"/hooks/{ROUTE_BASIC}"
    body = text_document()
    response = server.client.post(
        path, content=body, headers=JSON, auth=(CREDS.basic_user, CREDS.basic_password)
    )
    assert wait_export(server, body, accepted(response))["route"] == ROUTE_BASIC

    wrong = server.client.post(
        path, content=text_document(), headers=JSON, auth=(CREDS.basic_user, WRONG_TOKEN)
    )
    assert_plain(wrong, 401, "hookdock: credentials do not match\n")
    other_user = server.client.post(
        path, content=text_document(), headers=JSON, auth=("someone", CREDS.basic_password)
    )
    assert_plain(other_user, 401, "hookdock: credentials do not match\n")
    missing = server.client.post(path, content=text_document(), headers=JSON)
    assert_plain(missing, 401, "hookdock: credentials missing\n")


def test_header_token(server: Server) -> None:
    path = f"/hooks/{ROUTE_HEADER}"
    body = text_document()
    good = {**JSON, CREDS.header_name: CREDS.header_prefix + CREDS.header_token}
    response = server.client.post(path, content=body, headers=good)
    assert wait_export(server, body, accepted(response))["route"] == ROUTE_HEADER

    wrong = {**JSON, CREDS.header_name: CREDS.header_prefix + WRONG_TOKEN}
    assert_plain(
        server.client.post(path, content=text_document(), headers=wrong),
        401,
        "hookdock: credentials do not match\n",
    )
    no_prefix = {**JSON, CREDS.header_name: CREDS.header_token}
    assert_plain(
        server.client.post(path, content=text_document(), headers=no_prefix),
        401,
        "hookdock: credentials do not match\n",
    )
    assert_plain(
        server.client.post(path, content=text_document(), headers=JSON),
        401,
        "hookdock: credentials missing\n",
    )


def _standard_headers(secret: str, body: bytes, when: datetime | None = None) -> dict[str, str]:
    when = when or datetime.now(UTC)
    msg_id = f"msg_{uuid.uuid4().hex}"
    signature = Webhook(secret).sign(msg_id, when, body.decode("utf-8"))
    return {
        **JSON,
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
    }


@pytest.mark.parametrize("which", ["new", "old"])
def test_standard_webhooks_with_rotated_secrets(server: Server, which: str) -> None:
    """The route lists two secrets (old, new): a message signed with either one passes."""
    secret = CREDS.whsec_new if which == "new" else CREDS.whsec_old
    body = text_document()
    response = server.client.post(
        f"/hooks/{ROUTE_STANDARD}", content=body, headers=_standard_headers(secret, body)
    )
    assert wait_export(server, body, accepted(response))["route"] == ROUTE_STANDARD


def test_standard_webhooks_refusals(server: Server) -> None:
    path = f"/hooks/{ROUTE_STANDARD}"
    body = text_document()
    stranger = "whsec_" + base64.b64encode(b"not-one-of-the-route-secrets-!!").decode()
    assert_plain(
        server.client.post(path, content=body, headers=_standard_headers(stranger, body)),
        401,
        "hookdock: signature does not match\n",
    )
    tampered = _standard_headers(CREDS.whsec_new, body)
    assert_plain(
        server.client.post(path, content=text_document(), headers=tampered),
        401,
        "hookdock: signature does not match\n",
    )
    stale = _standard_headers(CREDS.whsec_new, body, datetime.now(UTC) - timedelta(hours=1))
    assert_plain(
        server.client.post(path, content=body, headers=stale),
        401,
        "hookdock: webhook timestamp outside tolerance\n",
    )
    assert_plain(
        server.client.post(path, content=body, headers=JSON),
        401,
        "hookdock: webhook signature headers missing\n",
    )


def _superoffice_signature(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def test_superoffice_hmac(server: Server) -> None:
    path = f"/hooks/{ROUTE_HMAC}"
    body = text_document()
    signature = _superoffice_signature(CREDS.hmac_secret, body)
    assert len(signature) == 44
    response = server.client.post(
        path, content=body, headers={**JSON, CREDS.hmac_header: signature}
    )
    assert wait_export(server, body, accepted(response))["route"] == ROUTE_HMAC

    other = text_document()
    wrong_secret = _superoffice_signature(WRONG_TOKEN, other)
    assert_plain(
        server.client.post(path, content=other, headers={**JSON, CREDS.hmac_header: wrong_secret}),
        401,
        "hookdock: signature does not match\n",
    )
    assert_plain(
        server.client.post(path, content=other, headers={**JSON, CREDS.hmac_header: signature}),
        401,
        "hookdock: signature does not match\n",
    )
    assert_plain(
        server.client.post(path, content=other, headers=JSON),
        401,
        "hookdock: signature header missing\n",
    )


def test_no_auth_route(server: Server) -> None:
    body = text_document()
    response = server.client.post(f"/hooks/{ROUTE_NONE}", content=body, headers=JSON)
    assert wait_export(server, body, accepted(response))["route"] == ROUTE_NONE


# --------------------------------------------------------------------------- duplicates


def test_duplicate_body_is_accepted_once_and_a_changed_body_is_new(any_server: Server) -> None:
    server = any_server
    task_id = str(uuid.uuid4())
    body = text_document(task_id)
    first_id = accepted(server.client.post(sd_path(), content=body, headers=JSON))
    # The same bytes again, this time with the token in the query: still the same delivery.
    again = server.client.post(
        sd_path(token=None), params={"token": CREDS.url_token}, content=body, headers=JSON
    )
    assert again.status_code == 200
    assert again.text == f"hookdock: already accepted as {first_id}\n"
    wait_export(server, body, first_id)

    changed = text_document(task_id, displayName="e2e-re-reviewed.pdf")
    second_id = accepted(server.client.post(sd_path(), content=changed, headers=JSON))
    assert second_id != first_id
    assert wait_export(server, changed, second_id)["display_name"] == "e2e-re-reviewed.pdf"
    assert task_files(server, task_id) == sorted(
        [f"text_document-{first_id}-0.json", f"text_document-{second_id}-0.json"]
    )


# --------------------------------------------------------------------------- journal down


@contextlib.contextmanager
def journal_locked(server: Server) -> Iterator[None]:
    """Another process holds the journal's write lock (SQLite) or locks the tables that
    ingest and ``/readyz`` write to (PostgreSQL) until the block ends."""
    if server.engine == "sqlite":
        lock = sqlite3.connect(server.journal, isolation_level=None, timeout=10.0)
        try:
            lock.execute("BEGIN EXCLUSIVE")
            yield
            lock.execute("COMMIT")
        finally:
            lock.close()
        return
    with psycopg.connect(server.pg_dsn, connect_timeout=5) as conn:
        # EXCLUSIVE mode: readers go on, every writer waits (and times out: 503).
        conn.execute(
            f'LOCK TABLE "{server.pg_schema}".deliveries, "{server.pg_schema}".meta'
            " IN EXCLUSIVE MODE"
        )
        yield
        conn.rollback()


def test_locked_journal_answers_503_then_recovers(any_server: Server) -> None:
    server = any_server
    task_id = str(uuid.uuid4())
    body = text_document(task_id)
    with journal_locked(server):
        refused = server.client.post(sd_path(), content=body, headers=JSON)
        assert_plain(refused, 503, "hookdock: cannot store the delivery right now, please retry\n")
        assert refused.headers.get("retry-after") == "5"
        ready = server.client.get("/readyz")
        assert ready.status_code == 503
        assert ready.text.startswith("hookdock: journal not writable")
    assert task_files(server, task_id) == []

    wait_until(
        lambda: server.client.get("/readyz").status_code == 200,
        10.0,
        0.05,
        "/readyz did not recover after the lock was released",
    )
    response = server.client.post(sd_path(), content=body, headers=JSON)
    delivery_id = accepted(response)  # "accepted", not "already accepted": nothing was kept
    assert wait_export(server, body, delivery_id)["task_id"] == task_id
    assert task_files(server, task_id) == [f"text_document-{delivery_id}-0.json"]


# --------------------------------------------------------------------------- operator reads


def test_cli_reads_the_running_services_journal(any_server: Server) -> None:
    """``status`` and ``deliveries`` open the journal the service is writing, beside it."""
    server = any_server
    body = text_document()
    delivery_id = accepted(server.client.post(sd_path(), content=body, headers=JSON))
    wait_export(server, body, delivery_id)

    def done() -> dict[str, Any] | None:
        # The export lands a moment before the send's outcome is committed.
        result = run_cli("status", config=server.config)
        assert result.returncode == 0, result.stderr
        counts: dict[str, Any] = json.loads(result.stdout)
        return counts if counts["done"] >= 1 and counts["pending"] == 0 else None

    counts = wait_until(done, EXPORT_TIMEOUT, 0.1, "the delivery never counted as done")
    assert counts is not None
    assert counts["dead"] == 0
    assert counts["sinks"]["exports"]["delivered"] == counts["done"]
    assert counts["sinks"]["exports"]["stopped"] is None

    listing = run_cli("deliveries", "--sends", "--limit", "1", config=server.config)
    assert listing.returncode == 0, listing.stderr
    head, send = listing.stdout.splitlines()[:2]
    assert head.split()[:2] == [delivery_id, "done"], listing.stdout  # newest first
    assert head.endswith(SD_ROUTES["text_document"])
    assert send.split()[:4] == [f"{delivery_id}-0", "->", "exports", "delivered"], send


# --------------------------------------------------------------------------- last: no leaks


def test_zz_no_secret_in_server_output(any_server: Server) -> None:
    """Runs last: nothing any test sent as a credential reached the server's logs."""
    server = any_server
    assert server.process.running()
    output = server.process.stderr_text() + server.process.stdout_text()
    assert "delivered event" in output  # the log is really there
    for secret in [*CREDS.all(), WRONG_TOKEN]:
        assert secret not in output
