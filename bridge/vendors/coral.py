"""Coral IRIS IVDX (a FreeSWITCH-based PBX): its HTTP pushes to events.

The pushes are the "PBX -> CRM" APIs of Coral's IRIS IVDX API document:
``incomingcall``, ``extstatechangeevent``, ``cdrevent`` and ``pbxhealthstatus``, each wrapped as
``{"status": 0|1, "message": "...", "data": ...}``. The document does not say which URL each
one goes to, so one URL takes them all, told apart by content (``data.Event``, a list, the
``pbxstatus`` key), and a URL tail naming the API (``/ingest/<source>/cdrevent``) pins it: a body
that does not fit that API is refused. Times are naive PBX-local strings, read in the source's
zone. Pure: no I/O, no clock (the receipt time comes in the context).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

from bridge.errors import PayloadError
from bridge.events import Event
from bridge.vendors.base import (
    Ack,
    Fields,
    Payload,
    SourceContext,
    Vendor,
    local_time,
    parse_json_object,
    required,
    seconds,
    span_s,
    text,
    timings,
    unmapped,
    vendor_event,
)

INCOMING: Final = "incomingcall"
EXTSTATE: Final = "extstatechangeevent"
CDR: Final = "cdrevent"
HEALTH: Final = "pbxhealthstatus"
APIS: Final = (INCOMING, EXTSTATE, CDR, HEALTH)

# data.Event of the object pushes that carry one -> the API that pushes it.
_EVENTS: Final = {"popup": INCOMING, "cdr": CDR}
# The Event each of those APIs must carry when a path names it.
_EVENT_OF: Final = {INCOMING: "Popup", CDR: "Cdr"}


Handler = Callable[[Fields, dict[str, Any], SourceContext, Payload], list[Event]]


def normalize(payload: Payload, ctx: SourceContext) -> list[Event]:
    """One Coral push to its events; a well-formed push of no known API becomes raw.unmapped."""
    raw = parse_json_object(payload)
    wrapper = Fields(raw)
    if "data" not in wrapper:
        raise PayloadError("data", "missing: expected a {status, message, data} wrapper")
    data = wrapper["data"]
    api = _api_named(payload.path)
    if api is None:
        api = _api_of(data)
        if api is None:
            return [unmapped(payload, ctx, raw, _name_of(data, payload.path))]
    else:
        _check_fits(api, data)
    if api == EXTSTATE:
        return _extension_states(data, raw, ctx, payload)
    try:
        return _HANDLERS[api](Fields(data), raw, ctx, payload)
    except PayloadError as exc:
        raise PayloadError(_at("data", exc.field), exc.problem) from None


def _api_named(path: str) -> str | None:
    """The API a URL tail names (its last segment, any case), if it names one."""
    segment = path.strip().rstrip("/").rpartition("/")[2].lower()
    return segment if segment in APIS else None


def _api_of(data: Any) -> str | None:
    """The API a push came from, told by its content; None for a shape no API pushes."""
    if isinstance(data, list):
        return EXTSTATE  # the only push whose data is a list
    if data is None:  # the wrapper's "nothing" (the CRM -> PBX answers use it): no mapping
        return None
    if not isinstance(data, dict):
        raise PayloadError("data", f"expected an object or a list, got {_kind(data)}")
    fields = Fields(data)
    event = _event_field(fields)
    if event is not None:
        return _EVENTS.get(event.lower())
    return HEALTH if "pbxstatus" in fields else None


def _check_fits(api: str, data: Any) -> None:
    """Refuse a body that cannot be the push of the API its path names."""
    if api == EXTSTATE:
        if not isinstance(data, list):
            raise PayloadError("data", f"{api} pushes a list, got {_kind(data)}")
        return
    if not isinstance(data, dict):
        raise PayloadError("data", f"{api} pushes an object, got {_kind(data)}")
    event = _event_field(Fields(data))
    if event is None:  # no Event at all: the path says what it is
        return
    named = _EVENTS.get(event.lower())
    if api in _EVENT_OF and named != api:
        raise PayloadError("data.Event", f"{api} expects Event {_EVENT_OF[api]!r}, got {event!r}")
    if named is not None and named != api:
        raise PayloadError("data.Event", f"{api} pushes no Event {event!r} (that is {named})")


def _event_field(fields: Fields) -> str | None:
    try:
        return text(fields, "Event")
    except PayloadError as exc:
        raise PayloadError("data.Event", exc.problem) from None


def _name_of(data: Any, path: str) -> str:
    """The vendorevent of an unmapped push: its Event, else the path's last segment."""
    event = text(Fields(data), "Event") if isinstance(data, dict) else None
    return event or path.strip().rstrip("/").rpartition("/")[2] or "unknown"


def _incomingcall(
    fields: Fields, raw: dict[str, Any], ctx: SourceContext, payload: Payload
) -> list[Event]:
    call_id = required(fields, "uuid")
    extension = text(fields, "extension")
    caller = text(fields, "CallerNum")
    subject = f"call/{call_id}"
    # The document names this push "incomingcall", "for handling of incoming calls": inbound.
    initiated = {"call_id": call_id, "direction": "inbound", "from": caller}
    # The popup has no time: the receipt time stands in. Every popup of a call makes the same
    # call.initiated id (the outbox keeps the first); each extension rung its own call.ringing.
    time = ctx.received_at
    events = [
        vendor_event(ctx, INCOMING, "call.initiated", time, subject, (call_id,), initiated, raw)
    ]
    if extension is not None:  # a popup with no extension says the call exists, not who rings
        ringing = {**initiated, "target": extension}
        identity = (call_id, extension, caller)
        events.append(
            vendor_event(ctx, INCOMING, "call.ringing", time, subject, identity, ringing, raw)
        )
    return events


# extstatechangeevent status -> extension.state; anything else is "unknown" (kept in raw).
_STATES: Final = {"idle": "idle", "ringing": "ringing", "talking": "in_call"}


def _extension_states(
    data: list[Any], raw: dict[str, Any], ctx: SourceContext, payload: Payload
) -> list[Event]:
    """One extension.state per list element, in list order."""
    if not data:  # well-formed but says nothing: kept, like any push we cannot map
        return [unmapped(payload, ctx, raw, EXTSTATE)]
    events = []
    for index, element in enumerate(data):
        where = f"data[{index}]"
        if not isinstance(element, dict):
            raise PayloadError(where, f"expected an object, got {_kind(element)}")
        # raw is the wrapper as received with data narrowed to this element: each event keeps
        # the push's shape and its own element, without copying the whole list into every one.
        narrowed = {
            key: [element] if key.lower() == "data" else value for key, value in raw.items()
        }
        try:
            events.append(_extension_state(Fields(element), narrowed, ctx, index))
        except PayloadError as exc:
            raise PayloadError(_at(where, exc.field), exc.problem) from None
    return events


def _extension_state(fields: Fields, raw: dict[str, Any], ctx: SourceContext, index: int) -> Event:
    extension = required(fields, "extension")
    status = required(fields, "status")
    call_id = text(fields, "uuid")
    other_party = text(fields, "secondparty")
    data = {
        "extension": extension,
        "state": _STATES.get(status.lower(), "unknown"),
        "call_id": call_id,
        "other_party": other_party,
    }
    # No time and no event id, so a retransmission (the ack lost after the commit) and a real
    # repeat (a queue ringing the same agent again for the same call) are byte-identical. As
    # for CooCenter's extensionstatus: a repeated level is harmless, a lost one is a wrong lamp,
    # so each receipt gets its own id. The index keeps two equal elements of one push apart
    # ([ringing, idle, ringing] must end ringing).
    identity = (extension, status, call_id, other_party, index, ctx.received_at.isoformat())
    subject = f"extension/{extension}"
    return vendor_event(
        ctx, EXTSTATE, "extension.state", ctx.received_at, subject, identity, data, raw
    )


# CDR dispositions (FreeSWITCH's Asterisk-style names), compared without spaces/underscores.
# ANSWERED is not here: FreeSWITCH answers the channel for the IVR too (see _cdrevent).
_DISPOSITIONS: Final = {
    "NOANSWER": "no_answer",
    "BUSY": "busy",
    "FAILED": "failed",
    "CONGESTION": "failed",
}
_DIRECTIONS: Final = {
    **dict.fromkeys(("in", "inbound", "incoming"), "inbound"),
    **dict.fromkeys(("out", "outbound", "outgoing"), "outbound"),
    **dict.fromkeys(("internal", "local"), "internal"),
}


def _cdrevent(
    fields: Fields, raw: dict[str, Any], ctx: SourceContext, payload: Payload
) -> list[Event]:
    call_id = required(fields, "uuid")
    started = local_time(fields, "start_time", ctx.tz)
    answered = local_time(fields, "answer_time", ctx.tz)
    ended = local_time(fields, "end_time", ctx.tz)
    direction = _DIRECTIONS.get((text(fields, "direction") or "").lower())
    extension = text(fields, "callerextension")
    other_party = text(fields, "destination")
    # The record is extension-centric: callerextension is the PBX's side whichever way the call
    # went, destination the far end (the sample is "in" from 9000 to an outside number, and
    # getactivecalls lists an IN call with the popup's caller as its destination). So the
    # direction decides which is from and which is to; without one, neither is known.
    if direction == "inbound":
        from_, to = other_party, extension
    elif direction is not None:
        from_, to = extension, other_party
    else:
        from_ = to = None
    disposition = re.sub(r"[\s_]+", "", (text(fields, "disposition") or "").upper())
    data = {
        "call_id": call_id,
        "direction": direction,
        "from": from_,
        "to": to,
        "extension": extension,
        "other_party": other_party,
        # ANSWERED may be the IVR answering, not a person: FreeSWITCH answers the channel first.
        # It is the PBX's word (pbx_answered), which the call fold takes as an answer while no
        # live evidence (the realtime stream's bridge) or better record says otherwise.
        "disposition": _DISPOSITIONS.get(disposition),
        "pbx_answered": True if disposition == "ANSWERED" else None,
        "timings": timings(
            started_at=started,
            answered_at=answered,
            ended_at=ended,
            ring_s=span_s(started, answered),
            talk_s=seconds(fields, "billsec"),
            total_s=seconds(fields, "duration"),
        ),
        "recording_url": text(fields, "recordurl"),
        "account_code": text(fields, "accountcode"),
    }
    keys = ("callerextension", "destination", "start_time", "answer_time", "end_time")
    identity = ("cdr", call_id, *(text(fields, key) for key in (*keys, "disposition")))
    time = ended or ctx.received_at
    return [vendor_event(ctx, CDR, "call.completed", time, f"call/{call_id}", identity, data, raw)]


_PBX_STATUS: Final = {"0": "up", "1": "down"}


def _pbxhealthstatus(
    fields: Fields, raw: dict[str, Any], ctx: SourceContext, payload: Payload
) -> list[Event]:
    status = required(fields, "pbxstatus")
    state = _PBX_STATUS.get(status)
    if state is None:  # the document defines 0 and 1 only: keep the push, do not guess
        return [unmapped(payload, ctx, raw, HEALTH)]
    message = text(fields, "pbxstatusmessage")
    data = {"status": state, "message": message}
    # Sent "after every defined time" with identical bodies: an id from the fields alone would
    # drop every "up" after the first down/up cycle. Each receipt is its own event (a level).
    identity = (status, message, ctx.received_at.isoformat())
    return [vendor_event(ctx, HEALTH, "pbx.health", ctx.received_at, "pbx", identity, data, raw)]


_HANDLERS: Final[dict[str, Handler]] = {
    INCOMING: _incomingcall,
    CDR: _cdrevent,
    HEALTH: _pbxhealthstatus,
}


def _at(prefix: str, field: str) -> str:
    return f"{prefix}.{field}" if field else prefix


def _kind(value: Any) -> str:
    """A JSON value's type, as the document would name it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


# The document shows no answer for its pushes; every Coral API answers in this wrapper, with
# status 0 for success (1 is failure), so the PBX gets the same shape back.
VENDOR: Final = Vendor(
    name="coral",
    normalize=normalize,
    ack=Ack(content_type="application/json", body=b'{"status":0,"message":"success","data":null}'),
)
