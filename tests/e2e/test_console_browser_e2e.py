"""The web console in a real browser: Debian's Chromium driven by Playwright, against a real
``hookdock serve`` fed by real POSTs, with a real HTTP receiver as one of its sinks.

It logs in, finds an event by task id and sees its attempts; watches a dead letter appear
when the receiver answers 500, replays it from the page once the receiver is fixed and sees
it delivered; runs a bulk replay from its dry-run count to the end; is refused without a
session and for cross-site POSTs; and shows a payload full of script, markup and odd Unicode
as text on every page, with nothing executed.

Screenshots of the main pages go to ``$HOOKDOCK_SCREENSHOTS`` (default: a folder under
pytest's temporary directory, printed), for a reviewer to look at.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    CREDS,
    SD_ROUTES,
    HookdockProcess,
    delivery_id_from,
    make_config,
    route,
    run_hookdock,
)
from tests.webhook_receiver import WebhookReceiver

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip(
        "no Debian Chromium on PATH (apt-get install chromium): the console's browser tests"
        " drive it and never download one",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

ADMIN_TOKEN = "adm-" + secrets.token_urlsafe(32)
SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
URL_TOKEN = {"type": "url-token", "token": CREDS.url_token}
FLAKY_ROUTE = "console-flaky"
BULK_ROUTE = "console-bulk"
LATER_ROUTE = "console-later"
WAIT_MS = 20_000
"""How long a page may take to show a change (it refreshes its live part every 3 s)."""
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
HOSTILE = (
    '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
    '"><svg onload=window.__pwned=3></svg></pre></td><b>bold</b>'
    " {{7*7}} ${7*7} \u202etxt.exe\u202c zero\u200bwidth 😀 \u0000 &amp; '"
)


@dataclass
class Stack:
    server: HookdockProcess
    rx: WebhookReceiver
    browser: Any
    shots: Path
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.server.url, timeout=10.0, trust_env=False)

    @property
    def console(self) -> str:
        return f"{self.server.url}/admin"

    def post(
        self, route_name: str, task_id: str, name: str = "Invoice 4711.pdf", batch: str = ""
    ) -> str:
        """POST a SmartDocumentor text document; the id of its event."""
        body = {"taskId": task_id, "workspaceId": "ws-1", "displayName": name, "chunks": []}
        if batch:
            body["batchId"] = batch
        response = self.http.post(
            f"/hooks/{route_name}/{CREDS.url_token}",
            content=json.dumps(body),
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 200, response.text
        return f"{delivery_id_from(response.text)}-0"

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(
            method,
            f"/admin/api{path}",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            **kwargs,
        )
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("console")
    wanted = os.environ.get("HOOKDOCK_SCREENSHOTS")
    shots = Path(wanted) if wanted else tmp_path_factory.mktemp("console-screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    print(f"\nconsole screenshots: {shots}")
    with WebhookReceiver(secret=SECRET) as rx:

        def http_sink(path: str, wait: float = 0.1) -> dict[str, Any]:
            return {
                "type": "http",
                "url": f"{rx.url}{path}",
                "secret": SECRET,
                "allow_networks": ["127.0.0.1/32"],
                "retry": {"schedule": [wait], "max_attempts": 2, "jitter": 0},
            }

        config = make_config(
            folder,
            admin={"tokens": ["${HOOKDOCK_ADMIN_TOKEN}"]},
            sinks={
                "flaky": http_sink("/flaky"),
                "bulk": http_sink("/bulk"),
                "later": http_sink("/later", wait=3600),  # a retry an hour away: "try now"
            },
            extra_routes=[
                route(FLAKY_ROUTE, URL_TOKEN, sinks=["flaky"]),
                route(BULK_ROUTE, URL_TOKEN, sinks=["bulk"]),
                route(LATER_ROUTE, URL_TOKEN, sinks=["later"]),
            ],
        )
        with (
            run_hookdock(folder, config, env={"HOOKDOCK_ADMIN_TOKEN": ADMIN_TOKEN}) as server,
            sync_api.sync_playwright() as playwright,
        ):
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            made = Stack(server, rx, browser, shots)
            try:
                yield made
            finally:
                made.http.close()
                browser.close()


@dataclass
class Watch:
    """What a page did that it must not: dialogs opened, script errors and Content-Security-
    Policy violations (a console error; a status the test asked for, such as the refused
    login's 401, is reported too as a failed load and is not one of them)."""

    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        def dialog(d: Any) -> None:
            self.dialogs.append(d.message)
            d.dismiss()

        page.on("dialog", dialog)

        def console(message: Any) -> None:
            if message.type == "error" and not message.text.startswith("Failed to load resource"):
                self.errors.append(message.text)

        page.on("console", console)
        page.on("pageerror", lambda e: self.errors.append(str(e)))


@pytest.fixture
def page(stack: Stack) -> Iterator[tuple[Any, Watch]]:
    context = stack.browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    watch = Watch()
    watch.attach(page)
    try:
        yield page, watch
    finally:
        context.close()
    assert watch.dialogs == [], watch.dialogs
    assert watch.errors == [], watch.errors


def log_in(stack: Stack, page: Any, then: str = "/") -> None:
    page.goto(f"{stack.console}{then}")
    expect(page).to_have_url(re.compile(r"/admin/login\?next="))
    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_label("Your name").fill("sam@support")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("header .who")).to_have_text("sam@support (admin token 1)")


def shot(stack: Stack, page: Any, name: str) -> None:
    path = stack.shots / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 1000


# --------------------------------------------------------------------------- the tests


def test_log_in_find_an_event_by_task_id_and_see_its_attempts(
    stack: Stack, page: tuple[Any, Watch]
) -> None:
    tab, _ = page
    task = f"task-{uuid.uuid4()}"
    event_id = stack.post(SD_ROUTES["text_document"], task)
    stack.post(SD_ROUTES["text_document"], f"other-{uuid.uuid4()}", name="other.pdf")

    tab.goto(f"{stack.console}/login")
    tab.get_by_label("Admin token").fill("adm-" + "x" * 40)
    tab.get_by_role("button", name="Log in").click()
    expect(tab.locator(".problem")).to_have_text("That is not one of the [admin] tokens.")
    assert ADMIN_TOKEN not in tab.content()
    shot(stack, tab, "login")

    log_in(stack, tab, "/events")
    expect(tab).to_have_url(f"{stack.console}/events")
    tab.get_by_label("Task id").fill(task)
    tab.get_by_role("button", name="Find").click()
    expect(tab).to_have_url(re.compile(rf"/admin/events\?.*taskId={re.escape(task)}"))
    rows = tab.locator("table.events tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-event", event_id)
    # The URL is shareable: opened afresh it shows the same list.
    shared = tab.url
    tab.goto(shared)
    expect(tab.locator("table.events tbody tr")).to_have_count(1)
    expect(tab.locator("table.events tbody tr td.event-state .state")).to_have_text(
        "delivered", timeout=WAIT_MS
    )
    shot(stack, tab, "events")

    tab.get_by_role("link", name=event_id).click()
    expect(tab).to_have_url(f"{stack.console}/events/{event_id}")
    send = tab.locator("article.send[data-sink=exports]")
    expect(send.locator(".timeline .attempt")).to_have_count(1, timeout=WAIT_MS)
    expect(send.locator(".timeline .attempt .outcome")).to_have_text("delivered")
    expect(tab.locator("pre.payload")).to_contain_text(f'"taskId": "{task}"')
    shot(stack, tab, "event")

    answer = tab.goto(f"{stack.console}/")
    assert answer is not None
    headers = answer.headers
    csp = headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert (headers["x-frame-options"], headers["cache-control"]) == ("DENY", "no-store")
    expect(tab.locator(".chart-received .total")).not_to_have_text("0")
    expect(tab.locator(".chart-received rect.bar").first).to_be_attached()
    shot(stack, tab, "overview")
    tab.goto(f"{stack.console}/sinks")
    expect(tab.locator("tr[data-sink=exports] .sink-state")).to_contain_text("running")
    shot(stack, tab, "sinks")


def test_a_dead_letter_appears_and_is_replayed_from_the_page_once_the_sink_is_fixed(
    stack: Stack, page: tuple[Any, Watch]
) -> None:
    tab, _ = page
    log_in(stack, tab, "/dead")
    # The receiver answers 500 twice (both attempts the sink has): a dead letter.
    stack.rx.script("/flaky", [500, 500])
    event_id = stack.post(FLAKY_ROUTE, f"flaky-{uuid.uuid4()}")
    # The open page shows it without a reload.
    section = tab.locator("section.dead-sink[data-sink=flaky]")
    expect(section).to_be_visible(timeout=WAIT_MS)
    expect(section.locator("h2")).to_have_text("flaky: 1 dead")
    shot(stack, tab, "dead-letters")

    section.get_by_role("link", name="List them").click()
    tab.get_by_role("link", name=event_id).click()
    send = tab.locator("article.send[data-sink=flaky]")
    expect(send.locator(".state").first).to_have_text("dead")
    expect(send.locator(".timeline .attempt .outcome")).to_have_text(["retry", "dead"])
    expect(send.locator(".timeline .error-text").first).to_contain_text("500")
    shot(stack, tab, "event-dead")

    # The receiver is fixed (its script is used up: it answers 204 from now on).
    send.get_by_role("button", name="Replay to flaky").click()
    expect(tab.locator(".flash")).to_have_text("1 sends go out again to sink flaky")
    expect(send.locator(".state").first).to_have_text("delivered", timeout=WAIT_MS)
    expect(send.locator(".timeline .attempt .outcome")).to_have_text(["retry", "dead", "delivered"])
    stack.rx.wait_for(lambda: event_id in stack.rx.stored("/flaky"))
    shot(stack, tab, "event-replayed")
    [action] = [a for a in stack.api("GET", "/actions") if a["eventId"] == event_id]
    assert (action["actor"], action["action"]) == ("sam@support (admin token 1)", "replay")


def test_a_waiting_send_is_tried_now_from_the_page(stack: Stack, page: tuple[Any, Watch]) -> None:
    tab, _ = page
    stack.rx.script("/later", [500])  # then 204: the next attempt succeeds
    event_id = stack.post(LATER_ROUTE, f"later-{uuid.uuid4()}")
    log_in(stack, tab, f"/events/{event_id}")
    send = tab.locator("article.send[data-sink=later]")
    expect(send.locator(".timeline .attempt .outcome")).to_have_text(["retry"], timeout=WAIT_MS)
    expect(send).to_contain_text("Next attempt")  # an hour away
    shot(stack, tab, "event-waiting")
    send.get_by_role("button", name="Try now").click()
    expect(tab.locator(".flash")).to_contain_text("to sink later is due now")
    expect(send.locator(".timeline .attempt .outcome")).to_have_text(
        ["retry", "delivered"], timeout=WAIT_MS
    )
    stack.rx.wait_for(lambda: event_id in stack.rx.stored("/later"))


def test_a_bulk_replay_from_its_dry_run_count_to_the_end(
    stack: Stack, page: tuple[Any, Watch]
) -> None:
    tab, _ = page
    stack.rx.script("/bulk", [500] * 6)  # three events, two attempts each
    batch = f"batch-{uuid.uuid4()}"
    events = {stack.post(BULK_ROUTE, f"bulk-{uuid.uuid4()}", batch=batch) for _ in range(3)}
    log_in(stack, tab, "/dead")
    section = tab.locator("section.dead-sink[data-sink=bulk]")
    expect(section.locator("h2")).to_have_text("bulk: 3 dead", timeout=WAIT_MS)

    section.get_by_role("link", name="Replay them to bulk…").click()
    expect(tab.locator(".dry-run .matched")).to_have_text("3")
    assert stack.rx.stored("/bulk") == {}  # a dry run replays nothing
    shot(stack, tab, "bulk-dry-run")
    tab.get_by_role("button", name="Replay 3 events").click()
    expect(tab).to_have_url(re.compile(r"/admin/replays/replay_[0-9a-f]{26}$"))
    expect(tab.locator(".job-state strong")).to_have_attribute(
        "data-state", "done", timeout=WAIT_MS
    )
    expect(tab.locator(".job-counts")).to_contain_text("3 of 3 events replayed")
    shot(stack, tab, "bulk-done")
    stack.rx.wait_for(lambda: set(stack.rx.stored("/bulk")) == events)
    tab.goto(f"{stack.console}/events?sink=bulk&state=dead")
    expect(tab.locator("p.count")).to_contain_text("0 events", timeout=WAIT_MS)
    tab.goto(f"{stack.console}/batches")
    row = tab.locator(f"tr[data-batch='{batch}']")
    expect(row).to_contain_text("3/3", timeout=WAIT_MS)
    expect(row.locator("svg.progress rect.bar-delivered")).to_have_attribute("width", "200.0")
    shot(stack, tab, "batches")


class _AttackerPage(BaseHTTPRequestHandler):
    """Another site's page with a form that posts to the console."""

    target = ""

    def do_GET(self) -> None:
        html = (
            f'<form method="post" action="{self.target}"><input name="reason" value="pwned">'
            '<input name="csrf" value="guessed"><button>Win a prize</button></form>'
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(html)))
        self.end_headers()
        self.wfile.write(html)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_refused_without_a_session_and_for_cross_site_posts(
    stack: Stack, page: tuple[Any, Watch]
) -> None:
    tab, _ = page
    stop = f"{stack.console}/sinks/exports/stop"

    # No session: a page sends to the login, an action is refused.
    tab.goto(f"{stack.console}/sinks")
    expect(tab).to_have_url(f"{stack.console}/login?next=%2Fadmin%2Fsinks")
    refused = tab.request.post(stop, form={"reason": "x"}, headers={"Origin": stack.server.url})
    assert refused.status == 401
    assert "log in first" in refused.text()

    log_in(stack, tab, "/sinks")
    csrf = tab.locator("input[name=csrf]").first.get_attribute("value")
    assert csrf and len(csrf) == 64
    same = {"Origin": stack.server.url}
    for form, headers, why in [
        ({"reason": "x"}, same, "CSRF token"),
        ({"reason": "x", "csrf": "0" * 64}, same, "CSRF token"),
        ({"reason": "x", "csrf": csrf}, {"Origin": "http://evil.example"}, "another site"),
        ({"reason": "x", "csrf": csrf}, {"Origin": "null"}, "opaque origin"),
    ]:
        answer = tab.request.post(stop, form=form, headers=headers)
        assert answer.status == 403, (form, headers, answer.status)
        assert why in answer.text()

    # A real page on another site (localhost is not 127.0.0.1) posting a form: the
    # SameSite=Strict cookie stays home, so there is no session.
    _AttackerPage.target = stop
    attacker = ThreadingHTTPServer(("127.0.0.1", 0), _AttackerPage)
    thread = threading.Thread(target=attacker.serve_forever, daemon=True)
    thread.start()
    try:
        tab.goto(f"http://localhost:{attacker.server_address[1]}/")
        with tab.expect_response(stop) as posted:
            tab.get_by_role("button", name="Win a prize").click()
        assert posted.value.status == 401
    finally:
        attacker.shutdown()
        attacker.server_close()
        thread.join(10)

    [sink] = [s for s in stack.api("GET", "/sinks") if s["name"] == "exports"]
    assert sink["stopped"] is False
    tab.goto(f"{stack.console}/sinks")
    expect(tab.locator("tr[data-sink=exports] .sink-state")).to_contain_text("running")

    # The page's own form passes; logging out ends the session in this browser.
    row = tab.locator("tr[data-sink=exports]")
    row.locator("input[name=reason]").fill("disk swap")
    row.get_by_role("button", name="Stop").click()
    expect(tab.locator(".flash")).to_have_text("stopped sink exports")
    expect(row.locator(".sink-state")).to_contain_text("stopped")
    expect(row.locator(".sink-state")).to_contain_text("disk swap")
    row.get_by_role("button", name="Resume").click()
    expect(row.locator(".sink-state")).to_contain_text("running")
    tab.get_by_role("button", name="Log out").click()
    expect(tab).to_have_url(f"{stack.console}/login")
    tab.goto(f"{stack.console}/")
    expect(tab).to_have_url(re.compile(r"/admin/login\?next="))


def test_a_hostile_payload_is_text_on_every_page_and_nothing_runs(
    stack: Stack, page: tuple[Any, Watch]
) -> None:
    tab, watch = page
    task = f"hostile-{uuid.uuid4()}"
    event_id = stack.post(SD_ROUTES["text_document"], task, name=HOSTILE)
    log_in(stack, tab, f"/events?taskId={task}")
    shown = HOSTILE.replace("\u202e", "<U+202E>").replace("\u202c", "<U+202C>")
    shown = shown.replace("\u200b", "<U+200B>").replace("\u0000", "<U+0000>")

    def nothing_ran() -> None:
        assert tab.evaluate("window.__pwned") is None
        text = tab.content()
        assert ADMIN_TOKEN not in text and CREDS.url_token not in text and SECRET not in text
        assert tab.locator("main img, main b, main svg[onload]").count() == 0

    name = tab.locator("table.events td.name")
    expect(name).to_have_text(shown)
    nothing_ran()
    shot(stack, tab, "hostile-events")

    tab.goto(f"{stack.console}/events/{event_id}")
    expect(tab.locator("section.event h2")).to_contain_text(shown)
    payload = tab.locator("pre.payload")
    expect(payload).to_contain_text("<script>window.__pwned = 1</script>")
    expect(payload).to_contain_text("<U+202E>txt.exe")
    expect(payload).to_contain_text("😀")
    nothing_ran()
    shot(stack, tab, "hostile-event")

    for path in ("/", "/dead", "/sinks", "/batches", f"/events?q={task[:12]}"):
        tab.goto(f"{stack.console}{path}")
        expect(tab.locator("main")).to_be_visible()
        nothing_ran()
    # A live refresh brings the same escaped text, and runs nothing either.
    tab.goto(f"{stack.console}/events?taskId={task}")
    before = tab.locator("#live").get_attribute("data-refreshed-at")
    assert before is None
    expect(tab.locator("#live")).to_have_attribute("data-refreshed-at", re.compile(r"\d+"))
    expect(name).to_have_text(shown)
    nothing_ran()
    assert watch.dialogs == []
