"""An OnCall (PortSIP v16) PBX simulator: call lifecycles pushed to the Event URL and CDR URL.

:func:`scenario` is pure (seeded, no I/O): one call's pushes in *delivery* order and the
``call.*`` types a correct bridge makes of them. The pushes, in PortSIP's shapes, are built by
:mod:`bridge.simulate.oncall_pushes`. By default they are delivered in the order things
happened. PortSIP "cannot guarantee the order in which the events arrive": with ``reorder``
neighbouring pushes swap, a ``target_ringing`` lands after ``call_established``, ``call_start``
comes late, a push comes again later, a live push arrives after the call's end and the CDR can
overtake ``call_ended``. :func:`run` plays the calls over HTTP with ``common.play``:
retransmitted until a 2xx, now and then sent twice, HTTP Basic or Digest credentials. Loopback
bridges only.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any, Final, Literal, TextIO, Unpack

import aiohttp

from bridge.errors import ConfigError
from bridge.simulate.common import Call, PlayOptions, Report, basic_auth, simulate
from bridge.simulate.oncall_pushes import CallBuilder

Kind = Literal["answered", "missed", "outbound", "internal", "transfer"]
KINDS: Final[tuple[Kind, ...]] = ("answered", "missed", "outbound", "internal", "transfer")

CDR_EVENTS: Final = frozenset({"call_cdr", "cdr"})

# Delivery disorder (with ``reorder``), per opportunity.
SWAP_P: Final = 0.2  # two neighbouring pushes change places
LATE_RINGING_P: Final = 0.3  # a target_ringing arrives after call_established
LATE_START_P: Final = 0.2  # call_start arrives after other call events
REPEAT_P: Final = 0.3  # a push is delivered again later (a retry that crossed the ack)
AFTER_END_P: Final = 0.2  # a live push arrives after the call's end
CDR_FIRST_P: Final = 0.2  # the CDR overtakes the call's end

_ENDS: Final = frozenset({"call_ended", "call_noanswer", "call_fail"})


def scenario(call_no: int, rng: random.Random, *, start: float, reorder: bool = False) -> Call:
    """Call number ``call_no`` starting at epoch ``start``, its pushes as PortSIP delivers them."""
    kind = rng.choice(KINDS)
    call = CallBuilder(call_no, rng, start)
    if kind in ("answered", "transfer"):
        call.inbound_answered(transfer=kind == "transfer")
    elif kind == "missed":
        call.inbound_missed()
    elif kind == "outbound":
        call.outbound()
    else:
        call.internal()
    pushes = deliver(call.pushes, rng) if reorder else list(call.pushes)
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
    starts = [n for n, push in enumerate(body) if push["event_type"] == "call_start"]
    if starts and rng.random() < LATE_START_P:
        first = body.pop(starts[0])
        others = [n for n, push in enumerate(body) if push["event_type"] in _TYPES]
        # after one to three of the call's other events
        after = others[min(len(others), rng.randint(1, 3)) - 1] + 1 if others else 0
        body.insert(after, first)
    for _ in range(2):
        if body and rng.random() < REPEAT_P:
            n = rng.randrange(len(body))
            body.insert(rng.randint(n + 1, len(body)), body[n])
    if len(tail) > 1 and rng.random() < CDR_FIRST_P:
        tail[0], tail[1] = tail[1], tail[0]
    live = [n for n, push in enumerate(body) if push["event_type"] in _LIVE]
    if live and rng.random() < AFTER_END_P:
        tail.insert(rng.randint(1, len(tail)), body.pop(rng.choice(live)))
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
    "cdr": "call.completed",
}
_LIVE: Final = (
    frozenset(name for name, kind in _TYPES.items() if kind not in ("call.initiated", "call.ended"))
    - CDR_EVENTS
)


def expected_types(pushes: Sequence[dict[str, Any]]) -> list[str]:
    """The call's ``call.*`` events in commit order, by the bridge's call rules.

    A repeated push adds nothing (same ids). ``call.initiated`` and ``call.ended`` once each,
    where their first push lands (a CDR before any end derives the end first); every other
    call event is committed where it lands, late or not. ``call.missed`` for an inbound call
    nobody answered: right after the CDR, which says so, or at the end of the story (the settle
    window) when no CDR came.
    """
    inbound = any(push.get("direction") in ("in", "in2out") for push in pushes)
    person = any(push["event_type"] == "call_established" for push in pushes)
    missable = inbound and not person
    seen: set[str] = set()
    types: list[str] = []
    initiated = ended = missed = False
    for push in pushes:
        text = json.dumps(push, sort_keys=True)
        kind = _TYPES.get(push["event_type"])
        if text in seen or kind is None:
            continue
        seen.add(text)
        if kind == "call.initiated":
            types.extend([] if initiated else [kind])
            initiated = True
        elif kind == "call.ended":
            types.extend([] if ended else [kind])
            ended = True
        elif kind == "call.completed":
            types.extend([kind] if ended else ["call.ended", kind])
            ended = True
            if missable and not missed:
                types.append("call.missed")
                missed = True
        else:
            types.append(kind)
    if missable and ended and not missed:
        types.append("call.missed")
    return types


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
    reorder: bool = False,
    **options: Unpack[PlayOptions],
) -> Report:
    """Play ``calls`` calls against ``url`` (Event URL; CDRs go to ``url + "/cdr"``).

    With ``username``, every request carries HTTP Basic credentials, or answers HTTP Digest
    challenges when ``digest`` is true. ``reorder`` delivers each call's pushes out of order,
    as PortSIP may. Pass ``report`` to watch progress while it runs.
    """
    if digest and username is None:
        raise ConfigError("username", "digest authentication needs a username and password")
    cdr_url = url.rstrip("/") + "/cdr"

    async def send(session: aiohttp.ClientSession, push: dict[str, Any]) -> int | None:
        target = cdr_url if push["event_type"] in CDR_EVENTS else url
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
        return scenario(n, rng, start=start, reorder=reorder)

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
