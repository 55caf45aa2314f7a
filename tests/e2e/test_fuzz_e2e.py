"""A seeded, bounded fuzz of hostile and broken requests against a real ``hookdock serve``.

3,000 requests (``HOOKDOCK_FUZZ_SEED`` picks another seed, ``HOOKDOCK_FUZZ_COUNT`` another
count) built from random methods, paths, content types, headers, bodies (random bytes,
invalid UTF-8, nesting up to 1,100 levels, numbers beyond any float, ids a file system cannot
take, nearly valid payloads) and framings (chunked, a ``Content-Length`` shorter or longer
than the body, none at all), eight at a time, each on its own connection.  Then:

* no answer is a 5xx, and every refusal is one line, ``hookdock: ...``;
* the server is still ready;
* every delivery answered 2xx is, within a bounded time, delivered or dead-lettered with a
  reason, and a dead one died at its first attempt: nothing is left retrying what cannot
  succeed (the only sink is a local folder, which has no transient failures here).
"""

from __future__ import annotations

import json
import os
import random
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import CREDS, ROUTE_NONE, SD_ROUTES, HookdockProcess, make_config, run_hookdock
from tests.rawhttp import RawConnection

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SEED = int(os.environ.get("HOOKDOCK_FUZZ_SEED", "20261203"))
COUNT = int(os.environ.get("HOOKDOCK_FUZZ_COUNT", "3000"))
WORKERS = 8
DEADLINE_SECONDS = 2.0
SETTLE_TIMEOUT = 60.0
_ACCEPTED = re.compile(r"^hookdock: (?:already )?accepted as ([0-9a-f]{26})\n$")


@dataclass
class Case:
    number: int
    wire: bytes
    expect_second: bool = False
    """A ``Content-Length`` shorter than the body: a second answer (400) follows the first."""
    notes: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"Case {self.number} ({', '.join(self.notes)}): {self.wire[:300]!r}"


@dataclass
class Outcome:
    case: Case
    statuses: list[int]
    texts: list[str]


def _nested(rng: random.Random, depth: int) -> bytes:
    opener, closer = (b"[", b"]") if rng.random() < 0.5 else (b'{"a":', b"}")
    return opener * depth + b"1" + closer * depth


def _random_value(rng: random.Random, depth: int = 0) -> object:
    choice = rng.randrange(8 if depth < 4 else 5)
    if choice == 0:
        return rng.randint(-(2**70), 2**70)
    if choice == 1:
        return rng.random() * 10 ** rng.randint(-300, 300)
    if choice == 2:
        return "".join(chr(rng.randint(0, 0x2FFF)) for _ in range(rng.randint(0, 40)))
    if choice == 3:
        return rng.choice([None, True, False, "", "../..", "a/b", "\x00", "\u202e"])
    if choice == 4:
        return rng.randint(0, 1000)
    if choice == 5:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {f"k{i}": _random_value(rng, depth + 1) for i in range(rng.randint(0, 4))}


def _task_id(rng: random.Random, number: int) -> object:
    unique = f"fz-{SEED}-{number}"
    return rng.choices(
        [
            unique,
            unique + "-" + "t" * 300,  # too long for a file name: dead at once, named
            unique + "/../up",  # a separator: dead at once, named
            number,
            2**70 + number,
            1.5,
            True,
            None,
            "",
            "   ",
            [unique],
            unique + "\u00e9\u4e2d\U0001f600",
            unique + "\x01",
        ],
        weights=[40, 4, 3, 4, 2, 2, 2, 2, 2, 1, 1, 4, 2],
    )[0]


def _body(rng: random.Random, number: int, notes: list[str]) -> bytes:
    kind = rng.choices(
        ["payload", "bytes", "utf8", "deep", "numbers", "empty", "bom", "not-object", "big"],
        weights=[55, 6, 5, 10, 8, 3, 3, 5, 2],
    )[0]
    notes.append(kind)
    if kind == "payload":
        payload: dict[str, object] = {"taskId": _task_id(rng, number)}
        for key in ("workspaceId", "batchId", "externalId", "displayName", "taskNumber"):
            if rng.random() < 0.5:
                payload[key] = _random_value(rng)
        if rng.random() < 0.3:
            payload["extra"] = _random_value(rng)
        if rng.random() < 0.1:
            payload["originalFileUrl"] = rng.choice(["ftp://x/y", "http://", "https://h/x?sig=s"])
        return json.dumps(payload, ensure_ascii=rng.random() < 0.5).encode()
    if kind == "bytes":
        return rng.randbytes(rng.randint(1, 2000))
    if kind == "utf8":
        return b'{"taskId": "fz-' + str(number).encode() + b'", "displayName": "\xff\xfe\xc3"}'
    if kind == "deep":
        depth = rng.choice([rng.randint(1, 70), rng.randint(60, 300), rng.randint(250, 1100)])
        notes.append(f"depth {depth}")
        return b'{"taskId": "fz-' + str(number).encode() + b'", "d": ' + _nested(rng, depth) + b"}"
    if kind == "numbers":
        digits = b"9" * rng.randint(20, 5000)
        return rng.choice(
            [
                b'{"taskId": ' + digits + b"}",
                b'{"taskId": "fz-%d", "n": %s}' % (number, digits),
                b'{"taskId": "fz-%d", "n": 1e400}' % number,
                b'{"taskId": "fz-%d", "n": NaN}' % number,
                b'{"taskId": "fz-%d", "n": -0.0e-99999}' % number,
            ]
        )
    if kind == "empty":
        return b""
    if kind == "bom":
        return b"\xef\xbb\xbf" + json.dumps({"taskId": f"fz-bom-{SEED}-{number}"}).encode()
    if kind == "not-object":
        return rng.choice([b"[]", b'"x"', b"1", b"null", b'{"taskId": "a", "taskId": 1}'])
    return b'{"taskId": "fz-big-%d", "pad": "' % number + b"x" * rng.randint(1 << 20, 9 << 17)


def _path(rng: random.Random, notes: list[str]) -> str:
    token = CREDS.url_token
    # The token is random: a fixed last character would be the right one once in 64 runs.
    wrong = token[:-1] + ("Y" if token.endswith("X") else "X")
    path = rng.choices(
        [
            f"/hooks/{ROUTE_NONE}",
            f"/hooks/{SD_ROUTES['text_document']}/{token}",
            f"/hooks/{SD_ROUTES['text_document']}/{wrong}",
            f"/hooks/{SD_ROUTES['transcript_file']}/{token}",
            f"/hooks/{SD_ROUTES['text_document']}?token={token}",
            "/hooks/nope",
            f"/hooks/{ROUTE_NONE}/x/y",
            "/hooks/",
            "/readyz",
            "/%zz/..%2f",
            f"/hooks/{ROUTE_NONE}?q=" + "%00" * 20,
        ],
        weights=[45, 20, 3, 5, 3, 2, 2, 1, 1, 1, 2],
    )[0]
    notes.append(path.replace(token, "TOKEN").replace(wrong, "WRONG-TOKEN"))
    return path


def make_case(rng: random.Random, number: int) -> Case:
    notes: list[str] = []
    method = "POST" if rng.random() < 0.9 else rng.choice(["GET", "PUT", "DELETE", "PATCH"])
    path = _path(rng, notes)
    body = _body(rng, number, notes)
    headers: list[tuple[str, str]] = [("host", "127.0.0.1")]
    content_type = rng.choices(
        [
            "application/json",
            "application/json; charset=utf-8",
            "APPLICATION/JSON",
            "text/plain",
            "",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/json\x7f",
        ],
        weights=[70, 8, 3, 4, 4, 3, 2, 1],
    )[0]
    if content_type:
        headers.append(("content-type", content_type))
    for _ in range(rng.choice([0, 0, 0, 1, 3])):
        name = rng.choice(["x-a", "user-agent", "webhook-id", "x-superoffice-event", "accept"])
        value = "".join(chr(rng.randint(0x20, 0xFF)) for _ in range(rng.randint(0, 60)))
        headers.append((name, value))
    if rng.random() < 0.01:
        headers.append(("x-huge", "h" * 20_000))
        notes.append("huge header")
    framing = rng.choices(
        ["length", "chunked", "short-length", "long-length", "none"],
        weights=[82, 9, 4, 1, 4],
    )[0]
    notes.append(framing)
    expect_second = False
    if framing == "length":
        headers.append(("content-length", str(len(body))))
        payload = body
    elif framing == "chunked":
        headers.append(("transfer-encoding", "chunked"))
        payload = b""
        rest = body
        while rest:
            size = rng.randint(1, max(1, len(rest)))
            payload += b"%x\r\n" % size + rest[:size] + b"\r\n"
            rest = rest[size:]
        payload += b"0\r\n\r\n"
        if rng.random() < 0.1:
            payload = payload.replace(b"\r\n", b"\n", 1)  # a broken chunk header
            notes.append("broken chunk")
    elif framing == "short-length":
        cut = rng.randint(0, len(body))
        headers.append(("content-length", str(cut)))
        payload = body + b"GARBAGE after the declared bytes\r\n\r\n"
        expect_second = True
    elif framing == "long-length":
        headers.append(("content-length", str(len(body) + rng.randint(1, 100))))
        payload = body
    else:
        payload = body
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    wire = head.encode("latin-1", errors="replace") + b"\r\n" + payload
    return Case(number, wire, expect_second, notes)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HookdockProcess]:
    folder = tmp_path_factory.mktemp("fuzz")
    config = make_config(
        folder,
        server={
            "header_timeout_seconds": DEADLINE_SECONDS,
            "body_timeout_seconds": DEADLINE_SECONDS,
        },
        dispatcher={"retry": {"schedule": [0.2], "max_attempts": 5}},
    )
    with run_hookdock(folder, config) as process:
        yield process


def send(port: int, case: Case) -> Outcome:
    statuses: list[int] = []
    texts: list[str] = []
    with RawConnection(port, timeout=30.0) as conn:
        conn.try_send(case.wire)
        for _ in range(2 if case.expect_second else 1):
            try:
                response = conn.read_response(timeout=DEADLINE_SECONDS + 20)
            except TimeoutError:
                pytest.fail(f"no answer: {case!r}")
            if response is None:
                break
            statuses.append(response.status)
            texts.append(response.text)
            if response.status != 200:
                break
    return Outcome(case, statuses, texts)


def settled(journal: Path, deliveries: list[str]) -> list[tuple[str, str, str | None, int]] | None:
    """(delivery, state, error, attempts) of every send and unroutable delivery, or None
    while one of them is still pending."""
    conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=10)
    try:
        marks = ",".join("?" * len(deliveries))
        pending = (
            conn.execute(
                f"SELECT count(*) FROM deliveries WHERE id IN ({marks}) AND state = 'pending'",
                deliveries,
            ).fetchone()[0]
            + conn.execute(
                f"SELECT count(*) FROM sends WHERE delivery_id IN ({marks}) AND state = 'pending'",
                deliveries,
            ).fetchone()[0]
        )
        if pending:
            return None
        rows = conn.execute(
            f"SELECT delivery_id, state, last_error, attempts FROM sends"
            f" WHERE delivery_id IN ({marks})",
            deliveries,
        ).fetchall()
        rows += conn.execute(
            f"SELECT id, 'unroutable', last_error, attempts FROM deliveries"
            f" WHERE id IN ({marks}) AND state = 'dead'",
            deliveries,
        ).fetchall()
    finally:
        conn.close()
    return [(str(a), str(b), c, int(d)) for a, b, c, d in rows]


def test_fuzz(server: HookdockProcess) -> None:
    rng = random.Random(SEED)
    cases = [make_case(rng, number) for number in range(COUNT)]
    assert server.port is not None
    port = server.port
    started = time.monotonic()
    with ThreadPoolExecutor(WORKERS) as pool:
        outcomes = list(pool.map(lambda case: send(port, case), cases))
    sending = time.monotonic() - started

    statuses: Counter[int] = Counter()
    accepted: set[str] = set()
    for outcome in outcomes:
        statuses.update(outcome.statuses)
        for status, text in zip(outcome.statuses, outcome.texts, strict=True):
            assert status < 500, f"{status} {text!r} for {outcome.case!r}"
            if status == 200 and outcome.case.wire.split(b" ", 2)[1].startswith(b"/hooks/"):
                match = _ACCEPTED.match(text)
                assert match, f"{text!r} for {outcome.case!r}"
                accepted.add(match.group(1))
            elif status >= 400:
                assert text.startswith("hookdock: ") and text.count("\n") == 1, (
                    f"{status} {text!r} for {outcome.case!r}"
                )
    print(f"fuzz seed {SEED}: {COUNT} requests in {sending:.1f}s, answers {dict(statuses)}")
    # The fuzz reached the journal and the refusals alike, or it tested little.
    assert len(accepted) > COUNT // 5
    assert sum(n for status, n in statuses.items() if status >= 400) > COUNT // 5
    assert {400, 401, 404, 408, 413, 415, 422} <= set(statuses)

    ready = httpx.get(f"{server.url}/readyz", timeout=5.0, trust_env=False)
    assert ready.status_code == 200, ready.text

    journal = server.folder / "hookdock.db"
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while (rows := settled(journal, sorted(accepted))) is None:
        assert time.monotonic() < deadline, "deliveries still pending after the settle timeout"
        time.sleep(0.1)
    states = Counter(state for _, state, _, _ in rows)
    print(f"sends and unroutable deliveries by state: {dict(states)}")
    assert states["delivered"] > 0
    for delivery, state, error, attempts in rows:
        if state == "delivered":
            continue
        assert error, f"{delivery} is {state} without a reason"
        assert attempts == 1, f"{delivery} was retried {attempts} times before: {error}"
    log = server.stderr_text()
    assert "Traceback" not in log
    assert "unexpected error" not in log
