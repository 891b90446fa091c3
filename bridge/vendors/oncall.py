"""OnCall (a cloud PBX built on PortSIP PBX v16): Event URL and CDR URL JSON pushes to events.

The fields are PortSIP's (its knowledge base: the webhook event reference, the pub/sub events,
the CDR pages; the ``kb_*`` fixtures); the OnCall document gives one sample (a ``call_ended``).
Parties are SIP URIs (``sip:108@tenant.domain``): events carry the user part as the number, the
URI stays in ``raw``.

PortSIP delivers at least once and out of order, retrying for about a day, so every id is built
from vendor fields only (the call key, the event name, the target, the vendor's ``time``): a
retry yields the same ids and the outbox drops the copies. Pure: no I/O, no clock.

Here: the dispatch and the live pushes (call, extension and agent events). A CDR's mapping is
:mod:`bridge.vendors.oncall_cdr`; the fields both read, :mod:`bridge.vendors.oncall_fields`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

from bridge.errors import PayloadError
from bridge.events import Event, compact, make_event
from bridge.vendors.base import (
    Ack,
    Payload,
    SourceContext,
    Vendor,
    parse_json_object,
    text,
    unmapped,
    vendor_event,
)
from bridge.vendors.oncall_cdr import call_cdr
from bridge.vendors.oncall_fields import (
    FAIL_DISPOSITIONS,
    call_data,
    call_event,
    call_key,
    list_of,
    parse_address,
    party_number,
    sip_code,
    target_of,
    when,
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
        handler = call_cdr  # some integrations deliver the CDR as event_type "cdr"
    if handler is None:
        return [unmapped(payload, ctx, raw, name)]
    return handler(raw, ctx, name)


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
    key = call_key(raw)
    data = {
        **call_data(raw, key, ctx),
        "did": text(raw, "did"),
        "cdr_id": text(raw, "cdr_id"),
        "outbound_caller_id": text(raw, "outbound_caller_id"),
    }
    # One call_start per call: a retry (or any second one) is the same call.initiated. A
    # call_update_info (newer PortSIP) says the same things again, changed: a call.initiated of
    # its own id, which the call fold folds into the call when the call is already known.
    identity = (key,) if name == "call_start" else (key, name, text(raw, "time"))
    return [call_event(ctx, name, "call.initiated", when(raw, ctx), key, identity, data, raw)]


def _target_ringing(raw: dict[str, Any], ctx: SourceContext, name: str) -> list[Event]:
    key = call_key(raw)
    target, target_raw = target_of(raw)
    data = {**call_data(raw, key, ctx), "target": target}
    # The target and the time tell the call.ringing events of a call apart: two targets are
    # two events, and so is a target rung again later. Two phones of one extension that report
    # the same call_target in the same second are one call.ringing, all a screen-pop needs.
    identity = (key, name, target_raw, text(raw, "time"))
    return [call_event(ctx, name, "call.ringing", when(raw, ctx), key, identity, data, raw)]


def _target_stopped(raw: dict[str, Any], ctx: SourceContext, name: str) -> list[Event]:
    """target_noanswer and target_fail: one endpoint stopped ringing without answering."""
    key = call_key(raw)
    target, target_raw = target_of(raw)
    code = sip_code(raw, "fail_code")
    if name in ("target_noanswer", "cdr_target_noanswer"):
        reason = "no_answer"
    else:
        reason = _FAIL_REASONS.get(code, "failed") if code is not None else "failed"
    data = {
        **call_data(raw, key, ctx),
        "target": target,
        "reason": reason,
        "hangup_cause": str(code) if code is not None else None,
    }
    identity = (key, name, target_raw, text(raw, "time"), code)
    return [call_event(ctx, name, "call.ringing_ended", when(raw, ctx), key, identity, data, raw)]


def _target_other(raw: dict[str, Any], ctx: SourceContext, name: str) -> list[Event]:
    """target_add and target_ended: kept on the call's subject, but no call.* event.

    target_add is the INVITE going out to an endpoint; target_ringing follows when it rings, so
    a call.ringing here would pop every screen twice, and once for a phone that never rang.
    target_ended is an endpoint's leg ending, most often the endpoint that answered hanging up:
    call.ringing_ended ("stopped ringing without answering") would be false for it, and a
    stateless normaliser cannot tell it from a ringing endpoint being cancelled. Consumers
    learn both from call.answered / call.ended; the push itself stays in the outbox.
    """
    key = call_key(raw)
    target, target_raw = target_of(raw)
    data = {"call_id": key, "target": target}
    identity = (key, name, target_raw, text(raw, "time"))
    return [call_event(ctx, name, "raw.unmapped", when(raw, ctx), key, identity, data, raw)]


def _call_established(raw: dict[str, Any], ctx: SourceContext, name: str) -> list[Event]:
    key = call_key(raw)
    target, target_raw = target_of(raw)
    data = {**call_data(raw, key, ctx), "target": target}
    # A call answered again after a reroute is a second call.answered: target and time differ.
    identity = (key, target_raw, text(raw, "time"))
    return [call_event(ctx, name, "call.answered", when(raw, ctx), key, identity, data, raw)]


def _call_hold(raw: dict[str, Any], ctx: SourceContext, name: str) -> list[Event]:
    key = call_key(raw)
    # PortSIP's hold events name the party that pressed hold (aor) and the other one (peer_aor)
    # rather than caller and callee.
    by = party_number(raw, "aor")
    data = {**call_data(raw, key, ctx), "by": by, "peer": party_number(raw, "peer_aor")}
    type_ = "call.held" if name == "call_hold" else "call.resumed"
    identity = (key, text(raw, "aor"), text(raw, "time"))
    return [call_event(ctx, name, type_, when(raw, ctx), key, identity, data, raw)]


def _call_reroute(raw: dict[str, Any], ctx: SourceContext, name: str) -> list[Event]:
    key = call_key(raw)
    target, target_raw = target_of(raw)
    data = {**call_data(raw, key, ctx), "target": target}
    identity = (key, target_raw, text(raw, "time"))
    return [call_event(ctx, name, "call.transferred", when(raw, ctx), key, identity, data, raw)]


def _call_end(raw: dict[str, Any], ctx: SourceContext, name: str) -> list[Event]:
    """call_ended, call_noanswer, call_fail: the one call.ended of the call."""
    key = call_key(raw)
    code = sip_code(raw, "fail_code")
    disposition: str | None = None
    if name == "call_noanswer":
        disposition = "no_answer"
    elif name == "call_fail":
        disposition = FAIL_DISPOSITIONS.get(code, "failed") if code is not None else "failed"
    # call_ended says nothing of the outcome: the writer fills the disposition from the call's
    # state (answered or not), which out-of-order delivery makes the better judge anyway.
    data = {
        **call_data(raw, key, ctx),
        "disposition": disposition,
        "hangup_cause": str(code) if code is not None else None,
    }
    # One end per call, whichever push says it first: the same id for all three.
    return [call_event(ctx, name, "call.ended", when(raw, ctx), key, (key,), data, raw)]


def _extension_register(raw: dict[str, Any], ctx: SourceContext, name: str) -> list[Event]:
    address = text(raw, "extension") or text(raw, "caller")
    if address is None:
        raise PayloadError("extension", "missing")
    number, _ = parse_address(address)
    if number is None:
        raise PayloadError("extension", f"no extension number in {address!r}")
    contacts = list_of(raw, "registration_contacts")
    removed = list_of(raw, "removed_contacts")
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
    time = when(raw, ctx)
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
    return [_state_event(ctx, name, f"extension/{number}", when(raw, ctx), identity, data, raw)]


def _extension_status(raw: dict[str, Any], ctx: SourceContext, name: str) -> list[Event]:
    """A list of extensions' states (sent on subscribe and on online/offline): one event each."""
    entries = list_of(raw, "status")
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
            time = when(entry, ctx)
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
    entries = list_of(raw, "agent_status")
    if not entries:
        raise PayloadError("agent_status", "missing: expected a list of queue states")
    time = when(raw, ctx)
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
    "call_cdr": call_cdr,
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


def _canonical(value: object) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"))


VENDOR: Final = Vendor(
    name="oncall",
    normalize=normalize,
    ack=Ack(content_type="application/json", body=b'{"status":"ok"}'),
)
