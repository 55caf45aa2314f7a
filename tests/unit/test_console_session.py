"""The console's session cookies, CSRF and origin checks, escaping and shared recent
answers, without a server (tests/e2e/test_console_browser_e2e.py drives the same in
Chromium)."""

from __future__ import annotations

import time

import pytest
from pydantic import SecretStr

from receiver.console.app import _local_next
from receiver.console.csrf import check_action, check_origin
from receiver.console.recent import Recent
from receiver.console.render import page, reveal
from receiver.console.session import Sessions
from receiver.errors import Forbidden

TOKENS = [SecretStr("a" * 32), SecretStr("b" * 32)]
HOST = {"host": "127.0.0.1:8080"}


def test_a_token_logs_in_and_its_cookie_reads_back_the_same_session() -> None:
    sessions = Sessions(TOKENS, 3600)
    made = sessions.login("b" * 32, "ann@ops")
    assert made is not None
    session, cookie = made
    assert session.actor == "ann@ops (admin token 2)"
    assert "b" * 32 not in cookie  # the token's number is in it, never the token
    assert sessions.read(cookie) == session
    assert sessions.login("a" * 32, "<script>")[0].actor == "admin token 1"  # type: ignore[index]


@pytest.mark.parametrize("presented", ["", "   ", "a" * 31, "c" * 32, "a" * 32 + "x"])
def test_anything_but_a_token_is_refused(presented: str) -> None:
    assert Sessions(TOKENS, 3600).login(presented) is None


def test_a_forged_tampered_or_foreign_cookie_is_no_session() -> None:
    sessions = Sessions(TOKENS, 3600)
    _, cookie = sessions.login("a" * 32) or pytest.fail("no session")
    assert sessions.read(None) is None
    assert sessions.read("") is None
    assert sessions.read("not-a-cookie") is None
    assert sessions.read(cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB")) is None
    assert sessions.read("x" + cookie) is None
    # Removing or rotating a token ends every session: the key is made of all of them.
    assert Sessions(TOKENS[:1], 3600).read(cookie) is None
    assert Sessions([TOKENS[0], SecretStr("d" * 32)], 3600).read(cookie) is None


def test_a_session_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    sessions = Sessions(TOKENS, 60)
    _, cookie = sessions.login("a" * 32) or pytest.fail("no session")
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 30)
    assert sessions.read(cookie) is not None
    monkeypatch.setattr(time, "time", lambda: now + 62)
    assert sessions.read(cookie) is None


def test_each_session_has_its_own_csrf_token() -> None:
    sessions = Sessions(TOKENS, 3600)
    one, _ = sessions.login("a" * 32) or pytest.fail("no session")
    two, _ = sessions.login("a" * 32) or pytest.fail("no session")
    assert one.csrf != two.csrf and len(one.csrf) == 64
    assert sessions.csrf_matches(one, one.csrf)
    assert not sessions.csrf_matches(one, two.csrf)
    assert not sessions.csrf_matches(one, None)
    assert not sessions.csrf_matches(one, "")


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "http://127.0.0.1:8080"},
        {"origin": "https://127.0.0.1:8080"},  # TLS ended in front of hookdock
        {"referer": "http://127.0.0.1:8080/admin/events?x=1"},  # no Origin: the Referer
    ],
)
def test_a_same_origin_request_passes(headers: dict[str, str]) -> None:
    check_origin({**HOST, **headers})


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({}, "no Origin"),
        ({"origin": "null"}, "opaque"),
        ({"origin": "http://evil.example"}, "another site"),
        ({"origin": "http://127.0.0.1:8081"}, "another site"),
        ({"origin": "http://127.0.0.1:8080.evil.example"}, "another site"),
        ({"referer": "http://evil.example/admin/"}, "another site"),
        ({"origin": "javascript:alert(1)"}, "another site"),
    ],
)
def test_a_cross_site_request_is_refused(headers: dict[str, str], why: str) -> None:
    with pytest.raises(Forbidden, match=why):
        check_origin({**HOST, **headers})


def test_an_action_needs_the_session_s_form_token() -> None:
    sessions = Sessions(TOKENS, 3600)
    session, _ = sessions.login("a" * 32) or pytest.fail("no session")
    other, _ = sessions.login("a" * 32) or pytest.fail("no session")
    same = {**HOST, "origin": "http://127.0.0.1:8080"}
    check_action(same, {"csrf": session.csrf}, session, sessions)
    for form in ({}, {"csrf": ""}, {"csrf": other.csrf}, {"csrf": session.csrf + "0"}):
        with pytest.raises(Forbidden, match="CSRF token"):
            check_action(same, form, session, sessions)
    with pytest.raises(Forbidden, match="another site"):
        check_action(
            {**HOST, "origin": "http://evil.example"}, {"csrf": session.csrf}, session, sessions
        )


@pytest.mark.parametrize(
    ("wanted", "goes_to"),
    [
        ("/admin/events?taskId=7", "/admin/events?taskId=7"),
        (None, "/admin/"),
        ("https://evil.example/", "/admin/"),
        ("//evil.example/admin/", "/admin/"),
        ("/admin/\\evil.example", "/admin/"),
        ("/elsewhere", "/admin/"),
    ],
)
def test_after_login_only_a_console_page(wanted: str | None, goes_to: str) -> None:
    assert _local_next("/admin", wanted) == goes_to


def test_what_a_vendor_sent_is_shown_as_text() -> None:
    assert reveal("invoice\u202egpj.exe") == "invoice<U+202E>gpj.exe"
    assert reveal("a\u200bb\x00c\td") == "a<U+200B>b<U+0000>c\td"
    assert reveal(7) == 7
    body = page(
        "error.html",
        {
            "base": "/admin",
            "session": None,
            "flash": None,
            "fragment": False,
            "sink_names": [],
            "code": 400,
            "message": '<script>alert(1)</script>"\u202e',
        },
    ).body
    html = bytes(body).decode()
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&#34;&lt;U+202E&gt;" in html


@pytest.mark.anyio
async def test_recent_answers_are_shared_for_a_while_then_made_again() -> None:
    now = [100.0]
    recent = Recent(10.0, clock=lambda: now[0])
    made: list[int] = []

    async def make() -> int:
        made.append(len(made))
        return len(made)

    assert await recent.get("k", make) == 1
    now[0] = 109.9
    assert await recent.get("k", make) == 1
    assert await recent.get("other", make) == 2
    now[0] = 110.0
    assert await recent.get("k", make) == 3
    assert made == [0, 1, 2]
