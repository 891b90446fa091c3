"""A simulated Coral IRIS IVDX ``api/v3``: the calls :mod:`bridge.commands.coral` sends.

It answers in the document's ``{"status": 0|1, "message": ..., "data": ...}`` wrapper. Failure
modes, each driven by what the request carries as a real PBX would: a wrong or missing api-key
(HTTP 401, "Invalid api-key"), an API name it does not serve (404), an extension it does not
have, a busy extension (listed in ``busy`` or in a call now), an unknown call uuid or agent, and
:meth:`stall`. After a successful ``originatecall`` with ``push_url`` set it plays the pushes a
real IVDX sends for that outbound call (the builders and paths of :mod:`bridge.simulate.coral`,
retransmitted until a 2xx by :func:`bridge.simulate.common.play`); the call stays in
:attr:`active` until its last push is delivered, or until it is hung up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import aiohttp
from aiohttp import web

from bridge.config_commands import CoralApiNameIn
from bridge.simulate.api_common import ApiServer, Received, play_back
from bridge.simulate.common import Call, Report, check
from bridge.simulate.coral import Builder, path_for

_JSON_APIS: Final = frozenset(
    {
        "originatecall",
        "killactivecalls",
        "holdcall",
        "unholdcall",
        "queuetransfercall",
        "agentlogin",
        "agentlogout",
        "agentbreak",
        "getactivecalls",
    }
)


class CoralApi(ApiServer):
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str = "dev-coral-key",
        push_url: str | None = None,
        extensions: Sequence[str] = ("1001", "1002", "1003", "1004"),
        busy: Sequence[str] = (),
        api_name_in: CoralApiNameIn = "path",
        api_name_key: str = "api",
        talk_s: float = 0.5,
        retransmit_s: float = 2.0,
        max_tries: int = 5,
        seed: int | None = None,
    ) -> None:
        super().__init__(host=host, port=port)
        if push_url is not None:
            check(url=push_url, rate=1, concurrency=1, max_tries=max_tries)
        self.api_key, self.push_url = api_key, push_url
        self.extensions, self.busy = tuple(extensions), set(busy)
        self.api_name_in, self.api_name_key = api_name_in, api_name_key
        self.talk_s, self.retransmit_s, self.max_tries = talk_s, retransmit_s, max_tries
        self.rng = random.Random(seed)
        # uuid -> the getactivecalls row of a call in progress (tests may edit it).
        self.active: dict[str, dict[str, Any]] = {}
        # agentID -> LoggedOut | Available | Break (agentrealtimestatus' words)
        self.agents: dict[str, str] = dict.fromkeys(self.extensions, "LoggedOut")
        self.report = Report()  # the pushes played back to push_url
        self._hangups: dict[str, asyncio.Event] = {}

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/api/v3", self._handle)
        app.router.add_post("/api/v3/", self._handle)
        app.router.add_post("/api/v3/{name}", self._handle)
        app.router.add_get("/api/v3/agentrealtimestatus/", self._agent_status)
        app.router.add_get("/api/v3/agentrealtimestatus", self._agent_status)

    def snippet(self) -> str:
        """The ``[sources.api]`` table that points a coral source at this simulator."""
        lines = ["[sources.api]", f"url = {json.dumps(self.url)}"]
        lines.append(f"api_key = {json.dumps(self.api_key)}")
        if self.api_name_in != "path" or self.api_name_key != "api":
            lines.append(f"api_name_in = {json.dumps(self.api_name_in)}")
            lines.append(f"api_name_key = {json.dumps(self.api_name_key)}")
        return "\n".join(lines) + "\n"

    # -- requests -------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        name = await self._api_name(request)
        received = await self.record(request, name or "unknown")
        refused = self._auth(received)
        if refused is not None:
            return refused
        if name not in _JSON_APIS:
            return _answer(1, f"Unknown API {name or ''}".strip(), status=404)
        try:
            params = json.loads(received.body or b"{}")
        except ValueError:
            params = None
        if not isinstance(params, dict):
            return _answer(1, "Invalid request body")
        handler = getattr(self, f"_{name}")
        answer: web.Response = handler(received.headers, params)
        return answer

    async def _agent_status(self, request: web.Request) -> web.Response:
        received = await self.record(request, "agentrealtimestatus")
        refused = self._auth(received)
        if refused is not None:
            return refused
        rows = [
            {
                "agentid": agent,
                "name": f"Agent {agent}",
                "contact": agent,
                "status": self._agent_state(agent),
                "loggedinmachine": "sim",
                "loggedinshift": "Morning",
                "prefferedcalltype": "Queue",  # sic, as in the document's sample
                "onringcount": "0",
                "ontalkcount": "0",
                "onholdcount": "0",
            }
            for agent in self.agents
        ]
        return _answer(0, "AgentRealTimeStatus", rows)

    async def _api_name(self, request: web.Request) -> str | None:
        if self.api_name_in == "path":
            return request.match_info.get("name")
        if self.api_name_in == "query":
            return request.query.get(self.api_name_key)
        if self.api_name_in == "header":
            return request.headers.get(self.api_name_key)
        try:
            body = json.loads(await request.read() or b"{}")
        except ValueError:
            return None
        value = body.get(self.api_name_key) if isinstance(body, dict) else None
        return value if isinstance(value, str) else None

    def _auth(self, received: Received) -> web.Response | None:
        scheme, _, key = received.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "api-key" and key.strip() == self.api_key:
            return None
        # The document shows no auth failure; this is the wrapper every failure uses.
        return _answer(1, "Invalid api-key", status=401)

    # -- the calls ------------------------------------------------------------------------

    def _originatecall(self, headers: Mapping[str, str], params: dict[str, Any]) -> web.Response:
        extension = headers.get("agentnumber", "").strip()
        callee = str(params.get("calleenumber") or "").strip()
        if not extension:
            return _answer(1, "agentNumber header is required")
        if not callee:
            return _answer(1, "calleenumber is required")
        refused = self._reachable(extension)
        if refused is not None:
            return refused
        call_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        self.active[call_id] = {
            "uuid": call_id,
            "direction": "OUT",
            "callere": extension,
            "destination": callee,
            "state": "active" if self.push_url is None else "ringing",
            "start_time": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        }
        if self.push_url is not None:
            self._hangups[call_id] = asyncio.Event()
            self.spawn(self._play(call_id, extension, callee))
        return _answer(0, f"Call originated to {callee}", {"uuid": call_id})

    def _killactivecalls(self, headers: Mapping[str, str], params: dict[str, Any]) -> web.Response:
        call_id, refused = self._call(params, "Error in call disconnection")
        if refused is not None:
            return refused
        del self.active[call_id]
        hangup = self._hangups.get(call_id)
        if hangup is not None:
            hangup.set()  # its pushes go on to the end of the call
        return _answer(0, "CallDisconnected", "")

    def _holdcall(self, headers: Mapping[str, str], params: dict[str, Any]) -> web.Response:
        call_id, refused = self._call(params, "Error")
        if refused is not None:
            return refused
        self.active[call_id]["state"] = "hold"
        return _answer(0, "Call on Hold.")

    def _unholdcall(self, headers: Mapping[str, str], params: dict[str, Any]) -> web.Response:
        call_id, refused = self._call(params, "Error")
        if refused is not None:
            return refused
        self.active[call_id]["state"] = "active"
        return _answer(0, "CallUnHold.")

    def _queuetransfercall(
        self, headers: Mapping[str, str], params: dict[str, Any]
    ) -> web.Response:
        call_id, refused = self._call(params, "Error")
        if refused is not None:
            return refused
        to = str(params.get("transfervnumber") or "").strip()
        if not to:
            return _answer(1, "transfervnumber is required")
        if len(to) <= 5:  # an extension of this PBX, not an outside number
            refused = self._reachable(to)
            if refused is not None:
                return refused
        self.active[call_id]["callere"] = to
        return _answer(0, "Queue Call Transferred.")

    def _agentlogin(self, headers: Mapping[str, str], params: dict[str, Any]) -> web.Response:
        agent, refused = self._agent(headers)
        if refused is not None:
            return refused
        if self.agents[agent] == "Available":
            return _answer(1, f"Agent {agent} is already logged in")
        self.agents[agent] = "Available"  # from a break too: login is how a break ends
        return _answer(0, "LoginSuccess ")

    def _agentlogout(self, headers: Mapping[str, str], params: dict[str, Any]) -> web.Response:
        agent, refused = self._agent(headers)
        if refused is not None:
            return refused
        if self.agents[agent] == "LoggedOut":
            return _answer(1, f"Agent {agent} is not logged in")
        self.agents[agent] = "LoggedOut"
        return _answer(0, "Logout Success ")

    def _agentbreak(self, headers: Mapping[str, str], params: dict[str, Any]) -> web.Response:
        agent, refused = self._agent(headers)
        if refused is not None:
            return refused
        if self.agents[agent] != "Available":
            return _answer(1, f"Agent {agent} is not available")
        self.agents[agent] = "Break"
        return _answer(0, "Agent on Break ")

    def _getactivecalls(self, headers: Mapping[str, str], params: dict[str, Any]) -> web.Response:
        return _answer(0, "Active Calls", [dict(row) for row in self.active.values()])

    # -- checks ---------------------------------------------------------------------------

    def _reachable(self, extension: str) -> web.Response | None:
        if extension not in self.extensions:
            return _answer(1, f"Extension {extension} not found")
        if extension in self.busy or extension in self._in_calls():
            return _answer(1, f"Extension {extension} is busy")
        return None

    def _in_calls(self) -> set[str]:
        return {str(row.get("callere", "")).strip() for row in self.active.values()}

    def _call(self, params: dict[str, Any], error: str) -> tuple[str, web.Response | None]:
        call_id = str(params.get("uuid") or "").strip()
        # Rows tests put in may carry the document's padded uuid (" hdasjd-e-r3-4-fe").
        key = next((k for k in self.active if k.strip() == call_id), None) if call_id else None
        if key is None:
            return call_id, _answer(1, f"{error}: no active call {call_id!r}".strip())
        return key, None

    def _agent(self, headers: Mapping[str, str]) -> tuple[str, web.Response | None]:
        agent = headers.get("agentid", "").strip()
        if agent not in self.agents:
            return agent, _answer(1, f"Agent {agent!r} not found")
        return agent, None

    def _agent_state(self, agent: str) -> str:
        state = self.agents[agent]
        if state == "Available" and agent in self._in_calls():
            return "Talking"
        return state

    # -- the pushes of a placed call --------------------------------------------------------

    async def _play(self, call_id: str, extension: str, callee: str) -> None:
        """Ring the agent's phone, connect, talk ``talk_s`` (or until hung up), end, record."""
        start = time.time()
        call = Builder(self.rng, start, UTC)
        call.call_id = call_id
        call._states((extension, "ringing", callee))
        call._states((extension, "talking", callee))
        await self._deliver(call_id, call.pushes)
        row = self.active.get(call_id)
        if row is not None and row.get("state") == "ringing":
            row["state"] = "active"
        hangup = self._hangups[call_id]
        with contextlib.suppress(TimeoutError):  # the call ends by itself, or is hung up
            await asyncio.wait_for(hangup.wait(), timeout=self.talk_s)
        call.pushes = []
        call.t = max(time.time(), start + 1)
        call._states((extension, "idle", ""))
        call._cdr(extension, callee, "out", start, "ANSWERED", recorded=True)
        await self._deliver(call_id, call.pushes)
        self.active.pop(call_id, None)
        self._hangups.pop(call_id, None)

    async def _deliver(self, call_id: str, pushes: list[dict[str, Any]]) -> None:
        assert self.push_url is not None
        base = self.push_url.rstrip("/")
        url = self.push_url

        async def send(session: aiohttp.ClientSession, push: dict[str, Any]) -> int | None:
            path = path_for(push)  # the same routes as `pbx-bridge simulate coral`
            headers = {"Content-Type": "application/json"}
            target = f"{base}/{path}" if path else url
            async with session.post(target, data=json.dumps(push), headers=headers) as answer:
                await answer.read()
                return answer.status

        plan = Call(kind="outbound", call_id=call_id, pushes=pushes, expected_types=[])
        await play_back(
            plan,
            send,
            retransmit_s=self.retransmit_s,
            max_tries=self.max_tries,
            report=self.report,
            rng=self.rng,
        )


def _answer(code: int, message: str, data: Any = None, *, status: int = 200) -> web.Response:
    body = {"status": code, "message": message, "data": data}
    return web.json_response(body, status=status)
