"""A Coral IRIS IVDX PBX simulator: call lifecycles as the PBX's HTTP pushes, sent to the bridge.

:func:`scenario` is pure (seeded, no I/O): one call's pushes in send order and the ``call.*``
types a correct bridge makes of them. :func:`run` plays many calls like a PBX: each call's pushes
in order, retransmitted every ``retransmit_s`` until a 2xx, and now and then an acknowledged push
sent again. The document does not say where each push goes, so some go to the source's URL and
some to a per-API path under it (:func:`path_for`). Loopback bridges only.
"""

from __future__ import annotations

import json
import random
import uuid
import zlib
from datetime import UTC, datetime, tzinfo
from typing import Any, Final, Literal, TextIO, Unpack

import aiohttp

from bridge.simulate.common import Call, PlayOptions, Report, simulate

Kind = Literal["answered", "missed", "outbound"]
KINDS: Final[tuple[Kind, ...]] = ("answered", "missed", "outbound")

AGENTS: Final = tuple(str(n) for n in range(9000, 9012))
HEALTH_RATIO: Final = 0.1  # calls that carry a pbxhealthstatus push among theirs
_MESSAGES: Final = {
    "incomingcall": "Incoming call",
    "extstatechangeevent": "Extension State",
    "cdrevent": "CDR",
    "pbxhealthstatus": "PBX Health",
}


def scenario(call_no: int, rng: random.Random, *, start: float, tz: tzinfo = UTC) -> Call:
    """Call number ``call_no`` starting at epoch ``start``; ``tz`` is the PBX's local zone.

    ``call_no`` only names the call in the printed report: Coral's ids are random uuids.
    """
    kind = rng.choice(KINDS)
    call = Builder(rng, start, tz)
    if rng.random() < HEALTH_RATIO:
        call.health()
    if kind == "outbound":
        call.outbound()
    else:
        call.inbound(answered=kind == "answered")
    return Call(kind=kind, call_id=call.call_id, pushes=call.pushes, expected_types=call.expected)


def api_of(push: dict[str, Any]) -> str:
    """Which of the four push APIs a simulated push belongs to."""
    data = push["data"]
    if isinstance(data, list):
        return "extstatechangeevent"
    if "pbxstatus" in data:
        return "pbxhealthstatus"
    return "incomingcall" if data["Event"] == "Popup" else "cdrevent"


def path_for(push: dict[str, Any]) -> str:
    """The URL tail a push goes to: "" (the source's URL) or its API's name, about half each.

    A function of the body, so a retransmission takes the same route as the original (a PBX is
    configured with URLs, it does not pick one per attempt).
    """
    digest = zlib.crc32(json.dumps(push, sort_keys=True).encode())
    return api_of(push) if digest % 2 else ""


class Builder:
    """Accumulates one call's pushes and expected types as simulated time moves on."""

    def __init__(self, rng: random.Random, start: float, tz: tzinfo) -> None:
        self.rng, self.t, self.tz, self.start = rng, start, tz, start
        # FreeSWITCH call uuids are UUIDv4; drawn from the seeded generator for repeatability.
        self.call_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        self.pushes: list[dict[str, Any]] = []
        self.expected: list[str] = []

    def inbound(self, *, answered: bool) -> None:
        rng = self.rng
        caller = "09" + "".join(rng.choices("0123456789", k=9))
        self.t += rng.uniform(2, 10)  # the IVR before the queue rings anyone
        agents = rng.sample(AGENTS, k=2)
        if rng.random() < 0.4:  # the queue tries one agent in vain, then the next
            self._ring(caller, agents[1])
            self.t += rng.uniform(5, 20)
            self._states((agents[1], "idle", ""))
        self._ring(caller, agents[0])
        self.t += rng.uniform(2, 15)
        answered_at: float | None = None
        if answered:
            answered_at = self.t
            self._states((agents[0], "talking", caller))
            self.t += rng.uniform(10, 240)
        self._states((agents[0], "idle", ""))
        # Unanswered, the record shows the channel answered by the IVR at the start (like the
        # document's sample) or no answer time at all.
        answer = answered_at if answered else rng.choice((self.start, None))
        disposition = "ANSWERED" if answered else "NO ANSWER"
        self._cdr(agents[0], caller, "in", answer, disposition, recorded=answered)

    def outbound(self) -> None:
        rng = self.rng
        agent = rng.choice(AGENTS)
        number = "0" + "".join(rng.choices("0123456789", k=10))
        self._states((agent, "talking", number))
        self.t += rng.uniform(3, 20)
        disposition = rng.choices(("ANSWERED", "NO ANSWER", "BUSY"), weights=(7, 2, 1))[0]
        answered_at = self.t if disposition == "ANSWERED" else None
        if answered_at is not None:
            self.t += rng.uniform(10, 240)
        self._states((agent, "idle", ""))
        self._cdr(agent, number, "out", answered_at, disposition, recorded=answered_at is not None)

    def health(self) -> None:
        self._push("pbxhealthstatus", {"pbxstatus": 0, "pbxstatusmessage": "OK"})

    def _ring(self, caller: str, agent: str) -> None:
        popup = {"Event": "Popup", "CallerNum": caller, "extension": agent, "uuid": self.call_id}
        self._push("incomingcall", popup)
        if not self.expected:
            self.expected.append("call.initiated")
        self.expected.append("call.ringing")
        self._states((agent, "ringing", caller))

    def _states(self, *changes: tuple[str, str, str]) -> None:
        elements = [
            {"extension": exten, "status": status, "uuid": self.call_id, "secondparty": other}
            for exten, status, other in changes
        ]
        if self.rng.random() < 0.3:  # the PBX reports another extension in the same push
            other = self.rng.choice([a for a in AGENTS if a not in {c[0] for c in changes}])
            elements.append({"extension": other, "status": "idle", "uuid": "", "secondparty": ""})
        self._push("extstatechangeevent", elements)

    def _cdr(
        self,
        extension: str,
        other: str,
        direction: str,
        answered_at: float | None,
        disposition: str,
        *,
        recorded: bool,
    ) -> None:
        # The document's sample uuid has a leading space: the bridge must trim it.
        call_id = " " + self.call_id if self.rng.random() < 0.2 else self.call_id
        billed = round(self.t - answered_at) if answered_at is not None else 0
        fields = {
            "Event": "Cdr",
            "callerextension": extension,
            "destination": other,
            "start_time": self._local(self.start),
            "answer_time": self._local(answered_at) if answered_at is not None else "",
            "end_time": self._local(self.t),
            "duration": str(round(self.t - self.start)),
            "billsec": str(billed),
            "disposition": disposition,
            "accountcode": "",
            "recordurl": self._recording() if recorded else "",
            "direction": direction,
            "uuid": call_id,
        }
        self._push("cdrevent", fields)
        # No hangup push: the record is the end, and the bridge derives call.ended from it.
        self.expected += ["call.ended", "call.completed"]
        if direction == "in" and disposition != "ANSWERED":
            self.expected.append("call.missed")

    def _push(self, api: str, data: dict[str, Any] | list[dict[str, Any]]) -> None:
        self.pushes.append({"status": 0, "message": _MESSAGES[api], "data": data})

    def _local(self, moment: float) -> str:
        return datetime.fromtimestamp(moment, self.tz).strftime("%Y-%m-%d %H:%M:%S")

    def _recording(self) -> str:
        day = datetime.fromtimestamp(self.start, self.tz).strftime("%Y/%m/%d")
        return f"/recordings/{day}/{self.call_id}.wav"


async def run(
    *,
    url: str,
    calls: int,
    rate: float,
    seed: int | None,
    out: TextIO,
    tz: tzinfo = UTC,
    **options: Unpack[PlayOptions],
) -> Report:
    """Play ``calls`` calls against ``url`` (the source's ingest URL), ``rate`` per second.

    Pass ``report`` to watch progress while it runs (tests kill the bridge mid-run).
    """
    base = url.rstrip("/")

    async def send(session: aiohttp.ClientSession, push: dict[str, Any]) -> int | None:
        path = path_for(push)
        target = f"{base}/{path}" if path else url
        body = json.dumps(push).encode()
        headers = {"Content-Type": "application/json"}
        async with session.post(target, data=body, headers=headers) as response:
            await response.read()
            return response.status

    def plan(n: int, rng: random.Random, start: float) -> Call:
        return scenario(n, rng, start=start, tz=tz)

    return await simulate(
        plan, send, url=url, calls=calls, rate=rate, seed=seed, out=out, **options
    )
