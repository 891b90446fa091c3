"""A simulated OnCall (PortSIP v16) REST API: tenant login, extensions, make call, call logs.

It answers the document's requests with the document's shapes: a tenant token with a ttl
(:meth:`OnCallApi.expire_tokens` makes every token issued so far refused, with HTTP 401),
``{"err_code", "msg"}`` refusals with HTTP 400 (a wrong password: 1.1's "Username or Password
incorrect"; an unknown extension: the document's "Database Nonexistent records."; a busy one),
paged extension and call-log lists. A make call with ``push_url`` plays the call's Event URL
pushes and its CDR (``push_url + "/cdr"``) back to the bridge, built by
:mod:`bridge.simulate.oncall_pushes` as the push simulator's are, and adds the call to
:attr:`OnCallApi.call_logs`. Loopback only.
"""

from __future__ import annotations

import itertools
import json
import random
import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any, Final

import aiohttp
from aiohttp import web

from bridge.simulate.api_common import ApiServer, play_back
from bridge.simulate.common import Call, Report, basic_auth, check
from bridge.simulate.oncall import CDR_EVENTS, expected_types
from bridge.simulate.oncall_pushes import DOMAIN, TRUNK, CallBuilder

# Codes of the document where it prints one; the others are the simulator's own (the
# document prints none for them), in the same shape.
BAD_LOGIN: Final = ("1041004", "Username or Password incorrect")
NO_RECORD: Final = ("1028", "Database Nonexistent records.")
TOKEN_REFUSED: Final = ("1040401", "Access token invalid or expired")  # simulator's own
BUSY: Final = ("1044486", "Extension is busy")  # simulator's own
_PUSH_RETRANSMIT_S: Final = 0.2

_DIRECTIONS: Final = {
    "in": "INBOUND_CALL",
    "out": "OUTBOUND_CALL",
    "ext": "EXTENSION_CALL",
    "in2out": "INBOUND_OUTBOUND_CALL",
}


def record_of(call: Call, *, tz: tzinfo = UTC) -> dict[str, Any]:
    """The ``api/call_logs/list`` record (5.1's shape) of a simulated call, from its CDR.

    Times are PBX-local in ``tz`` (the source's ``timezone``), as the document prints them.
    """
    cdr = next(push for push in call.pushes if push["event_type"] in CDR_EVENTS)
    answered = cdr.get("answered_time", "0")
    status = cdr.get("call_status") or _status_2023(cdr)
    talk = int(cdr.get("talk_duration") or 0)
    return {
        "id": int(cdr["cdr_id"]),
        "call_id": cdr["call_id"],
        "caller": cdr["caller"],
        "callee": cdr["callee"],
        "start_time": _local(cdr["start_time"], tz),
        "answer_time": _local(answered, tz) if answered != "0" else "NOT_ANSWER",
        "end_time": _local(cdr["ended_time"], tz),
        "ringing_time": _local(cdr.get("ring_time", "0"), tz),
        "duration": talk,
        "session_id": int(cdr["session_id"]),
        "related_callid_1": "",
        "related_callid_2": "",
        "ring_duration": int(cdr.get("ring_duration") or 0),
        "talk_duration": talk,
        "caller_endpoint": "EXTENSION_NUMBER",
        "callee_endpoint": "EXTENSION_NUMBER" if cdr["direction"] == "ext" else "TRUNK",
        "direction": _DIRECTIONS.get(cdr["direction"], "EXTENSION_CALL"),
        "end_reason": str(cdr.get("ended_reason") or "NONE").upper(),
        "status": {"noanswer": "NOANSWER"}.get(status, status.upper()),
        "outcid": cdr.get("outbound_caller_id", ""),
        "didcid": cdr.get("did", ""),
        "call_cost": "0.000000",
    }


def _status_2023(cdr: dict[str, Any]) -> str:
    """A CDR of the 2023 shape has no call_status: the record still says what happened."""
    if cdr.get("answered_time", "0") != "0":
        return "answered"
    return "fail" if str(cdr.get("status_code")) == "486" else "noanswer"


def _local(stamp: str, tz: tzinfo) -> str:
    return datetime.fromtimestamp(int(stamp), tz).strftime("%Y-%m-%d %H:%M:%S")


class _ClickToCall(CallBuilder):
    """A click-to-call: the PBX rings ``src``, then calls ``to`` (an extension or a number)."""

    def place(self, src: str, to: str, *, internal: bool) -> None:
        host = DOMAIN if internal else TRUNK
        self._start("ext" if internal else "out", f"sip:{src}@{DOMAIN}", f"sip:{to}@{host}")
        self._ring([to], host=host)
        self._answer(to, host=host)
        self._talk(src)
        if internal:
            self._leg_ends(to, "caller_disconnect")
        self._end("call_ended")
        self._cdr("answered", "200", "caller_disconnect")
        # The CDR always says call_status (its 2023 shape does not), the field the reconcile
        # run's ids are made of: this simulator's history then matches its CDRs.
        self.pushes[-1].setdefault("call_status", "answered")


class OnCallApi(ApiServer):
    """The simulated OnCall REST API; ``busy`` extensions refuse a make call."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        username: str = "dev-tenant",
        password: str = "dev-password",
        token_ttl_s: float = 3600.0,
        push_url: str | None = None,
        push_username: str | None = None,
        push_password: str | None = None,
        extensions: Sequence[str] = ("101", "102", "103", "104"),
        busy: Sequence[str] = (),
        domain: str = DOMAIN,
        web_password: str = "dev-web-password",
        tz: tzinfo = UTC,
        seed: int = 1,
    ) -> None:
        super().__init__(host=host, port=port)
        if push_url is not None:
            check(url=push_url, rate=1, concurrency=1, max_tries=1)
        self.username, self.password, self.token_ttl_s = username, password, token_ttl_s
        self.push_url, self.push_username, self.push_password = (
            push_url,
            push_username,
            push_password,
        )
        self.extensions = list(extensions)
        self.busy = set(busy)
        # Every extension's web access password (3.1's auth) is web_password.
        self.domain, self.web_password, self.tz = domain, web_password, tz
        self.call_logs: list[dict[str, Any]] = []
        self.calls: list[Call] = []  # the calls placed, with their pushes
        self.reports: list[Report] = []  # how their pushes were delivered
        self._tokens: dict[str, float] = {}  # token -> monotonic expiry
        self._rng = random.Random(seed)
        self._numbers = itertools.count(1)

    def expire_tokens(self) -> None:
        """Every token issued so far is refused from now on (a fresh login works)."""
        self._tokens.clear()

    def snippet(self) -> str:
        """The source's ``[sources.api]`` table for this simulator."""
        return (
            "[sources.api]\n"
            f'url = "{self.url}"\n'
            f'username = "{self.username}"\n'
            f'password = "{self.password}"\n'
            f'domain = "{self.domain}"\n'
            f'call_extension = "{self.extensions[0]}"\n'
            f'call_password = "{self.web_password}"\n'
        )

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/api/account/credentials/verify", self._login)
        app.router.add_get("/api/extensions/list", self._extensions_list)
        app.router.add_get("/api/extensions/show", self._extensions_show)
        app.router.add_post("/api/extensions/call", self._call)
        app.router.add_get("/api/call_logs/list", self._call_logs_list)
        app.router.add_get("/api/call_logs/show", self._call_logs_show)
        app.router.add_get("/api/call_queues/list", self._call_queues_list)

    # -- handlers ----------------------------------------------------------------------------

    async def _login(self, request: web.Request) -> web.Response:
        received = await self.record(request, "credentials/verify")
        try:
            body = json.loads(received.body)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return _refuse(400, ("1040001", "Parameter : name incorrect"))
        if body.get("name") != self.username or body.get("password") != self.password:
            return _refuse(400, BAD_LOGIN)
        token = secrets.token_hex(16)
        self._tokens[token] = time.monotonic() + self.token_ttl_s
        answer = {
            "access_token": token,
            "expires": int(self.token_ttl_s),
            "api_version": "8.0",
            "role": "tenant",
            "name": self.username,
            "id": 100000000000000001,
        }
        return web.json_response(answer)

    def _authorized(self, request: web.Request) -> bool:
        token = request.headers.get("access_token", "")
        expiry = self._tokens.get(token)
        return expiry is not None and time.monotonic() < expiry

    async def _extensions_list(self, request: web.Request) -> web.Response:
        await self.record(request, "extensions/list")
        if not self._authorized(request):
            return _refuse(401, TOKEN_REFUSED)
        paged = _page(request, [self._extension(number) for number in self.extensions])
        if isinstance(paged, web.Response):
            return paged
        page, size, rows = paged
        return web.json_response(
            {
                "count": len(self.extensions),
                "pagination": page,
                "pagesize": size,
                "sort_by": "DEFAULT",
                "extensions": rows,
            }
        )

    def _extension(self, number: str) -> dict[str, Any]:
        return {
            "id": _extension_id(number),
            "extension_number": number,
            "first_name": f"Sim {number}",
            "last_name": "",
            "email": "",
            # Only OFFLINE is printed; the simulator's extensions are registered.
            "status": "ONCALL" if number in self.busy else "ONLINE",
            "user_agent": "sim-phone",
        }

    async def _extensions_show(self, request: web.Request) -> web.Response:
        await self.record(request, "extensions/show")
        if not self._authorized(request):
            return _refuse(401, TOKEN_REFUSED)
        wanted = request.query.get("id", "")
        number = next((n for n in self.extensions if str(_extension_id(n)) == wanted), None)
        if number is None:
            return _refuse(400, NO_RECORD)
        profile = {"first_name": f"Sim {number}", "last_name": "", "email": ""}
        answer = {"id": _extension_id(number), "extension_number": number, "profile": profile}
        return web.json_response(answer)

    async def _call(self, request: web.Request) -> web.Response:
        await self.record(request, "extensions/call")
        query = request.query
        for name in ("src", "to", "domain", "extension", "auth"):
            if not query.get(name, "").strip():
                return _refuse(400, ("1040001", f"Parameter : {name} incorrect"))
        src, to = query["src"], query["to"]
        if query["domain"] != self.domain or query["extension"] not in self.extensions:
            return _refuse(400, NO_RECORD)
        if query["auth"] != self.web_password:
            return _refuse(400, BAD_LOGIN)
        if src not in self.extensions:
            return _refuse(400, NO_RECORD)
        if src in self.busy:
            return _refuse(400, BUSY)
        call = self._place(src, to)
        self.call_logs.append(record_of(call, tz=self.tz))
        if self.push_url is not None:
            self.spawn(self._deliver(call))
        return web.json_response({"session_id": call.call_id})

    def _place(self, src: str, to: str) -> Call:
        builder = _ClickToCall(next(self._numbers), self._rng, time.time())
        builder.place(src, to, internal=to in self.extensions)
        pushes = builder.pushes
        call = Call(
            kind="click_to_call",
            call_id=builder.session_id,
            pushes=pushes,
            expected_types=expected_types(pushes),
        )
        self.calls.append(call)
        return call

    async def _deliver(self, call: Call) -> None:
        """The call's pushes to the bridge, as PortSIP sends them: in order, until a 2xx."""
        assert self.push_url is not None
        event_url = self.push_url
        cdr_url = event_url.rstrip("/") + "/cdr"

        async def send(session: aiohttp.ClientSession, push: dict[str, Any]) -> int | None:
            url = cdr_url if push["event_type"] in CDR_EVENTS else event_url
            body = json.dumps(push).encode()
            headers = {"Content-Type": "application/json"}
            async with session.post(url, data=body, headers=headers) as answer:
                await answer.read()
                return answer.status

        auth = None
        if self.push_username is not None:
            auth = basic_auth(self.push_username, self.push_password or "")
        report = await play_back(
            call, send, retransmit_s=_PUSH_RETRANSMIT_S, max_tries=5, headers=auth
        )
        self.reports.append(report)

    async def _call_logs_list(self, request: web.Request) -> web.Response:
        await self.record(request, "call_logs/list")
        if not self._authorized(request):
            return _refuse(401, TOKEN_REFUSED)
        query = request.query
        since, until = query.get("start_time"), query.get("end_time")
        extension = query.get("extension")
        rows = [
            row
            for row in self.call_logs
            if (since is None or str(row.get("start_time", "")) >= since)
            and (until is None or str(row.get("end_time", "")) <= until)
            and (extension is None or extension in (row.get("caller"), row.get("callee")))
        ]
        paged = _page(request, rows)
        if isinstance(paged, web.Response):
            return paged
        page, size, details = paged
        answer = {"pagination": page, "pagesize": size, "sort_by": "DEFAULT", "details": details}
        return web.json_response(answer)

    async def _call_logs_show(self, request: web.Request) -> web.Response:
        await self.record(request, "call_logs/show")
        if not self._authorized(request):
            return _refuse(401, TOKEN_REFUSED)
        wanted = request.query.get("id", "")
        row = next((r for r in self.call_logs if str(r.get("id")) == wanted), None)
        if row is None:
            return _refuse(400, NO_RECORD)
        return web.json_response({"count": 1, "id": row["id"], "targets": []})

    async def _call_queues_list(self, request: web.Request) -> web.Response:
        await self.record(request, "call_queues/list")
        if not self._authorized(request):
            return _refuse(401, TOKEN_REFUSED)
        queue = {
            "id": 100000000000000300,
            "extension_number": "3000",
            "name": "sim-queue",
            "polling_strategy": "RING_SIMULTANEOUSLY",
            "status": "ONLINE",
        }
        paged = _page(request, [queue])
        if isinstance(paged, web.Response):
            return paged
        page, size, rows = paged
        return web.json_response(
            {"pagination": page, "pagesize": size, "sort_by": "DEFAULT", "count": 1, "queues": rows}
        )


def _page(
    request: web.Request, rows: list[dict[str, Any]]
) -> tuple[int, int, list[dict[str, Any]]] | web.Response:
    """The document's paging: ``pagination`` (required, from 1) and ``pagesize`` (100)."""
    try:
        page = int(request.query["pagination"])
        size = int(request.query.get("pagesize", "100"))
    except (KeyError, ValueError):
        return _refuse(400, ("1040001", "Parameter : pagination incorrect"))
    if page < 1 or size < 1:
        return _refuse(400, ("1040001", "Parameter : pagination incorrect"))
    return page, size, rows[(page - 1) * size : page * size]


def _extension_id(number: str) -> int:
    return 200000000000000000 + int(number) if number.isdigit() else 200000000000000000


def _refuse(status: int, error: tuple[str, str]) -> web.Response:
    code, message = error
    return web.json_response({"err_code": code, "msg": message}, status=status)
