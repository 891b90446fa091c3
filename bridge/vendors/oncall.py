"""OnCall (a cloud PBX built on PortSIP PBX v16): Event URL and CDR URL JSON pushes to events.

The fields are PortSIP's (its knowledge base: the webhook event reference, the pub/sub events,
the CDR pages; the ``kb_*`` fixtures); the OnCall document gives one sample (a ``call_ended``).
Parties are SIP URIs (``sip:108@tenant.domain``): events carry the user part as the number, the
URI stays in ``raw``.

PortSIP delivers at least once and out of order, retrying for about a day, so every id is built
from vendor fields only (the call key, the event name, the target, the vendor's ``time``): a
retry yields the same ids and the outbox drops the copies. Pure: no I/O, no clock.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final, NamedTuple
from urllib.parse import unquote

from bridge.errors import PayloadError
from bridge.events import Event, compact, make_event
from bridge.vendors.base import (
    Ack,
    Payload,
    SourceContext,
    Vendor,
    believable,
    epoch,
    infer_direction,
    parse_json_object,
    seconds,
    side,
    span_s,
    text,
    timings,
    unmapped,
    vendor_event,
)

Handler = Callable[[dict[str, Any], SourceContext, str], list[Event]]


def normalize(payload: Payload, ctx: SourceContext) -> list[Event]:
    """One Event URL or CDR URL push to its events; an unknown event_type is ``raw.unmapped``."""
    raw = parse_json_object(payload)
    name = text(raw, "event_type")
    if name is None and payload.path.strip("/").lower() == "cdr":
        name = "call_cdr"  # the CDR URL: its pushes are CDRs whatever they call themselves
    if name is None:
        raise PayloadError("event_type", "missing")
    name = name.lower()
    handler = _HANDLERS.get(name)
    if handler is None and name == "cdr":
        handler = _call_cdr  # some integrations deliver the CDR as event_type "cdr"
    if handler is None:
        return [unmapped(payload, ctx, raw, name)]
    return handler(raw, ctx, name)


def parse_address(value: str) -> tuple[str | None, str | None]:
    """The number (a URI's user part) and the display name of a SIP party.

    ``sip:108@host`` -> ``("108", None)``; ``"Bob" <sips:108@host;transport=tls>`` ->
    ``("108", "Bob")``; ``tel:+8428;phone-context=x`` -> ``("+8428", None)``; a plain number
    is itself. A URI with no user part (``sip:host``) has no number.
    """
    name: str | None = None
    uri = value.strip()
    if "<" in uri:
        before, _, after = uri.partition("<")
        uri = after.partition(">")[0].strip()
        name = before.strip().removeprefix('"').removesuffix('"').replace('\\"', '"').strip()
    scheme, colon, rest = uri.partition(":")
    scheme = scheme.lower()
    if colon and scheme in ("sip", "sips"):
        user = rest.partition("@")[0] if "@" in rest else ""
        user = user.partition(";")[0].partition(":")[0]  # user params, a password
    elif colon and scheme == "tel":
        user = rest.partition(";")[0]
    else:
        user = uri.partition("@")[0]  # "108@host" or a plain number
    return unquote(user).strip() or None, name or None


# PortSIP's direction, in every spelling it has used: its event reference's ext / in / in2out /
# out, the longer names of newer releases, and its REST API's CDR enum (EXTENSION_CALL, ...).
# in2out is a call that came in from a trunk and was routed back out (a forward to a mobile,
# say): for the business it is a caller from outside that reached its number, and if nobody
# answers it is a missed call, so inbound. The raw payload keeps the vendor's value.
_DIRECTIONS: Final = {
    **dict.fromkeys(("ext", "internal", "extension", "extension_call"), "internal"),
    **dict.fromkeys(("in", "inbound", "inbound_call"), "inbound"),
    **dict.fromkeys(("in2out", "inbound_outbound", "inbound_outbound_call", "in_out"), "inbound"),
    **dict.fromkeys(("out", "outbound", "outbound_call"), "outbound"),
}


# SIP final responses that say more than "failed": busy (486 Busy Here, 600 Busy Everywhere),
# cancelled (487 Request Terminated: the caller gave up while it rang).
_FAIL_DISPOSITIONS: Final = {486: "busy", 600: "busy", 487: "cancelled"}
# A target's failure, as call.ringing_ended's reason.
_FAIL_REASONS: Final = {
    486: "busy",
    600: "busy",
    487: "cancelled",
    603: "declined",
    480: "unavailable",
    408: "no_answer",
}


def _call_start(raw: dict[str, Any], ctx: SourceContext, name: str) -> list[Event]:
    key = _call_key(raw)
    data = {
        **_call_data(raw, key, ctx),
        "did": text(raw, "did"),
        "cdr_id": text(raw, "cdr_id"),
        "outbound_caller_id": text(raw, "outbound_caller_id"),
    }
    # One call_start per call: a retry (or any second one) is the same call.initiated. A
    # call_update_info (newer PortSIP) says the same things again, changed: a call.initiated of
    # its own id, which the call fold folds into the call when the call is already known.
    identity = (key,) if name == "call_start" else (key, name, text(raw, "time"))
    return [_event(ctx, name, "call.initiated", _time(raw, ctx), key, identity, data, raw)]


def _target_ringing(raw: dict[str, Any], ctx: SourceContext, name: str) -> list[Event]:
    key = _call_key(raw)
    target, target_raw = _target(raw)
    data = {**_call_data(raw, key, ctx), "target": target}
    # The target and the time tell the call.ringing events of a call apart: two targets are
    # two events, and so is a target rung again later. Two phones of one extension that report
    # the same call_target in the same second are one call.ringing, all a screen-pop needs.
    identity = (key, name, target_raw, text(raw, "time"))
    return [_event(ctx, name, "call.ringing", _time(raw, ctx), key, identity, data, raw)]


def _target_stopped(raw: dict[str, Any], ctx: SourceContext, name: str) -> list[Event]:
    """target_noanswer and target_fail: one endpoint stopped ringing without answering."""
    key = _call_key(raw)
    target, target_raw = _target(raw)
    code = _sip_code(raw, "fail_code")
    if name in ("target_noanswer", "cdr_target_noanswer"):
        reason = "no_answer"
    else:
        reason = _FAIL_REASONS.get(code, "failed") if code is not None else "failed"
    data = {
        **_call_data(raw, key, ctx),
        "target": target,
        "reason": reason,
        "hangup_cause": str(code) if code is not None else None,
    }
    identity = (key, name, target_raw, text(raw, "time"), code)
    return [_event(ctx, name, "call.ringing_ended", _time(raw, ctx), key, identity, data, raw)]


def _target_other(raw: dict[str, Any], ctx: SourceContext, name: str) -> list[Event]:
    """target_add and target_ended: kept on the call's subject, but no call.* event.

    target_add is the INVITE going out to an endpoint; target_ringing follows when it rings, so
    a call.ringing here would pop every screen twice, and once for a phone that never rang.
    target_ended is an endpoint's leg ending, most often the endpoint that answered hanging up:
    call.ringing_ended ("stopped ringing without answering") would be false for it, and a
    stateless normaliser cannot tell it from a ringing endpoint being cancelled. Consumers
    learn both from call.answered / call.ended; the push itself stays in the outbox.
    """
    key = _call_key(raw)
    target, target_raw = _target(raw)
    data = {"call_id": key, "target": target}
    identity = (key, name, target_raw, text(raw, "time"))
    return [_event(ctx, name, "raw.unmapped", _time(raw, ctx), key, identity, data, raw)]


def _call_established(raw: dict[str, Any], ctx: SourceContext, name: str) -> list[Event]:
    key = _call_key(raw)
    target, target_raw = _target(raw)
    data = {**_call_data(raw, key, ctx), "target": target}
    # A call answered again after a reroute is a second call.answered: target and time differ.
    identity = (key, target_raw, text(raw, "time"))
    return [_event(ctx, name, "call.answered", _time(raw, ctx), key, identity, data, raw)]


def _call_hold(raw: dict[str, Any], ctx: SourceContext, name: str) -> list[Event]:
    key = _call_key(raw)
    # PortSIP's hold events name the party that pressed hold (aor) and the other one (peer_aor)
    # rather than caller and callee.
    by = _number(raw, "aor")
    data = {**_call_data(raw, key, ctx), "by": by, "peer": _number(raw, "peer_aor")}
    type_ = "call.held" if name == "call_hold" else "call.resumed"
    identity = (key, text(raw, "aor"), text(raw, "time"))
    return [_event(ctx, name, type_, _time(raw, ctx), key, identity, data, raw)]


def _call_reroute(raw: dict[str, Any], ctx: SourceContext, name: str) -> list[Event]:
    key = _call_key(raw)
    target, target_raw = _target(raw)
    data = {**_call_data(raw, key, ctx), "target": target}
    identity = (key, target_raw, text(raw, "time"))
    return [_event(ctx, name, "call.transferred", _time(raw, ctx), key, identity, data, raw)]


def _call_end(raw: dict[str, Any], ctx: SourceContext, name: str) -> list[Event]:
    """call_ended, call_noanswer, call_fail: the one call.ended of the call."""
    key = _call_key(raw)
    code = _sip_code(raw, "fail_code")
    disposition: str | None = None
    if name == "call_noanswer":
        disposition = "no_answer"
    elif name == "call_fail":
        disposition = _FAIL_DISPOSITIONS.get(code, "failed") if code is not None else "failed"
    # call_ended says nothing of the outcome: the writer fills the disposition from the call's
    # state (answered or not), which out-of-order delivery makes the better judge anyway.
    data = {
        **_call_data(raw, key, ctx),
        "disposition": disposition,
        "hangup_cause": str(code) if code is not None else None,
    }
    # One end per call, whichever push says it first: the same id for all three.
    return [_event(ctx, name, "call.ended", _time(raw, ctx), key, (key,), data, raw)]


def _extension_register(raw: dict[str, Any], ctx: SourceContext, name: str) -> list[Event]:
    address = text(raw, "extension") or text(raw, "caller")
    if address is None:
        raise PayloadError("extension", "missing")
    number, _ = parse_address(address)
    if number is None:
        raise PayloadError("extension", f"no extension number in {address!r}")
    contacts = _list(raw, "registration_contacts")
    removed = _list(raw, "removed_contacts")
    # PortSIP lists the extension's current registrations; when the last one goes the list is
    # left out (removed_contacts says which went): no registration left means unreachable.
    state = "registered" if contacts else "unavailable"
    agents = [
        c["user_agent"]
        for c in contacts or []
        if isinstance(c, dict) and type(c.get("user_agent")) is str
    ]
    data = {
        "extension": number,
        "state": state,
        "extension_id": text(raw, "extension_id"),
        "registrations": len(contacts or []),
        "user_agents": agents or None,
        "tenant_id": text(raw, "tenant_id"),
        "tenant_name": text(raw, "tenant_name"),
    }
    identity = (number, text(raw, "time"), state, _canonical(contacts), _canonical(removed))
    subject = f"extension/{number}"
    time = _time(raw, ctx)
    event = make_event(
        source_name=ctx.name,
        vendor=ctx.vendor,
        vendorevent=name,
        type="extension.state",
        time=time,
        subject=subject,
        identity=identity,
        data=compact({**data, "raw": raw}),
    )
    return [event]


# extension_call / extension_status call_status: "On Call" and "Ringing" in v16.2, ON_CALL and
# RINGING in v22 (its own sample misspells ON_ACLL); empty: not in a call.
_CALL_STATES: Final = {"oncall": "in_call", "onacll": "in_call", "ringing": "ringing", "": "idle"}


def _call_state(value: str | None) -> str:
    return _CALL_STATES.get((value or "").replace(" ", "").replace("_", "").lower(), "unknown")


def _extension_call(raw: dict[str, Any], ctx: SourceContext, name: str) -> list[Event]:
    """An extension started or stopped being in a call (no call id: a lamp, not a call)."""
    number = _extension_number(raw, "extension")
    status = text(raw, "call_status")
    data = {
        "extension": number,
        "state": _call_state(status),
        "call_status": status,
        "extension_id": text(raw, "extension_id"),
        "tenant_id": text(raw, "tenant_id"),
    }
    identity = (number, status, text(raw, "time"))
    return [_state_event(ctx, name, f"extension/{number}", _time(raw, ctx), identity, data, raw)]


def _extension_status(raw: dict[str, Any], ctx: SourceContext, name: str) -> list[Event]:
    """A list of extensions' states (sent on subscribe and on online/offline): one event each."""
    entries = _list(raw, "status")
    if not entries:
        raise PayloadError("status", "missing: expected a list of extension states")
    events = []
    for index, entry in enumerate(entries):
        where = f"status[{index}]"
        if not isinstance(entry, dict):
            raise PayloadError(where, f"expected an object, got {type(entry).__name__}")
        try:
            number = _extension_number(entry, "extension")
            status = text(entry, "call_status")
            online = entry.get("online")
            state = _call_state(status)
            if online is False and state in ("idle", "unknown"):
                state = "unavailable"
            data = {
                "extension": number,
                "state": state,
                "call_status": status,
                "online": online if isinstance(online, bool) else None,
                "presence": text(entry, "presence"),
                "extension_id": text(entry, "extension_id"),
                "tenant_id": text(raw, "tenant_id"),
            }
            time = _time(entry, ctx)
            identity = (number, status, str(online), text(entry, "time"), index)
        except PayloadError as exc:
            raise PayloadError(f"{where}.{exc.field}", exc.problem) from None
        subject = f"extension/{number}"
        events.append(_state_event(ctx, name, subject, time, identity, data, raw))
    return events


# PortSIP agent states (its REST schema's list) -> agent.state's state.
_AGENT_STATES: Final = {
    "ready": "available",
    "not_ready": "paused",
    "break": "paused",
    "lunch": "paused",
    "wrap_up": "wrap_up",
    "queue_call": "busy",
    "other_call": "busy",
    "logged_in": "logged_in",
    "logged_out": "logged_out",
    "offline": "logged_out",
}


def _extension_agent_status(raw: dict[str, Any], ctx: SourceContext, name: str) -> list[Event]:
    """An agent's state in each of its queues: one ``agent.state`` per queue."""
    number = _extension_number(raw, "extension")
    entries = _list(raw, "agent_status")
    if not entries:
        raise PayloadError("agent_status", "missing: expected a list of queue states")
    time = _time(raw, ctx)
    events = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise PayloadError(f"agent_status[{index}]", "expected an object")
        status = text(entry, "status")
        queue = text(entry, "queue_number")
        data = {
            "agent": number,
            "extension": number,
            "queue": queue,
            "state": _AGENT_STATES.get((status or "").lower(), "unknown"),
            "agent_status": status,
            "extension_id": text(raw, "extension_id"),
            "tenant_id": text(raw, "tenant_id"),
        }
        identity = (number, queue, status, text(raw, "time"))
        events.append(_state_event(ctx, name, f"agent/{number}", time, identity, data, raw))
    return events


def _extension_number(raw: dict[str, Any], key: str) -> str:
    address = text(raw, key)
    if address is None:
        raise PayloadError(key, "missing")
    number, _ = parse_address(address)
    if number is None:
        raise PayloadError(key, f"no extension number in {address!r}")
    return number


def _state_event(
    ctx: SourceContext,
    vendorevent: str,
    subject: str,
    time: datetime,
    identity: tuple[object, ...],
    data: dict[str, Any],
    raw: dict[str, Any],
) -> Event:
    type_ = "agent.state" if subject.startswith("agent/") else "extension.state"
    return vendor_event(ctx, vendorevent, type_, time, subject, identity, data, raw)


# The CDR's call_status. fail is refined by status_code like call_fail's fail_code.
_CDR_STATUSES: Final = {"noanswer": "no_answer", "no_answer": "no_answer"}


class _Answer(NamedTuple):
    """The first call target a person answered, from a CDR's call_targets[]."""

    number: str | None
    answered: datetime
    ended: datetime | None
    talk_s: int | None


def _call_cdr(raw: dict[str, Any], ctx: SourceContext, name: str) -> list[Event]:
    key = _call_key(raw)
    started = _instant(raw, "start_time")
    ringing = _instant(raw, "ring_time")
    answered = _instant(raw, "answered_time")
    ended = _instant(raw, "ended_time")
    status = (text(raw, "call_status") or "").lower()
    code = _sip_code(raw, "status_code")
    targets = _list(raw, "call_targets") or []
    detailed = any(isinstance(item, dict) for item in targets)
    person = _person_answer(targets, _number(raw, "callee"))
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
        disposition = _FAIL_DISPOSITIONS.get(code, "failed") if code is not None else "failed"
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
        **_call_data(raw, key, ctx),
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
    time = believable(ended, ctx) if ended else _time(raw, ctx)
    return [_event(ctx, name, "call.completed", time, key, identity, data, raw)]


def _answered_at(item: object) -> datetime | None:
    return _instant(item, "answered_time") if isinstance(item, dict) else None


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
        rang = _instant(item, "ring_time")
        if not (seconds(item, "ring_duration") or (rang is not None and rang < answered)):
            passed_on = (text(item, "end_reason") or "").lower() in _PASSED_ON
            if passed_on or number is None or number == callee:
                continue
        if found is not None and found.answered <= answered:
            continue
        ended = _instant(item, "ended_time")
        talk = seconds(item, "talk_duration")
        if talk is None:
            talk = span_s(answered, ended)
        found = _Answer(number, answered, ended, talk)
    return found


# A call target's end_reason when it handed the call on (the IVR to the queue, the queue to
# an agent, a transfer): it was not where the call was taken.
_PASSED_ON: Final = frozenset({"referred", "redirected", "replaced"})


_HANDLERS: Final[dict[str, Handler]] = {
    "extension_register": _extension_register,
    "call_start": _call_start,
    "target_add": _target_other,
    "target_ringing": _target_ringing,
    "target_noanswer": _target_stopped,
    "target_fail": _target_stopped,
    "target_ended": _target_other,
    "call_established": _call_established,
    "call_hold": _call_hold,
    "call_unhold": _call_hold,
    "call_reroute": _call_reroute,
    "call_noanswer": _call_end,
    "call_fail": _call_end,
    "call_ended": _call_end,
    "call_cdr": _call_cdr,
    # Newer PortSIP's CDR URL: the same story, named after the CDR's call targets.
    "call_update_info": _call_start,
    "cdr_target_add": _target_other,
    "cdr_target_ringing": _target_ringing,
    # Every target that answers, the IVR and the queue included (PortSIP's own CDRs list them
    # as answered targets), with no field to tell a person: kept on the call, and the CDR's
    # call_targets[] decide who answered.
    "cdr_target_answer": _target_other,
    "cdr_target_noanswer": _target_stopped,
    "cdr_target_fail": _target_stopped,
    "cdr_target_end": _target_other,
    # v16.2+ extension events (the Event URL of v22, and the pub/sub stream).
    "extension_call": _extension_call,
    "extension_status": _extension_status,
    "extension_agent_status": _extension_agent_status,
}


def _call_key(raw: dict[str, Any]) -> str:
    """PortSIP's session_id (one per call, across its legs and reroutes), else the Call-ID.

    The OnCall document's sample has no session_id; PortSIP sends it on every call event.
    """
    key = text(raw, "session_id") or text(raw, "call_id")
    if key is None:
        raise PayloadError("call_id", "missing (and no session_id)")
    return key


def _call_data(raw: dict[str, Any], key: str, ctx: SourceContext) -> dict[str, Any]:
    caller, caller_name = _party(raw, "caller")
    callee, callee_name = _party(raw, "callee")
    sip_call_id = text(raw, "call_id")
    given = text(raw, "direction")
    direction = _DIRECTIONS.get(given.lower()) if given else None
    inferred = None
    if direction is None:
        # The OnCall document's own sample (and PortSIP's call_ended, call_noanswer, ...)
        # carries no direction: infer it from the two parties, and say so.
        direction = infer_direction(
            side(caller, _host(raw, "caller"), ctx), side(callee, _host(raw, "callee"), ctx)
        )
        inferred = True if direction else None
    return {
        "call_id": key,
        "sip_call_id": sip_call_id if sip_call_id != key else None,
        "direction": direction,
        "direction_inferred": inferred,
        "from": caller,
        "to": callee,
        "from_name": text(raw, "caller_display_name") or caller_name,
        "to_name": text(raw, "callee_display_name") or callee_name,
        "tenant_id": text(raw, "tenant_id"),
        "tenant_name": text(raw, "tenant_name"),
    }


def _host(raw: dict[str, Any], key: str) -> str | None:
    """The host of a party's SIP URI (``sip:108@host:5060`` -> ``host``), if it has one."""
    value = text(raw, key)
    if value is None:
        return None
    uri = value.partition("<")[2].partition(">")[0] if "<" in value else value
    if "@" not in uri:
        return None
    host = uri.rpartition("@")[2].partition(";")[0]
    if host.startswith("["):
        return host[1:].partition("]")[0] or None
    return host.partition(":")[0] or None


def _party(raw: dict[str, Any], key: str) -> tuple[str | None, str | None]:
    value = text(raw, key)
    return parse_address(value) if value is not None else (None, None)


def _number(raw: dict[str, Any], key: str) -> str | None:
    return _party(raw, key)[0]


def _target(raw: dict[str, Any]) -> tuple[str | None, str | None]:
    """The endpoint an event is about (call_target, else the callee): number and as sent."""
    # cdr_target_* name it "destination", misspelt "destiantion" in PortSIP's own table.
    for key in ("call_target", "destination", "destiantion", "callee"):
        value = text(raw, key)
        if value is not None:
            return parse_address(value)[0], value
    return None, None


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
    for item in _list(raw, "call_targets") or []:
        value: object = item
        if isinstance(item, dict):
            value = next((item[k] for k in _TARGET_KEYS if type(item.get(k)) is str), None)
        if type(value) is str:
            number = parse_address(value)[0]
            if number is not None:
                numbers.append(number)
    return numbers


def _list(raw: dict[str, Any], key: str) -> list[Any] | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise PayloadError(key, f"expected a list, got {type(value).__name__}")
    return value


def _canonical(value: object) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"))


def _sip_code(raw: dict[str, Any], key: str) -> int | None:
    """A SIP status code (``480``, ``"486"``); ``0`` or empty means none."""
    value = text(raw, key)
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not (number.is_integer() and 0 <= number < 1000):
        raise PayloadError(key, f"expected a SIP status code, got {value!r}")
    return int(number) or None


def _instant(raw: dict[str, Any], key: str) -> datetime | None:
    """Epoch seconds; PortSIP writes ``0`` for "never" (a CDR's answered_time, unanswered)."""
    moment = epoch(raw, key)
    return None if moment is None or moment.timestamp() == 0 else moment


def _time(raw: dict[str, Any], ctx: SourceContext) -> datetime:
    return believable(_instant(raw, "time"), ctx)


def _event(
    ctx: SourceContext,
    vendorevent: str,
    type_: str,
    time: datetime,
    key: str,
    identity: tuple[object, ...],
    data: dict[str, Any],
    raw: dict[str, Any],
) -> Event:
    return vendor_event(ctx, vendorevent, type_, time, f"call/{key}", identity, data, raw)


VENDOR: Final = Vendor(
    name="oncall",
    normalize=normalize,
    ack=Ack(content_type="application/json", body=b'{"status":"ok"}'),
)
