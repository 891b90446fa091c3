"""A cloud IVR call-log provider simulator: one GET per finished call, sent to the bridge.

:func:`scenario` is pure (seeded, no I/O): one call's request (its query parameters) and the
``call.*`` types a correct bridge makes of it. :func:`run` plays many calls like the provider
does: one GET at the end of each call, sent again after ``retransmit_s`` until it gets a 2xx,
and now and then an acknowledged one sent again (a lost answer). Loopback bridges only.

``date`` and ``time`` are the provider's local time: pass the zone the bridge's source is
configured with (its ``timezone``; UTC unless set), or the bridge reads every start wrong.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, tzinfo
from typing import Any, Final, Literal, TextIO, Unpack
from zoneinfo import ZoneInfo

import aiohttp

from bridge.simulate.common import Call, PlayOptions, Report, simulate

Kind = Literal["answered", "missed", "dropped", "outbound"]
KINDS: Final[tuple[Kind, ...]] = ("answered", "missed", "dropped", "outbound")
IST: Final = ZoneInfo("Asia/Kolkata")  # the provider's own zone, for a source configured so

# One simulated account: its virtual number, agents' mobiles, departments, callers' circles.
VIRTUAL_NUMBER: Final = "08069991234"
AGENTS: Final = tuple(f"99001122{n:02d}" for n in range(10, 22))
DEPARTMENTS: Final = ("Sales", "Support", "Accounts")
CIRCLES: Final = ("Karnataka", "Maharashtra", "Delhi", "Kerala", "Tamil Nadu", "UP East")
RECORDINGS: Final = "http://127.0.0.1:8080/recordings"  # loopback: never a provider's host

# The document's two spellings of the parameters (see bridge/vendors/callog.py).
_TABLE_NAMES: Final = {
    "calllogid": "call_uuid",
    "callnumber": "caller_number",
    "agentnumber": "agent_connected",
    "ivrduration": "total_call_duration",
    "callduration": "conversation_duration",
    "callstatus": "call_status",
    "state": "caller_circle",
    "ibizfonenumber": "knumber",
    "recordingurl": "recording_url",
}
# A production receiver's spelling: callernumber for the caller, and calltype.
_RECEIVER_NAMES: Final = {"callnumber": "callernumber"}
_STATUS: Final = {"answered": "ANSWER", "missed": "MISSED", "dropped": "DROPPED"}
_EXPECTED: Final = {
    # The bridge derives call.ended before a call.completed that ends a call, and call.missed
    # after it for an inbound call the log says nobody answered (never for an outgoing one).
    "answered": ["call.ended", "call.completed"],
    "missed": ["call.ended", "call.completed", "call.missed"],
    "dropped": ["call.ended", "call.completed", "call.missed"],
    "outbound": ["call.ended", "call.completed"],
}


def scenario(call_no: int, rng: random.Random, *, start: float, tz: tzinfo = UTC) -> Call:
    """Call number ``call_no``, its log sent at epoch ``start``; ``tz`` is the provider's zone.

    The request uses the sample URL's parameter names, a quarter of the time the table's, and
    a quarter of the time a production receiver's (``callernumber``, with a ``calltype``); an
    outgoing call always says ``calltype``. Durations are seconds, or a third of the time
    ``H:MM:SS``.
    """
    kind = rng.choice(KINDS)
    # The provider's id; the start time is in it so that runs with the same seed do not repeat
    # (and get deduplicated against) an earlier run's calls.
    call_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"callog/{start:.6f}/{call_no}"))
    caller = rng.choice("6789") + "".join(rng.choices("0123456789", k=9))
    agent = rng.choice(AGENTS)
    status = _STATUS.get(kind, "")
    if kind == "answered":
        ivr_s, talk_s = rng.randint(5, 60), rng.randint(10, 900)
    elif kind == "missed":  # the IVR, then the queue rang agents until it gave up
        ivr_s, talk_s = rng.randint(20, 90), 0
    elif kind == "dropped":  # the caller hung up in the IVR or the queue, before an agent
        ivr_s, talk_s = rng.randint(2, 40), 0
    else:  # an agent calls the customer through the virtual number; it rings, maybe answered
        ivr_s = rng.randint(3, 30)
        talk_s = rng.randint(10, 600) if rng.random() < 0.7 else 0
        status = "ANSWER" if talk_s else "MISSED"
    # A missed call may name the agent rung last; a dropped one never reached an agent.
    named = kind in ("answered", "outbound") or (kind == "missed" and rng.random() < 0.5)
    hms = rng.random() < 1 / 3
    # The log is sent as the call ends, so the call began its length before ``start``.
    local = datetime.fromtimestamp(start - ivr_s - talk_s, tz)
    query = {
        "callnumber": caller,
        "date": local.strftime("%Y-%m-%d"),
        "time": local.strftime("%H:%M:%S"),
        "agentnumber": agent if named else "",
        "ivrduration": _duration(ivr_s, hms=hms),
        "callduration": _duration(talk_s, hms=hms),
        "callstatus": status,
        "state": rng.choice(CIRCLES),
        "ibizfonenumber": VIRTUAL_NUMBER,
        "recordingurl": f"{RECORDINGS}/{local:%Y/%m/%d}/{call_id}.mp3" if talk_s else "",
        "calllogid": call_id,
        "department": rng.choice(DEPARTMENTS),
    }
    spelling = rng.random()
    if spelling < 0.25:
        query = {_TABLE_NAMES.get(key, key): value for key, value in query.items()}
        if kind == "outbound":
            query["call_type"] = "outgoing"
    elif spelling < 0.5 or kind == "outbound":
        query = {_RECEIVER_NAMES.get(key, key): value for key, value in query.items()}
        query["calltype"] = "outgoing" if kind == "outbound" else "incoming"
    return Call(kind=kind, call_id=call_id, pushes=[query], expected_types=list(_EXPECTED[kind]))


def _duration(total_s: int, *, hms: bool) -> str:
    if not hms:
        return str(total_s)
    minutes, secs = divmod(total_s, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


async def run(
    *,
    url: str,
    calls: int,
    rate: float,
    seed: int | None,
    out: TextIO,
    tz: tzinfo = UTC,
    token: str | None = None,
    token_param: str = "token",
    **options: Unpack[PlayOptions],
) -> Report:
    """Play ``calls`` calls against ``url``, one call log ending ``rate`` times per second.

    ``tz`` is the zone of the source's ``timezone``, which the bridge reads ``date`` and
    ``time`` in. With ``token``, each request carries it as the query parameter ``token_param`` (the
    bridge's ``token`` auth). Pass ``report`` to watch progress while it runs.
    """

    async def send(session: aiohttp.ClientSession, push: dict[str, Any]) -> int | None:
        params = {**push, token_param: token} if token else push
        async with session.get(url, params=params) as response:
            await response.read()
            return response.status

    def plan(n: int, rng: random.Random, start: float) -> Call:
        return scenario(n, rng, start=start, tz=tz)

    return await simulate(
        plan, send, url=url, calls=calls, rate=rate, seed=seed, out=out, **options
    )
