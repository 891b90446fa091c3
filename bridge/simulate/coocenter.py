"""A Zycoo CooCenter PBX simulator: realistic call lifecycles pushed to the bridge over HTTP.

:func:`scenario` is pure (seeded, no I/O): one call's pushes in send order and the ``call.*``
types a correct bridge makes of them. :func:`run` plays many calls like the PBX does: each
call's pushes in order, a push retransmitted every ``retransmit_s`` until it gets a 2xx, and now
and then an acknowledged push sent again (as when the PBX lost the ack). Loopback bridges only.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, tzinfo
from typing import Any, Final, Literal, TextIO, Unpack

import aiohttp

from bridge.simulate.common import Call, PlayOptions, Report, simulate
from bridge.sources.auth import webkey_for

Kind = Literal["answered", "missed_queue", "ivr_only", "outbound", "transfer"]
KINDS: Final[tuple[Kind, ...]] = ("answered", "missed_queue", "ivr_only", "outbound", "transfer")

# One simulated box: a Zycoo MAC prefix, its DID, queue, IVR and agent extensions.
MAC: Final = "68:69:2e:5a:17:01"
DID: Final = "02066668888"
QUEUE: Final = "600"
IVR_ID: Final = "610"
AGENTS: Final = tuple(str(n) for n in range(801, 813))
_STATUS_TEXT: Final = {0: "Idle", 1: "InUse", 8: "Ringing"}


def scenario(call_no: int, rng: random.Random, *, start: float, tz: tzinfo = UTC) -> Call:
    """Call number ``call_no`` starting at epoch ``start``; ``tz`` is the PBX's local zone."""
    kind = rng.choice(KINDS)
    call = _Builder(call_no, rng, start, tz)
    if kind == "outbound":
        call.outbound()
    else:
        call.inbound(kind)
    return Call(kind=kind, call_id=call.call_id, pushes=call.pushes, expected_types=call.expected)


class _Builder:
    """Accumulates one call's pushes and expected types as simulated time moves on."""

    def __init__(self, call_no: int, rng: random.Random, start: float, tz: tzinfo) -> None:
        self.rng, self.t, self.tz, self.start = rng, start, tz, start
        # Asterisk ids are "<epoch>.<counter>"; ten counter values per call keep them unique.
        self.counter = call_no * 10
        self.call_id = self._uniqueid()
        self.pushes: list[dict[str, Any]] = []
        self.expected: list[str] = []
        self.caller = ""
        self.channel = ""
        self.answered_at: float | None = None
        self.queued_at: float | None = None  # when the IVR handed the call to the queue
        self.ring_s = 0.0

    def inbound(self, kind: Kind) -> None:
        rng = self.rng
        self.caller = "1" + rng.choice("3589") + "".join(rng.choices("0123456789", k=9))
        if rng.random() < 0.5:  # an ISDN span names the caller; a SIP trunk does not
            self.channel = f"DAHDI/i1/{self.caller}-{rng.randint(1, 60)}"
        else:
            self.channel = f"SIP/trunk1-{self._suffix()}"
        self._ivr(to_queue=kind != "ivr_only")
        self.queued_at = self.t
        agents = rng.sample(AGENTS, k=3)
        if kind == "ivr_only":
            self.t += rng.uniform(2, 8)  # the closed-hours message, then the PBX hangs up
        elif kind == "missed_queue":
            # One agent: unanswered, then the caller gives up in the queue. Two: the caller
            # hangs up while the second rings (dialstatus CANCEL).
            rung = rng.randint(1, 2)
            for n in range(rung):
                self._ring(agents[n], "CANCEL" if n else "NOANSWER")
            if rung == 1:
                self.t += rng.uniform(2, 20)
        else:
            if rng.random() < 0.3:
                self._ring(agents[1], "NOANSWER")  # the queue moves on to the next agent
            self._ring(agents[0], "ANSWER")
            if kind == "transfer":  # agent A hands the caller to agent B
                self.t += rng.uniform(10, 60)
                self._ring(agents[2], "ANSWER")
                self._extension(agents[0], 0)
        agent = self._last_target() if self.answered_at else ""
        if agent:
            self.t += rng.uniform(10, 240)
        self._hangup(self.caller, agent)
        if agent:
            self._extension(agent, 0)
        destination = agent or (QUEUE if kind == "missed_queue" else DID)
        self._cdr(kind, "inbound", self.caller, destination)
        self._cc_cdr(kind, "incoming", called=DID, agent=agent)

    def outbound(self) -> None:
        rng = self.rng
        agent = rng.choice(AGENTS)
        self.caller, self.channel = agent, f"SIP/{agent}-{self._suffix()}"
        number = "01" + rng.choice("3589") + "".join(rng.choices("0123456789", k=9))
        self._extension(agent, 1)
        self._dial(number, f"SIP/trunk1-{self._suffix()}", "ANSWER", ring_s=rng.uniform(3, 20))
        self.t += rng.uniform(10, 240)
        self._hangup(agent, number)
        self._extension(agent, 0)
        self._cdr("outbound", "outbound", agent, number)
        self._cc_cdr("outbound", "outgoing", called=number, agent=agent)

    def _ivr(self, *, to_queue: bool) -> None:
        began = self.t
        self.t += self.rng.uniform(3, 12)
        self._push(
            "ivr",
            uuid=self.call_id,
            caller=self.caller,
            called=DID,
            callType="IN",
            queueCode=QUEUE if to_queue else "",
            startTime=self._local(began),
            endTime=self._local(self.t),
            duration=str(round(self.t - began)),
            ivrId=IVR_ID,
            ivrName="welcome" if to_queue else "closed",
            ivrDtmf=self.rng.choice("12"),
            trunkNumber=DID,
            mac=MAC,
        )
        self.expected.append("call.initiated")  # the ivr push is the call's first sign

    def _ring(self, agent: str, status: str) -> None:
        self._extension(agent, 8)
        channel = f"SIP/{agent}-{self._suffix()}"
        self._dial(agent, channel, status, ring_s=self.rng.uniform(2, 15))
        self._extension(agent, 1 if status == "ANSWER" else 0)

    def _dial(self, target: str, dest_channel: str, status: str, *, ring_s: float) -> None:
        common = {
            "channel": self.channel,
            "calleridnum": self.caller,
            "destchannel": dest_channel,
            "destcalleridnum": target,
            "uniqueid": self.call_id,
        }
        dest_id = self._uniqueid()
        self._push(
            "dialbegin",
            timestamp=f"{self.t:.6f}",
            **common,
            destuniqueid=dest_id,
            dialstring=dest_channel.rpartition("-")[0],
            mac=MAC,
        )
        if not self.expected:
            self.expected.append("call.initiated")
        self.expected.append("call.ringing")
        self.t += ring_s
        self.ring_s += ring_s
        self._push("dialend", timestamp=f"{self.t:.6f}", **common, dialstatus=status)
        if status == "ANSWER":
            self.answered_at = self.answered_at or self.t
            self.expected.append("call.answered")
        else:
            self.expected.append("call.ringing_ended")

    def _hangup(self, number: str, connected: str) -> None:
        self._push(
            "hangup",
            calleridnum=number,
            calleridname=number,
            connectedlinenum=connected,
            connectedlinename=connected,
            uniqueid=self.call_id,
        )
        self.expected.append("call.ended")
        if self.answered_at is None:  # inbound and nobody answered: the bridge derives it
            self.expected.append("call.missed")

    def _cdr(self, kind: str, calltype: str, source: str, destination: str) -> None:
        # The IVR or the queue answers an inbound call, so its CDR says ANSWERED even when no
        # person did (only cc_cdr tells): the bridge must not take it for a person answering.
        answered = self.answered_at or (self.start if kind != "outbound" else None)
        self._push(
            "cdr",
            callerid=f'"{source}" <{source}>',
            source=source,
            destination=destination,
            starttime=self._local(self.start),
            answertime=self._local(answered) if answered else "0000-00-00 00:00:00",
            endtime=self._local(self.t),
            disposition="ANSWERED" if answered else "NO ANSWER",
            duration=str(round(self.t - self.start)),
            billableseconds=str(round(self.t - answered)) if answered else "0",
            calltype=calltype,
            recordfile=self._recording() if self.answered_at else "",
            uniqueid=self.call_id,
        )
        self.expected.append("call.completed")

    def _cc_cdr(self, kind: str, call_type: str, *, called: str, agent: str) -> None:
        bridged = self.answered_at is not None
        state = "bridged" if bridged else "ivr" if kind == "ivr_only" else "queue"
        talk_s = round(self.t - self.answered_at) if self.answered_at else 0
        queued = self.queued_at if kind in ("answered", "missed_queue", "transfer") else None
        queue_s = round((self.answered_at or self.t) - queued) if queued else 0
        self._push(
            "cc_cdr",
            uuid=self.call_id,
            caller=self.caller,
            called=called,
            queueCode=QUEUE if queued else "",
            agentCode=agent,
            callType=call_type,
            cdrState=state,
            hangupSide=self.rng.choice(("caller", "agent")) if bridged else "caller",
            hangupCause="NORMAL_CLEARING",
            startTime=self._local(self.start),
            endTime=self._local(self.t),
            duration=str(round(self.t - self.start)),
            queueTime=str(queue_s),
            ringTime=str(round(self.ring_s)),
            talkingTime=str(talk_s),
            holdTime="0",
            pauseTime="0",
            trunkNumber=DID,
            filePath=self._recording() if bridged else "",
            missCause="MEMBER_CANCEL" if state == "queue" else "",
            mac=MAC,
        )
        self.expected.append("call.completed")

    def _extension(self, exten: str, status: int) -> None:
        self._push(
            "extensionstatus", exten=exten, status=str(status), statustext=_STATUS_TEXT[status]
        )

    def _push(self, event: str, **fields: str) -> None:
        self.pushes.append({"event": event, **fields})

    def _last_target(self) -> str:
        targets = [p["destcalleridnum"] for p in self.pushes if p["event"] == "dialend"]
        return targets[-1] if targets else ""

    def _uniqueid(self) -> str:
        self.counter += 1
        return f"{int(self.t)}.{self.counter}"

    def _suffix(self) -> str:
        return f"{self.rng.randrange(16**8):08x}"

    def _local(self, moment: float) -> str:
        return datetime.fromtimestamp(moment, self.tz).strftime("%Y-%m-%d %H:%M:%S")

    def _recording(self) -> str:
        day = datetime.fromtimestamp(self.start, self.tz).strftime("%Y/%m/%d")
        return f"/monitor/{day}/{self.call_id}.wav"


async def run(
    *,
    url: str,
    calls: int,
    rate: float,
    webkey: str | None,
    seed: int | None,
    out: TextIO,
    tz: tzinfo = UTC,
    **options: Unpack[PlayOptions],
) -> Report:
    """Play ``calls`` calls against ``url``, starting ``rate`` calls per second.

    Pass ``report`` to watch progress while it runs (tests kill the bridge mid-run).
    """

    async def send(session: aiohttp.ClientSession, push: dict[str, Any]) -> int | None:
        headers = {"Content-Type": "application/json"}
        if webkey:
            # The PBX's local date, per request: a run can cross midnight.
            headers["Authorization"] = webkey_for(webkey, datetime.now(tz).date().isoformat())
        async with session.post(url, data=json.dumps(push).encode(), headers=headers) as response:
            await response.read()
            return response.status

    def plan(n: int, rng: random.Random, start: float) -> Call:
        return scenario(n, rng, start=start, tz=tz)

    return await simulate(
        plan, send, url=url, calls=calls, rate=rate, seed=seed, out=out, **options
    )
