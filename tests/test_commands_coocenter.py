"""Zycoo CooCenter commands: the adapter against the book's examples, and the simulated API."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge.commands import actions
from bridge.commands.coocenter import ADAPTER
from bridge.commands.model import Command, HttpAnswer, HttpRequest, Result, Target
from bridge.config import SourceApi, SourceConfig
from bridge.errors import CommandInvalid, CommandRefused, SessionExpired
from bridge.simulate.coocenter_api import CoocenterApi
from bridge.vendors.base import Payload, SourceContext
from bridge.vendors.coocenter import normalize
from tests.conftest import until

BASE = "http://127.0.0.1:18000"
WEBKEY = "dev-webkey"
ACCEPT = ("accept", "application/json")
FORM = ("Content-Type", "application/x-www-form-urlencoded")
# 2024-03-09 23:30 UTC is already 2024-03-10 at a PBX in Shanghai.
LATE_EVENING_UTC = datetime(2024, 3, 9, 23, 30, tzinfo=UTC).timestamp()


def target(
    url: str = BASE, webkey: str | None = None, tz: str = "UTC", now: float | None = None
) -> Target:
    source = SourceConfig(
        name="coocenter", vendor="coocenter", timezone=tz, api=SourceApi(url=url, webkey=webkey)
    )
    return Target(source=source, now=time.time() if now is None else now)


def command(action: str, **args: Any) -> Command:
    """A command as the service hands it over: checked and defaulted by the catalogue."""
    checked = actions.check(ADAPTER.actions[action], args)
    return Command(source="coocenter", action=action, args=checked)


def build(action: str, tgt: Target | None = None, **args: Any) -> HttpRequest:
    return ADAPTER.build(command(action, **args), tgt or target())


def answer(body: Any, status: int = 200) -> HttpAnswer:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return HttpAnswer(status=status, headers={"content-type": "application/json"}, body=raw)


def parse(action: str, body: Any, status: int = 200, **args: Any) -> Result:
    return ADAPTER.parse(command(action, **args), answer(body, status))


# -- requests: the book's curl examples -------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "args", "path", "body"),
    [
        (
            "call.originate",
            {"from": "808", "to": "809"},
            "extensions/click-number",
            b"src=808&dst=809",
        ),
        ("call.hangup", {"extension": "801"}, "extensions/hangup", b"extension=801"),
        (
            "call.transfer",
            {"extension": "802", "to": "801"},
            "extensions/transfer",
            b"dst=801&src=802",
        ),
        (
            "agent.login",
            {"agent": "800", "queue": "630"},
            "queues/agent-login",
            b"extension=800&queue=630",
        ),
        (
            "agent.logout",
            {"agent": "800", "queue": "630"},
            "queues/agent-logout",
            b"extension=800&queue=630",
        ),
        (
            "agent.pause",
            {"agent": "808", "queue": "630"},
            "queues/agent-pause",
            b"queue=630&member=808&state=on",
        ),
        (
            "agent.unpause",
            {"agent": "808", "queue": "630"},
            "queues/agent-pause",
            b"queue=630&member=808&state=off",
        ),
    ],
)
def test_commands_are_the_books_form_posts(
    action: str, args: dict[str, Any], path: str, body: bytes
) -> None:
    """Each command is the book's curl: POST, its path, its headers, its form body byte for byte."""
    req = build(action, **args)
    assert (req.method, req.url) == ("POST", f"{BASE}/coocenter-api/{path}")
    assert req.headers == (ACCEPT, FORM)
    assert req.body == body


def test_current_calls_is_a_bare_post() -> None:
    """current-calls is POSTed (both curl examples) with no body and so no content type."""
    req = build("calls.active")
    assert (req.method, req.url, req.headers, req.body) == (
        "POST",
        f"{BASE}/coocenter-api/extensions/current-calls",
        (ACCEPT,),
        b"",
    )


def test_extension_status_is_the_hints_get() -> None:
    """extensions.status is the agent-state list's GET, whatever extension is asked about."""
    req = build("extensions.status", extension="808")
    assert (req.method, req.url, req.body) == (
        "GET",
        f"{BASE}/coocenter-api/extensions/extension-hints-status",
        b"",
    )


def test_logout_without_a_queue_sends_only_the_extension() -> None:
    """The book marks agent-logout's queue optional: without one, only the extension goes."""
    assert build("agent.logout", agent="800").body == b"extension=800"


def test_authorization_is_the_md5_of_webkey_and_the_pbx_date() -> None:
    """With a WEBKEY, Authorization is md5(WEBKEY + the PBX's local date), not the UTC date."""
    req = build(
        "call.hangup",
        target(webkey=WEBKEY, tz="Asia/Shanghai", now=LATE_EVENING_UTC),
        extension="801",
    )
    expected = hashlib.md5(b"dev-webkey2024-03-10").hexdigest()
    assert req.header("Authorization") == expected
    utc = build("call.hangup", target(webkey=WEBKEY, now=LATE_EVENING_UTC), extension="801")
    assert utc.header("Authorization") == hashlib.md5(b"dev-webkey2024-03-09").hexdigest()


def test_no_webkey_no_authorization() -> None:
    """A PBX whose WEBKEY is unset (commented out) gets no Authorization header."""
    assert build("calls.active").header("Authorization") is None


def test_base_url_with_a_trailing_slash() -> None:
    """A base URL ending in / still makes one slash before coocenter-api."""
    req = build("calls.active", target(url=BASE + "/"))
    assert req.url == f"{BASE}/coocenter-api/extensions/current-calls"


def test_arguments_are_what_the_api_takes() -> None:
    """Hangup is by extension, pause takes no reason, transfer goes to an extension only."""
    with pytest.raises(CommandInvalid, match=r"it takes: extension\)$"):
        command("call.hangup", call_id="1534993030.626")
    with pytest.raises(CommandInvalid, match=r"args\.reason"):
        command("agent.pause", agent="808", queue="630", reason="lunch")
    with pytest.raises(CommandInvalid, match=r"args\.to_kind"):
        command("call.transfer", extension="802", to="0912345678", to_kind="number")
    assert command("call.transfer", extension="802", to="801").args["to_kind"] == "extension"
    with pytest.raises(CommandInvalid, match=r"args\.queue"):
        command("agent.login", agent="800")


def test_adapter_offers_the_documented_actions() -> None:
    """What the book supports, and nothing it does not (no hold, provisioning or history)."""
    assert set(ADAPTER.actions) == {
        "call.originate",
        "call.hangup",
        "call.transfer",
        "agent.login",
        "agent.logout",
        "agent.pause",
        "agent.unpause",
        "calls.active",
        "extensions.status",
    }


# -- answers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "args", "message"),
    [
        ("call.hangup", {"extension": "801"}, "hangup extension success"),
        ("call.transfer", {"extension": "802", "to": "801"}, "tansfer extension success"),
        ("agent.login", {"agent": "800", "queue": "630"}, "login extension success"),
        ("agent.logout", {"agent": "800", "queue": "630"}, "logout extension success"),
        ("agent.pause", {"agent": "808", "queue": "630"}, "Interface paused successfully"),
    ],
)
def test_documented_success_answers(action: str, args: dict[str, Any], message: str) -> None:
    """The book's success answers are results carrying its message."""
    result = parse(action, {"status": "success", "message": message}, **args)
    assert (result.message, result.data) == (message, {})


def test_documented_failure_is_refused_with_the_vendors_message() -> None:
    """The book's 404 {"status": "error", "message": "Interface not found"} is a refusal."""
    with pytest.raises(CommandRefused) as caught:
        parse(
            "agent.pause",
            {"status": "error", "message": "Interface not found"},
            404,
            agent="808",
            queue="630",
        )
    refused = caught.value
    assert (refused.message, refused.vendor_code, refused.status) == (
        "Interface not found",
        "error",
        404,
    )


def test_a_bad_webkey_is_a_refusal_not_an_expired_session() -> None:
    """A 401 has no login to renew: CommandRefused with the PBX's message, not SessionExpired."""
    with pytest.raises(CommandRefused) as caught:
        parse("calls.active", {"status": "error", "message": "Authorization failed"}, 401)
    assert not isinstance(caught.value, SessionExpired)
    assert caught.value.message == "Authorization failed"


def test_success_status_on_an_http_error_is_still_refused() -> None:
    """ "success" with HTTP 500 is not believed."""
    with pytest.raises(CommandRefused, match="hangup extension success"):
        parse(
            "call.hangup",
            {"status": "success", "message": "hangup extension success"},
            500,
            extension="801",
        )


def test_a_non_json_answer_is_refused_quoting_it() -> None:
    """An HTML error page is a refusal that quotes its start."""
    with pytest.raises(CommandRefused, match="502 Bad Gateway"):
        parse("calls.active", b"<html>502 Bad Gateway</html>", 502)


def test_no_refusal_carries_the_authorization_digest() -> None:
    """A PBX echoing the Authorization digest does not get it into the refusal."""
    digest = hashlib.md5(b"dev-webkey2024-03-10").hexdigest()
    with pytest.raises(CommandRefused) as caught:
        parse("calls.active", {"status": "error", "message": f"bad Authorization {digest}"}, 401)
    assert digest not in str(caught.value)
    assert "bad Authorization" in caught.value.message


def test_originate_result_carries_the_call_id_when_the_pbx_gives_one() -> None:
    """click-number's uniqueid (the simulator's) is the call_id; none given is None."""
    made = parse(
        "call.originate",
        {"status": "success", "message": "click number success", "data": {"uniqueid": "1.2"}},
        **{"from": "808", "to": "809"},
    )
    assert made.data == {"call_id": "1.2"}
    bare = parse("call.originate", {"status": "success"}, **{"from": "808", "to": "809"})
    assert bare.data == {"call_id": None}


# The book's row, with the ids of the Asterisk channel list it is cut from: the caller's
# channel (uniqueid = linkedid) and the callee's (its own uniqueid, the call's linkedid).
BOOK_ROW = {
    "calleridname": "896",
    "calleridnum": "896",
    "channel": "SIP/896-0000000b",
    "channelstate": "6",
    "channelstatedesc": "Up",
    "connectedlinename": "897",
    "connectedlinenum": "897",
    "duration": "00:02:58",
}
CALLER = {**BOOK_ROW, "uniqueid": "1534993030.626", "linkedid": "1534993030.626"}
CALLEE = {
    **BOOK_ROW,
    "calleridnum": "897",
    "calleridname": "897",
    "channel": "SIP/897-0000000c",
    "connectedlinenum": "896",
    "connectedlinename": "896",
    "uniqueid": "1534993030.627",
    "linkedid": "1534993030.626",
}


def channels(*rows: dict[str, Any]) -> dict[str, Any]:
    return {"status": "success", "message": "Channels will follow", "data": list(rows)}


def test_current_calls_fold_channels_into_calls() -> None:
    """Both channels of a call are one call, keyed by linkedid, seen from the first channel."""
    (call,) = parse("calls.active", channels(CALLEE, CALLER)).data["calls"]
    assert {k: call[k] for k in ("call_id", "from", "to", "extension", "state")} == {
        "call_id": "1534993030.626",
        "from": "896",
        "to": "897",
        "extension": "896",
        "state": "active",
    }
    assert (call["vendor_state"], call["duration_s"]) == ("Up", 178)


def test_a_ringing_channel_makes_the_call_ringing() -> None:
    """While one channel still rings, the call is ringing, not active."""
    ringing = {**CALLEE, "channelstate": "5", "channelstatedesc": "Ringing"}
    (call,) = parse("calls.active", channels(CALLER, ringing)).data["calls"]
    assert call["state"] == "ringing"


def test_a_trunk_channel_is_not_the_extension() -> None:
    """An outside call's extension is the phone's channel, not the trunk's."""
    trunk = {**CALLER, "channel": "SIP/trunk1-00000065", "calleridnum": "0912345678"}
    phone = {**CALLEE, "channel": "SIP/808-00000066", "calleridnum": "808"}
    (call,) = parse("calls.active", channels(trunk, phone)).data["calls"]
    assert (call["from"], call["extension"]) == ("0912345678", "808")


def test_active_call_ids_are_the_push_call_keys() -> None:
    """A call's current-calls id equals the call_id of its dialbegin push (uniqueid)."""
    push = {
        "event": "dialbegin",
        "timestamp": "1534993059.785012",
        "channel": "SIP/896-0000000b",
        "calleridnum": "896",
        "destchannel": "SIP/897-0000000c",
        "destcalleridnum": "897",
        "destuniqueid": "1534993030.627",
        "dialstring": "SIP/897",
        "uniqueid": "1534993030.626",
        "mac": "68:69:2e:00:00:01",
    }
    pushed = normalize(Payload(body=json.dumps(push).encode()), CTX)
    (call,) = parse("calls.active", channels(CALLER, CALLEE)).data["calls"]
    assert {event.data["call_id"] for event in pushed} == {call["call_id"]}


def test_a_channel_without_ids_is_refused() -> None:
    """The book's row alone has no uniqueid: refused, so gap repair ends no call by mistake."""
    with pytest.raises(CommandRefused, match="SIP/896-0000000b"):
        parse("calls.active", channels(CALLER, BOOK_ROW))


def test_no_current_calls() -> None:
    """An empty channel list (or none) is no calls."""
    assert parse("calls.active", channels()).data == {"calls": []}
    assert parse("calls.active", {"status": "success"}).data == {"calls": []}


HINTS = [
    {"agentName": "800", "extension": "800", "extenType": "analogCallCenter", "status": "0"},
    {"agentName": "801", "extension": "801", "extenType": "analogCallCenter", "status": "9"},
    {"agentName": "802", "extension": "802", "extenType": "analogCallCenter", "status": "Idle"},
    {"agentName": "803", "extension": "803", "extenType": "analogCallCenter", "status": "4"},
    {"agentName": "804", "extension": "804", "extenType": "analogCallCenter"},
]


def test_extension_states_from_the_bare_hints_list() -> None:
    """The book's status codes read as the pushes' bit set; the OCR's words as Asterisk's."""
    found = parse("extensions.status", HINTS).data["extensions"]
    assert [(e["extension"], e["state"], e["vendor_state"]) for e in found] == [
        ("800", "idle", "0"),
        ("801", "ringing", "9"),  # in use + ringing: call waiting
        ("802", "idle", "Idle"),
        ("803", "unavailable", "4"),
        ("804", "unknown", None),  # the OCR copy's 800 has no status at all
    ]


def test_extension_status_of_one_extension_and_a_wrapped_list() -> None:
    """Asked about one extension, only it is returned; a wrapped list is read the same."""
    wrapped = {"status": "success", "data": HINTS}
    assert parse("extensions.status", wrapped, extension="801").data == {
        "extensions": [{"extension": "801", "state": "ringing", "vendor_state": "9"}]
    }


# -- the simulator ----------------------------------------------------------------------------

CTX = SourceContext(
    name="coocenter", vendor="coocenter", tz=UTC, received_at=datetime(2024, 1, 1, tzinfo=UTC)
)


async def send(api: CoocenterApi, action: str, tgt: Target | None = None, **args: Any) -> Result:
    """Build with the adapter, send with a plain client, parse with the adapter."""
    tgt = tgt or target(url=api.url, webkey=api.webkey, tz=str(api.tz))
    req = ADAPTER.build(command(action, **args), tgt)
    async with (
        aiohttp.ClientSession() as session,
        session.request(req.method, req.url, headers=list(req.headers), data=req.body) as got,
    ):
        body = await got.read()
        reply = HttpAnswer(status=got.status, headers=dict(got.headers), body=body)
    return ADAPTER.parse(command(action, **args), reply)


def click(src: str = "808", dst: str = "0912345678") -> dict[str, str]:
    return {"from": src, "to": dst}


@pytest.fixture
async def api() -> AsyncIterator[CoocenterApi]:
    async with CoocenterApi(webkey=WEBKEY, timezone="Asia/Shanghai") as server:
        yield server


async def test_simulator_round_trips_every_action(api: CoocenterApi) -> None:
    """Every action the adapter offers is served, in the book's shapes, with its WEBKEY."""
    assert (await send(api, "agent.login", agent="808", queue="630")).message == (
        "login extension success"
    )
    paused = await send(api, "agent.pause", agent="808", queue="630")
    assert (paused.message, api.queues["630"]["808"]) == ("Interface paused successfully", True)
    unpaused = await send(api, "agent.unpause", agent="808", queue="630")
    assert (unpaused.message, api.queues["630"]["808"]) == (
        "Interface unpaused successfully",
        False,
    )
    made = await send(api, "call.originate", **click())
    call_id = made.data["call_id"]
    assert made.message == "click number success"
    (listed,) = (await send(api, "calls.active")).data["calls"]
    assert (listed["call_id"], listed["from"], listed["to"]) == (call_id, "808", "0912345678")
    status = await send(api, "extensions.status", extension="808")
    assert status.data["extensions"] == [
        {"extension": "808", "state": "in_call", "vendor_state": "1"}
    ]
    moved = await send(api, "call.transfer", extension="808", to="801")
    assert (moved.message, api.active[call_id]["calleridnum"]) == (
        "tansfer extension success",
        "801",
    )
    assert (await send(api, "call.hangup", extension="801")).message == "hangup extension success"
    assert (await send(api, "agent.logout", agent="808")).message == "logout extension success"
    assert api.queues["630"] == {}
    assert [r.action for r in api.received] == [
        "agent-login",
        "agent-pause",
        "agent-pause",
        "click-number",
        "current-calls",
        "extension-hints-status",
        "transfer",
        "hangup",
        "agent-logout",
    ]


async def test_simulator_refuses_a_wrong_webkey_with_its_message(api: CoocenterApi) -> None:
    """A wrong WEBKEY, or none, is answered 401 "Authorization failed", and nothing happens."""
    for webkey in ("wrong-webkey", None):
        tgt = target(url=api.url, webkey=webkey, tz="Asia/Shanghai")
        with pytest.raises(CommandRefused) as caught:
            await send(api, "call.originate", tgt, **click())
        assert (caught.value.message, caught.value.status) == ("Authorization failed", 401)
    assert api.active == {}


async def test_simulator_checks_the_date_in_its_own_zone() -> None:
    """The digest of the PBX's date is accepted; the digest of a date a day off is refused."""
    async with CoocenterApi(webkey=WEBKEY, timezone="Pacific/Kiritimati") as server:
        await send(server, "calls.active")  # the adapter dates it in the same zone
        stale = target(
            url=server.url, webkey=WEBKEY, tz="Pacific/Kiritimati", now=time.time() - 86400
        )
        with pytest.raises(CommandRefused, match=r"^Authorization failed$"):
            await send(server, "calls.active", stale)


async def test_simulator_unknown_extension(api: CoocenterApi) -> None:
    """A click from, or a hangup of, an extension the PBX does not have is refused, naming it."""
    with pytest.raises(CommandRefused, match=r"^Extension 4321 not found$") as caught:
        await send(api, "call.originate", **click(src="4321"))
    assert caught.value.status == 404
    with pytest.raises(CommandRefused, match=r"^Extension 4321 not found$"):
        await send(api, "call.hangup", extension="4321")


async def test_simulator_busy_extension() -> None:
    """An extension listed busy, or already in a call, refuses a new click as busy."""
    async with CoocenterApi(busy=("801",)) as server:
        with pytest.raises(CommandRefused, match=r"^Extension 801 is busy$"):
            await send(server, "call.originate", **click(src="801"))
        await send(server, "call.originate", **click())
        with pytest.raises(CommandRefused, match=r"^Extension 808 is busy$"):
            await send(server, "call.originate", **click())
        assert len(server.active) == 1


async def test_simulator_hangup_without_a_call(api: CoocenterApi) -> None:
    """Hanging up an extension that is in no call is refused."""
    with pytest.raises(CommandRefused, match=r"^Extension 802 has no active call$"):
        await send(api, "call.hangup", extension="802")


async def test_simulator_pause_of_an_agent_not_in_the_queue(api: CoocenterApi) -> None:
    """Pausing an extension that is not in the queue is the book's "Interface not found"."""
    with pytest.raises(CommandRefused, match=r"^Interface not found$") as caught:
        await send(api, "agent.pause", agent="803", queue="630")
    assert caught.value.status == 404


async def test_current_calls_follow_click_and_hangup(api: CoocenterApi) -> None:
    """current-calls lists the clicked call, with its id, until it is hung up."""
    call_id = (await send(api, "call.originate", **click())).data["call_id"]
    assert [c["call_id"] for c in (await send(api, "calls.active")).data["calls"]] == [call_id]
    await send(api, "call.hangup", extension="808")
    assert (await send(api, "calls.active")).data == {"calls": []}
    assert api.active == {}


async def test_current_calls_report_rows_put_in_by_a_test(api: CoocenterApi) -> None:
    """A row added to `active` directly is listed as it is (the book's row has no id: refused)."""
    api.active["1534993030.626"] = dict(CALLER)
    (call,) = (await send(api, "calls.active")).data["calls"]
    assert (call["call_id"], call["duration_s"]) == ("1534993030.626", 178)
    api.active["x"] = dict(BOOK_ROW)
    with pytest.raises(CommandRefused, match="without uniqueid"):
        await send(api, "calls.active")


async def test_a_stalled_pbx_answers_nothing_until_released(api: CoocenterApi) -> None:
    """While stalled, a click is received but not answered; released, it is answered."""
    api.stall()
    pending = asyncio.create_task(send(api, "call.originate", **click()))
    await until(lambda: len(api.received) == 1, what="the click at the PBX")
    assert not pending.done()
    api.release()
    assert (await asyncio.wait_for(pending, 5)).message == "click number success"


def test_snippet_is_the_api_table() -> None:
    """snippet() is the [sources.api] TOML pointing at the simulator, with its WEBKEY."""
    assert CoocenterApi(port=8123).snippet() == '[sources.api]\nurl = "http://127.0.0.1:8123"\n'
    shanghai = CoocenterApi(port=8123, webkey=WEBKEY, timezone="Asia/Shanghai").snippet()
    assert shanghai.splitlines()[:3] == [
        "[sources.api]",
        'url = "http://127.0.0.1:8123"',
        'webkey = "dev-webkey"',
    ]
    assert "Asia/Shanghai" in shanghai


def test_default_extensions_include_808() -> None:
    """The newcomer's `pbx-bridge call --from 808` works against the defaults."""
    assert "808" in CoocenterApi().extensions


class Bridge:
    """A push receiver checking the WEBKEY; the first try of each push fails (503)."""

    def __init__(self, webkey: str) -> None:
        self.webkey = webkey
        self.tries: list[bytes] = []
        self.accepted: list[bytes] = []
        self.unauthorized = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        today = datetime.now(UTC).date().isoformat()
        expected = hashlib.md5(f"{self.webkey}{today}".encode()).hexdigest()
        if request.headers.get("Authorization") != expected:
            self.unauthorized += 1
            return web.Response(status=401)
        self.tries.append(body)
        if self.tries.count(body) == 1:
            return web.Response(status=503)
        self.accepted.append(body)
        return web.json_response({"status": "success"})


async def test_click_plays_pushes_the_normaliser_reads() -> None:
    """After a click the PBX pushes the call, retransmitted, which the bridge reads whole."""
    bridge = Bridge("dev-push-webkey")
    app = web.Application()
    app.router.add_post("/ingest/coocenter", bridge.handle)
    async with TestServer(app, host="127.0.0.1", port=0) as receiver:
        push_url = str(receiver.make_url("/ingest/coocenter"))
        async with CoocenterApi(
            push_url=push_url, push_webkey="dev-push-webkey", talk_s=0.0, retransmit_s=0.01
        ) as server:
            call_id = (await send(server, "call.originate", **click())).data["call_id"]
            await asyncio.wait_for(server.settled(), 10)
            assert call_id not in server.active  # its pushes ended it
    assert bridge.unauthorized == 0
    assert server.report.retransmitted == len(bridge.accepted) > 0
    events = [e for body in bridge.accepted for e in normalize(Payload(body=body), CTX)]
    pushed = {json.loads(body)["event"] for body in bridge.accepted}
    assert {"dialbegein", "dialend", "hangup", "cdr"} <= pushed
    calls = [e for e in events if e.subject.startswith("call/")]
    assert {e.data["call_id"] for e in calls} == {call_id}
    types = [e.type for e in calls]
    assert types[:2] == ["call.initiated", "call.ringing"]
    assert {"call.ended", "call.completed"} <= set(types)
    cdr = next(e for e in calls if e.vendorevent == "cdr")
    assert (cdr.data["from"], cdr.data["to"], cdr.data["direction"]) == (
        "808",
        "0912345678",
        "outbound",
    )


async def test_hangup_ends_a_call_whose_pushes_are_playing() -> None:
    """A hangup leaves current-calls at once; the pushes then end the call at the bridge."""
    bridge = Bridge("k")
    app = web.Application()
    app.router.add_post("/p", bridge.handle)
    async with TestServer(app, host="127.0.0.1", port=0) as receiver:
        async with CoocenterApi(
            push_url=str(receiver.make_url("/p")), push_webkey="k", talk_s=60, retransmit_s=0.01
        ) as server:
            await send(server, "call.originate", **click())
            await until(lambda: len(bridge.accepted) >= 3, what="the ringing pushes")
            await send(server, "call.hangup", extension="808")
            assert server.active == {}
            await asyncio.wait_for(server.settled(), 10)  # not the 60 s talk time
    assert "hangup" in {json.loads(body)["event"] for body in bridge.accepted}
