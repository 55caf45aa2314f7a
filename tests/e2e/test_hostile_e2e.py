"""Hostile and broken clients against a real ``hookdock serve``, each with its exact answer.

One server for the module, with tight limits so the deadlines fire within the test:
headers within 1 s, a body within 1.5 s, headers of at most 4 KiB, 40 connections.  After
each case the test looks at what was (or was not) journaled and exported, and that the
server still answers.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    ROUTE_NONE,
    HookdockProcess,
    delivery_id_from,
    export_path,
    make_config,
    run_cli,
    run_hookdock,
    wait_until,
)
from tests.rawhttp import RawConnection, request_bytes

pytestmark = pytest.mark.e2e

HEADER_SECONDS = 1.0
BODY_SECONDS = 1.5
MAX_HEADER_BYTES = 4096
MAX_CONNECTIONS = 40
HOOK = f"/hooks/{ROUTE_NONE}"
# A refusal must come soon after its deadline, never "eventually".
LATE = 3.0


@dataclass
class Server:
    process: HookdockProcess
    folder: Path

    @property
    def port(self) -> int:
        assert self.process.port is not None
        return self.process.port

    @property
    def exports(self) -> Path:
        return self.folder / "exports"

    def deliveries(self) -> int:
        conn = sqlite3.connect(f"file:{self.folder / 'hookdock.db'}?mode=ro", uri=True)
        try:
            (count,) = conn.execute("SELECT count(*) FROM deliveries").fetchone()
        finally:
            conn.close()
        return int(count)

    def dead_send(self, delivery_id: str) -> tuple[str, str | None] | None:
        conn = sqlite3.connect(f"file:{self.folder / 'hookdock.db'}?mode=ro", uri=True)
        try:
            row = conn.execute(
                "SELECT last_error, code FROM sends WHERE delivery_id = ? AND state = 'dead'",
                (delivery_id,),
            ).fetchone()
        finally:
            conn.close()
        return None if row is None else (row[0], row[1])

    def ready(self) -> bool:
        response = httpx.get(f"{self.process.url}/readyz", timeout=5.0, trust_env=False)
        return response.status_code == 200

    def post(self, body: bytes) -> httpx.Response:
        return httpx.post(
            f"{self.process.url}{HOOK}",
            content=body,
            headers={"content-type": "application/json"},
            timeout=10.0,
            trust_env=False,
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("hostile")
    config = make_config(
        folder,
        server={
            "header_timeout_seconds": HEADER_SECONDS,
            "body_timeout_seconds": BODY_SECONDS,
            "max_header_bytes": MAX_HEADER_BYTES,
            "max_connections": MAX_CONNECTIONS,
        },
        dispatcher={"retry": {"schedule": [0.2], "max_attempts": 30}},
    )
    with run_hookdock(folder, config) as process:
        yield Server(process, folder)


def task() -> str:
    return f"hostile-{uuid.uuid4().hex[:12]}"


def body_for(task_id: str, **extra: object) -> bytes:
    return json.dumps({"taskId": task_id, **extra}).encode()


# ----------------------------------------------------------------------- 1. deep JSON


def nested(levels: int) -> object:
    value: object = 1
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [65, 255, 1023])
def test_json_nested_too_deep_is_refused_before_the_journal(server: Server, depth: int) -> None:
    before = server.deliveries()
    # The object is level 1: "deep" adds depth - 1 levels of arrays.
    body = b'{"taskId":"' + task().encode() + b'","deep":' + b"[" * (depth - 1) + b"1"
    body += b"]" * (depth - 1) + b"}"
    response = server.post(body)
    assert (response.status_code, response.text) == (
        422,
        "hookdock: JSON is nested deeper than 64 levels\n",
    )
    assert server.deliveries() == before


def test_json_at_the_depth_limit_is_stored_and_exported(server: Server) -> None:
    task_id = task()
    response = server.post(body_for(task_id, deep=nested(63)))
    assert response.status_code == 200, response.text
    delivery = delivery_id_from(response.text)
    path = export_path(server.exports, kind="text_document", task_id=task_id, delivery_id=delivery)
    exported = server.process.wait_export(path, delivery)
    assert exported["payload"]["deep"] == nested(63)


# ----------------------------------------------------------------------- 2. slow clients


def test_headers_that_never_end_get_408_then_close(server: Server) -> None:
    with RawConnection(server.port) as conn:
        started = time.monotonic()
        conn.send(b"POST " + HOOK.encode() + b" HTTP/1.1\r\nhost: 127")
        response = conn.read_response(timeout=HEADER_SECONDS + LATE)
        waited = time.monotonic() - started
        assert response is not None
        assert (response.status, response.text) == (
            408,
            "hookdock: request headers did not arrive within 1 s\n",
        )
        assert HEADER_SECONDS * 0.9 <= waited < HEADER_SECONDS + LATE
        assert conn.closed_by_peer()


def test_headers_at_one_byte_a_step_get_408(server: Server) -> None:
    # The deadline counts from the first byte, not from the last one: trickling cannot reset it.
    line = request_bytes(HOOK, body_for(task()))
    with RawConnection(server.port) as conn:
        started = time.monotonic()
        sent = 0
        while sent < len(line) and conn.try_send(line[sent : sent + 1]):
            sent += 1
            # Stop at the answer too: with the 408 read, closed_by_peer no longer waits, and
            # the rest would go out at once while the close is on its way.
            if conn.closed_by_peer(timeout=0.1) or conn.buffer:
                break
            if time.monotonic() - started > 10:
                break
        assert sent < len(line), "the whole request went through at one byte a step"
        assert time.monotonic() - started < HEADER_SECONDS + LATE
        assert b"HTTP/1.1 408 " in conn.buffer or conn.buffer == b""


def test_connection_that_sends_nothing_is_closed(server: Server) -> None:
    with RawConnection(server.port) as conn:
        response = conn.read_response(timeout=HEADER_SECONDS + LATE)
        assert response is not None and response.status == 408
        assert conn.closed_by_peer()


@pytest.mark.parametrize("shape", ["many headers", "one endless header"])
def test_headers_over_the_cap_get_431(server: Server, shape: str) -> None:
    with RawConnection(server.port) as conn:
        conn.send(f"POST {HOOK} HTTP/1.1\r\nhost: 127.0.0.1\r\n".encode())
        if shape == "many headers":
            conn.try_send(b"".join(b"x-pad-%d: %s\r\n" % (i, b"a" * 60) for i in range(100)))
        else:
            conn.try_send(b"x-endless: " + b"a" * (MAX_HEADER_BYTES * 4))
        response = conn.read_response(timeout=LATE)
        assert response is not None
        assert (response.status, response.text) == (
            431,
            "hookdock: request headers are larger than 4096 bytes\n",
        )
        assert conn.closed_by_peer()
    assert server.ready()


@pytest.mark.parametrize("sent", [0, 10])
def test_a_body_shorter_than_its_content_length_gets_408_and_is_not_stored(
    server: Server, sent: int
) -> None:
    before = server.deliveries()
    body = body_for(task())
    with RawConnection(server.port) as conn:
        started = time.monotonic()
        conn.send(request_bytes(HOOK, body[:sent], content_length=len(body)))
        response = conn.read_response(timeout=BODY_SECONDS + LATE)
        assert response is not None
        assert (response.status, response.text) == (
            408,
            "hookdock: request body did not arrive within 1.5 s\n",
        )
        assert time.monotonic() - started >= BODY_SECONDS * 0.9
        assert conn.closed_by_peer()
    assert server.deliveries() == before
    assert server.ready()


def test_a_trickling_body_gets_408_at_the_deadline(server: Server) -> None:
    body = body_for(task(), padding="x" * 200)
    with RawConnection(server.port) as conn:
        conn.send(request_bytes(HOOK, b"", content_length=len(body)))
        started = time.monotonic()
        for byte in range(len(body)):
            if not conn.try_send(body[byte : byte + 1]) or conn.closed_by_peer(timeout=0.05):
                break
        assert time.monotonic() - started < BODY_SECONDS + LATE
        assert conn.buffer.startswith(b"HTTP/1.1 408 ") or conn.buffer == b""


def test_connections_over_the_cap_get_503_as_they_open(server: Server) -> None:
    opened: list[RawConnection] = []
    try:
        for _ in range(MAX_CONNECTIONS + 5):
            conn = RawConnection(server.port)
            opened.append(conn)
            conn.send(b"P")  # a request begun and left hanging
        # The last one is over the cap however many others (readiness probes) were open.
        refused = opened[-1].read_response(timeout=HEADER_SECONDS / 2)
        assert refused is not None
        assert (refused.status, refused.text) == (
            503,
            "hookdock: too many connections, please retry\n",
        )
        assert opened[-1].closed_by_peer()
    finally:
        for conn in opened:
            conn.close()
    wait_until(server.ready, 10.0, message="not ready after the connections closed")


# ----------------------------------------------------------------------- 4, 5. names


def test_a_link_under_the_export_root_dead_letters_naming_it(server: Server) -> None:
    outside = server.folder / "outside"
    outside.mkdir(exist_ok=True)
    workspace = f"ws{uuid.uuid4().hex[:8]}"
    link = server.exports / "smartdocumentor" / workspace
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside)
    response = server.post(body_for(task(), workspaceId=workspace))
    assert response.status_code == 200
    delivery = delivery_id_from(response.text)
    found = wait_until(lambda: server.dead_send(delivery), 15.0)
    assert found is not None
    error, code = found
    assert error == (
        f"local sink: {link} is a symbolic link; nothing is written through a link under the"
        " root folder (remove the link, or point root at the real folder)"
    )
    assert code == "link_refused"
    assert server.process.dead_lettered(delivery) == f"sink exports: {error}", "logged too"
    assert os.listdir(outside) == []
    listing = run_cli(
        "deliveries", "--state", "dead", "--sends", config=server.folder / "hookdock.toml"
    )
    assert f"[link_refused]  local sink: {link} is a symbolic link" in listing.stdout


def test_a_field_too_long_for_a_file_name_dead_letters_naming_it(server: Server) -> None:
    task_id = "t" * 300
    response = server.post(body_for(task_id, displayName="x" * 300))
    assert response.status_code == 200
    delivery = delivery_id_from(response.text)
    found = wait_until(lambda: server.dead_send(delivery), 15.0)
    assert found is not None
    error, code = found
    assert error == (
        "local sink: event field task_id is too long (300 bytes) for a name in a path:"
        " 300 bytes rendered, at most 255"
    )
    assert code is None
    assert server.process.dead_lettered(delivery) == f"sink exports: {error}", "logged too"
    assert not list(server.exports.rglob(f"*{delivery}*"))


# ----------------------------------------------------------------------- 7. lying length


@pytest.mark.parametrize("behind", ["a pipelined request", "garbage"])
def test_content_length_shorter_than_the_body_answers_the_stored_request_first(
    server: Server, behind: str
) -> None:
    task_id = task()
    declared = body_for(task_id)
    trailing = b'{"extra": true}'
    if behind == "a pipelined request":
        trailing += request_bytes(HOOK, body_for(task()))
    with RawConnection(server.port) as conn:
        conn.send(request_bytes(HOOK, declared + trailing, content_length=len(declared)))
        first = conn.read_response()
        assert first is not None and first.status == 200, first
        delivery = delivery_id_from(first.text)
        second = conn.read_response()
        assert second is not None
        assert (second.status, second.text) == (400, "hookdock: invalid HTTP request\n")
        assert conn.closed_by_peer()
    path = export_path(server.exports, kind="text_document", task_id=task_id, delivery_id=delivery)
    assert server.process.wait_export(path, delivery)["payload"] == {"taskId": task_id}


def test_well_formed_pipelined_and_kept_alive_requests_still_work(server: Server) -> None:
    # The limits count per request: two requests in one read, then a third on the same
    # connection, each with headers near the cap, are all answered.
    padding = {"x-pad": "p" * (MAX_HEADER_BYTES - 300)}
    first, second, third = task(), task(), task()
    with RawConnection(server.port) as conn:
        conn.send(
            request_bytes(HOOK, body_for(first), headers=padding)
            + request_bytes(HOOK, body_for(second), headers=padding)
        )
        answers = [conn.read_response(), conn.read_response()]
        conn.send(request_bytes(HOOK, body_for(third), headers=padding))
        answers.append(conn.read_response())
    for answer in answers:
        assert answer is not None and answer.status == 200, answer
    tasks = {first: answers[0], second: answers[1], third: answers[2]}
    for task_id, answer in tasks.items():
        assert answer is not None
        delivery = delivery_id_from(answer.text)
        path = export_path(
            server.exports, kind="text_document", task_id=task_id, delivery_id=delivery
        )
        assert server.process.wait_export(path, delivery)["task_id"] == task_id


def test_a_kept_alive_connection_gets_a_fresh_header_deadline(server: Server) -> None:
    with RawConnection(server.port) as conn:
        conn.send(request_bytes(HOOK, body_for(task())))
        first = conn.read_response()
        assert first is not None and first.status == 200
        conn.send(b"POST " + HOOK.encode())  # the next request begins, and stalls
        started = time.monotonic()
        response = conn.read_response(timeout=HEADER_SECONDS + LATE)
        assert response is not None and response.status == 408, response
        assert time.monotonic() - started >= HEADER_SECONDS * 0.9


def test_a_broken_chunk_inside_a_body_is_refused_and_not_stored(server: Server) -> None:
    # Found by the fuzz: the request whose body breaks must be answered, not wait for a body
    # that can no longer come.
    before = server.deliveries()
    body = body_for(task())
    with RawConnection(server.port) as conn:
        conn.send(
            f"POST {HOOK} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            "transfer-encoding: chunked\r\n\r\n".encode()
            + b"%x\n" % len(body)  # LF alone after a chunk size: not HTTP
            + body
            + b"\r\n0\r\n\r\n"
        )
        response = conn.read_response(timeout=BODY_SECONDS / 2)
        assert response is not None
        assert (response.status, response.text) == (400, "hookdock: invalid HTTP request\n")
        assert conn.closed_by_peer()
    assert server.deliveries() == before


@pytest.mark.parametrize(
    "framing",
    [
        "content-length: 4\r\ntransfer-encoding: chunked",  # request smuggling's first tool
        "content-length: 4\r\ncontent-length: 5",
        "content-length: -1",
        "content-length: 99999999999999999999",
    ],
)
def test_ambiguous_framing_is_refused_before_a_byte_is_stored(server: Server, framing: str) -> None:
    before = server.deliveries()
    with RawConnection(server.port) as conn:
        conn.send(
            f"POST {HOOK} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            f"{framing}\r\n\r\n".encode()
            + body_for(task())
        )
        response = conn.read_response(timeout=LATE)
        assert response is not None
        assert (response.status, response.text) == (400, "hookdock: invalid HTTP request\n")
        assert conn.closed_by_peer()
    assert server.deliveries() == before


def test_bytes_that_are_not_http_get_one_line_400(server: Server) -> None:
    with RawConnection(server.port) as conn:
        conn.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n")
        response = conn.read_response(timeout=LATE)
        assert response is not None
        assert (response.status, response.text) == (400, "hookdock: invalid HTTP request\n")
        assert conn.closed_by_peer()


def test_still_ready_and_nothing_logged_as_an_error_by_the_server(server: Server) -> None:
    assert server.ready()
    log = server.process.stderr_text()
    assert "Traceback" not in log
    assert "Exception in ASGI application" not in log
