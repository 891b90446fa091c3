"""Coral IRIS IVDX realtime: one STOMP ``MESSAGE`` of the PBX's channel-state stream to events.

The stream is the "Sample web socket source code" of Coral's IRIS IVDX API document (the C#
operator console): a client subscribes to ``/topic/OC_<group>`` and
``/topic/STATE_UPDATE``; every message body is a JSON object with ``uuid`` (one FreeSWITCH
channel, a *leg*), ``name`` and ``number`` (that leg's party), ``state`` (a FreeSWITCH channel
event name), ``topic``, ``subTopic`` and ``talkingToNumber`` (the party the leg is with). Here
``payload.body`` is the message body and ``payload.path`` its ``destination`` header.

How the vendor's own client reads a message decides the mapping. It keys its rows by ``uuid``
(so do we: ``call/<uuid>``, as the HTTP pushes of the same PBX do), shows ``CHANNEL_ANSWER`` as
"Waiting", ``CHANNEL_BRIDGE`` as "Talking", ``CHANNEL_PARK`` "Parked", ``CHANNEL_HOLD`` "Hold",
``CHANNEL_UNHOLD`` "Talking" again, and deletes the row on ``CHANNEL_HANGUP_COMPLETE``. It also
drops a row once ``talkingToNumber`` is someone other than the operator: the number of the
party that took the call. Hence:

- ``CHANNEL_ANSWER`` is FreeSWITCH answering the channel (the IVR or the queue's music): the leg
  exists, no person has answered. Only ``CHANNEL_BRIDGE`` (two parties connected) is
  ``call.answered``, with ``target`` the party it was bridged to (``talkingToNumber``).
- ``CHANNEL_PARK`` is the leg waiting (parked in the queue): evidence the leg exists, nothing
  more the schema has a type for (``data.channel_state`` says it is parked).
- Every mapped message also yields the leg's ``call.initiated`` (one id per leg, as for the HTTP
  popup), so a leg first seen mid-call (a bridge before its answer was delivered, or a stream
  that connected late) still opens with it; the writer keeps the first and drops the others.

There is no direction in a message. A leg the PBX originated (``CHANNEL_ORIGINATE``,
``CHANNEL_OUTGOING``) is outbound: the PBX's own word. A leg parked (``CHANNEL_PARK``: waiting in
a queue) whose own party (``number``) is outside the PBX is an inbound caller, marked
``direction_inferred``, so one that hangs up unbridged is a missed call. Nothing else is
inferred: an outbound B-leg's party is outside too, and its CREATE may come before its OUTGOING.
``from``/``to`` are not set: ``number`` and ``other_party`` say what is known.

The stream carries no time and no event id: the receipt time stands in (the stream is live), and
ids come from (leg, event type, other party). A state seen twice for one leg (on both topics, say)
is one event. Hold and unhold are the exception: hold, unhold, hold again is a real repeat that
no field tells from a copy, and a lost hold is a wrong lamp while a doubled one is harmless (a
level), so each hold/unhold receipt gets its own id, as CooCenter's extension states do.
Pure: no I/O, no clock (the receipt time comes in the context).
"""

from __future__ import annotations

from typing import Any, Final

from bridge.events import Event
from bridge.vendors.base import (
    Fields,
    Payload,
    SourceContext,
    parse_json_object,
    required,
    side,
    text,
    unmapped,
    vendor_event,
)

# FreeSWITCH channel event -> the call.* type it adds to the leg's call.initiated (None: the
# message is only evidence that the leg exists). Names not listed become raw.unmapped.
STATES: Final[dict[str, str | None]] = {
    "CHANNEL_CREATE": None,
    "CHANNEL_ORIGINATE": None,
    "CHANNEL_OUTGOING": None,
    "CHANNEL_PARK": None,
    "CHANNEL_ANSWER": None,  # the IVR or queue picking up, not a person
    # Ringback (180) and early media (183) on the leg: its other party is being rung. Both are
    # one call.ringing of that party (the type, not the state name, is in the identity).
    "CHANNEL_PROGRESS": "call.ringing",
    "CHANNEL_PROGRESS_MEDIA": "call.ringing",
    "CHANNEL_BRIDGE": "call.answered",
    "CHANNEL_HOLD": "call.held",
    "CHANNEL_UNHOLD": "call.resumed",
    # FreeSWITCH sends HANGUP, then HANGUP_COMPLETE, then DESTROY for one leg: one call.ended
    # (same id), whichever of them arrives first.
    "CHANNEL_HANGUP": "call.ended",
    "CHANNEL_HANGUP_COMPLETE": "call.ended",
    "CHANNEL_DESTROY": "call.ended",
}

# States of a leg the PBX placed: an outbound leg, whoever its party is.
_ORIGINATED: Final = frozenset({"CHANNEL_ORIGINATE", "CHANNEL_OUTGOING"})
# Types that name the other party as the target (the party rung, the party who answered).
_TARGETED: Final = frozenset({"call.ringing", "call.answered"})
# Types whose repeats are real (hold, unhold, hold again): each receipt is its own event.
_REPEATING: Final = frozenset({"call.held", "call.resumed"})


def normalize(payload: Payload, ctx: SourceContext) -> list[Event]:
    """One stream message to its events; a channel state with no mapping becomes raw.unmapped."""
    raw = parse_json_object(payload)
    fields = Fields(raw)
    uuid = required(fields, "uuid")
    state = required(fields, "state")
    channel_state = state.upper()
    other = text(fields, "talkingToNumber")
    data: dict[str, Any] = {
        "call_id": uuid,
        "number": text(fields, "number"),
        "other_party": other,
        "name": text(fields, "name"),
        "topic": text(fields, "topic"),
        "sub_topic": text(fields, "subTopic"),
        "channel_state": channel_state,
        "destination": payload.path.strip() or None,
    }
    if channel_state not in STATES:
        return [unmapped(payload, ctx, raw, channel_state)]
    if channel_state in _ORIGINATED:
        # The PBX says it placed this leg: outbound, as the vendor's word, which outranks the
        # inference below (a B-leg's CREATE, with the customer's number, may arrive first).
        data["direction"] = "outbound"
    elif channel_state == "CHANNEL_PARK" and side(data["number"], None, ctx) == "external":
        # Only a caller waits parked in a queue: an outside number parked is an inbound caller.
        # Other states of an outside number's leg prove nothing (an outbound B-leg has one too).
        data["direction"] = "inbound"
        data["direction_inferred"] = True
    subject = f"call/{uuid}"
    # The leg's first evidence, whatever the state: one id per leg (the outbox keeps the first).
    events = [_event(ctx, channel_state, "call.initiated", subject, (uuid,), data, raw)]
    kind = STATES[channel_state]
    if kind is None:
        return events
    extra = {"target": other} if kind in _TARGETED else {}
    identity: tuple[object, ...]
    if kind == "call.ended":
        identity = (uuid,)  # one end per leg; no disposition: the writer knows if it was answered
    elif kind in _REPEATING:
        identity = (uuid, other or "", ctx.received_at.isoformat())
    else:
        identity = (uuid, other or "")
    events.append(_event(ctx, channel_state, kind, subject, identity, {**data, **extra}, raw))
    return events


def _event(
    ctx: SourceContext,
    vendorevent: str,
    type_: str,
    subject: str,
    identity: tuple[object, ...],
    data: dict[str, Any],
    raw: dict[str, Any],
) -> Event:
    # The stream carries no times: the event happened when it arrived.
    return vendor_event(ctx, vendorevent, type_, ctx.received_at, subject, identity, data, raw)
