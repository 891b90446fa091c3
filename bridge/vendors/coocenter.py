"""Zycoo CooCenter (an Asterisk-based call-centre PBX): HTTP JSON pushes to events.

The keys and samples are those of Zycoo's own CooCenter API book (the push page, whose samples
are the ``*_book`` fixtures); an OCR'd copy of the manual gives more sample values. The PBX
retransmits a push every 2 s until it is answered, so every id is built from vendor fields
only: a retransmission yields the same ids and the outbox drops the copies. Pure: no I/O, no
clock (the receipt time comes in the context).
"""

from __future__ import annotations

import math
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
    believable,
    epoch,
    infer_direction,
    local_time,
    parse_json_object,
    recording,
    required,
    seconds,
    side,
    span_s,
    text,
    timings,
    unmapped,
    vendor_event,
)

Handler = Callable[[Fields, dict[str, Any], SourceContext, str], list[Event]]


def normalize(payload: Payload, ctx: SourceContext) -> list[Event]:
    """One CooCenter push to its events; an unknown ``event`` becomes ``raw.unmapped``."""
    raw = parse_json_object(payload)
    fields = Fields(raw)
    name = required(fields, "event").lower()
    handler = _HANDLERS.get(name)
    if handler is None:
        return [unmapped(payload, ctx, raw, name)]
    return handler(fields, raw, ctx, name)


def _dialbegin(fields: Fields, raw: dict[str, Any], ctx: SourceContext, name: str) -> list[Event]:
    call_id = required(fields, "uniqueid")
    time = believable(epoch(fields, "timestamp"), ctx)
    ringing = _dial_data(fields, ctx, call_id)
    call_keys = ("call_id", "direction", "direction_inferred", "from", "to", "channel", "pbx_mac")
    initiated = {key: ringing[key] for key in call_keys}
    subject = f"call/{call_id}"
    leg = (text(fields, "destuniqueid"), ringing["target"], text(fields, "timestamp"))
    return [
        # Every dialbegin of a call (one per target rung) makes the same call.initiated id: the
        # outbox keeps the first and drops the rest.
        vendor_event(ctx, name, "call.initiated", time, subject, (call_id,), initiated, raw),
        vendor_event(ctx, name, "call.ringing", time, subject, (call_id, *leg), ringing, raw),
    ]


def _dial_data(fields: Fields, ctx: SourceContext, call_id: str) -> dict[str, Any]:
    """What dialbegin and dialend both say about the call and the target being rung."""
    callee = text(fields, "destcalleridnum") or text(fields, "destexten")
    direction = _dial_direction(fields, ctx)
    return {
        "call_id": call_id,
        "direction": direction,
        "direction_inferred": True if direction else None,
        "from": text(fields, "calleridnum"),
        "to": callee,
        "target": callee,
        "channel": text(fields, "channel"),
        "dest_channel": text(fields, "destchannel"),
        "dest_call_id": text(fields, "destuniqueid"),
        "pbx_mac": text(fields, "mac"),
    }


# Asterisk's DialStatus set (the AMI DialEnd values) -> why the target stopped ringing. ANSWER is
# call.answered. CONTINUE and GOTO: the dial ended and the dialplan sent the call on (a forward).
_DIAL_REASONS: Final = {
    "NOANSWER": "no_answer",
    "CANCEL": "cancelled",
    "BUSY": "busy",
    "CHANUNAVAIL": "unavailable",
    "CONGESTION": "congestion",
    "ABORT": "aborted",
    "CONTINUE": "forwarded",
    "GOTO": "forwarded",
    "DONTCALL": "refused",  # the privacy manager: the callee refused the call
    "TORTURE": "refused",
    "INVALIDARGS": "failed",
}


def _dialend(fields: Fields, raw: dict[str, Any], ctx: SourceContext, name: str) -> list[Event]:
    call_id = required(fields, "uniqueid")
    status = required(fields, "dialstatus").upper()
    time = believable(epoch(fields, "timestamp"), ctx)
    data = _dial_data(fields, ctx, call_id)
    identity = (call_id, data["dest_channel"], data["target"], status, text(fields, "timestamp"))
    subject = f"call/{call_id}"
    if status == "ANSWER":
        type_ = "call.answered"
    elif status in _DIAL_REASONS:
        type_ = "call.ringing_ended"
        data["reason"] = _DIAL_REASONS[status]
    else:
        # Zycoo's own book shows dialstatus "hangup": a firmware value that says the dial is
        # over and nothing about an answer. Neither call.answered nor "stopped ringing without
        # answering" would be true, so the push is kept on the call's subject and the call is
        # decided by its records (cc_cdr, cdr) instead.
        data["dialstatus"] = status.lower()
        type_ = "raw.unmapped"
    return [vendor_event(ctx, name, type_, time, subject, identity, data, raw)]


def _hangup(fields: Fields, raw: dict[str, Any], ctx: SourceContext, name: str) -> list[Event]:
    call_id = required(fields, "uniqueid")
    # No disposition: whether a person answered is the writer's call state, not this push's.
    # No direction either: the push names a channel's own number and its connected line, which
    # read backwards when the callee's channel is the one that hung up.
    data = {
        "call_id": call_id,
        "from": text(fields, "calleridnum"),
        "to": text(fields, "connectedlinenum"),
    }
    # hangup carries no time: the receipt time stands in. One end per call, hence the identity.
    return [
        vendor_event(
            ctx, name, "call.ended", ctx.received_at, f"call/{call_id}", (call_id,), data, raw
        )
    ]


# Asterisk extension-state bits (AST_EXTENSION_*), in bit order, for data.flags.
_FLAGS: Final = ((1, "in_use"), (2, "busy"), (4, "unavailable"), (8, "ringing"), (16, "on_hold"))
# Which bit decides the one state when several are set, first wins: an unreachable phone is
# unavailable whatever else is set; a ringing one wants the screen-pop even while on a call
# (9 = in use + ringing is call waiting); on hold is still a call, but one the agent can resume.
_PRIORITY: Final = (
    (4, "unavailable"),
    (8, "ringing"),
    (16, "on_hold"),
    (2, "busy"),
    (1, "in_call"),
)


def extension_state(status: int) -> tuple[str, list[str] | None]:
    """The state and the flags of an Asterisk extension-state bit set."""
    if not 0 <= status < 32:  # -1 removed, -2 deactivated, or bits Asterisk does not define
        return "unknown", None
    flags = [flag for bit, flag in _FLAGS if status & bit]
    return next((state for bit, state in _PRIORITY if status & bit), "idle"), flags


def _extensionstatus(
    fields: Fields, raw: dict[str, Any], ctx: SourceContext, name: str
) -> list[Event]:
    exten = required(fields, "exten")
    status = required(fields, "status")
    try:
        number = float(status)
    except ValueError:
        number = math.nan
    if not number.is_integer():
        raise PayloadError("status", f"expected an extension state number, got {status!r}")
    state, flags = extension_state(int(number))
    data = {
        "extension": exten,
        "state": state,
        "flags": flags,
        "status_text": text(fields, "statustext"),
    }
    # The push has no time and no id, so a retransmission (the ack was lost after the commit)
    # and a real repeat (idle, ringing, idle) are byte-identical. A time bucket in the identity
    # cannot tell them apart: a minute bucket drops the second "idle" of a 20-second missed call
    # and leaves subscribers showing the agent ringing until the next change, while a
    # retransmission can still straddle a bucket edge (and after a bridge restart arrives well
    # past it). A repeated extension.state is harmless (a level: applying it twice changes
    # nothing), a lost one is a wrong lamp. So each receipt gets its own id; collapsing a
    # repeat of the extension's current state is for the consumer (or the writer) to do.
    identity = (exten, status, text(fields, "statustext"), ctx.received_at.isoformat())
    subject = f"extension/{exten}"
    return [
        vendor_event(ctx, name, "extension.state", ctx.received_at, subject, identity, data, raw)
    ]


# callType of ivr and cc_cdr: the manual shows IN and incoming; both spellings occur.
_CALL_TYPES: Final = {
    **dict.fromkeys(("in", "incoming", "inbound"), "inbound"),
    **dict.fromkeys(("out", "outgoing", "outbound"), "outbound"),
    **dict.fromkeys(("internal", "local"), "internal"),
}


def _ivr(fields: Fields, raw: dict[str, Any], ctx: SourceContext, name: str) -> list[Event]:
    call_id = required(fields, "uuid")
    started = local_time(fields, "startTime", ctx.tz)
    ended = local_time(fields, "endTime", ctx.tz)
    data = {
        "call_id": call_id,
        "direction": _CALL_TYPES.get((text(fields, "callType") or "").lower()),
        "from": text(fields, "caller"),
        "to": text(fields, "called"),
        "queue": text(fields, "queueCode"),
        "ivr_id": text(fields, "ivrId"),
        "ivr_name": text(fields, "ivrName"),
        "digits": text(fields, "ivrDtmf"),
        "did": text(fields, "trunkNumber"),
        "timings": timings(started_at=started, ended_at=ended, total_s=seconds(fields, "duration")),
        "pbx_mac": text(fields, "mac"),
    }
    initiated = {key: data[key] for key in ("call_id", "direction", "from", "to", "did", "pbx_mac")}
    subject = f"call/{call_id}"
    # A call may pass the same IVR twice: the times tell the traversals apart.
    identity = (call_id, *(text(fields, key) for key in ("ivrId", "startTime", "endTime")))
    began, time = believable(started, ctx), believable(ended or started, ctx)
    return [
        # The IVR answers before any agent is dialled, and a call the IVR alone handles has no
        # dialbegin at all: this is the first sign of the call and of its direction (which the
        # writer needs to tell a missed call). Same id as dialbegin's call.initiated: one is kept.
        vendor_event(ctx, name, "call.initiated", began, subject, (call_id,), initiated, raw),
        vendor_event(ctx, name, "ivr.input", time, subject, identity, data, raw),
    ]


# Asterisk CDR dispositions, compared without spaces or underscores ("NO ANSWER", "NO_ANSWER").
# ANSWERED is not here: it says the channel was answered, which the IVR does too (see _cdr).
_CDR_DISPOSITIONS: Final = {
    "NOANSWER": "no_answer",
    "BUSY": "busy",
    "FAILED": "failed",
    "CONGESTION": "failed",
}
_CALLERID_NUMBER: Final = re.compile(r"<([^<>]*)>\s*$")


def _cdr(fields: Fields, raw: dict[str, Any], ctx: SourceContext, name: str) -> list[Event]:
    call_id = required(fields, "uniqueid")
    started = local_time(fields, "starttime", ctx.tz)
    answered = local_time(fields, "answertime", ctx.tz)
    ended = local_time(fields, "endtime", ctx.tz)
    disposition = re.sub(r"[\s_]+", "", (text(fields, "disposition") or "").upper())
    data = {
        "call_id": call_id,
        "direction": _cdr_direction(fields),
        "from": text(fields, "source") or _callerid_number(fields),
        "to": text(fields, "destination"),
        # The channel CDR's ANSWERED may be the IVR or the queue picking up: it is the PBX's
        # word (pbx_answered), which the call fold takes as an answer only while no cc_cdr
        # (the call centre's record of whether an agent took the call) says otherwise.
        "disposition": _CDR_DISPOSITIONS.get(disposition),
        "pbx_answered": True if disposition == "ANSWERED" else None,
        "timings": timings(
            started_at=started,
            answered_at=answered,
            ended_at=ended,
            ring_s=span_s(started, answered),
            talk_s=seconds(fields, "billableseconds"),
            total_s=seconds(fields, "duration"),
        ),
        **recording(ctx, text(fields, "recordfile")),
    }
    keys = ("destination", "starttime", "answertime", "endtime", "disposition")
    identity = ("cdr", call_id, *(text(fields, key) for key in keys))
    time = believable(ended, ctx)
    return [vendor_event(ctx, name, "call.completed", time, f"call/{call_id}", identity, data, raw)]


def _callerid_number(fields: Fields) -> str | None:
    """The number of an Asterisk caller id, ``"808" <808>``."""
    match = _CALLERID_NUMBER.search(text(fields, "callerid") or "")
    return (match.group(1).strip() or None) if match else None


def _cdr_direction(fields: Fields) -> str | None:
    value = text(fields, "calltype")
    if value is None:
        # The manual: calltype empty means internal; absent (or null) means we do not know.
        return "internal" if isinstance(fields.get("calltype"), str) else None
    return _CALL_TYPES.get(value.lower())


# cc_cdr missCause: the caller hung up while queued, or no agent took the call.
_MISS_DISPOSITIONS: Final = {
    "MEMBER_CANCEL": "abandoned",
    **dict.fromkeys(("NO_AGENT_ANSWER", "NO_AGENT_LOGIN", "NO_ASSIGN"), "no_answer"),
}


def _cc_cdr(fields: Fields, raw: dict[str, Any], ctx: SourceContext, name: str) -> list[Event]:
    call_id = required(fields, "uuid")
    started = local_time(fields, "startTime", ctx.tz)
    ended = local_time(fields, "endTime", ctx.tz)
    direction = _CALL_TYPES.get((text(fields, "callType") or "").lower())
    state = (text(fields, "cdrState") or "").lower()
    miss_cause = text(fields, "missCause")
    talk_s = seconds(fields, "talkingTime")
    disposition: str | None = None
    # cdrState is where the call was when it ended: bridged (with an agent), feedback (the
    # satisfaction survey, which follows a conversation or not), queue, ivr.
    if state == "bridged" or (state == "feedback" and talk_s):
        disposition = "answered"
    elif miss_cause is not None and miss_cause.upper() in _MISS_DISPOSITIONS:
        disposition = _MISS_DISPOSITIONS[miss_cause.upper()]
    elif state in ("ivr", "queue", "feedback") and direction == "inbound" and not talk_s:
        # Ended in the IVR, the queue or a survey with no conversation: nobody answered.
        disposition = "abandoned" if (text(fields, "hangupSide") or "") == "caller" else "no_answer"
    data = {
        "call_id": call_id,
        "direction": direction,
        "from": text(fields, "caller"),
        "to": text(fields, "called"),
        "queue": text(fields, "queueCode"),
        # agentCode names the agent the queue offered the call to, answered or not (the book's
        # missed sample has one): the answering agent only when the call was answered.
        "agent": text(fields, "agentCode") if disposition == "answered" else None,
        "offered_to": text(fields, "agentCode") if disposition != "answered" else None,
        "did": text(fields, "trunkNumber"),
        "disposition": disposition,
        "missed_reason": miss_cause.lower() if miss_cause else None,
        "hangup_cause": text(fields, "hangupCause"),
        "hangup_side": text(fields, "hangupSide"),
        "timings": timings(
            started_at=started,
            ended_at=ended,
            total_s=seconds(fields, "duration"),
            queue_s=seconds(fields, "queueTime"),
            ring_s=seconds(fields, "ringTime"),
            talk_s=talk_s,
            hold_s=seconds(fields, "holdTime"),
        ),
        **recording(ctx, text(fields, "filePath")),
        "pbx_mac": text(fields, "mac"),
    }
    keys = ("agentCode", "startTime", "endTime", "cdrState", "missCause")
    identity = ("cc_cdr", call_id, *(text(fields, key) for key in keys))
    time = believable(ended, ctx)
    return [vendor_event(ctx, name, "call.completed", time, f"call/{call_id}", identity, data, raw)]


_HANDLERS: Final[dict[str, Handler]] = {
    "dialbegin": _dialbegin,
    "dialbegein": _dialbegin,  # the manual's spelling: accept both
    "dialend": _dialend,
    "hangup": _hangup,
    "extensionstatus": _extensionstatus,
    "ivr": _ivr,
    "cdr": _cdr,
    "cc_cdr": _cc_cdr,
}


def _is_trunk_channel(channel: str | None, max_digits: int) -> bool:
    """Whether an Asterisk channel name reaches outside the PBX.

    ``DAHDI/i1/18782985586-51`` is an ISDN span (analog extensions are ``DAHDI/1-1``, so DAHDI
    alone proves nothing); a peer named ``...trunk...`` or after a number longer than an
    extension (``SIP/02088886666-0000002a``) is a trunk too.
    """
    if channel is None:
        return False
    tech, _, rest = channel.partition("/")
    resource = rest.rpartition("-")[0] or rest  # drop the per-channel suffix "-00000065"
    if tech.upper() == "DAHDI" and resource[:1].lower() == "i":
        return True
    if "trunk" in resource.lower():
        return True
    return any(len(run) > max_digits for run in re.findall(r"[0-9]+", resource))


def _dial_direction(fields: Fields, ctx: SourceContext) -> str | None:
    """dialbegin/dialend carry no direction: infer it from the two ends, or leave it out.

    An end on a trunk channel is outside whatever its number; otherwise its number (and the
    source's DIDs) tell, as for every vendor (:func:`bridge.vendors.base.side`).
    """
    limit = ctx.extension_max_digits
    caller = (
        "external"
        if _is_trunk_channel(text(fields, "channel"), limit)
        else side(text(fields, "calleridnum"), None, ctx)
    )
    callee = (
        "external"
        if _is_trunk_channel(text(fields, "destchannel"), limit)
        else side(text(fields, "destcalleridnum") or text(fields, "destexten"), None, ctx)
    )
    # trunk to trunk (a forwarded call) or an unknown end: unsure, so no direction
    return infer_direction(caller, callee)


VENDOR: Final = Vendor(
    name="coocenter",
    normalize=normalize,
    ack=Ack(content_type="application/json", body=b'{"status":"success"}'),
)
