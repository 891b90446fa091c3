"""The status page at ``/`` and ``GET /v1/sources``: a real daemon, a real receiver, Chromium.

The browser tests drive Debian's chromium through Playwright (no browser download); they are
skipped, saying so, where /usr/bin/chromium is not installed.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Page, async_playwright, expect

from bridge.api import page as page_module
from bridge.app import Daemon
from bridge.simulate import coocenter
from bridge.simulate.common import Call
from bridge.simulate.coral_realtime import RealtimeServer
from bridge.store import deliveries
from tests.conftest import base_url, daemon_config, until, until_true
from tests.receiver import SECRET, Receiver, serve

CHROMIUM = Path("/usr/bin/chromium")
HAVE_CHROMIUM = CHROMIUM.exists()
# The network is closed: without these, Chromium's background connections fail and stall it.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 20_000  # the page polls every 5 s; a loaded CI machine gets room

ADMIN_TOKEN = "admin-token-0123456789abcdef"
READ_TOKEN = "read-token-0123456789abcdef"
PBX_TOKEN = "pbx-push-secret"  # what the PBX sends to /ingest/hq


@dataclass
class Gate:
    """What the receiver answers: 400 (dead-lettered at once, no retry) until it accepts."""

    accept: bool = False

    def script(self, event: dict[str, Any], seen: int) -> tuple[int, dict[str, str]]:
        return (200, {}) if self.accept else (400, {})


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
async def receiver(gate: Gate) -> AsyncIterator[Receiver]:
    async with serve(Receiver(script=gate.script)) as running:
        yield running


def config(data_dir: Path, receiver: Receiver, *sources: dict[str, Any]) -> Any:
    return daemon_config(
        data_dir,
        api={"tokens": [ADMIN_TOKEN, {"token": READ_TOKEN, "scopes": ["read"]}]},
        sources=[
            {
                "name": "hq",
                "vendor": "coocenter",
                "auth": {"type": "token", "token": PBX_TOKEN},
            },
            {"name": "branch", "vendor": "oncall"},
            *sources,
        ],
        sinks=[
            {
                "name": "crm",
                "type": "webhook",
                "url": receiver.url,
                "secrets": [SECRET],
                "types": ["call.missed"],  # one event per call: one dead letter to count
                "retry_schedule_s": [0.0, 0.05],
            }
        ],
    )


@pytest.fixture
async def daemon(tmp_path: Path, receiver: Receiver) -> AsyncIterator[Daemon]:
    async with Daemon(config(tmp_path / "data", receiver)) as running:
        yield running


def dial(call: Call) -> dict[str, Any]:
    """The call's first dial push (its caller's number is ``calleridnum``)."""
    return next(push for push in call.pushes if push["event"] == "dialbegein")


def missed_call() -> Call:
    """A CooCenter call that rings the queue and is missed (the first seed that plans one)."""
    for seed in range(100):
        call = coocenter.scenario(1, random.Random(seed), start=time.time() - 60)
        if call.expected_types[-1] == "call.missed":
            return call
    raise AssertionError("no seed plans a missed call")  # pragma: no cover


async def push(daemon: Daemon, *payloads: dict[str, Any], token: str = PBX_TOKEN) -> list[int]:
    """Push to /ingest/hq as the PBX does; the answers' statuses."""
    statuses = []
    async with aiohttp.ClientSession() as http:
        for payload in payloads:
            url = base_url(daemon) + "/ingest/hq"
            async with http.post(url, json=payload, headers={"X-Bridge-Token": token}) as r:
                statuses.append(r.status)
    return statuses


async def get(daemon: Daemon, path: str, token: str | None = ADMIN_TOKEN) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http:
        async with http.get(base_url(daemon) + path, headers=headers) as response:
            return response.status, await response.json(content_type=None)


# -- serving the page -------------------------------------------------------------------------


async def test_page_is_served_without_a_token_under_a_strict_policy(daemon: Daemon) -> None:
    """GET / needs no token, and comes with a self-only CSP (no inline script) and nosniff."""
    async with aiohttp.ClientSession() as http:
        for path, kind in [("/", "text/html"), ("/static/app.js", "text/javascript")]:
            async with http.get(base_url(daemon) + path) as response:
                assert response.status == 200
                assert response.content_type == kind
                policy = response.headers["Content-Security-Policy"]
                assert response.headers["X-Content-Type-Options"] == "nosniff"
                directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
                assert directives["default-src"] == "'self'"
                assert directives["script-src"] == "'self'"
                assert "unsafe" not in policy


async def test_only_the_page_files_are_served(daemon: Daemon) -> None:
    """The static route is a fixed list: the package's other files are not reachable."""
    async with aiohttp.ClientSession() as http:
        for path in ("/static/", "/static/index.html/..", "/static/../page.py", "/page.py"):
            async with http.get(base_url(daemon) + path) as response:
                assert response.status == 404, path


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_the_page_loads_nothing_from_elsewhere_and_runs_no_inline_code() -> None:
    """Every script and style sheet is a local file; no inline handler; no innerHTML in the JS."""
    static = page_module.STATIC
    parser = _Tags()
    parser.feed((static / "index.html").read_text())
    scripts = [attrs for tag, attrs in parser.tags if tag == "script"]
    assert [attrs.get("src") for attrs in scripts] == ["static/app.js"]
    for tag, attrs in parser.tags:
        assert not any(name.startswith("on") for name in attrs), tag  # would need unsafe-inline
        assert "style" not in attrs, tag
        for value in attrs.values():
            assert "//" not in (value or ""), (tag, value)  # nothing from another origin
    script = (static / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script
    assert "http://" not in script
    assert "https://" not in script


# -- GET /v1/sources --------------------------------------------------------------------------


async def test_sources_count_answers_and_auth_failures(daemon: Daemon) -> None:
    """Each source's answers by status, its refused pushes, and when it last pushed."""
    before = time.time()
    ringing = dial(missed_call())
    assert await push(daemon, ringing) == [200]
    assert await push(daemon, ringing, token="wrong-secret") == [401]
    status, body = await get(daemon, "/v1/sources", READ_TOKEN)
    assert status == 200
    hq, branch = body["sources"]
    assert (hq["name"], hq["vendor"], branch["name"], branch["vendor"]) == (
        "hq",
        "coocenter",
        "branch",
        "oncall",
    )
    assert hq["responses"] == {"200": 1, "401": 1}
    assert hq["auth_failures"] == 1
    assert before <= hq["last_push"] <= body["now"]
    assert (branch["responses"], branch["auth_failures"], branch["last_push"]) == ({}, 0, None)
    assert hq["realtime"] is None


async def test_sources_need_the_api_token(daemon: Daemon) -> None:
    """Without a valid bearer token /v1/sources answers 401 and shows nothing."""
    for token in (None, "not-a-token-0123456789"):
        status, body = await get(daemon, "/v1/sources", token)
        assert status == 401
        assert "sources" not in body


async def test_sources_show_the_realtime_connection(tmp_path: Path, receiver: Receiver) -> None:
    """A realtime source carries its connection's state; it follows the connection."""
    async with RealtimeServer(heartbeat_ms=(100, 100)) as server:
        coral = {
            "name": "coral",
            "vendor": "coral",
            "realtime": {
                "url": server.url,
                "heartbeat_ms": [100, 100],
                "reconnect_min_s": 0.05,
                "reconnect_max_s": 0.2,
            },
        }
        async with Daemon(config(tmp_path / "data", receiver, coral)) as daemon:
            await until(lambda: server.subscribers == 1, what="the subscription")

            async def connected(state: bool) -> bool:
                _, body = await get(daemon, "/v1/sources")
                realtime = {s["name"]: s["realtime"] for s in body["sources"]}
                assert realtime["hq"] is None
                return bool(realtime["coral"]["connected"] is state)

            await until_true(lambda: connected(True), what="connected in /v1/sources")
            server.refuse = 1000
            server.drop_all()
            await until_true(lambda: connected(False), what="disconnected in /v1/sources")


# -- the page in a browser --------------------------------------------------------------------


@pytest.fixture
async def browser_page(daemon: Daemon) -> AsyncIterator[Page]:
    """A fresh Chromium tab; uncaught script errors and CSP violations fail the test."""
    if not HAVE_CHROMIUM:
        pytest.skip("the status page tests need Debian's chromium at /usr/bin/chromium")
    problems: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            tab = await browser.new_page()
            tab.set_default_timeout(WAIT_MS)
            expect.set_options(timeout=WAIT_MS)  # its default (5 s) is the page's poll interval
            tab.on("pageerror", lambda exc: problems.append(f"script error: {exc}"))
            tab.on(
                "console",
                lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None,
            )
            yield tab
        finally:
            await browser.close()
    assert problems == []


async def sign_in(tab: Page, daemon: Daemon, token: str) -> None:
    await tab.goto(base_url(daemon) + "/")
    await expect(tab.locator("#login")).to_be_visible()
    await tab.fill("#token", token)
    await tab.click("#login-form button[type=submit]")


async def test_without_a_token_the_page_shows_the_login_form_and_no_data(
    daemon: Daemon, browser_page: Page
) -> None:
    """A first visit asks for the token, with no error yet and nothing of the daemon's shown."""
    await push(daemon, dial(missed_call()))  # something there is to show
    await browser_page.goto(base_url(daemon) + "/")
    await expect(browser_page.locator("#login")).to_be_visible()
    await expect(browser_page.locator("#login-error")).to_be_hidden()
    await expect(browser_page.locator("#dashboard")).to_be_hidden()
    assert await browser_page.locator("#sources-body tr, #tail-list li").count() == 0
    shown = await browser_page.locator("body").inner_text()
    assert "coocenter" not in shown
    assert "crm" not in shown


async def test_a_wrong_token_is_refused_with_a_message(daemon: Daemon, browser_page: Page) -> None:
    """A token the daemon does not know: an error on the form, no dashboard, nothing kept."""
    await sign_in(browser_page, daemon, "wrong-token-0123456789abcdef")
    await expect(browser_page.locator("#login-error")).to_contain_text("not accepted")
    await expect(browser_page.locator("#dashboard")).to_be_hidden()
    kept = await browser_page.evaluate("sessionStorage.getItem('pbx-bridge.token')")
    assert kept is None


async def test_live_tail_dead_letter_and_redrive(
    daemon: Daemon, receiver: Receiver, gate: Gate, browser_page: Page
) -> None:
    """A pushed call shows live, newest first; its dead letter is counted and re-driven to 0."""
    tab = browser_page
    await sign_in(tab, daemon, ADMIN_TOKEN)
    await expect(tab.locator("#dashboard")).to_be_visible()
    await expect(tab.locator("#login")).to_be_hidden()
    sink = tab.locator('#sinks-body tr[data-sink="crm"]')
    await expect(sink.locator(".dead")).to_have_text("0")
    await expect(tab.locator("#tail-state")).to_have_text("live")

    call = missed_call()
    assert set(await push(daemon, *call.pushes)) == {200}
    # The call's call.* events (its subject also carries ivr.input and the like).
    rows = tab.locator(f'#tail-list li[data-subject="call/{call.call_id}"][data-type^="call."]')
    await expect(rows).to_have_count(len(call.expected_types))
    shown = [await row.get_attribute("data-type") for row in await rows.all()]
    assert shown == call.expected_types[::-1]  # newest first
    seqs = [int(await row.get_attribute("data-seq") or 0) for row in await rows.all()]
    assert seqs == sorted(seqs, reverse=True)

    # The receiver answered 400: dead at once, nothing delivered, shown at the next poll.
    await expect(sink.locator(".dead")).to_have_text("1")
    assert receiver.delivered() == []

    gate.accept = True
    await sink.locator("button.redrive").click()
    await expect(sink.locator(".result")).to_have_text("re-drove 1")
    await until(lambda: len(receiver.delivered()) == 1, timeout_s=WAIT_MS / 1000, what="re-drive")
    (delivered,) = receiver.delivered()
    assert (delivered["type"], delivered["subject"]) == ("call.missed", f"call/{call.call_id}")
    await expect(sink.locator(".dead")).to_have_text("0")
    await expect(sink.locator("button.redrive")).to_be_disabled()


async def test_the_type_filter_reconnects_the_tail(daemon: Daemon, browser_page: Page) -> None:
    """With call.missed as the filter, the tail shows that type only."""
    tab = browser_page
    await sign_in(tab, daemon, READ_TOKEN)
    await expect(tab.locator("#tail-state")).to_have_text("live")
    await tab.fill("#type-filter", "call.missed")
    await tab.click("#filter-form button[type=submit]")
    await expect(tab.locator("#tail-state")).to_have_text("live")
    call = missed_call()
    await push(daemon, *call.pushes)
    await expect(tab.locator('#tail-list li[data-type="call.missed"]')).to_have_count(1)
    assert await tab.locator("#tail-list li").count() == 1


async def test_a_read_token_is_told_that_redrive_needs_admin(
    daemon: Daemon, receiver: Receiver, browser_page: Page
) -> None:
    """Re-drive with a read-only token: 403, said on the login form; nothing is re-driven."""
    await push(daemon, *missed_call().pushes)

    async def dead() -> bool:
        return (await deliveries.dead_counts(daemon.reader)).get("crm") == 1

    await until_true(dead, what="the dead letter")
    tab = browser_page
    await sign_in(tab, daemon, READ_TOKEN)
    sink = tab.locator('#sinks-body tr[data-sink="crm"]')
    await expect(sink.locator(".dead")).to_have_text("1")
    await expect(tab.locator("#quarantine .section-error")).to_contain_text("admin scope")
    await sink.locator("button.redrive").click()
    await expect(tab.locator("#login-error")).to_contain_text("admin scope")
    await expect(tab.locator("#login")).to_be_visible()
    assert await dead()
    assert receiver.attempts[-1][2] == 400  # only the first, refused delivery


async def test_quarantine_reprocess_shows_its_result(daemon: Daemon, browser_page: Page) -> None:
    """A held push is listed; reprocessing it (still unreadable) says why it failed."""
    broken = {"event": "dialbegin", "uniqueid": "1534993030.626", "timestamp": "yesterday"}
    assert await push(daemon, broken) == [400]
    tab = browser_page
    await sign_in(tab, daemon, ADMIN_TOKEN)
    entry = tab.locator("#quarantine-body tr")
    await expect(entry).to_have_count(1)
    await expect(entry).to_contain_text("timestamp")
    await entry.locator("button.reprocess").click()
    await expect(entry.locator(".result")).to_contain_text("failed: timestamp")
    await expect(tab.locator("#notice")).to_contain_text("failed")


async def test_missed_calls_are_listed(daemon: Daemon, browser_page: Page) -> None:
    """A call missed in the last hours shows in the missed list with its caller."""
    call = missed_call()
    await push(daemon, *call.pushes)
    tab = browser_page
    await sign_in(tab, daemon, READ_TOKEN)
    row = tab.locator(f'#missed-body tr[data-call="{call.call_id}"]')
    await expect(row).to_be_visible()
    await expect(row.locator("td").nth(2)).to_have_text(dial(call)["calleridnum"])
    await expect(tab.locator("#missed-body tr")).to_have_count(1)


async def test_vendor_text_is_shown_as_text(daemon: Daemon, browser_page: Page) -> None:
    """Markup in a vendor's push is shown literally, never parsed into the page."""
    tab = browser_page
    await sign_in(tab, daemon, ADMIN_TOKEN)
    await expect(tab.locator("#tail-state")).to_have_text("live")
    hostile = '<img src="x" id="injected">'
    ring = {**dial(missed_call()), "calleridnum": hostile}
    assert await push(daemon, ring) == [200]
    await expect(tab.locator("#tail-list li").first).to_contain_text(hostile)
    assert await tab.locator("#injected").count() == 0
