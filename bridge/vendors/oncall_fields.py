"""OnCall (PortSIP) fields every push shares: SIP parties, the call key and data, codes, times.

The readers the live events (:mod:`bridge.vendors.oncall`) and the CDRs
(:mod:`bridge.vendors.oncall_cdr`) both use, and the call event they both make. Pure: no I/O,
no clock.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final
from urllib.parse import unquote

from bridge.errors import PayloadError
from bridge.events import Event
from bridge.vendors.base import (
    SourceContext,
    believable,
    epoch,
    infer_direction,
    side,
    text,
    vendor_event,
)


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
FAIL_DISPOSITIONS: Final = {486: "busy", 600: "busy", 487: "cancelled"}


def call_key(raw: dict[str, Any]) -> str:
    """PortSIP's session_id (one per call, across its legs and reroutes), else the Call-ID.

    The OnCall document's sample has no session_id; PortSIP sends it on every call event.
    """
    key = text(raw, "session_id") or text(raw, "call_id")
    if key is None:
        raise PayloadError("call_id", "missing (and no session_id)")
    return key


def call_data(raw: dict[str, Any], key: str, ctx: SourceContext) -> dict[str, Any]:
    """What every call event says of its call: the key, the parties, the direction, the tenant."""
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


def party_number(raw: dict[str, Any], key: str) -> str | None:
    """The number of the SIP party under ``key``, if any."""
    return _party(raw, key)[0]


def target_of(raw: dict[str, Any]) -> tuple[str | None, str | None]:
    """The endpoint an event is about (call_target, else the callee): number and as sent."""
    # cdr_target_* name it "destination", misspelt "destiantion" in PortSIP's own table.
    for key in ("call_target", "destination", "destiantion", "callee"):
        value = text(raw, key)
        if value is not None:
            return parse_address(value)[0], value
    return None, None


def list_of(raw: dict[str, Any], key: str) -> list[Any] | None:
    """The list under ``key`` (``None`` when absent); anything else is a PayloadError."""
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise PayloadError(key, f"expected a list, got {type(value).__name__}")
    return value


def sip_code(raw: dict[str, Any], key: str) -> int | None:
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


def instant(raw: dict[str, Any], key: str) -> datetime | None:
    """Epoch seconds; PortSIP writes ``0`` for "never" (a CDR's answered_time, unanswered)."""
    moment = epoch(raw, key)
    return None if moment is None or moment.timestamp() == 0 else moment


def when(raw: dict[str, Any], ctx: SourceContext) -> datetime:
    """The push's ``time``, or the receipt time when it has none or it cannot be true."""
    return believable(instant(raw, "time"), ctx)


def call_event(
    ctx: SourceContext,
    vendorevent: str,
    type_: str,
    time: datetime,
    key: str,
    identity: tuple[object, ...],
    data: dict[str, Any],
    raw: dict[str, Any],
) -> Event:
    """An event about call ``key`` (its subject ``call/<key>``)."""
    return vendor_event(ctx, vendorevent, type_, time, f"call/{key}", identity, data, raw)
