"""A Zycoo CooCenter PBX simulator: realistic call lifecycles pushed to the bridge over HTTP.

:func:`scenario` is pure (seeded, no I/O): one call's pushes in send order and the ``call.*``
types a correct bridge makes of them. :func:`run` plays many calls like the PBX does: each
call's pushes in order, a push retransmitted every ``retransmit_s`` until it gets a 2xx, and now
and then an acknowledged push sent again (as when the PBX lost the ack). Loopback bridges only.

The pushes have the shapes of Zycoo's own API book (OpenVoIP/coocenter-api-gitbook). By default
a ``dialend`` says ``dialstatus: "hangup"``, the book's only value, which tells nothing about an
answer: the call's ``cdr`` and ``cc_cdr`` decide it. ``dialstatus="asterisk"`` plays Asterisk's
ANSWER / NOANSWER / CANCEL instead, as a box whose firmware passes Asterisk's value on.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any, Final, Literal, TextIO, Unpack

import aiohttp

from bridge.simulate.common import Call, PlayOptions, Report, simulate
from bridge.sources.auth import webkey_for

Kind = Literal["answered", "missed_queue", "ivr_only", "outbound", "transfer"]
KINDS: Final[tuple[Kind, ...]] = ("answered", "missed_queue", "ivr_only", "outbound", "transfer")
# What a dialend's dialstatus says: Zycoo's book ("hangup" for every dial) or Asterisk's set.
DialStatus = Literal["zycoo", "asterisk"]
DIALSTATUSES: Final[tuple[DialStatus, ...]] = ("zycoo", "asterisk")

# One simulated box: a Zycoo MAC prefix, its DID, queue, IVR and agent extensions.
MAC: Final = "68:69:2e:5a:17:01"
DID: Final = "02066668888"
QUEUE: Final = "600"
IVR_ID: Final = "610"
AGENTS: Final = tuple(str(n) for n in range(801, 813))
VIA_IVR_P: Final = 0.7  # inbound queue calls that meet the IVR first; the rest go to the queue
QUEUE_ANSWERS_P: Final = 0.5  # a queue without an IVR answers the trunk (else: ringback only)
# The book's missCause MEMBER_CANCEL: "the caller hung up within 10 s of queueing".
MEMBER_CANCEL_S: Final = 10.0
_STATUS_TEXT: Final = {0: "Idle", 1: "InUse", 8: "Ringing"}


def scenario(
    call_no: int,
    rng: random.Random,
    *,
    start: float,
    tz: tzinfo = UTC,
    dialstatus: DialStatus = "zycoo",
) -> Call:
    """Call number ``call_no`` starting at epoch ``start``; ``tz`` is the PBX's local zone."""
    kind = rng.choice(KINDS)
    call = Builder(call_no, rng, start, tz, dialstatus)
    if kind == "outbound":
        call.outbound()
    else:
        call.inbound(kind)
    return Call(kind=kind, call_id=call.call_id, pushes=call.pushes, expected_types=call.expected)


@dataclass(kw_only=True)
class Dial:
    """One target rung: its dialend is sent when the dial ends (for Zycoo: when its leg ends)."""

    target: str
    channel: str
    answered: bool


class Builder:
    """Accumulates one call's pushes and expected types as simulated time moves on."""

    def __init__(
        self, call_no: int, rng: random.Random, start: float, tz: tzinfo, dialstatus: DialStatus
    ) -> None:
        self.rng, self.t, self.tz, self.start = rng, start, tz, start
        self.dialstatus = dialstatus
        # Asterisk ids are "<epoch>.<counter>"; ten counter values per call keep them unique.
        self.counter = call_no * 10
        self.call_id = self._uniqueid()
        self.pushes: list[dict[str, Any]] = []
        self.expected: list[str] = []
        self.caller = ""
        self.channel = ""
        self.inbound_call = False
        self.answered_at: float | None = None  # a person (an agent, the far end) answered
        self.pbx_answered_at: float | None = None  # the IVR or the queue answered the trunk
        self.queued_at: float | None = None  # when the call reached the queue
        self.ivr: dict[str, str] = {}
        self.ring_s = 0.0
        self.offered = ""  # the agent the queue offered the call to last
        self.talking: Dial | None = None  # the answered dial whose leg is still up
        self.missed = False

    def inbound(self, kind: Kind) -> None:
        rng = self.rng
        self.inbound_call = True
        self.caller = "1" + rng.choice("3589") + "".join(rng.choices("0123456789", k=9))
        if rng.random() < 0.5:  # an ISDN span names the caller; a SIP trunk does not
            self.channel = f"DAHDI/i1/{self.caller}-{rng.randint(1, 60)}"
        else:
            self.channel = f"SIP/trunk1-{self._suffix()}"
        if kind == "ivr_only" or rng.random() < VIA_IVR_P:
            self._ivr(to_queue=kind != "ivr_only")
            self.pbx_answered_at = self.start  # the IVR answers the trunk
        elif rng.random() < QUEUE_ANSWERS_P:
            self.pbx_answered_at = self.t  # the queue answers the trunk to play its music
        agents = rng.sample(AGENTS, k=3)
        if kind == "ivr_only":
            self.t += rng.uniform(2, 8)  # the closed-hours message, then the PBX hangs up
        elif kind == "missed_queue":
            self.queued_at = self.t
            if rng.random() < 0.5:
                # The caller gives up within seconds, while the first agent still rings.
                self._ring(agents[0], "CANCEL", ring_s=rng.uniform(2, MEMBER_CANCEL_S - 1))
            else:
                # Agents ring out their timeout; the caller gives up waiting, or hangs up while
                # the next one rings.
                self._ring(agents[0], "NOANSWER", ring_s=rng.uniform(15, 25))
                if rng.random() < 0.5:
                    self._ring(agents[1], "CANCEL", ring_s=rng.uniform(2, 10))
                else:
                    self.t += rng.uniform(2, 20)
        else:
            self.queued_at = self.t
            if rng.random() < 0.3:  # the queue moves on to the next agent
                self._ring(agents[1], "NOANSWER", ring_s=rng.uniform(15, 25))
            self._ring(agents[0], "ANSWER", ring_s=rng.uniform(2, 15))
            if kind == "transfer":  # agent A hands the caller to agent B and leaves
                self.t += rng.uniform(10, 60)
                handed = self._leg_ends()
                self._ring(agents[2], "ANSWER", ring_s=rng.uniform(2, 15))
                self._extension(handed, 0)
        agent = self.talking.target if self.talking else ""
        if agent:
            self.t += rng.uniform(10, 240)
            self._leg_ends()
        self._hangup(self.caller, agent)
        if agent:
            self._extension(agent, 0)
        destination = agent or (QUEUE if kind == "missed_queue" else DID)
        self._cdr("inbound", self.caller, destination)
        self._cc_cdr(kind, "incoming", agent=agent)

    def outbound(self) -> None:
        rng = self.rng
        agent = rng.choice(AGENTS)
        self.caller, self.channel = agent, f"SIP/{agent}-{self._suffix()}"
        number = "01" + rng.choice("3589") + "".join(rng.choices("0123456789", k=9))
        self._extension(agent, 1)
        trunk = f"SIP/trunk1-{self._suffix()}"
        self._dial(Dial(target=number, channel=trunk, answered=True), rng.uniform(3, 20), "ANSWER")
        self.t += rng.uniform(10, 240)
        self._leg_ends()
        self._hangup(agent, number)
        self._extension(agent, 0)
        self._cdr("outbound", agent, number)
        self._cc_cdr("outbound", "outgoing", agent=agent, called=number)

    def _ivr(self, *, to_queue: bool) -> None:
        began = self.t
        self.t += self.rng.uniform(3, 12)
        self.ivr = {
            "ivrId": IVR_ID,
            "ivrName": "welcome" if to_queue else "closed",
            "ivrDtmf": self.rng.choice("12"),
            "ivrTime": str(round(self.t - began)),
        }
        self._push(
            "ivr",
            uuid=self.call_id,
            caller=self.caller,
            called=DID,
            callType="IN",
            queueCode=QUEUE if to_queue else "",
            startTime=self._local(began),
            endTime=self._local(self.t),
            duration=self.ivr["ivrTime"],
            ivrId=IVR_ID,
            ivrName=self.ivr["ivrName"],
            ivrDtmf=self.ivr["ivrDtmf"],
            trunkNumber=DID,
            mac=MAC,
        )
        self.expected.append("call.initiated")  # the ivr push is the call's first sign

    def _ring(self, agent: str, status: str, *, ring_s: float) -> None:
        """The queue rings ``agent``; ``status`` is how Asterisk would end the dial."""
        self.offered = agent
        self._extension(agent, 8)
        channel = f"SIP/{agent}-{self._suffix()}"
        self._dial(Dial(target=agent, channel=channel, answered=status == "ANSWER"), ring_s, status)
        self._extension(agent, 1 if status == "ANSWER" else 0)

    def _dial(self, dial: Dial, ring_s: float, status: str) -> None:
        self._push(
            "dialbegein",  # sic: the book's spelling
            timestamp=f"{self.t:.6f}",
            **self._dial_fields(dial),
            destuniqueid=self._uniqueid(),
            dialstring=dial.channel.rpartition("-")[0],
            mac=MAC,
        )
        if not self.expected:
            self.expected.append("call.initiated")
        self.expected.append("call.ringing")
        self.t += ring_s
        self.ring_s += ring_s
        if dial.answered:
            self.answered_at = self.answered_at or self.t
            self.talking = dial
        if self.dialstatus == "asterisk":
            # Asterisk's DialEnd comes as the dial ends: at the answer, or the ringing's end.
            self._dialend(dial, status)
            self.expected.append("call.answered" if dial.answered else "call.ringing_ended")
        elif not dial.answered:
            self._dialend(dial, "hangup")  # no call.* event: the bridge keeps it unmapped

    def _leg_ends(self) -> str:
        """The answered target's leg ends: Zycoo's dialend for it comes now. Returns who."""
        dial = self.talking
        assert dial is not None
        self.talking = None
        if self.dialstatus == "zycoo":
            self._dialend(dial, "hangup")
        return dial.target

    def _dialend(self, dial: Dial, status: str) -> None:
        self._push(
            "dialend", timestamp=f"{self.t:.6f}", **self._dial_fields(dial), dialstatus=status
        )

    def _dial_fields(self, dial: Dial) -> dict[str, str]:
        return {
            "channel": self.channel,
            "calleridnum": self.caller,
            "destchannel": dial.channel,
            "destcalleridnum": dial.target,
            "uniqueid": self.call_id,
        }

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

    def _cdr(self, calltype: str, source: str, destination: str) -> None:
        # The channel CDR: ANSWERED once anything answered the trunk, the IVR or the queue
        # included, so it says ANSWERED of calls no person took (only cc_cdr tells).
        answered = self.pbx_answered_at or self.answered_at
        self._push(
            "cdr",
            callerid=f'"{source}" <{source}>',
            source=source,
            destination=destination,
            starttime=self._local(self.start),
            answertime=self._local(answered) if answered else "",
            endtime=self._local(self.t),
            disposition="ANSWERED" if answered else "NO ANSWER",
            duration=str(round(self.t - self.start)),
            billableseconds=str(round(self.t - answered)) if answered else "0",
            calltype=calltype,
            recordfile=self._recording() if self.answered_at else "",
            uniqueid=self.call_id,
        )
        # A channel CDR's NO ANSWER is one channel's word (another may have answered): the
        # bridge waits for the cc_cdr, which every inbound call here gets, to say missed.
        self.expected.append("call.completed")

    def _cc_cdr(self, kind: Kind, call_type: str, *, agent: str, called: str = "") -> None:
        """The call centre's record of the call: the truth of whether an agent took it."""
        bridged = self.answered_at is not None
        talk_s = round(self.t - self.answered_at) if self.answered_at else 0
        queued = self.queued_at
        queue_s = round((self.answered_at or self.t) - queued) if queued is not None else 0
        miss_cause = ""
        if bridged:
            state = "bridged"
        elif kind == "ivr_only":
            state = "ivr"
        else:
            state = "queue"
            # MEMBER_CANCEL: the caller hung up within 10 s of queueing; else nobody answered.
            miss_cause = "MEMBER_CANCEL" if queue_s < MEMBER_CANCEL_S else "NO_AGENT_ANSWER"
        self._push(
            "cc_cdr",
            uuid=self.call_id,
            caller=self.caller,
            # The book's records name the agent offered the call in called and agentCode,
            # answered or not.
            called=called or self.offered,
            queueCode=QUEUE if queued is not None else "",
            agentCode=agent or self.offered,
            callType=call_type,
            cdrState=state,
            hangupSide=self.rng.choice(("caller", "agent")) if bridged else "caller",
            hangupCause="NORMAL_CLEARING",
            startTime=self._local(self.start),
            endTime=self._local(self.t),
            duration=str(round(self.t - self.start)),
            queueTime=str(queue_s),
            feedbackTime="0",
            ivrTime=self.ivr.get("ivrTime", ""),
            ringTime=str(round(self.ring_s)),
            holdTime=0,  # numbers in the book, unlike every other value
            pauseTime=0,
            talkingTime=str(talk_s),
            voicemailState="0",
            ivrId=self.ivr.get("ivrId", ""),
            ivrName=self.ivr.get("ivrName", ""),
            ivrDtmf=self.ivr.get("ivrDtmf", "0"),
            fwType="",
            score="0",
            trunkNumber=DID if self.inbound_call else "",
            forwardNumber="",
            filePath=self._recording() if bridged else "",
            missCause=miss_cause,
            mac=MAC,
        )
        self.expected.append("call.completed")
        if not bridged:
            self._missed()

    def _missed(self) -> None:
        if self.inbound_call and self.answered_at is None and not self.missed:
            self.missed = True
            self.expected.append("call.missed")

    def _extension(self, exten: str, status: int) -> None:
        self._push(
            "extensionstatus", exten=exten, status=str(status), statustext=_STATUS_TEXT[status]
        )

    def _push(self, event: str, **fields: Any) -> None:
        self.pushes.append({"event": event, **fields})

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
    dialstatus: DialStatus = "zycoo",
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
        return scenario(n, rng, start=start, tz=tz, dialstatus=dialstatus)

    return await simulate(
        plan, send, url=url, calls=calls, rate=rate, seed=seed, out=out, **options
    )
