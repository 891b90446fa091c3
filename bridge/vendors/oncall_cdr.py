"""OnCall (PortSIP) CDRs: a CDR URL push (``call_cdr``) to its ``call.completed``.

PortSIP's top-level answered_time and call_status are those of the first target that answered,
often the IVR or a queue; who answered (a person, or nobody) is read from the CDR's
``call_targets[]``. The live Event URL pushes are :mod:`bridge.vendors.oncall`'s. Pure: no I/O,
no clock.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, NamedTuple

from bridge.events import Event
from bridge.vendors.base import SourceContext, believable, seconds, span_s, text, timings
from bridge.vendors.oncall_fields import (
    FAIL_DISPOSITIONS,
    call_data,
    call_event,
    call_key,
    instant,
    list_of,
    parse_address,
    party_number,
    sip_code,
    when,
)

# The CDR's call_status. fail is refined by status_code like call_fail's fail_code.
_CDR_STATUSES: Final = {"noanswer": "no_answer", "no_answer": "no_answer"}


class _Answer(NamedTuple):
    """The first call target a person answered, from a CDR's call_targets[]."""

    number: str | None
    answered: datetime
    ended: datetime | None
    talk_s: int | None


def call_cdr(raw: dict[str, Any], ctx: SourceContext, name: str) -> list[Event]:
    key = call_key(raw)
    started = instant(raw, "start_time")
    ringing = instant(raw, "ring_time")
    answered = instant(raw, "answered_time")
    ended = instant(raw, "ended_time")
    status = (text(raw, "call_status") or "").lower()
    code = sip_code(raw, "status_code")
    targets = list_of(raw, "call_targets") or []
    detailed = any(isinstance(item, dict) for item in targets)
    person = _person_answer(targets, party_number(raw, "callee"))
    talk_s = seconds(raw, "talk_duration")
    ring_s = seconds(raw, "ring_duration")
    hangup_cause = text(raw, "ended_reason") or text(raw, "end_reason")
    # PortSIP's top-level answered_time and call_status are the first target that answered,
    # which is the IVR or the queue whenever the call met one ("this time represents when the
    # PBX IVR answered"). A person answering shows in call_targets[]: a target that rang, then
    # answered. Only the CDRs without per-target detail fall back on the top-level fields.
    disposition: str | None = None
    pbx_answered = None
    if person is not None:
        disposition = "answered"
        answered, talk_s = person.answered, person.talk_s
        ended = ended or person.ended
    elif status in ("fail", "failed"):
        disposition = FAIL_DISPOSITIONS.get(code, "failed") if code is not None else "failed"
    elif detailed:
        # Every target is accounted for and no person took the call: if the IVR or a queue
        # answered, the caller gave up there (or it ended there); otherwise nobody answered.
        someone = answered is not None or any(_answered_at(item) for item in targets)
        disposition = "abandoned" if someone else "no_answer"
    elif status in _CDR_STATUSES or (not status and answered is None and ended is not None):
        disposition = "no_answer"  # answered_time 0 "means the call was not answered"
    elif status == "answered" or answered is not None:
        pbx_answered = True  # may be the IVR: the call fold takes it while nothing says more
    data = {
        **call_data(raw, key, ctx),
        "did": text(raw, "did") or text(raw, "did_cid"),
        "cdr_id": text(raw, "cdr_id"),
        "trunk": text(raw, "trunk_name"),
        "agent": person.number if person is not None else None,
        "disposition": disposition,
        "pbx_answered": pbx_answered,
        "hangup_cause": hangup_cause if hangup_cause != "None" else None,
        "status_code": str(code) if code is not None else None,
        "timings": timings(
            started_at=started,
            answered_at=answered,
            ended_at=ended,
            ring_s=ring_s if ring_s else span_s(ringing, answered or ended),
            talk_s=talk_s if talk_s is not None else span_s(answered, ended),
            total_s=span_s(started, ended),
        ),
        "targets": _targets(raw) or None,
    }
    identity = ("cdr", key, text(raw, "cdr_id"), text(raw, "ended_time"), status)
    time = believable(ended, ctx) if ended else when(raw, ctx)
    return [call_event(ctx, name, "call.completed", time, key, identity, data, raw)]


def _answered_at(item: object) -> datetime | None:
    return instant(item, "answered_time") if isinstance(item, dict) else None


def _person_answer(targets: list[Any], callee: str | None) -> _Answer | None:
    """The earliest call target a person answered: not the IVR, not a queue.

    PortSIP's own samples show how those legs look: they answer the instant they are offered
    the call (ring_time == answered_time, ring_duration 0) and end "referred" when they pass it
    on, and the first of them is the number the caller dialled (the CDR's callee). A phone
    rings first; one on auto-answer (a queue headset) answers at once but does not end
    "referred" and is not the dialled number.
    """
    found: _Answer | None = None
    for item in targets:
        if not isinstance(item, dict):
            continue
        answered = _answered_at(item)
        if answered is None:
            continue
        number = next(
            (parse_address(item[k])[0] for k in _TARGET_KEYS if type(item.get(k)) is str), None
        )
        rang = instant(item, "ring_time")
        if not (seconds(item, "ring_duration") or (rang is not None and rang < answered)):
            passed_on = (text(item, "end_reason") or "").lower() in _PASSED_ON
            if passed_on or number is None or number == callee:
                continue
        if found is not None and found.answered <= answered:
            continue
        ended = instant(item, "ended_time")
        talk = seconds(item, "talk_duration")
        if talk is None:
            talk = span_s(answered, ended)
        found = _Answer(number, answered, ended, talk)
    return found


# A call target's end_reason when it handed the call on (the IVR to the queue, the queue to
# an agent, a transfer): it was not where the call was taken.
_PASSED_ON: Final = frozenset({"referred", "redirected", "replaced"})


# Keys a call_targets[] object may name its endpoint by (PortSIP does not document them).
_TARGET_KEYS: Final = (
    "callee",
    "destination",
    "call_target",
    "target",
    "uri",
    "number",
    "extension",
)


def _targets(raw: dict[str, Any]) -> list[str]:
    """The numbers of a CDR's call_targets[]: URIs or numbers, or objects naming one."""
    numbers: list[str] = []
    for item in list_of(raw, "call_targets") or []:
        value: object = item
        if isinstance(item, dict):
            value = next((item[k] for k in _TARGET_KEYS if type(item.get(k)) is str), None)
        if type(value) is str:
            number = parse_address(value)[0]
            if number is not None:
                numbers.append(number)
    return numbers
