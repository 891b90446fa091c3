"""One simulated OnCall (PortSIP v16) call's pushes, in the order things happen (pure, seeded).

:class:`CallBuilder` plays a call (answered, with or without a transfer; missed; outbound;
internal) on simulated time and keeps each Event URL push and the CDR in PortSIP's shapes: a
``direction`` on ``call_start`` and the CDR only (as the OnCall document's own ``call_ended``
sample), CDRs with ``call_targets[]`` objects (PortSIP's 2024 sample, or its 2023 one without
``call_status``), sometimes named ``event_type: "cdr"``. The order they are delivered in and
the events a bridge makes of them are :mod:`bridge.simulate.oncall`'s.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Final

# One simulated tenant. ".invalid" (RFC 2606) names nothing real; so does the trunk host.
DOMAIN: Final = "sim-tenant.invalid"
TRUNK: Final = "trunk.sim-tenant.invalid"
TENANT_ID: Final = "100000000000000001"
TENANT_NAME: Final = "sim"
DID: Final = "02830000100"
EXTENSIONS: Final = tuple(str(n) for n in range(101, 113))
_CALL_ID_CHARS: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

CDR_NAMED_P: Final = 0.25  # a CDR whose event_type is "cdr"
CDR_2023_P: Final = 0.3  # a CDR of the 2023 shape: no call_status, fewer target fields


@dataclass(kw_only=True)
class _Target:
    """One endpoint the call was offered to, as the CDR's call_targets[] reports it."""

    number: str
    host: str
    start: float
    ring: float | None = None
    answered: float | None = None
    ended: float | None = None
    end_reason: str = "None"
    status_code: int = 0

    @property
    def uri(self) -> str:
        return _uri(self.number, self.host)


class CallBuilder:
    """Accumulates one call's pushes, in the order things happen, as simulated time moves on."""

    def __init__(self, call_no: int, rng: random.Random, start: float) -> None:
        self.rng, self.t, self.start = rng, start, start
        # PortSIP ids are 18-digit snowflakes; the start second keeps runs apart.
        self.session_id = f"{int(start)}{call_no:07d}0"
        self.cdr_id = f"{int(start)}{call_no:07d}1"
        self.call_id = "".join(rng.choices(_CALL_ID_CHARS, k=22)) + ".."
        self.pushes: list[dict[str, Any]] = []
        self.caller = self.callee = ""
        self.direction = ""
        self.ended_at = start
        self.targets: dict[str, _Target] = {}

    def inbound_answered(self, *, transfer: bool) -> None:
        rng = self.rng
        self._start("in", _uri(_external(rng), TRUNK), _uri(DID))
        agents = rng.sample(EXTENSIONS, k=4)
        rung = agents[: rng.randint(1, 3)]
        self._ring(rung)
        answerer = rng.choice(rung)
        self._answer(answerer)
        for other in rung:
            if other != answerer:  # ring-all: the others are cancelled (SIP 487)
                self._stop(other, "target_fail", 487)
        self._talk(answerer)
        if transfer:  # the agent hands the caller to a colleague
            colleague = agents[3]
            self._push("call_reroute", call_target=_uri(colleague))
            self._leg_ends(answerer, "referred")
            self._ring([colleague])
            self._answer(colleague)
            answerer = colleague
            self._talk(answerer)
        self._leg_ends(answerer, "caller_disconnect")
        self._end("call_ended")
        self._cdr("answered", "200", "caller_disconnect")

    def inbound_missed(self) -> None:
        rng = self.rng
        self._start("in", _uri(_external(rng), TRUNK), _uri(DID))
        rung = rng.sample(EXTENSIONS, k=rng.randint(1, 3))
        self._ring(rung)
        if rng.random() < 0.5:  # nobody answers before the PBX's timeout
            self.t += rng.uniform(20, 40)
            for target in rung:
                self._stop(target, "target_noanswer", 408)
            self._end("call_noanswer")
            self._cdr("noanswer", "408", "no_answer")
        else:  # the caller gives up while it rings
            self.t += rng.uniform(3, 20)
            for target in rung:
                self._stop(target, "target_fail", 487)
            if rng.random() < 0.5:
                self._end("call_fail", fail_code=487)
            else:
                self._end("call_ended")
            self._cdr("noanswer", "487", "cancelled")

    def outbound(self) -> None:
        rng = self.rng
        agent, number = rng.choice(EXTENSIONS), _external(rng)
        self._start("out", _uri(agent), _uri(number, TRUNK))
        self._ring([number], host=TRUNK)
        if rng.random() < 0.2:  # the far end is busy
            self.t += rng.uniform(1, 5)
            self.targets[number].ended, self.targets[number].status_code = self.t, 486
            self._end("call_fail", call_target=_uri(number, TRUNK), fail_code=486)
            self._cdr("fail", "486", "busy")
            return
        self._answer(number, host=TRUNK)
        self._talk(agent)
        reason = rng.choice(("caller_disconnect", "callee_disconnect"))
        self._end("call_ended")
        self._cdr("answered", "200", reason)

    def internal(self) -> None:
        rng = self.rng
        caller, callee = rng.sample(EXTENSIONS, k=2)
        self._start("ext", _uri(caller), _uri(callee))
        self._ring([callee])
        if rng.random() < 0.3:
            self.t += rng.uniform(20, 40)
            self._stop(callee, "target_noanswer", 408)
            self._end("call_noanswer")
            self._cdr("noanswer", "408", "no_answer")
            return
        self._answer(callee)
        self._talk(caller)
        self._leg_ends(callee, "caller_disconnect")
        self._end("call_ended")
        self._cdr("answered", "200", "caller_disconnect")

    def _start(self, direction: str, caller: str, callee: str) -> None:
        self.direction, self.caller, self.callee = direction, caller, callee
        self._push(
            "call_start",
            caller_display_name="",
            cdr_id=self.cdr_id,
            direction=direction,
            did=DID if direction == "in" else None,
        )

    def _ring(self, targets: list[str], *, host: str = DOMAIN) -> None:
        """Each target gets its INVITE (target_add), then rings a moment later."""
        self.t += self.rng.uniform(0.5, 3)
        for number in targets:
            self.targets[number] = _Target(number=number, host=host, start=self.t)
            self._push("target_add", call_target=_uri(number, host))
        self.t += 1
        for number in targets:
            self.targets[number].ring = self.t
            self._push("target_ringing", call_target=_uri(number, host))

    def _answer(self, number: str, *, host: str = DOMAIN) -> None:
        self.t += self.rng.uniform(2, 15)
        self.targets[number].answered = self.t
        self._push("call_established", call_target=_uri(number, host))

    def _stop(self, number: str, event_type: str, code: int) -> None:
        """A target stops ringing unanswered: timed out (408) or cancelled (487)."""
        target = self.targets[number]
        target.ended, target.status_code = self.t, code
        target.end_reason = "cancelled" if code == 487 else "None"
        fail_code = code if event_type == "target_fail" else None  # None: left out
        self._push(event_type, call_target=target.uri, fail_code=fail_code)

    def _leg_ends(self, number: str, reason: str) -> None:
        target = self.targets[number]
        target.ended, target.end_reason = self.t, reason
        self._push("target_ended", call_target=target.uri)

    def _talk(self, extension: str) -> None:
        """A conversation, held for a while now and then by ``extension``."""
        rng = self.rng
        self.t += rng.uniform(5, 60)
        if rng.random() < 0.3:
            other = self.callee if self.caller == _uri(extension) else self.caller
            me = _uri(extension)
            self._push("call_hold", aor=me, peer_aor=other, with_parties=False)
            self.t += rng.uniform(5, 30)
            self._push("call_unhold", aor=me, peer_aor=other, with_parties=False)
            self.t += rng.uniform(5, 60)

    def _end(self, event_type: str, *, call_target: str = "", **fields: Any) -> None:
        self.ended_at = self.t
        for target in self.targets.values():
            target.ended = target.ended or self.t
        self._push(event_type, call_target=call_target, **fields)

    def _cdr(self, status: str, code: str, reason: str) -> None:
        """The CDR, PortSIP's 2024 shape or (CDR_2023_P) its 2023 one."""
        rng = self.rng
        self.t += rng.uniform(0.1, 1)
        modern = rng.random() >= CDR_2023_P
        answers = [t.answered for t in self.targets.values() if t.answered is not None]
        answered = min(answers) if answers else None
        rings = [t.ring for t in self.targets.values() if t.ring is not None]
        ring_started = min(rings) if rings else self.start
        talk_s = round(self.ended_at - answered) if answered is not None else 0
        caller, caller_host = _split(self.caller)
        callee, callee_host = _split(self.callee)
        fields: dict[str, Any] = {
            "answered_time": _stamp(answered),
            "call_id": self.call_id,
            "call_status": status if modern else None,
            "call_targets": [self._target(t, modern=modern) for t in self.targets.values()],
            "callee": callee,
            "callee_domain": callee_host,
            "caller": caller,
            "caller_display_name": "",
            "caller_domain": caller_host,
            "cdr_id": self.cdr_id,
            "did": DID if self.direction == "in" else "",
            "direction": self.direction,
            "ended_reason": reason,
            "ended_time": _stamp(self.ended_at),
            "outbound_caller_id": "",
            "ring_duration": str(round((answered or self.ended_at) - ring_started))
            if modern
            else None,
            "ring_time": _stamp(ring_started),
            "session_id": self.session_id,
            "start_time": _stamp(self.start),
            "status_code": code,
            "talk_duration": talk_s if modern else str(talk_s),  # an int in the 2024 sample
            "tenant_id": TENANT_ID,
            "tenant_name": TENANT_NAME,
            "trunk_name": "" if self.direction == "ext" else "sim-trunk",
            "user_data": "",
        }
        name = "cdr" if rng.random() < CDR_NAMED_P else "call_cdr"
        self.pushes.append(
            {"event_type": name, **{k: v for k, v in fields.items() if v is not None}}
        )

    def _target(self, target: _Target, *, modern: bool) -> dict[str, Any]:
        """One call_targets[] object: a target that rang, and maybe answered."""
        ring = target.ring if target.ring is not None else target.start
        ended = target.ended if target.ended is not None else self.ended_at
        answered = target.answered
        talk_s = str(round(ended - answered)) if answered is not None else "0"
        item: dict[str, Any] = {
            "answered_time": _stamp(answered),
            "call_type": "ring_group_call" if len(self.targets) > 1 else "normal_call",
            "callee": target.number,
            "caller": _split(self.caller)[0],
            "destination": target.uri,
            "end_reason": target.end_reason,
            "ended_time": _stamp(ended),
            "id": TENANT_ID,  # as in PortSIP's samples, whose target ids are the tenant's
            "outbound_caller_id": "",
            "ring_time": _stamp(ring),
            "start_time": _stamp(target.start),
            "status_code": target.status_code,
            "trunk_name": "sim-trunk" if target.host == TRUNK else "",
        }
        if modern:
            rang = (answered if answered is not None else ended) - ring
            item.update(
                did=DID if self.direction == "in" else "",
                ring_duration=str(round(rang)),
                status="answered" if answered is not None else "noanswer",
                talk_duration=talk_s,
            )
        elif answered is not None:  # the 2023 sample: talk time only on the answering target
            item["talk_duration"] = talk_s
        return item

    def _push(self, event_type: str, *, with_parties: bool = True, **fields: Any) -> None:
        push: dict[str, Any] = {"event_type": event_type, "call_id": self.call_id}
        if with_parties:
            push.update(caller=self.caller, callee=self.callee)
        push.update(session_id=self.session_id, tenant_id=TENANT_ID, tenant_name=TENANT_NAME)
        push.update({key: value for key, value in fields.items() if value is not None})
        push["time"] = str(int(self.t))
        self.pushes.append(push)


def _uri(number: str, host: str = DOMAIN) -> str:
    return f"sip:{number}@{host}"


def _split(uri: str) -> tuple[str, str]:
    """A CDR names a party by number and domain, not by URI."""
    number, _, host = uri.removeprefix("sip:").partition("@")
    return number, host


def _stamp(moment: float | None) -> str:
    """Epoch seconds as PortSIP writes them; "0" for never (not answered)."""
    return str(int(moment)) if moment is not None else "0"


def _external(rng: random.Random) -> str:
    return "09" + "".join(rng.choices("0123456789", k=8))
