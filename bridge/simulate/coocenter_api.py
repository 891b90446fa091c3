"""A simulated Zycoo CooCenter passive API (``/coocenter-api/...``): what
:mod:`bridge.commands.coocenter` sends, answered in the shapes of Zycoo's API book.

Failure modes, each driven by what the request carries as a real PBX would: a wrong or missing
``Authorization`` while a WEBKEY is set (HTTP 401), a missing form field (400), an extension or
queue it does not have (404), a busy extension (listed in ``busy``, or in a call now: 409), an
extension with no call to hang up or transfer, an agent not in the queue (the book's 404
"Interface not found"), and :meth:`stall`. After a successful click-number with ``push_url`` it
plays the pushes a real CooCenter sends for that outbound call (the builders of
:mod:`bridge.simulate.coocenter`, retransmitted until a 2xx by
:func:`bridge.simulate.common.play`); the call stays in :attr:`active` until its last push is
delivered, or until it is hung up.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Final
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

import aiohttp
from aiohttp import web

from bridge.simulate.api_common import ApiServer, Received, play_back
from bridge.simulate.common import Call, Report, check
from bridge.simulate.coocenter import Builder, Dial
from bridge.sources.auth import webkey_for

PREFIX: Final = "/coocenter-api"
Handler = Callable[[dict[str, str]], web.Response]


class CoocenterApi(ApiServer):
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        webkey: str | None = None,
        push_url: str | None = None,
        push_webkey: str | None = None,
        timezone: str = "UTC",
        extensions: Sequence[str] = ("801", "802", "803", "808"),
        busy: Sequence[str] = (),
        queues: Sequence[str] = ("630",),
        talk_s: float = 0.5,
        retransmit_s: float = 2.0,
        max_tries: int = 5,
        seed: int | None = None,
    ) -> None:
        super().__init__(host=host, port=port)
        if push_url is not None:
            check(url=push_url, rate=1, concurrency=1, max_tries=max_tries)
        self.webkey, self.push_url, self.push_webkey = webkey, push_url, push_webkey
        self.tz = ZoneInfo(timezone)
        self.extensions, self.busy = tuple(extensions), set(busy)
        self.talk_s, self.retransmit_s, self.max_tries = talk_s, retransmit_s, max_tries
        self.rng = random.Random(seed)
        # call id (the pushes' uniqueid) -> its current-calls row (tests may edit it).
        self.active: dict[str, dict[str, Any]] = {}
        # queue -> member extension -> paused
        self.queues: dict[str, dict[str, bool]] = {queue: {} for queue in queues}
        self.report = Report()  # the pushes played back to push_url
        self._started: dict[str, float] = {}
        self._hangups: dict[str, asyncio.Event] = {}
        self._ids = itertools.count(1)

    def routes(self, app: web.Application) -> None:
        commands: dict[str, Handler] = {
            "extensions/click-number": self._click_number,
            "extensions/hangup": self._hangup,
            "extensions/transfer": self._transfer,
            "queues/agent-login": self._agent_login,
            "queues/agent-logout": self._agent_logout,
            "queues/agent-pause": self._agent_pause,
        }
        queries: dict[str, Handler] = {
            "extensions/current-calls": self._current_calls,
            "extensions/extension-hints-status": self._hints_status,
            "extensions/extension-status": self._peer_status,
            "queues/queue-info": self._queue_info,
        }
        for path, handler in commands.items():
            app.router.add_post(f"{PREFIX}/{path}", self._serve(path, handler))
        # The book's headings and curl examples disagree on GET or POST for these: serve both.
        for path, handler in {**queries, "queues/agent-pause": self._agent_pause}.items():
            app.router.add_get(f"{PREFIX}/{path}", self._serve(path, handler))
        for path, handler in queries.items():
            app.router.add_post(f"{PREFIX}/{path}", self._serve(path, handler))

    def snippet(self) -> str:
        """The ``[sources.api]`` table that points a coocenter source at this simulator."""
        lines = ["[sources.api]", f"url = {json.dumps(self.url)}"]
        if self.webkey is not None:
            lines.append(f"webkey = {json.dumps(self.webkey)}")
        if str(self.tz) != "UTC":
            # The WEBKEY digest is of the PBX's date: the source's timezone must be this one.
            lines.append(f"# the source's timezone = {json.dumps(str(self.tz))}")
        return "\n".join(lines) + "\n"

    # -- requests -------------------------------------------------------------------------

    def _serve(
        self, path: str, handler: Handler
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        action = path.rpartition("/")[2]

        async def serve(request: web.Request) -> web.StreamResponse:
            received = await self.record(request, action)
            if not self._authorized(received):
                # The book shows no failure of its check; this is its error wrapper.
                return _error("Authorization failed", 401)
            form = dict(received.query)
            if received.method == "POST" and received.body:
                form.update(parse_qsl(received.body.decode("utf-8", "replace")))
            return handler({key: value.strip() for key, value in form.items()})

        return serve

    def _authorized(self, received: Received) -> bool:
        if self.webkey is None:
            return True
        today = datetime.now(self.tz).date().isoformat()  # the PBX's own date, no slack
        presented = received.headers.get("authorization", "").strip().lower()
        return presented == webkey_for(self.webkey, today)

    # -- calls ----------------------------------------------------------------------------

    def _click_number(self, form: dict[str, str]) -> web.Response:
        src, dst = form.get("src", ""), form.get("dst", "")
        missing = _missing(form, "src", "dst")
        refused = missing or self._reachable(src)
        if refused is not None:
            return refused
        now = time.time()
        call_id = f"{int(now)}.{next(self._ids)}"  # an Asterisk uniqueid
        ringing = self.push_url is not None  # with pushes, the call rings before it is up
        self.active[call_id] = {
            "calleridname": src,
            "calleridnum": src,
            "channel": f"SIP/{src}-{self._suffix()}",
            "channelstate": "5" if ringing else "6",
            "channelstatedesc": "Ringing" if ringing else "Up",
            "connectedlinename": dst,
            "connectedlinenum": dst,
            "duration": "00:00:00",
            "uniqueid": call_id,
            "linkedid": call_id,
        }
        self._started[call_id] = now
        if self.push_url is not None:
            self._hangups[call_id] = asyncio.Event()
            self.spawn(self._play(call_id, src, dst, now))
        # The book prints no answer of its own (its page keeps the template's); this follows
        # the others ("hangup extension success") and names the call as Asterisk knows it.
        return _ok("click number success", {"uniqueid": call_id})

    def _hangup(self, form: dict[str, str]) -> web.Response:
        extension = form.get("extension", "")
        refused = _missing(form, "extension") or self._known(extension)
        if refused is not None:
            return refused
        calls = self._calls_of(extension)
        if not calls:
            return _error(f"Extension {extension} has no active call", 404)
        for call_id in calls:
            del self.active[call_id]
            self._started.pop(call_id, None)
            hangup = self._hangups.get(call_id)
            if hangup is not None:
                hangup.set()  # its pushes go on to the end of the call
        return _ok("hangup extension success")

    def _transfer(self, form: dict[str, str]) -> web.Response:
        src, dst = form.get("src", ""), form.get("dst", "")
        refused = _missing(form, "dst", "src") or self._known(src) or self._reachable(dst)
        if refused is not None:
            return refused
        calls = self._calls_of(src)
        if not calls:
            return _error(f"Extension {src} has no active call", 404)
        for call_id in calls:  # dst takes src's place; the call keeps its linkedid
            row = self.active[call_id]
            if row.get("calleridnum") == src:
                row.update(calleridnum=dst, calleridname=dst, channel=f"SIP/{dst}-{self._suffix()}")
            else:
                row.update(connectedlinenum=dst, connectedlinename=dst)
        return _ok("tansfer extension success")  # sic: the book's spelling

    def _current_calls(self, form: dict[str, str]) -> web.Response:
        rows = []
        for call_id, row in self.active.items():
            listed = dict(row)
            started = self._started.get(call_id)
            if started is not None:
                listed["duration"] = _hms(time.time() - started)
            rows.append(listed)
        return _ok("Channels will follow", rows)

    def _hints_status(self, form: dict[str, str]) -> web.Response:
        rows = [
            {
                "agentName": extension,
                "extension": extension,
                "extenType": "sipCallCenter",
                "status": self._hint(extension),
            }
            for extension in self.extensions
        ]
        return web.json_response(rows)  # the book's answer is the bare array

    def _peer_status(self, form: dict[str, str]) -> web.Response:
        peers = [
            {"Exten": e, "Type": "SIP", "IPAddr": "127.0.0.1", "Status": "OK (1 ms)"}
            for e in self.extensions
        ]
        return _ok("Peer status list will follow", peers)

    # -- queues ---------------------------------------------------------------------------

    def _agent_login(self, form: dict[str, str]) -> web.Response:
        extension, queue = form.get("extension", ""), form.get("queue", "")
        refused = (
            _missing(form, "extension", "queue") or self._known(extension) or self._queue(queue)
        )
        if refused is not None:
            return refused
        if extension in self.queues[queue]:
            return _error("Unable to add interface: Already there", 400)  # Asterisk's QueueAdd
        self.queues[queue][extension] = False
        return _ok("login extension success")

    def _agent_logout(self, form: dict[str, str]) -> web.Response:
        extension, queue = form.get("extension", ""), form.get("queue", "")
        refused = _missing(form, "extension") or self._known(extension)
        if queue:
            refused = refused or self._queue(queue)
        if refused is not None:
            return refused
        queues = [queue] if queue else list(self.queues)
        left = [q for q in queues if self.queues[q].pop(extension, None) is not None]
        if not left:
            return _error("Unable to remove interface: Not there", 400)  # Asterisk's QueueRemove
        return _ok("logout extension success")

    def _agent_pause(self, form: dict[str, str]) -> web.Response:
        queue, member, state = form.get("queue", ""), form.get("member", ""), form.get("state")
        refused = _missing(form, "queue", "member", "state")
        if refused is not None:
            return refused
        if state not in ("on", "off"):
            return _error(f"state must be on or off, not {state!r}", 400)
        if member not in self.queues.get(queue, {}):
            return _error("Interface not found", 404)  # the book's failure answer
        self.queues[queue][member] = state == "on"
        # Asterisk's QueuePause answers, the first of which the book prints.
        return _ok(f"Interface {'paused' if state == 'on' else 'unpaused'} successfully")

    def _queue_info(self, form: dict[str, str]) -> web.Response:
        data = {
            queue: [
                {"name": f"sip/{member}", "paused": "1" if paused else "0", "penalty": "0"}
                for member, paused in members.items()
            ]
            for queue, members in self.queues.items()
        }
        return _ok("Queue status will follow", data)

    # -- checks ---------------------------------------------------------------------------

    def _known(self, extension: str) -> web.Response | None:
        if extension not in self.extensions:
            return _error(f"Extension {extension} not found", 404)
        return None

    def _reachable(self, extension: str) -> web.Response | None:
        refused = self._known(extension)
        if refused is None and (extension in self.busy or self._calls_of(extension)):
            refused = _error(f"Extension {extension} is busy", 409)
        return refused

    def _queue(self, queue: str) -> web.Response | None:
        return None if queue in self.queues else _error(f"Queue {queue} not found", 404)

    def _calls_of(self, extension: str) -> list[str]:
        def parties(row: dict[str, Any]) -> set[str]:
            peer = str(row.get("channel", "")).partition("/")[2].rpartition("-")[0]
            return {str(row.get("calleridnum", "")), str(row.get("connectedlinenum", "")), peer}

        return [call_id for call_id, row in self.active.items() if extension in parties(row)]

    def _hint(self, extension: str) -> str:
        """The book's status code: 0 idle, 1 in a call, 2 busy, 8 ringing."""
        if extension in self.busy:
            return "2"
        rows = [self.active[call_id] for call_id in self._calls_of(extension)]
        if any(row.get("channelstatedesc") == "Ringing" for row in rows):
            return "8"
        return "1" if rows else "0"

    def _suffix(self) -> str:
        return f"{self.rng.randrange(16**8):08x}"

    # -- the pushes of a placed call --------------------------------------------------------

    async def _play(self, call_id: str, src: str, dst: str, start: float) -> None:
        """Ring src, dial dst, talk ``talk_s`` (or until hung up), end, record."""
        call = Builder(0, self.rng, start, self.tz, "zycoo")
        call.call_id, call.caller, call.channel = call_id, src, f"SIP/{src}-{call._suffix()}"
        internal = dst in self.extensions
        far = f"SIP/{dst}-{call._suffix()}" if internal else f"SIP/trunk1-{call._suffix()}"
        call._extension(src, 8)  # the PBX rings the calling extension first
        call._extension(src, 1)
        call._dial(Dial(target=dst, channel=far, answered=True), 0.0, "ANSWER")
        await self._deliver(call_id, call.pushes)
        row = self.active.get(call_id)
        if row is not None:
            row.update(channelstate="6", channelstatedesc="Up")
        hangup = self._hangups[call_id]
        with contextlib.suppress(TimeoutError):  # the call ends by itself, or is hung up
            await asyncio.wait_for(hangup.wait(), timeout=self.talk_s)
        call.pushes = []
        call.t = max(time.time(), start + 1)
        call._leg_ends()  # Zycoo's dialend ("hangup") as the answered leg ends
        call._hangup(src, dst)
        call._extension(src, 0)
        call._cdr("" if internal else "outbound", src, dst)  # calltype empty: internal
        if not internal:
            call._cc_cdr("outbound", "outgoing", agent=src, called=dst)
        await self._deliver(call_id, call.pushes)
        self.active.pop(call_id, None)
        self._started.pop(call_id, None)
        self._hangups.pop(call_id, None)

    async def _deliver(self, call_id: str, pushes: list[dict[str, Any]]) -> None:
        assert self.push_url is not None
        url, webkey, tz = self.push_url, self.push_webkey, self.tz

        async def send(session: aiohttp.ClientSession, push: dict[str, Any]) -> int | None:
            headers = {"Content-Type": "application/json"}
            if webkey:
                # The PBX's local date, per request, as `pbx-bridge simulate coocenter` sends.
                headers["Authorization"] = webkey_for(webkey, datetime.now(tz).date().isoformat())
            async with session.post(url, data=json.dumps(push), headers=headers) as answer:
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


def _ok(message: str, data: Any = None) -> web.Response:
    body: dict[str, Any] = {"status": "success", "message": message}
    if data is not None:
        body["data"] = data
    return web.json_response(body)


def _error(message: str, status: int) -> web.Response:
    return web.json_response({"status": "error", "message": message}, status=status)


def _missing(form: dict[str, str], *names: str) -> web.Response | None:
    absent = [name for name in names if not form.get(name)]
    return _error(f"Missing parameter: {', '.join(absent)}", 400) if absent else None


def _hms(seconds: float) -> str:
    whole = max(0, int(seconds))
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"
