"""OnCall (PortSIP) REST commands: the adapter against the document, history, the simulated API."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import tomllib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge.commands import actions
from bridge.commands.model import Command, HttpAnswer, HttpRequest, Result, Session, Target
from bridge.commands.oncall import ADAPTER, history_events
from bridge.config import SourceApi, SourceConfig
from bridge.errors import CommandInvalid, CommandRefused, PayloadError, SessionExpired
from bridge.simulate.oncall import CDR_EVENTS, scenario
from bridge.simulate.oncall_api import OnCallApi, record_of
from bridge.vendors.base import Payload, SourceContext
from bridge.vendors.oncall import normalize

BASE = "http://127.0.0.1:8899"
TOKEN = "dev-token-not-from-the-document"
JSON = ("Content-Type", "application/json")
NOW = 1_700_000_000.0
ZONE = "Asia/Ho_Chi_Minh"
CTX = SourceContext(
    name="oncall", vendor="oncall", tz=ZoneInfo(ZONE), received_at=datetime(2024, 1, 1, tzinfo=UTC)
)


class CallApi(SourceApi, frozen=True, kw_only=True):
    """[sources.api] with the make-call keys the adapter asks the config for (not there yet)."""

    domain: str | None = None
    call_extension: str | None = None
    call_password: str | None = None


def target(url: str = BASE, *, token: str | None = TOKEN, **api: Any) -> Target:
    settings: dict[str, Any] = {
        "username": "dev-tenant",
        "password": "dev-password",
        "domain": "test01.oncall",
        "call_extension": "103",
        "call_password": "dev-web-password",
    }
    settings.update(api)
    source = SourceConfig(
        name="oncall", vendor="oncall", timezone=ZONE, api=CallApi(url=url, **settings)
    )
    session = Session(token=token, expires_at=NOW + 3600) if token else None
    return Target(source=source, now=NOW, session=session)


def command(action: str, **args: Any) -> Command:
    """A command as the service hands it over: checked and defaulted by the catalogue."""
    return Command(
        source="oncall", action=action, args=actions.check(ADAPTER.actions[action], args)
    )


def build(action: str, tgt: Target | None = None, **args: Any) -> HttpRequest:
    return ADAPTER.build(command(action, **args), tgt or target())


def answer(body: Any, status: int = 200) -> HttpAnswer:
    text = body if isinstance(body, str) else json.dumps(body)
    return HttpAnswer(status=status, body=text.encode())


def token_header(token: str = TOKEN) -> tuple[str, str]:
    return ("access_token", token)


# -- the login (1.1) ------------------------------------------------------------------------------


def test_login_is_the_documented_post_of_name_and_password() -> None:
    """1.1: POST api/account/credentials/verify, JSON {name, password}, no token yet."""
    assert ADAPTER.login is not None
    req = ADAPTER.login(target(token=None))
    assert (req.method, req.url) == ("POST", f"{BASE}/api/account/credentials/verify")
    assert req.headers == (JSON,)
    assert json.loads(req.body) == {"name": "dev-tenant", "password": "dev-password"}


def test_logged_in_keeps_the_token_for_its_expires_seconds() -> None:
    """1.1's answer: access_token, valid ``expires`` seconds from now."""
    assert ADAPTER.logged_in is not None
    body = {
        "access_token": TOKEN,
        "expires": 3600,
        "api_version": "8.0",
        "role": "tenant",
        "name": "test",
        "id": 239926257964425216,
    }
    assert ADAPTER.logged_in(answer(body), NOW) == Session(token=TOKEN, expires_at=NOW + 3600)


def test_a_refused_login_is_a_refusal_with_the_vendors_message() -> None:
    """1.1's 400 answer: its msg and err_code; not SessionExpired (no login loop)."""
    assert ADAPTER.logged_in is not None
    body = {"err_code": "1041004", "msg": "Username or Password incorrect"}
    for status in (400, 401):
        with pytest.raises(CommandRefused) as refused:
            ADAPTER.logged_in(answer(body, status), NOW)
        assert type(refused.value) is CommandRefused
        assert refused.value.message == "Username or Password incorrect"
        assert refused.value.vendor_code == "1041004"


def test_a_login_answer_without_a_token_is_refused() -> None:
    """A 200 with no access_token is no session."""
    assert ADAPTER.logged_in is not None
    with pytest.raises(CommandRefused, match="access_token"):
        ADAPTER.logged_in(answer({"expires": 3600}), NOW)


# -- requests, against the document ---------------------------------------------------------------


def test_originate_is_the_documented_make_call_query() -> None:
    """3.1: src, to, domain, extension, auth in the document's order, with the tenant token."""
    req = build("call.originate", **{"from": "101", "to": "0909123456"})
    assert req.method == "POST"
    assert req.url == (
        f"{BASE}/api/extensions/call?src=101&to=0909123456&domain=test01.oncall"
        "&extension=103&auth=dev-web-password"
    )
    assert req.headers == (token_header(), JSON)
    assert req.body == b""


def test_originate_without_the_make_call_settings_names_them() -> None:
    """No domain in [sources.api]: the command cannot be sent, and says which key is missing."""
    with pytest.raises(CommandInvalid) as invalid:
        build("call.originate", target(domain=None), **{"from": "101", "to": "0909123456"})
    assert invalid.value.field == "sources.api.domain"


def test_extension_status_reads_the_documented_list() -> None:
    """2.3: GET api/extensions/list?pagination=1; status normalised, the vendor's kept."""
    req = build("extensions.status")
    assert (req.method, req.url) == ("GET", f"{BASE}/api/extensions/list?pagination=1")
    assert req.headers == (token_header(), JSON)
    body = {
        "count": 20,
        "pagination": 1,
        "pagesize": 100,
        "sort_by": "DEFAULT",
        "extensions": [
            {"id": 259206915941343232, "extension_number": "101", "status": "OFFLINE"},
            {"id": 239941550350667776, "extension_number": "103", "status": "ONLINE"},
        ],
    }
    got = ADAPTER.parse(command("extensions.status"), answer(body))
    assert got.data == {
        "extensions": [
            {"extension": "101", "state": "unavailable", "vendor_state": "OFFLINE"},
            {"extension": "103", "state": "registered", "vendor_state": "ONLINE"},
        ]
    }
    one = ADAPTER.parse(command("extensions.status", extension="103"), answer(body))
    assert [row["extension"] for row in one.data["extensions"]] == ["103"]


def test_extension_status_says_when_more_pages_follow() -> None:
    """count beyond this page: next_page, and the page asked for goes in pagination."""
    assert build("extensions.status", page=2).url.endswith("?pagination=2")
    rows = [{"extension_number": str(n), "status": "OFFLINE"} for n in range(100)]
    body = {"count": 250, "pagination": 2, "pagesize": 100, "extensions": rows}
    got = ADAPTER.parse(command("extensions.status", page=2), answer(body))
    assert got.data["next_page"] == 3


def test_history_asks_the_page_in_pbx_local_time() -> None:
    """5.1: pagination, pagesize, then start_time/end_time as the records write times."""
    req = build("calls.history", since="2020-03-13T08:00:00Z", until="1584100800", page=2)
    assert req.url == (
        f"{BASE}/api/call_logs/list?pagination=2&pagesize=100"
        "&start_time=2020-03-13+15%3A00%3A00&end_time=2020-03-13+19%3A00%3A00"
    )
    assert req.headers == (token_header(), JSON)


def test_history_refuses_until_alone_and_bad_times() -> None:
    """5.1 takes end_time only beside start_time; a time must be readable."""
    with pytest.raises(CommandInvalid) as alone:
        build("calls.history", until="2020-03-13T08:00:00Z")
    assert alone.value.field == "args.until"
    with pytest.raises(CommandInvalid) as bad:
        build("calls.history", since="yesterday")
    assert bad.value.field == "args.since"


# 5.1's sample record (the document cuts it after outcid).
RECORD: dict[str, Any] = {
    "id": 290765803140308992,
    "call_id": "188632174226707-1118763027134@210.245.29.226",
    "caller": "420",
    "callee": "0779919329",
    "start_time": "2020-03-13 15:39:29",
    "answer_time": "NOT_ANSWER",
    "end_time": "2020-03-13 15:39:29",
    "ringing_time": "1970-01-01 08:00:00",
    "duration": 0,
    "session_id": 6642639616966928521,
    "related_callid_1": "",
    "related_callid_2": "",
    "ring_duration": 0,
    "talk_duration": 0,
    "caller_endpoint": "EXTENSION_NUMBER",
    "callee_endpoint": "EXTENSION_NUMBER",
    "direction": "EXTENSION_CALL",
    "end_reason": "NONE",
    "status": "FAIL",
    "outcid": "",
}


def test_history_returns_the_records_as_given_and_the_next_page() -> None:
    """details[] as the API gave them; a short page is the last, a full one has a next."""
    body = {"pagination": 1, "pagesize": 5, "sort_by": "DEFAULT", "details": [RECORD]}
    got = ADAPTER.parse(command("calls.history"), answer(body))
    assert got.data == {"records": [RECORD], "next_page": None}
    full = {**body, "details": [RECORD] * 5}
    assert ADAPTER.parse(command("calls.history"), answer(full)).data["next_page"] == 2


def test_a_refusal_carries_the_vendors_message_and_code() -> None:
    """The document's 400 {err_code, msg}: a CommandRefused quoting it."""
    body = {"err_code": "1040001", "msg": "Parameter : pagination incorrect"}
    with pytest.raises(CommandRefused) as refused:
        ADAPTER.parse(command("calls.history"), answer(body, 400))
    assert type(refused.value) is CommandRefused
    assert (refused.value.message, refused.value.vendor_code) == (body["msg"], "1040001")
    assert refused.value.status == 400


def test_a_refused_token_is_session_expired() -> None:
    """HTTP 401, or a message saying the token is invalid: log in once more and resend."""
    for status, msg in ((401, "Unauthorized"), (400, "Access token invalid or expired")):
        with pytest.raises(SessionExpired):
            ADAPTER.parse(
                command("extensions.status"), answer({"err_code": "1", "msg": msg}, status)
            )


def test_a_token_echoed_in_a_refusal_is_redacted() -> None:
    """A PBX that quotes the token back must not carry it into the message."""
    body = {"err_code": "1043001", "msg": "Permission denied for 629441ed6a0b40448060a09ebd00adb4"}
    with pytest.raises(CommandRefused) as refused:
        ADAPTER.parse(command("extensions.status"), answer(body, 400))
    assert "629441ed" not in refused.value.message
    assert refused.value.message.startswith("Permission denied")


def test_originate_answers_the_call_id_when_given() -> None:
    """3.1 prints no answer: any 2xx is success; a session_id is the call's id."""
    cmd = command("call.originate", **{"from": "101", "to": "0909123456"})
    assert ADAPTER.parse(cmd, answer({"session_id": 42})).data == {"call_id": "42"}
    assert ADAPTER.parse(cmd, answer("")).data == {"call_id": None}


def test_adapter_offers_what_the_document_supports() -> None:
    """Click-to-call and the two queries; the document has no hangup, transfer or agents."""
    assert set(ADAPTER.actions) == {"call.originate", "extensions.status", "calls.history"}


# -- history events -------------------------------------------------------------------------


def test_a_documented_record_is_its_calls_completion() -> None:
    """5.1's record: call.completed of call/<session_id>, failed, the record as raw."""
    (event,) = history_events([RECORD], CTX)
    assert event.type == "call.completed"
    assert event.subject == "call/6642639616966928521"
    assert event.data["disposition"] == "failed"
    assert event.data["direction"] == "internal"
    assert event.data["raw"] == RECORD
    assert event.time == "2020-03-13T08:39:29Z"  # 15:39:29 in the PBX's zone


def test_history_events_have_the_ids_of_the_cdr_pushes() -> None:
    """The same call as a record and as a CDR push: the same events, the same ids."""
    compared = 0
    for seed in range(60):
        call = scenario(seed, random.Random(seed), start=1_700_000_000.0 + seed * 100)
        cdr = next(push for push in call.pushes if push["event_type"] in CDR_EVENTS)
        if "call_status" not in cdr:
            continue  # the 2023 shape: see the report (its ids are made without a status)
        pushed = normalize(Payload(body=json.dumps(cdr).encode(), path="cdr"), CTX)
        made = history_events([record_of(call, tz=CTX.tz)], CTX)
        assert [(e.id, e.type, e.subject) for e in made] == [
            (e.id, e.type, e.subject) for e in pushed
        ]
        compared += 1
    assert compared >= 30


def test_an_unreadable_record_names_itself() -> None:
    """A bad time in the second record: PayloadError naming records[1].end_time."""
    with pytest.raises(PayloadError) as bad:
        history_events([RECORD, {**RECORD, "end_time": "13/03/2020"}], CTX)
    assert bad.value.field == "records[1].end_time"


# -- the simulator --------------------------------------------------------------------------


async def send_request(req: HttpRequest) -> HttpAnswer:
    async with (
        aiohttp.ClientSession() as session,
        session.request(req.method, req.url, headers=list(req.headers), data=req.body) as got,
    ):
        body = await got.read()
        return HttpAnswer(status=got.status, headers=dict(got.headers), body=body)


async def log_in(api: OnCallApi, **settings: Any) -> Target:
    """The driver's login, by hand: a target holding the session."""
    assert ADAPTER.login is not None
    assert ADAPTER.logged_in is not None
    bare = target(api.url, token=None, **settings)
    session = ADAPTER.logged_in(await send_request(ADAPTER.login(bare)), NOW)
    return Target(source=bare.source, now=NOW, session=session)


async def send(api: OnCallApi, tgt: Target, action: str, **args: Any) -> Result:
    """Build with the adapter, send with a plain client, parse with the adapter."""
    cmd = command(action, **args)
    return ADAPTER.parse(cmd, await send_request(ADAPTER.build(cmd, tgt)))


SIM = {"domain": "sim-tenant.invalid", "call_extension": "101"}


@pytest.fixture
async def api() -> AsyncIterator[OnCallApi]:
    async with OnCallApi(busy=("104",), token_ttl_s=120.0) as server:
        yield server


async def test_simulator_logs_in_and_answers_a_command(api: OnCallApi) -> None:
    """Login, then the extension list with the token: every extension's state."""
    tgt = await log_in(api)
    assert tgt.session is not None
    assert tgt.session.expires_at == NOW + 120
    got = await send(api, tgt, "extensions.status")
    states = {row["extension"]: row["state"] for row in got.data["extensions"]}
    assert states == {
        "101": "registered",
        "102": "registered",
        "103": "registered",
        "104": "in_call",
    }
    assert api.actions("extensions/list")[0].headers["access_token"] == tgt.session.token


async def test_simulator_refuses_a_wrong_password(api: OnCallApi) -> None:
    """A wrong tenant password: 1.1's error, as a refusal."""
    with pytest.raises(CommandRefused, match="Username or Password incorrect"):
        await log_in(api, password="not-the-password")


async def test_expired_tokens_are_refused_until_a_fresh_login(api: OnCallApi) -> None:
    """expire_tokens(): the held token is SessionExpired; a new login works again."""
    tgt = await log_in(api)
    api.expire_tokens()
    with pytest.raises(SessionExpired):
        await send(api, tgt, "calls.history")
    fresh = await log_in(api)
    assert (await send(api, fresh, "calls.history")).data == {"records": [], "next_page": None}


async def test_make_call_from_an_unknown_extension(api: OnCallApi) -> None:
    """src not on the PBX: the document's "Database Nonexistent records."."""
    tgt = await log_in(api, **SIM)
    with pytest.raises(CommandRefused) as refused:
        await send(api, tgt, "call.originate", **{"from": "999", "to": "0900000001"})
    assert (refused.value.message, refused.value.vendor_code) == (
        "Database Nonexistent records.",
        "1028",
    )
    assert api.call_logs == []


async def test_make_call_from_a_busy_extension(api: OnCallApi) -> None:
    """A busy src is refused, in the vendor's shape, and no call is logged."""
    tgt = await log_in(api, **SIM)
    with pytest.raises(CommandRefused, match="Extension is busy"):
        await send(api, tgt, "call.originate", **{"from": "104", "to": "0900000001"})
    assert api.call_logs == []


async def test_make_call_with_a_wrong_web_password(api: OnCallApi) -> None:
    """auth is the extension's web access password: a wrong one is refused."""
    tgt = await log_in(api, **SIM, call_password="wrong")
    with pytest.raises(CommandRefused, match="Username or Password incorrect"):
        await send(api, tgt, "call.originate", **{"from": "101", "to": "0900000001"})


async def test_call_logs_are_paged_as_the_document_says(api: OnCallApi) -> None:
    """250 records: pages of 100, 100, 50; each record once; next_page until the last."""
    api.call_logs = [{**RECORD, "id": n, "session_id": n} for n in range(250)]
    tgt = await log_in(api)
    seen: list[int] = []
    pages: list[int | None] = []
    page: int | None = 1
    while page is not None:
        got = await send(api, tgt, "calls.history", page=page)
        seen += [row["id"] for row in got.data["records"]]
        page = got.data["next_page"]
        pages.append(page)
    assert seen == list(range(250))
    assert pages == [2, 3, None]


async def test_call_logs_filter_by_start_time(api: OnCallApi) -> None:
    """start_time keeps the records that started at or after it (PBX-local)."""
    api.call_logs = [
        {**RECORD, "id": 1, "start_time": "2020-03-13 14:00:00"},
        {**RECORD, "id": 2, "start_time": "2020-03-13 16:00:00"},
    ]
    tgt = await log_in(api)
    got = await send(api, tgt, "calls.history", since="2020-03-13T08:00:00Z")  # 15:00 local
    assert [row["id"] for row in got.data["records"]] == [2]


class Bridge:
    """A push receiver: the first try of each push fails (503), so retransmission happens."""

    def __init__(self) -> None:
        self.tries: list[bytes] = []
        self.accepted: list[tuple[str, bytes, str]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.tries.append(body)
        if self.tries.count(body) == 1:
            return web.Response(status=503)
        auth = request.headers.get("Authorization", "")
        self.accepted.append((request.match_info.get("tail", ""), body, auth))
        return web.json_response({"status": "ok"})


async def test_make_call_plays_the_calls_pushes_and_logs_it() -> None:
    """A click-to-call: its Event URL pushes and CDR reach the bridge, which reads them all,
    Basic-authenticated; the call log's record makes the CDR's own event."""
    bridge = Bridge()
    app = web.Application()
    app.router.add_post("/ingest/oncall", bridge.handle)
    app.router.add_post("/ingest/oncall/{tail}", bridge.handle)
    async with TestServer(app, host="127.0.0.1", port=0) as receiver:
        push_url = str(receiver.make_url("/ingest/oncall"))
        async with OnCallApi(
            push_url=push_url, push_username="pbx", push_password="dev-push"
        ) as api:
            tgt = await log_in(api, **SIM)
            made = await send(api, tgt, "call.originate", **{"from": "101", "to": "0900000001"})
            await asyncio.wait_for(api.settled(), 10)
    call_id = made.data["call_id"]
    (call,) = api.calls
    assert call_id == call.call_id
    assert len(bridge.accepted) == len(call.pushes)
    expected = "Basic " + base64.b64encode(b"pbx:dev-push").decode()
    assert {auth for _, _, auth in bridge.accepted} == {expected}
    events = [
        event
        for tail, body, _ in bridge.accepted
        for event in normalize(Payload(body=body, path=tail), CTX)
    ]
    assert {e.subject for e in events} == {f"call/{call_id}"}
    types = [e.type for e in events]
    assert types[0] == "call.initiated"
    assert types[-1] == "call.completed"
    assert "call.answered" in types
    assert events[-1].data["from"] == "101"
    assert events[-1].data["to"] == "0900000001"
    (record,) = api.call_logs  # its times are in the simulator's zone, UTC by default
    utc = SourceContext(name="oncall", vendor="oncall", tz=UTC, received_at=CTX.received_at)
    (completed,) = [e for e in events if e.type == "call.completed"]
    assert [e.id for e in history_events([record], utc)] == [completed.id]


def test_snippet_is_the_sources_api_table() -> None:
    """snippet(): a [sources.api] table with the login and make-call settings."""
    table = tomllib.loads(OnCallApi(port=8899).snippet())["sources"]["api"]
    api = CallApi(**table)
    assert api.url == "http://127.0.0.1:8899"
    assert (api.username, api.password) == ("dev-tenant", "dev-password")
    assert (api.domain, api.call_extension, api.call_password) == (
        "sim-tenant.invalid",
        "101",
        "dev-web-password",
    )
