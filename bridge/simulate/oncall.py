"""An OnCall (PortSIP v16) PBX simulator: call lifecycles pushed to the Event URL and CDR URL.

:func:`scenario` is pure (seeded, no I/O): one call's pushes in *delivery* order and the
``call.*`` types a correct bridge makes of them. PortSIP delivers at least once and unordered,
so the delivery order is not the order things happened: neighbouring pushes swap, a
``target_ringing`` can land after ``call_established``, a push comes again later, the CDR can
overtake ``call_ended``. Nothing but the CDR is moved past the call's end (the bridge drops call
events after it). :func:`run` plays the calls over HTTP with ``common.play``: retransmitted until
a 2xx, now and then sent twice, HTTP Basic or Digest credentials. Loopback bridges only.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any, Final, Literal, TextIO, Unpack

import aiohttp

from bridge.errors import ConfigError
from bridge.simulate.common import Call, PlayOptions, Report, basic_auth, simulate

Kind = Literal["answered", "missed", "outbound", "internal", "transfer"]
KINDS: Final[tuple[Kind, ...]] = ("answered", "missed", "outbound", "internal", "transfer")

# One simulated tenant. ".invalid" (RFC 2606) names nothing real; so does the trunk host.
DOMAIN: Final = "sim-tenant.invalid"
TRUNK: Final = "trunk.sim-tenant.invalid"
TENANT_ID: Final = "100000000000000001"
TENANT_NAME: Final = "sim"
DID: Final = "02830000100"
EXTENSIONS: Final = tuple(str(n) for n in range(101, 113))
_CALL_ID_CHARS: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

# Delivery disorder, per opportunity.
SWAP_P: Final = 0.2  # two neighbouring pushes change places
LATE_RINGING_P: Final = 0.3  # a target_ringing arrives after call_established
REPEAT_P: Final = 0.3  # a push is delivered again later (a retry that crossed the ack)
CDR_FIRST_P: Final = 0.2  # the CDR overtakes the call's end

_ENDS: Final = frozenset({"call_ended", "call_noanswer", "call_fail"})


def scenario(call_no: int, rng: random.Random, *, start: float) -> Call:
    """Call number ``call_no`` starting at epoch ``start``, its pushes as PortSIP delivers them."""
    kind = rng.choice(KINDS)
    call = _Builder(call_no, rng, start)
    if kind in ("answered", "transfer"):
        call.inbound_answered(transfer=kind == "transfer")
    elif kind == "missed":
        call.inbound_missed()
    elif kind == "outbound":
        call.outbound()
    else:
        call.internal()
    pushes = deliver(call.pushes, rng)
    return Call(
        kind=kind, call_id=call.session_id, pushes=pushes, expected_types=expected_types(pushes)
    )


def deliver(pushes: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    """The pushes of one call (in the order things happened) in an order PortSIP may deliver."""
    end = next(n for n, push in enumerate(pushes) if push["event_type"] in _ENDS)
    body, tail = list(pushes[:end]), list(pushes[end:])
    for n in range(len(body) - 1):
        if rng.random() < SWAP_P:
            body[n], body[n + 1] = body[n + 1], body[n]
    names = [push["event_type"] for push in body]
    if "call_established" in names and rng.random() < LATE_RINGING_P:
        ringing = [n for n, name in enumerate(names) if name == "target_ringing"]
        answered = names.index("call_established")
        early = [n for n in ringing if n < answered]
        if early:
            late = body.pop(rng.choice(early))
            body.insert(answered, late)  # the established push moved up by one: right after it
    for _ in range(2):
        if body and rng.random() < REPEAT_P:
            n = rng.randrange(len(body))
            body.insert(rng.randint(n + 1, len(body)), body[n])
    if len(tail) > 1 and rng.random() < CDR_FIRST_P:
        tail[0], tail[1] = tail[1], tail[0]
    return body + tail


# What each push becomes for the call's subject (target_add and target_ended become
# raw.unmapped, which is not a call event).
_TYPES: Final = {
    "call_start": "call.initiated",
    "target_ringing": "call.ringing",
    "target_noanswer": "call.ringing_ended",
    "target_fail": "call.ringing_ended",
    "call_established": "call.answered",
    "call_hold": "call.held",
    "call_unhold": "call.resumed",
    "call_reroute": "call.transferred",
    "call_ended": "call.ended",
    "call_noanswer": "call.ended",
    "call_fail": "call.ended",
    "call_cdr": "call.completed",
}


def expected_types(pushes: Sequence[dict[str, Any]]) -> list[str]:
    """The call's ``call.*`` events in commit order, by the bridge's call-state rules.

    A repeated push adds nothing (same ids). ``call.initiated`` only as the call's first event;
    nothing but the CDR after the end; a CDR before any end derives ``call.ended`` first;
    ``call.missed`` once, for an inbound call that ended with nobody answering; a ringing that
    happened before the answer but is delivered after it is dropped.
    """
    seen: set[str] = set()
    types: list[str] = []
    exists = answered = ended = missed = inbound = False
    answered_at = 0.0
    for push in pushes:
        text = json.dumps(push, sort_keys=True)
        kind = _TYPES.get(push["event_type"])
        if text in seen or kind is None:
            continue
        seen.add(text)
        first, exists = not exists, True
        inbound = inbound or push.get("direction") in ("in", "in2out")
        if kind == "call.initiated":
            types.extend([kind] if first else [])
        elif kind == "call.completed":
            types.extend([kind] if ended else ["call.ended", kind])
            ended = True
            if inbound and not answered and not missed and push["call_status"] != "answered":
                types.append("call.missed")
                missed = True
        elif not ended:
            ringing = kind in ("call.ringing", "call.ringing_ended")
            if ringing and answered and float(push["time"]) < answered_at:
                continue  # rang before the answer, delivered after it: dropped
            types.append(kind)
            if kind == "call.answered" and not answered:
                answered, answered_at = True, float(push["time"])
            if kind == "call.ended":
                ended = True
                if inbound and not answered:
                    types.append("call.missed")
                    missed = True
    return types


class _Builder:
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
        self.ring_started: float | None = None
        self.answered_at: float | None = None
        self.targets: list[str] = []

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
                self._push("target_fail", call_target=_uri(other), fail_code=487)
        self._talk(answerer)
        if transfer:  # the agent hands the caller to a colleague
            colleague = agents[3]
            self._push("call_reroute", call_target=_uri(colleague))
            self._push("target_ended", call_target=_uri(answerer))
            self._ring([colleague])
            self._answer(colleague)
            answerer = colleague
            self._talk(answerer)
        self._push("target_ended", call_target=_uri(answerer))
        self._push("call_ended", call_target="")
        self._cdr("answered", "200", "caller_disconnect")

    def inbound_missed(self) -> None:
        rng = self.rng
        self._start("in", _uri(_external(rng), TRUNK), _uri(DID))
        rung = rng.sample(EXTENSIONS, k=rng.randint(1, 3))
        self._ring(rung)
        if rng.random() < 0.5:  # nobody answers before the PBX's timeout
            self.t += rng.uniform(20, 40)
            for target in rung:
                self._push("target_noanswer", call_target=_uri(target))
            self._push("call_noanswer", call_target="")
            self._cdr("noanswer", "408", "no_answer")
        else:  # the caller gives up while it rings
            self.t += rng.uniform(3, 20)
            for target in rung:
                self._push("target_fail", call_target=_uri(target), fail_code=487)
            if rng.random() < 0.5:
                self._push("call_fail", call_target="", fail_code=487)
            else:
                self._push("call_ended", call_target="")
            self._cdr("noanswer", "487", "cancelled")

    def outbound(self) -> None:
        rng = self.rng
        agent, number = rng.choice(EXTENSIONS), _external(rng)
        self._start("out", _uri(agent), _uri(number, TRUNK))
        self._ring([number], host=TRUNK)
        if rng.random() < 0.2:  # the far end is busy
            self._push("call_fail", call_target=_uri(number, TRUNK), fail_code=486)
            self._cdr("fail", "486", "busy")
            return
        self._answer(number, host=TRUNK)
        self._talk(agent)
        self._push("call_ended", call_target="")
        self._cdr("answered", "200", rng.choice(("caller_disconnect", "callee_disconnect")))

    def internal(self) -> None:
        rng = self.rng
        caller, callee = rng.sample(EXTENSIONS, k=2)
        self._start("ext", _uri(caller), _uri(callee))
        self._ring([callee])
        if rng.random() < 0.3:
            self.t += rng.uniform(20, 40)
            self._push("target_noanswer", call_target=_uri(callee))
            self._push("call_noanswer", call_target="")
            self._cdr("noanswer", "408", "no_answer")
            return
        self._answer(callee)
        self._talk(caller)
        self._push("target_ended", call_target=_uri(callee))
        self._push("call_ended", call_target="")
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
        if self.ring_started is None:
            self.ring_started = self.t
        for target in targets:
            self._push("target_add", call_target=_uri(target, host))
        self.t += 1
        for target in targets:
            self.targets.append(_uri(target, host))
            self._push("target_ringing", call_target=_uri(target, host))

    def _answer(self, target: str, *, host: str = DOMAIN) -> None:
        self.t += self.rng.uniform(2, 15)
        self.answered_at = self.answered_at or self.t
        self._push("call_established", call_target=_uri(target, host))

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

    def _cdr(self, status: str, code: str, reason: str) -> None:
        self.t += self.rng.uniform(0.1, 1)
        answered = self.answered_at
        ring_end = answered if answered is not None else self.t
        ring_s = ring_end - self.ring_started if self.ring_started is not None else 0.0
        self._push(
            "call_cdr",
            cdr_id=self.cdr_id,
            direction=self.direction,
            did=DID if self.direction == "in" else None,
            trunk_name="" if self.direction == "ext" else "sim-trunk",
            start_time=str(int(self.start)),
            ring_time=str(int(self.ring_started or self.start)),
            answered_time=str(int(answered)) if answered is not None else "0",
            ended_time=str(int(self.t)),
            call_status=status,
            status_code=code,
            ended_reason=reason,
            ring_duration=str(round(ring_s)),
            talk_duration=str(round(self.t - answered)) if answered is not None else "0",
            call_targets=list(self.targets),
            with_time=False,
        )

    def _push(
        self, event_type: str, *, with_parties: bool = True, with_time: bool = True, **fields: Any
    ) -> None:
        push: dict[str, Any] = {"event_type": event_type, "call_id": self.call_id}
        if with_parties:
            push.update(caller=self.caller, callee=self.callee)
        push.update(session_id=self.session_id, tenant_id=TENANT_ID, tenant_name=TENANT_NAME)
        push.update({key: value for key, value in fields.items() if value is not None})
        if with_time:
            push["time"] = str(int(self.t))
        self.pushes.append(push)


def _uri(number: str, host: str = DOMAIN) -> str:
    return f"sip:{number}@{host}"


def _external(rng: random.Random) -> str:
    return "09" + "".join(rng.choices("0123456789", k=8))


async def run(
    *,
    url: str,
    calls: int,
    rate: float,
    seed: int | None,
    out: TextIO,
    username: str | None = None,
    password: str | None = None,
    digest: bool = False,
    **options: Unpack[PlayOptions],
) -> Report:
    """Play ``calls`` calls against ``url`` (Event URL; CDRs go to ``url + "/cdr"``).

    With ``username``, every request carries HTTP Basic credentials, or answers HTTP Digest
    challenges when ``digest`` is true. Pass ``report`` to watch progress while it runs.
    """
    if digest and username is None:
        raise ConfigError("username", "digest authentication needs a username and password")
    cdr_url = url.rstrip("/") + "/cdr"

    async def send(session: aiohttp.ClientSession, push: dict[str, Any]) -> int | None:
        target = cdr_url if push["event_type"] == "call_cdr" else url
        headers = {"Content-Type": "application/json"}
        async with session.post(target, data=json.dumps(push).encode(), headers=headers) as answer:
            await answer.read()
            return answer.status

    headers: dict[str, str] | None = None
    middlewares: tuple[aiohttp.ClientMiddlewareType, ...] = ()
    if username is not None and digest:
        middlewares = (aiohttp.DigestAuthMiddleware(username, password or ""),)
    elif username is not None:
        headers = basic_auth(username, password or "")

    def plan(n: int, rng: random.Random, start: float) -> Call:
        return scenario(n, rng, start=start)

    return await simulate(
        plan,
        send,
        url=url,
        calls=calls,
        rate=rate,
        seed=seed,
        out=out,
        headers=headers,
        middlewares=middlewares,
        **options,
    )
