"""Coral IRIS IVDX commands: the adapter against the document, and the simulated api/v3."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge.commands import actions
from bridge.commands.coral import ADAPTER
from bridge.commands.model import Command, HttpAnswer, HttpRequest, Result, Target
from bridge.config import SourceApi, SourceConfig
from bridge.errors import CommandInvalid, CommandRefused, SessionExpired
from bridge.simulate.coral_api import CoralApi
from bridge.vendors.base import Payload, SourceContext
from bridge.vendors.coral import normalize

KEY = "dev-coral-key-0123456789"
UUID = "93849-405955-59598585048-499449-9000"  # the document's example uuid
BASE = "http://127.0.0.1:8080"
AGENT_HEADERS = (
    ("agentIP", "127.0.0.1"),
    ("agentNumber", "751"),
    ("agentID", "agent1"),
    ("agentName", "Test Agent"),
)
JSON = ("Content-Type", "application/json")


def target(url: str = BASE, key: str = KEY, **api: Any) -> Target:
    settings: dict[str, Any] = {
        "agent_ip": "127.0.0.1",
        "agent_number": "751",
        "agent_id": "agent1",
        "agent_name": "Test Agent",
    }
    settings.update(api)
    source = SourceConfig(
        name="coral", vendor="coral", api=SourceApi(url=url, api_key=key, **settings)
    )
    return Target(source=source, now=1_700_000_000.0)


def command(action: str, **args: Any) -> Command:
    """A command as the service hands it over: checked and defaulted by the catalogue."""
    checked = actions.check(ADAPTER.actions[action], args)
    return Command(source="coral", action=action, args=checked)


def build(action: str, tgt: Target | None = None, **args: Any) -> HttpRequest:
    return ADAPTER.build(command(action, **args), tgt or target())


def answer(body: str, status: int = 200) -> HttpAnswer:
    return HttpAnswer(status=status, body=body.encode())


def auth() -> tuple[str, str]:
    return ("Authorization", f"api-key {KEY}")


# -- requests, against the document ----------------------------------------------------------


def test_originate_is_the_documented_post_with_every_header() -> None:
    """originatecall: POST api/v3/originatecall, the header table in order, calleenumber."""
    req = build("call.originate", **{"from": "751", "to": "9999999999"})
    assert req.method == "POST"
    assert req.url == f"{BASE}/api/v3/originatecall"
    assert req.headers == (auth(), *AGENT_HEADERS, JSON)
    assert req.body == b'{"calleenumber":"9999999999"}'


def test_originate_from_another_extension_drops_the_configured_persons_headers() -> None:
    """From someone other than the configured agent: agentNumber is them, not agent1's name."""
    req = build("call.originate", **{"from": "1002", "to": "9999999999"})
    assert req.headers == (
        auth(),
        ("agentIP", "127.0.0.1"),
        ("agentNumber", "1002"),
        JSON,
    )


def test_unset_agent_headers_are_omitted() -> None:
    """A header whose setting is not set is not sent at all (not sent empty)."""
    tgt = target(agent_ip=None, agent_id=None, agent_name=None, agent_number=None)
    req = build("call.hold", tgt, call_id=UUID)
    assert req.headers == (auth(), JSON)


@pytest.mark.parametrize(
    ("action", "name"),
    [
        ("call.hold", "holdcall"),
        ("call.resume", "unholdcall"),
        ("call.hangup", "killactivecalls"),
    ],
)
def test_call_actions_send_the_uuid(action: str, name: str) -> None:
    """hold, un-hold and kill take the call's uuid as the document's "uuid" parameter."""
    req = build(action, call_id=UUID)
    assert req.url == f"{BASE}/api/v3/{name}"
    assert req.body == b'{"uuid":"93849-405955-59598585048-499449-9000"}'
    assert req.header("agentID") == "agent1"


def test_transfer_sends_the_three_documented_parameters_in_order() -> None:
    """queuetransfercall: calleridnumber, uuid, transfervnumber (the document's spelling)."""
    req = build(
        "call.transfer", call_id="asdf-8888-3456-hj67", to="9888888888", caller="9999999999"
    )
    assert req.url == f"{BASE}/api/v3/queuetransfercall"
    assert req.body == (
        b'{"calleridnumber":"9999999999","uuid":"asdf-8888-3456-hj67",'
        b'"transfervnumber":"9888888888"}'
    )


def test_transfer_to_a_queue_is_not_offered() -> None:
    """The document has no transfer to a queue: to_kind=queue is refused before sending."""
    with pytest.raises(CommandInvalid, match=r"^args\.to_kind"):
        command("call.transfer", call_id=UUID, to="1", to_kind="queue", caller="9999999999")


@pytest.mark.parametrize(
    ("action", "name"),
    [
        ("agent.login", "agentlogin"),
        ("agent.logout", "agentlogout"),
        ("agent.pause", "agentbreak"),
        ("agent.unpause", "agentlogin"),
    ],
)
def test_agent_actions_name_the_agent_in_the_agent_id_header(action: str, name: str) -> None:
    """The agent calls take no parameters: the command's agent is the agentID header."""
    req = build(action, agent="agent1")
    assert req.url == f"{BASE}/api/v3/{name}"
    assert req.headers == (auth(), *AGENT_HEADERS, JSON)
    assert req.body == b"{}"
    other = build(action, agent="agent7")
    assert other.headers == (auth(), ("agentIP", "127.0.0.1"), ("agentID", "agent7"), JSON)


def test_agent_break_takes_no_reason() -> None:
    """agentbreak has no reason parameter, so a reason is refused rather than dropped."""
    with pytest.raises(CommandInvalid, match=r"^args\.reason"):
        command("agent.pause", agent="agent1", reason="lunch")


def test_active_calls_is_a_bare_post() -> None:
    """getactivecalls takes no parameters."""
    req = build("calls.active")
    assert (req.method, req.url, req.body) == ("POST", f"{BASE}/api/v3/getactivecalls", b"{}")


def test_extension_status_is_the_documented_get() -> None:
    """agentrealtimestatus is the one URL the document prints: a GET, trailing slash kept."""
    req = build("extensions.status", tgt=target(api_name_in="query"))
    assert req.method == "GET"
    assert req.url == f"{BASE}/api/v3/agentrealtimestatus/"
    assert req.headers == (auth(), *AGENT_HEADERS)
    assert req.body == b""


@pytest.mark.parametrize(
    ("mode", "url", "extra", "body"),
    [
        ("path", f"{BASE}/api/v3/originatecall", (), b'{"calleenumber":"9999999999"}'),
        ("query", f"{BASE}/api/v3?cmd=originatecall", (), b'{"calleenumber":"9999999999"}'),
        (
            "header",
            f"{BASE}/api/v3",
            (("cmd", "originatecall"),),
            b'{"calleenumber":"9999999999"}',
        ),
        ("body", f"{BASE}/api/v3", (), b'{"cmd":"originatecall","calleenumber":"9999999999"}'),
    ],
)
def test_api_name_travels_where_the_source_says(
    mode: str, url: str, extra: tuple[tuple[str, str], ...], body: bytes
) -> None:
    """api_name_in path, query, header or body, under the key api_name_key names."""
    tgt = target(api_name_in=mode, api_name_key="cmd")
    req = build("call.originate", tgt, **{"from": "751", "to": "9999999999"})
    assert (req.url, req.body) == (url, body)
    assert req.headers == (auth(), *AGENT_HEADERS, JSON, *extra)


def test_base_url_with_a_trailing_slash() -> None:
    """A configured URL ending in / still gives exactly one slash before api/v3."""
    req = build("calls.active", tgt=target(url=BASE + "/"))
    assert req.url == f"{BASE}/api/v3/getactivecalls"


# -- answers, against the document -------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "args", "message"),
    [
        ("call.hold", {"call_id": UUID}, "Call on Hold."),
        ("call.resume", {"call_id": UUID}, "CallUnHold."),
        ("call.hangup", {"call_id": UUID}, "CallDisconnected"),
        ("agent.login", {"agent": "agent1"}, "LoginSuccess"),
        ("agent.logout", {"agent": "agent1"}, "Logout Success"),
        ("agent.pause", {"agent": "agent1"}, "Agent on Break"),
    ],
)
def test_documented_success_answers(action: str, args: dict[str, Any], message: str) -> None:
    """Each call's success answer is a Result carrying the vendor's message."""
    data = '""' if action == "call.hangup" else "null"
    body = f'{{\n  "status":0,\n  "message":"{message} ",\n  "data":{data}\n}}'
    result = ADAPTER.parse(command(action, **args), answer(body))
    assert result == Result(data={}, message=message)


def test_documented_failure_is_refused_with_the_vendors_message() -> None:
    """status 1 is a refusal quoting the vendor's message, at HTTP 200 as the document shows."""
    body = '{\n    "status":1,\n    "message":"Error in call disconnection",\n    "data":""\n}'
    with pytest.raises(CommandRefused) as caught:
        ADAPTER.parse(command("call.hangup", call_id=UUID), answer(body))
    assert caught.value.message == "Error in call disconnection"
    assert (caught.value.vendor_code, caught.value.status) == ("1", 200)


def test_a_failure_code_in_data_is_the_vendor_code() -> None:
    """Coral's failures that name a code put it in data (USER_NOT_EXISTS): it is kept."""
    body = '{"status": 1, "message": "Invalid OTP", "data": "OTP_NOT_VALIDATED"}'
    with pytest.raises(CommandRefused) as caught:
        ADAPTER.parse(command("agent.login", agent="agent1"), answer(body))
    assert caught.value.vendor_code == "OTP_NOT_VALIDATED"


def test_originate_result_carries_the_uuid_when_the_pbx_gives_one() -> None:
    """The documented data:null gives no call id; a data.uuid is the call's id, stripped."""
    cmd = command("call.originate", **{"from": "751", "to": "9999999999"})
    documented = '{"status":0, "message":"Call originated to calleenumber", "data":null}'
    assert ADAPTER.parse(cmd, answer(documented)).data == {"call_id": None}
    given = '{"status":0, "message":"ok", "data":{"uuid":" abc-1 "}}'
    assert ADAPTER.parse(cmd, answer(given)).data == {"call_id": "abc-1"}


# The document's getactivecalls sample with its list closed (it ends "}" for "]"), the last
# uuid given the leading space the document's cdrevent sample has.
ACTIVE = """{
  "status":0,
  "message":"Active Calls",
  "data":[{
    "uuid":"---uuid---", "direction": "IN", "callere": "9000",
    "destination": "13616549910", "state": "active", "start_time": "2017-12-04 05:56:20"
  }, {
    "uuid":" hdasjd-e-r3-4-fe", "direction": "OUT", "callere": "9004",
    "destination": "9891612005", "state": "active", "start_time": "2017-12-04 05:56:20"
  }]
}"""

CDR = """{"status": 0, "message": "CDR", "data": {"Event": "Cdr", "callerextension": "9004",
 "destination": "9891612005", "start_time": "2017-12-04 05:56:20",
 "answer_time": "2017-12-04 05:56:20", "end_time": "2017-12-04 05:56:25", "duration": "10",
 "billsec": "5", "disposition": "NO ANSWER", "accountcode": "test;1234", "recordurl": "",
 "direction": "out", "uuid": " hdasjd-e-r3-4-fe"}}"""

CTX = SourceContext(
    name="coral", vendor="coral", tz=UTC, received_at=datetime(2024, 1, 1, tzinfo=UTC)
)


def test_active_calls_are_normalised() -> None:
    """getactivecalls rows become calls: callere is the PBX's side whichever the direction."""
    calls = ADAPTER.parse(command("calls.active"), answer(ACTIVE)).data["calls"]
    inbound, outbound = calls
    assert {k: inbound[k] for k in ("call_id", "from", "to", "extension", "state")} == {
        "call_id": "---uuid---",
        "from": "13616549910",
        "to": "9000",
        "extension": "9000",
        "state": "active",
    }
    assert (outbound["from"], outbound["to"], outbound["direction"]) == (
        "9004",
        "9891612005",
        "outbound",
    )


def test_active_call_ids_are_the_push_call_keys() -> None:
    """A call's id from getactivecalls equals the one the cdrevent normaliser gives it."""
    calls = ADAPTER.parse(command("calls.active"), answer(ACTIVE)).data["calls"]
    (event,) = normalize(Payload(body=CDR.encode()), CTX)
    assert calls[1]["call_id"] == event.data["call_id"] == "hdasjd-e-r3-4-fe"


def test_no_active_calls() -> None:
    """An empty list (or data null) is no calls, not an error."""
    empty = '{"status":0,"message":"Active Calls","data":null}'
    assert ADAPTER.parse(command("calls.active"), answer(empty)).data == {"calls": []}


# The document's agentrealtimestatus sample, repaired (a stray quote, an unclosed object).
AGENTS = """{"status":0, "message":"AgentRealTimeStatus", "data":[
  {"agentid":"agent1", "name": "xyz", "contact": "9000", "status": "Available",
   "onringcount": "2", "ontalkcount": "1", "onholdcount": "0"},
  {"agentid":"agent3", "name": "ddeu", "contact": "9003", "status": "LoggedOut",
   "onringcount": "0", "ontalkcount": "0", "onholdcount": "0"},
  {"agentid":"agent4", "name": "q", "contact": "9004", "status": "Wrapping"}]}"""


def test_extension_states_from_agent_status() -> None:
    """Available is idle, LoggedOut unavailable, a word we do not know is unknown (kept)."""
    result = ADAPTER.parse(command("extensions.status"), answer(AGENTS))
    assert result.data == {
        "extensions": [
            {"extension": "9000", "state": "idle", "vendor_state": "Available"},
            {"extension": "9003", "state": "unavailable", "vendor_state": "LoggedOut"},
            {"extension": "9004", "state": "unknown", "vendor_state": "Wrapping"},
        ]
    }


def test_extension_status_of_one_extension() -> None:
    """With an extension given, only that extension is reported."""
    result = ADAPTER.parse(command("extensions.status", extension="9003"), answer(AGENTS))
    assert [e["extension"] for e in result.data["extensions"]] == ["9003"]


def test_bad_key_is_a_refusal_not_an_expired_session() -> None:
    """A 401 for the api-key is refused with the vendor's message (no login to renew)."""
    body = '{"status":1,"message":"Invalid api-key","data":null}'
    with pytest.raises(CommandRefused) as caught:
        ADAPTER.parse(command("calls.active"), answer(body, status=401))
    assert not isinstance(caught.value, SessionExpired)
    assert (caught.value.message, caught.value.status) == ("Invalid api-key", 401)


def test_a_success_status_on_an_http_error_is_still_refused() -> None:
    """HTTP 500 is a failure even if the wrapper says 0."""
    body = '{"status":0,"message":"oops","data":null}'
    with pytest.raises(CommandRefused, match="oops"):
        ADAPTER.parse(command("calls.active"), answer(body, status=500))


@pytest.mark.parametrize(
    "body",
    [
        f'{{"status":1,"message":"Invalid api-key {KEY}","data":null}}',
        f'{{"status":1,"message":"bad header Authorization: api-key={KEY}","data":null}}',
        f"<html>401 api-key {KEY} rejected</html>",
    ],
)
def test_no_refusal_carries_the_api_key(body: str) -> None:
    """A PBX that echoes the key (in its message or an HTML page) does not leak it."""
    with pytest.raises(CommandRefused) as caught:
        ADAPTER.parse(command("calls.active"), answer(body, status=401))
    assert KEY not in str(caught.value)
    assert "[redacted]" in caught.value.message


def test_a_message_naming_the_key_without_one_is_left_alone() -> None:
    """Only a value is redacted: "Invalid api-key provided" reads as the vendor wrote it."""
    body = '{"status":1,"message":"Invalid api-key provided","data":null}'
    with pytest.raises(CommandRefused, match=r"^Invalid api-key provided$"):
        ADAPTER.parse(command("calls.active"), answer(body, status=401))


# -- the simulator -----------------------------------------------------------------------------


async def send(api: CoralApi, action: str, tgt: Target | None = None, **args: Any) -> Result:
    """Build with the adapter, send with a plain client, parse with the adapter."""
    req = ADAPTER.build(command(action, **args), tgt or target(url=api.url, key=api.api_key))
    async with (
        aiohttp.ClientSession() as session,
        session.request(req.method, req.url, headers=list(req.headers), data=req.body) as got,
    ):
        body = await got.read()
        reply = HttpAnswer(status=got.status, headers=dict(got.headers), body=body)
    return ADAPTER.parse(command(action, **args), reply)


@pytest.fixture
async def api() -> AsyncIterator[CoralApi]:
    async with CoralApi(api_key=KEY, extensions=("751", "1001", "1002", "agent1")) as server:
        yield server


def originate(caller: str = "751", to: str = "9999999999") -> dict[str, str]:
    return {"from": caller, "to": to}


async def test_simulator_round_trips_every_action(api: CoralApi) -> None:
    """Every action the adapter offers is served, in the document's shapes."""
    made = await send(api, "call.originate", **originate())
    call_id = made.data["call_id"]
    assert made.message == "Call originated to 9999999999"
    assert (await send(api, "call.hold", call_id=call_id)).message == "Call on Hold."
    assert api.active[call_id]["state"] == "hold"
    assert (await send(api, "call.resume", call_id=call_id)).message == "CallUnHold."
    moved = await send(api, "call.transfer", call_id=call_id, to="1001", caller="9999999999")
    assert moved.message == "Queue Call Transferred."
    assert (await send(api, "agent.login", agent="agent1")).message == "LoginSuccess"
    assert (await send(api, "agent.pause", agent="agent1")).message == "Agent on Break"
    assert (await send(api, "agent.unpause", agent="agent1")).message == "LoginSuccess"
    status = await send(api, "extensions.status", extension="agent1")
    assert status.data["extensions"][0]["state"] == "idle"
    assert (await send(api, "agent.logout", agent="agent1")).message == "Logout Success"
    assert (await send(api, "call.hangup", call_id=call_id)).message == "CallDisconnected"
    assert [r.action for r in api.received] == [
        "originatecall",
        "holdcall",
        "unholdcall",
        "queuetransfercall",
        "agentlogin",
        "agentbreak",
        "agentlogin",
        "agentrealtimestatus",
        "agentlogout",
        "killactivecalls",
    ]


async def test_simulator_refuses_a_bad_key_with_its_message(api: CoralApi) -> None:
    """A wrong api-key is answered 401 "Invalid api-key", and nothing happens."""
    with pytest.raises(CommandRefused) as caught:
        await send(api, "call.originate", target(url=api.url, key="wrong-key"), **originate())
    assert (caught.value.message, caught.value.status) == ("Invalid api-key", 401)
    assert api.active == {}


async def test_simulator_unknown_extension(api: CoralApi) -> None:
    """Originating from an extension the PBX does not have is refused, naming it."""
    with pytest.raises(CommandRefused, match=r"^Extension 4321 not found$"):
        await send(api, "call.originate", **originate(caller="4321"))


async def test_simulator_busy_extension() -> None:
    """An extension listed busy, or already in a call, refuses a new call as busy."""
    async with CoralApi(api_key=KEY, extensions=("751", "1001"), busy=("1001",)) as server:
        with pytest.raises(CommandRefused, match=r"^Extension 1001 is busy$"):
            await send(server, "call.originate", **originate(caller="1001"))
        await send(server, "call.originate", **originate())
        with pytest.raises(CommandRefused, match=r"^Extension 751 is busy$"):
            await send(server, "call.originate", **originate())


async def test_simulator_unknown_call(api: CoralApi) -> None:
    """Holding a call the PBX does not have is refused."""
    with pytest.raises(CommandRefused, match="no active call"):
        await send(api, "call.hold", call_id="nope")


async def test_active_calls_follow_originate_and_hangup(api: CoralApi) -> None:
    """getactivecalls lists the originated call, with its id, until it is hung up."""
    call_id = (await send(api, "call.originate", **originate())).data["call_id"]
    (listed,) = (await send(api, "calls.active")).data["calls"]
    assert (listed["call_id"], listed["from"], listed["to"]) == (call_id, "751", "9999999999")
    await send(api, "call.hangup", call_id=call_id)
    assert (await send(api, "calls.active")).data == {"calls": []}


async def test_active_calls_report_rows_put_in_by_a_test(api: CoralApi) -> None:
    """A row added to `active` directly is listed, its padded uuid stripped as pushes strip it."""
    api.active[" hdasjd-e-r3-4-fe"] = {
        "uuid": " hdasjd-e-r3-4-fe",
        "direction": "IN",
        "callere": "1001",
        "destination": "09891612004",
        "state": "active",
        "start_time": "2017-12-04 05:56:20",
    }
    (listed,) = (await send(api, "calls.active")).data["calls"]
    assert listed["call_id"] == "hdasjd-e-r3-4-fe"
    await send(api, "call.hangup", call_id="hdasjd-e-r3-4-fe")
    assert api.active == {}


@pytest.mark.parametrize("mode", ["path", "query", "header", "body"])
async def test_simulator_serves_each_api_name_mode(mode: Any) -> None:
    """The simulator reads the API name where it is configured to, as the adapter sends it."""
    async with CoralApi(api_key=KEY, api_name_in=mode, api_name_key="cmd") as server:
        tgt = target(url=server.url, api_name_in=mode, api_name_key="cmd")
        made = await send(server, "call.originate", tgt, **originate("1001"))
        assert made.data["call_id"] in server.active
        wrong = "query" if mode != "query" else "header"
        other = target(url=server.url, api_name_in=wrong, api_name_key="cmd")
        with pytest.raises(CommandRefused) as caught:
            await send(server, "calls.active", other)
        assert caught.value.status == 404


def test_snippet_is_the_api_table() -> None:
    """The snippet names the simulator's URL and key, and its API-name mode when not default."""
    server = CoralApi(port=8123, api_name_in="header")
    assert server.snippet() == (
        '[sources.api]\nurl = "http://127.0.0.1:8123"\napi_key = "dev-coral-key"\n'
        'api_name_in = "header"\napi_name_key = "api"\n'
    )


class Bridge:
    """A push receiver: the first try of each push fails (503), so retransmission is tested."""

    def __init__(self) -> None:
        self.tries: list[tuple[str, bytes]] = []
        self.accepted: list[tuple[str, bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        tail = request.match_info.get("tail", "")
        self.tries.append((tail, body))
        if sum(1 for _, b in self.tries if b == body) == 1:
            return web.Response(status=503)
        self.accepted.append((tail, body))
        return web.json_response({"status": 0, "message": "success", "data": None})


async def test_originate_plays_pushes_the_normaliser_reads() -> None:
    """After a click-to-call the PBX pushes the call to the bridge, which reads it whole."""
    bridge = Bridge()
    app = web.Application()
    app.router.add_post("/ingest/coral", bridge.handle)
    app.router.add_post("/ingest/coral/{tail}", bridge.handle)
    async with TestServer(app, host="127.0.0.1", port=0) as receiver:
        push_url = str(receiver.make_url("/ingest/coral"))
        async with CoralApi(
            api_key=KEY, push_url=push_url, talk_s=0.0, retransmit_s=0.01, seed=3
        ) as server:
            call_id = (await send(server, "call.originate", **originate("1001"))).data["call_id"]
            await asyncio.wait_for(server.settled(), 10)
            assert call_id not in server.active  # its pushes ended it
    assert server.report.retransmitted == len(bridge.accepted) > 0
    events = [
        event
        for tail, body in bridge.accepted
        for event in normalize(Payload(body=body, path=tail), CTX)
    ]
    ours = [e for e in events if e.data.get("call_id") == call_id]
    assert {e.data.get("call_id") for e in events} <= {call_id, None}
    assert [e.type for e in ours][-1] == "call.completed"
    states = [e.data["state"] for e in ours if e.type == "extension.state"]
    assert states == ["ringing", "in_call", "idle"]
    assert ours[-1].data["direction"] == "outbound"
    assert ours[-1].data["from"] == "1001"


def test_adapter_offers_the_documented_actions() -> None:
    """What the document supports, and nothing it does not (no provisioning, no history)."""
    assert set(ADAPTER.actions) == {
        "call.originate",
        "call.hangup",
        "call.hold",
        "call.resume",
        "call.transfer",
        "agent.login",
        "agent.logout",
        "agent.pause",
        "agent.unpause",
        "calls.active",
        "extensions.status",
    }
    assert json.loads(build("call.hangup", call_id=UUID).body) == {"uuid": UUID}
