"""Cloud IVR call log (the "ibizfone" document): one GET per finished call, to one event.

At the end of each call the provider requests the client's URL with the call's details as query
parameters and expects a plain-text answer. The document names the parameters twice, in its
table and in its sample URL, with different spellings; both are accepted (see ``_ALIASES``).

The provider retries a request that does not get a 2xx, so the event id comes from vendor
fields only: a retry makes the same id and the outbox drops the copy. Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final
from urllib.parse import parse_qsl

from bridge.errors import PayloadError, UnsupportedMediaError
from bridge.events import Event, compact, make_event, rfc3339
from bridge.vendors.base import (
    Ack,
    Payload,
    SourceContext,
    Vendor,
    believable,
    seconds,
    unmapped,
)

VENDOREVENT: Final = "calllog"

# Our name for a field -> its spellings: the sample URL's first, then the table's. The two lists
# are in the same order in the document (only the call id moved), which pairs them:
#   calllogid = call_uuid         "Call log id": the provider's unique call id
#   callnumber = caller_number    "Calling number": who called the virtual number
#   agentnumber = agent_connected "Agent number": the number the call was connected to
#   ivrduration = total_call_duration   "Ivr Duration": "Duration before the call connected to
#       agent". The row's label, its description and the URL's name all say IVR time; only
#       the table's snake_case name says "total", so it is read as the pre-agent time.
#   callduration = conversation_duration  "Call duration": "Conversation Time" (talk time)
#   callstatus = call_status      ANSWER / MISSED / DROPPED
#   state = caller_circle         "State": the caller's telecom circle
#   ibizfonenumber = knumber      "Ibizfone number": the virtual number called (the DID)
#   recordingurl = recording_url, date, time, department: the same in both.
# A production receiver of this push also reads callernumber (the caller) and calltype (the
# call's direction: incoming/outgoing, inbound/outbound, IN/OUT): both are accepted too.
# Keys are compared case-insensitively (the provider's form builder may capitalise them).
_ALIASES: Final = {
    "call_id": ("calllogid", "call_uuid"),
    "caller": ("callnumber", "caller_number", "callernumber"),
    "date": ("date",),
    "time": ("time",),
    "agent": ("agentnumber", "agent_connected"),
    "ivr_s": ("ivrduration", "total_call_duration"),
    "talk_s": ("callduration", "conversation_duration"),
    "status": ("callstatus", "call_status"),
    "circle": ("state", "caller_circle"),
    "number": ("ibizfonenumber", "knumber"),
    "recording": ("recordingurl", "recording_url"),
    "department": ("department",),
    "type": ("calltype", "call_type"),
}
_FIELD_OF: Final = {spelling: field for field, names in _ALIASES.items() for spelling in names}
# Names common enough that other requests use them too ("state", "date"): on their own they do
# not make a request a call log, so such a request is kept as raw.unmapped, not refused.
_GENERIC: Final = frozenset({"date", "time", "circle", "department", "type"})

# call status -> (disposition, missed_reason). DROPPED: the caller hung up before an agent.
_STATUSES: Final = {
    "ANSWER": ("answered", None),
    "MISSED": ("no_answer", "missed"),
    "DROPPED": ("abandoned", "dropped"),
}
_STATUS_PROBLEM: Final = "expected ANSWER, MISSED or DROPPED"
_CALL_TYPES: Final = {
    **dict.fromkeys(("incoming", "inbound", "in", "inward"), "inbound"),
    **dict.fromkeys(("outgoing", "outbound", "out", "outward"), "outbound"),
}

_DATE: Final = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})(?:[ T](.*))?")
_TIME: Final = re.compile(r"([0-9]{1,2}):([0-9]{2})(?::([0-9]{2})(?:\.[0-9]+)?)?")
_FORM: Final = "application/x-www-form-urlencoded"


@dataclass(frozen=True, slots=True)
class _Field:
    """One recognised parameter: the key as the provider spelt it (errors name it) and its value."""

    key: str
    value: str


def normalize(payload: Payload, ctx: SourceContext) -> list[Event]:
    """One call-log request to its ``call.completed``, or ``raw.unmapped`` if nothing is known."""
    raw = _params(payload)
    fields = _recognise(raw)
    if _GENERIC.issuperset(fields):
        return [unmapped(payload, ctx, raw, VENDOREVENT)]

    status_field = fields.get("status")
    status = status_field.value.upper() if status_field else ""
    if status not in _STATUSES:
        key = status_field.key if status_field else _ALIASES["status"][0]
        got = f", got {status_field.value!r}" if status_field else " (missing)"
        raise PayloadError(key, f"{_STATUS_PROBLEM}{got}")
    disposition, missed_reason = _STATUSES[status]

    timings, moment = _timings(fields, ctx, answered=status == "ANSWER")
    call_id = _value(fields, "call_id")
    identity: tuple[object, ...]
    if call_id is not None:
        subject, identity = f"call/{call_id}", (VENDOREVENT, call_id)
    else:
        # No provider id: the recognised fields themselves are the call's identity. A retry
        # repeats them, so it still makes the same id; the canonical names and sorted order make
        # either spelling give the same digest, and unrecognised parameters (a cache buster, a
        # token) do not count. The subject is built from it so the call still has a key.
        digest = _digest(fields)
        subject, identity = f"call/{VENDOREVENT}-{digest[:20]}", (VENDOREVENT, "digest", digest)

    number = _value(fields, "number")
    call_type = _value(fields, "type")
    direction = _CALL_TYPES.get(call_type.lower()) if call_type else "inbound"
    if direction is None:
        key = fields["type"].key
        raise PayloadError(key, f"expected incoming or outgoing, got {call_type!r}")
    data = {
        "call_id": call_id,
        # Without a calltype the caller rang the virtual number: the document has no other kind.
        "direction": direction,
        # An outgoing log (calltype) is the agent calling the customer through the number.
        "from": _value(fields, "caller") if direction == "inbound" else _value(fields, "agent"),
        "to": number if direction == "inbound" else _value(fields, "caller"),
        "did": number,
        "agent": _value(fields, "agent"),
        "disposition": disposition,
        "missed_reason": missed_reason,
        "timings": timings,
        "recording_url": _value(fields, "recording"),
        "department": _value(fields, "department"),
        "caller_circle": _value(fields, "circle"),
    }
    event = make_event(
        source_name=ctx.name,
        vendor=ctx.vendor,
        vendorevent=VENDOREVENT,
        type="call.completed",
        time=moment,
        subject=subject,
        identity=identity,
        data=compact({**data, "raw": raw}),
    )
    return [event]


def _timings(
    fields: Mapping[str, _Field], ctx: SourceContext, *, answered: bool
) -> tuple[dict[str, str | int] | None, datetime]:
    """The call's known timings, and when it happened (its end, else its start)."""
    started = _started(fields, ctx)
    ivr_s = _seconds(fields, "ivr_s")
    talk_s = _seconds(fields, "talk_s")
    # Before an agent took it, then the conversation. A call no agent took has no conversation,
    # so its IVR time is the whole call even when the conversation time is left out.
    if talk_s is None and not answered:
        total_s = ivr_s
    else:
        total_s = None if ivr_s is None or talk_s is None else ivr_s + talk_s
    answered_at = _after(started, ivr_s, fields, "ivr_s") if answered else None
    ended = _after(started, total_s, fields, "talk_s" if talk_s else "ivr_s")
    timings = {
        "started_at": rfc3339(started) if started else None,
        "answered_at": rfc3339(answered_at) if answered_at else None,
        "ended_at": rfc3339(ended) if ended else None,
        "ivr_s": ivr_s,
        "talk_s": talk_s,
        "total_s": total_s,
    }
    # No time, or a clock that cannot be right: the receipt time (the log comes at the end).
    moment = believable(ended or started, ctx)
    return compact(timings) or None, moment


def _params(payload: Payload) -> dict[str, str]:
    """The request's parameters: the query string, plus a form body if one was posted."""
    # dict() of aiohttp's MultiDict keeps each key's first value, as its .get() does.
    params = dict(payload.query)
    if payload.content_type.split(";")[0].strip().lower() == _FORM and payload.body:
        # A provider configured to POST the same fields: the query string wins on a clash.
        try:
            form = parse_qsl(payload.body.decode(), keep_blank_values=True)
        except (UnicodeDecodeError, ValueError):
            raise UnsupportedMediaError("", "form body is not valid UTF-8 form data") from None
        firsts: dict[str, str] = {}
        for key, value in form:
            firsts.setdefault(key, value)
        params = {**firsts, **params}
    if not params:
        if payload.body.strip():
            raise UnsupportedMediaError(
                "", "expected the call log as query parameters, got only a body"
            )
        raise PayloadError("", "empty request: expected the call log as query parameters")
    return params


def _recognise(raw: Mapping[str, str]) -> dict[str, _Field]:
    """The recognised parameters by our field name; a field given twice must agree."""
    fields: dict[str, _Field] = {}
    for key, value in raw.items():
        name = _FIELD_OF.get(key.strip().lower())
        if name is None:
            continue
        found = _Field(key, value.strip())
        prior = fields.get(name)
        if prior is None or not prior.value:
            fields[name] = found
        elif found.value and found.value.upper() != prior.value.upper():
            raise PayloadError(key, f"{found.value!r} contradicts {prior.key}={prior.value!r}")
    return fields


def _value(fields: Mapping[str, _Field], name: str) -> str | None:
    found = fields.get(name)
    return found.value if found and found.value else None


def _seconds(fields: Mapping[str, _Field], name: str) -> int | None:
    """A duration in seconds or ``H:MM:SS`` (errors name the key as the provider spelt it)."""
    found = fields.get(name)
    return seconds({found.key: found.value}, found.key) if found else None


def _started(fields: Mapping[str, _Field], ctx: SourceContext) -> datetime | None:
    """``date`` (YYYY-MM-DD) + ``time`` (HH24:MI:SS), naive local time in the source's zone.

    The table types ``date`` as a DateTime, which a .NET provider renders ``2024-03-05
    00:00:00``: a time part there is ignored when ``time`` is given and used when it is not.
    Without a time of day the start is unknown (midnight would be invented).
    """
    day_field, time_field = fields.get("date"), fields.get("time")
    if day_field is None or not day_field.value:
        if time_field is not None and time_field.value:
            _clock(time_field.key, time_field.value)  # still refuse a malformed time
        return None
    match = _DATE.fullmatch(day_field.value)
    try:
        if match is None:
            raise ValueError(day_field.value)
        year, month, day_no, rest = match.groups()
        day = date(int(year), int(month), int(day_no))
    except ValueError:
        raise PayloadError(
            day_field.key, f"expected 'YYYY-MM-DD', got {day_field.value!r}"
        ) from None
    if time_field is not None and time_field.value:
        hour, minute, second = _clock(time_field.key, time_field.value)
    elif rest:
        hour, minute, second = _clock(day_field.key, rest.strip())
    else:
        return None
    moment = datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=ctx.tz)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # year 1 or 9999: the zone offset pushes it out of range
        raise PayloadError(day_field.key, f"date out of range: {day_field.value!r}") from None


def _clock(key: str, value: str) -> tuple[int, int, int]:
    """``HH24:MI:SS`` (or ``HH:MI``, or a .NET TimeSpan's fractional seconds) as numbers."""
    match = _TIME.fullmatch(value)
    if match is not None:
        hour, minute, second = (int(part) if part else 0 for part in match.groups())
        if hour < 24 and minute < 60 and second < 60:
            return hour, minute, second
    raise PayloadError(key, f"expected 'HH24:MI:SS', got {value!r}")


def _after(
    start: datetime | None, span_s: int | None, fields: Mapping[str, _Field], name: str
) -> datetime | None:
    if start is None or span_s is None:
        return None
    try:
        return start + timedelta(seconds=span_s)
    except OverflowError:  # a start in 9999 plus a long duration
        key = fields[name].key if name in fields else _ALIASES[name][0]
        raise PayloadError(key, "duration runs past the year 9999") from None


def _digest(fields: Mapping[str, _Field]) -> str:
    canonical = "&".join(f"{name}={fields[name].value}" for name in sorted(fields))
    return hashlib.sha256(canonical.encode()).hexdigest()


def reject(error: PayloadError) -> Ack:
    """The provider's "failure" answer: one short plain-text line naming the field."""
    line = " ".join(f"Failure: {error}".split())  # one line, whatever the problem quoted
    if len(line) > 200:
        line = line[:197] + "..."
    return Ack(status=400, content_type="text/plain", body=line.encode())


VENDOR: Final = Vendor(
    name="callog",
    normalize=normalize,
    ack=Ack(content_type="text/plain", body=b"Success"),
    reject=reject,
)
