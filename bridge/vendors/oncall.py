"""OnCall (a cloud PBX built on PortSIP PBX v16): Event URL and CDR URL JSON pushes to events.

The fields are those of vendor-docs/README.md ("OnCall (PortSIP v16 extension events)"); the
OnCall document gives one sample (a ``call_ended``). Parties are SIP URIs
(``sip:108@tenant.domain``): events carry the user part as the number, the URI stays in ``raw``.

PortSIP delivers at least once and out of order, retrying for about a day, so every id is built
from vendor fields only (the call key, the event name, the target, the vendor's ``time``): a
retry yields the same ids and the outbox drops the copies. Pure: no I/O, no clock.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final
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
    parse_json_object,
    seconds,
    span_s,
    text,
    timings,
    unmapped,
    vendor_event,
)

# A vendor time further ahead of the receipt time than this is not believable (a wrong clock).

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


# call_start's direction. in2out is a call that came in from a trunk and was routed back out
# (a forward to a mobile, say): for the business it is a caller from outside that reached its
# number, and if nobody answers it is a missed call, so inbound. The raw payload keeps "in2out".
_DIRECTIONS: Final = {"ext": "internal", "in": "inbound", "in2out": "inbound", "out": "outbound"}

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
    direction = text(raw, "direction")
    data = {
        **_call_data(raw, key),
        "direction": _DIRECTIONS.get(direction.lower()) if direction else None,
        "did": text(raw, "did"),
        "cdr_id": text(raw, "cdr_id"),
        "outbound_caller_id": text(raw, "outbound_caller_id"),
    }
    # One call_start per call: a retry (or any second one) is the same call.initiated.
    return [_event(ctx, name, "call.initiated", _time(raw, ctx), key, (key,), data, raw)]


def _target_ringing(raw: dict[str, Any], ctx: SourceContext, name: str) -> list[Event]:
    key = _call_key(raw)
    target, target_raw = _target(raw)
    data = {**_call_data(raw, key), "target": target}
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
    if name == "target_noanswer":
        reason = "no_answer"
    else:
        reason = _FAIL_REASONS.get(code, "failed") if code is not None else "failed"
    data = {
        **_call_data(raw, key),
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
    data = {**_call_data(raw, key), "target": target}
    # A call answered again after a reroute is a second call.answered: target and time differ.
    identity = (key, target_raw, text(raw, "time"))
    return [_event(ctx, name, "call.answered", _time(raw, ctx), key, identity, data, raw)]


def _call_hold(raw: dict[str, Any], ctx: SourceContext, name: str) -> list[Event]:
    key = _call_key(raw)
    # PortSIP's hold events name the party that pressed hold (aor) and the other one (peer_aor)
    # rather than caller and callee.
    by = _number(raw, "aor")
    data = {**_call_data(raw, key), "by": by, "peer": _number(raw, "peer_aor")}
    type_ = "call.held" if name == "call_hold" else "call.resumed"
    identity = (key, text(raw, "aor"), text(raw, "time"))
    return [_event(ctx, name, type_, _time(raw, ctx), key, identity, data, raw)]


def _call_reroute(raw: dict[str, Any], ctx: SourceContext, name: str) -> list[Event]:
    key = _call_key(raw)
    target, target_raw = _target(raw)
    data = {**_call_data(raw, key), "target": target}
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
        **_call_data(raw, key),
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


# The CDR's call_status. fail is refined by status_code like call_fail's fail_code.
_CDR_STATUSES: Final = {"answered": "answered", "noanswer": "no_answer", "no_answer": "no_answer"}


def _call_cdr(raw: dict[str, Any], ctx: SourceContext, name: str) -> list[Event]:
    key = _call_key(raw)
    started = _instant(raw, "start_time")
    ringing = _instant(raw, "ring_time")
    answered = _instant(raw, "answered_time")
    ended = _instant(raw, "ended_time")
    status = (text(raw, "call_status") or "").lower()
    code = _sip_code(raw, "status_code")
    disposition = _CDR_STATUSES.get(status)
    if status in ("fail", "failed"):
        disposition = _FAIL_DISPOSITIONS.get(code, "failed") if code is not None else "failed"
    ring_s = seconds(raw, "ring_duration")
    talk_s = seconds(raw, "talk_duration")
    direction = text(raw, "direction")
    data = {
        **_call_data(raw, key),
        "direction": _DIRECTIONS.get(direction.lower()) if direction else None,
        "did": text(raw, "did") or text(raw, "did_cid"),
        "cdr_id": text(raw, "cdr_id"),
        "trunk": text(raw, "trunk_name"),
        # answered may be the IVR answering (PortSIP's answered_time is the first answer): for
        # "did a person answer", call_established / call_noanswer / call_fail are the truth,
        # and the writer's call state has them whenever they came before the CDR.
        "disposition": disposition,
        "hangup_cause": text(raw, "ended_reason") or text(raw, "end_reason"),
        "status_code": str(code) if code is not None else None,
        "timings": timings(
            started_at=started,
            answered_at=answered,
            ended_at=ended,
            ring_s=ring_s if ring_s is not None else span_s(ringing, answered or ended),
            talk_s=talk_s if talk_s is not None else span_s(answered, ended),
            total_s=span_s(started, ended),
        ),
        "targets": _targets(raw) or None,
    }
    identity = ("cdr", key, text(raw, "cdr_id"), text(raw, "ended_time"), status)
    time = believable(ended, ctx) if ended else _time(raw, ctx)
    return [_event(ctx, name, "call.completed", time, key, identity, data, raw)]


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
}


def _call_key(raw: dict[str, Any]) -> str:
    """PortSIP's session_id (one per call, across its legs and reroutes), else the Call-ID.

    The OnCall document's sample has no session_id; PortSIP sends it on every call event.
    """
    key = text(raw, "session_id") or text(raw, "call_id")
    if key is None:
        raise PayloadError("call_id", "missing (and no session_id)")
    return key


def _call_data(raw: dict[str, Any], key: str) -> dict[str, Any]:
    caller, caller_name = _party(raw, "caller")
    callee, callee_name = _party(raw, "callee")
    sip_call_id = text(raw, "call_id")
    return {
        "call_id": key,
        "sip_call_id": sip_call_id if sip_call_id != key else None,
        "from": caller,
        "to": callee,
        "from_name": text(raw, "caller_display_name") or caller_name,
        "to_name": text(raw, "callee_display_name") or callee_name,
        "tenant_id": text(raw, "tenant_id"),
        "tenant_name": text(raw, "tenant_name"),
    }


def _party(raw: dict[str, Any], key: str) -> tuple[str | None, str | None]:
    value = text(raw, key)
    return parse_address(value) if value is not None else (None, None)


def _number(raw: dict[str, Any], key: str) -> str | None:
    return _party(raw, key)[0]


def _target(raw: dict[str, Any]) -> tuple[str | None, str | None]:
    """The endpoint an event is about (call_target, else the callee): number and as sent."""
    for key in ("call_target", "callee"):
        value = text(raw, key)
        if value is not None:
            return parse_address(value)[0], value
    return None, None


# Keys a call_targets[] object may name its endpoint by (PortSIP does not document them).
_TARGET_KEYS: Final = ("call_target", "target", "callee", "uri", "number", "extension")


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
