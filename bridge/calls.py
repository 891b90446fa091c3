"""Call correlation: the per-call state machine (pure; the writer stores its state).

States only move forward (initiated < ringing < answered < ended) because vendors deliver out
of order and retry. ``call.ended`` is emitted once per call; after it only ``call.completed``
(the CDR) may still arrive. ``call.missed`` is derived once, from the first evidence that an
inbound call ended with no person answering.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final

import msgspec

from bridge.events import Event, event_id

INITIATED: Final = 0
RINGING: Final = 1
ANSWERED: Final = 2
ENDED: Final = 3

_RANK: Final = {
    "call.initiated": INITIATED,
    "call.ringing": RINGING,
    "call.ringing_ended": RINGING,
    "call.answered": ANSWERED,
    "call.held": ANSWERED,
    "call.resumed": ANSWERED,
    "call.transferred": ANSWERED,
}

# Dispositions that mean no person took the call.
_UNANSWERED: Final = frozenset({"no_answer", "busy", "failed", "cancelled", "abandoned"})

# Normalised fields a derived event copies from the event that triggered it.
_CARRIED: Final = ("call_id", "direction", "from", "to", "did", "queue", "agent")


@dataclass(frozen=True, slots=True)
class CallState:
    """The furthest point a call has reached, as kept in the ``calls`` table."""

    state: int
    answered: bool = False
    direction: str | None = None
    missed: bool = False
    answered_at: str | None = None  # event time of the first answer (RFC 3339)

    @property
    def ended(self) -> bool:
        return self.state >= ENDED


@dataclass(frozen=True, slots=True)
class Step:
    """What one incoming call event does: the new state and the events to commit, in order."""

    state: CallState
    emit: list[Event]


def is_call_event(event: Event) -> bool:
    return event.subject.startswith("call/") and event.type.startswith("call.")


def advance(prior: CallState | None, event: Event) -> Step:
    """Apply one call event to a call's state.

    Events that would move the call backwards (a late ``call.ringing`` after the end, a second
    ``call.initiated`` or ``call.ended``) are not emitted: consumers see a forward-only story.
    """
    data = event.data
    direction = prior.direction if prior and prior.direction else data.get("direction")
    state = prior or CallState(state=INITIATED, direction=direction)
    state = replace(state, direction=direction)
    kind = event.type

    if kind == "call.initiated":
        return Step(state, [] if prior is not None else [event])
    if kind in _RANK:
        if state.ended or _rang_before_answer(state, event):
            return Step(state, [])
        if kind == "call.answered" and not state.answered:
            state = replace(state, answered=True, answered_at=event.time)
        return Step(replace(state, state=max(state.state, _RANK[kind])), [event])
    if kind == "call.ended":
        if state.ended:
            return Step(state, [])
        if "disposition" not in data:
            filled = {**data, "disposition": "answered" if state.answered else "no_answer"}
            event = msgspec.structs.replace(event, data=filled)
        return _end(state, event, [event])
    if kind == "call.missed":
        if state.missed:
            return Step(state, [])
        return Step(replace(state, missed=True), [event])
    if kind == "call.completed":
        emit: list[Event] = []
        if not state.ended:
            emit.append(_derive(event, "call.ended", {"disposition": data.get("disposition")}))
            state = replace(state, state=ENDED)
        emit.append(event)
        return _maybe_missed(state, event, emit)
    return Step(state, [event])


def _rang_before_answer(state: CallState, event: Event) -> bool:
    """A ringing event that happened before the answer but was delivered after it (PortSIP).

    It would move the call back; a ringing that happens after the answer (a transfer target)
    is news and stays.
    """
    if event.type not in ("call.ringing", "call.ringing_ended") or state.answered_at is None:
        return False
    return datetime.fromisoformat(event.time) < datetime.fromisoformat(state.answered_at)


def _end(state: CallState, trigger: Event, emit: list[Event]) -> Step:
    return _maybe_missed(replace(state, state=ENDED), trigger, emit)


def _maybe_missed(state: CallState, trigger: Event, emit: list[Event]) -> Step:
    """Derive ``call.missed`` for an inbound call that ended with no person answering."""
    disposition = trigger.data.get("disposition")
    unanswered = not state.answered and (disposition is None or disposition in _UNANSWERED)
    if state.missed or state.direction != "inbound" or not unanswered:
        return Step(state, emit)
    reason = trigger.data.get("missed_reason") or disposition or "no_answer"
    missed = _derive(trigger, "call.missed", {"missed_reason": reason, "disposition": disposition})
    return Step(replace(state, missed=True), [*emit, missed])


def _derive(trigger: Event, kind: str, extra: dict[str, Any]) -> Event:
    data: dict[str, Any] = {key: trigger.data[key] for key in _CARRIED if key in trigger.data}
    data.update({key: value for key, value in extra.items() if value is not None})
    data["derived_from"] = trigger.id
    return msgspec.structs.replace(
        trigger,
        id=event_id(trigger.source, kind, trigger.subject),
        type=kind,
        data=data,
    )
