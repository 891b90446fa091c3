"""Folding call events into their call's :class:`Record`, and deciding what consumers see.

:func:`fold` merges one event's facts into the record and returns the events to commit (the
event itself, flagged late or folded away, and the derived ``call.ended``, ``call.missed``,
``call.missed_revoked``); :func:`settle` decides a miss whose settle window has passed. The
rules are :mod:`bridge.calls`'s. Pure: no I/O, no clock (``now`` comes in).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from bridge.calls.record import (
    CALL_CENTRE_RECORD,
    INFERRED,
    LIVE,
    RECORD,
    TIERS,
    UNANSWERED,
    Fact,
    Record,
    sortable,
)
from bridge.events import Event, event_id

# A record's authority by its vendorevent; any other record is RECORD.
_RECORD_AUTHORITY: Final = {"cc_cdr": CALL_CENTRE_RECORD}
# Records that are one of several of a call: Asterisk writes a CDR per channel dialled, so one
# channel's NO ANSWER may be followed by another's ANSWERED. Their "nobody answered" waits for
# the settle window instead of deciding at once.
_PARTIAL_RECORDS: Final = frozenset({("coocenter", "cdr")})

# Live events about a call in progress: after the end they are late.
_LIVE: Final = frozenset(
    {
        "call.ringing",
        "call.ringing_ended",
        "call.answered",
        "call.held",
        "call.resumed",
        "call.transferred",
    }
)
_RINGING: Final = frozenset({"call.ringing", "call.ringing_ended"})
# Parties and other plain facts read from any call event's data.
_PLAIN: Final = ("call_id", "from", "to", "did", "queue", "agent", "recording_url")
_FROM_RECORDS: Final = ("hangup_cause", "recording_path", "cdr_id", "missed_reason")


def _plain(time: str) -> str:
    """A Fact's time as events carry it (the inverse of :func:`sortable`)."""
    return time.replace(".000000Z", "Z")


def _earliest(a: Fact | None, b: Fact) -> Fact:
    """The earlier of two pieces of evidence, whatever their authority."""
    if a is None or (b.time, b.id) < (a.time, a.id):
        return b
    return a


class Fold(msgspec.Struct, kw_only=True):
    """What folding one event did: the record after it and the events to commit, in order."""

    record: Record
    emit: list[Event]
    duplicate: bool = False


def is_call_event(event: Event) -> bool:
    return event.subject.startswith("call/") and event.type.startswith("call.")


def fold(
    record: Record | None, event: Event, *, now: float, settle_s: float, stored: bool = False
) -> Fold:
    """Fold one call event into its call's record (``None`` for a call not seen before).

    ``now`` is the wall clock of the commit (the settle window runs from it) and ``settle_s``
    the source's window; neither changes the record's facts, only when a miss is decided.
    ``stored``: the outbox already has an event of this id. A copy commits nothing, but its
    facts are still merged (a no-op for a retransmission): events that share an id on
    purpose (a Coral leg's one ``call.initiated``, whichever state showed it first) then make
    the same record in any order.
    """
    if record is None:
        record = Record(source=event.source, subject=event.subject)
    if stored or event.id in record.ids:
        _merge(record, event)
        return Fold(
            record=record, emit=_decide(record, event, now=now, settle_s=settle_s), duplicate=True
        )
    seen_before = record.seen > 0
    record.seen += 1
    prior_answer = record.answer
    _merge(record, event)

    kind = event.type
    emit: list[Event] = []
    if kind == "call.initiated":
        if record.initiated:
            _folded(record, event)
        else:
            record.initiated = True
            emit.append(_flag_late(event) if seen_before else event)
    elif kind == "call.ended":
        if record.ended:
            _folded(record, event)
        else:
            bisect.insort(record.ids, event.id)  # committed under the call-level id
            emit.append(_end(record, event))
    elif kind == "call.completed":
        if not record.ended:
            emit.append(_end(record, _derive(record, event, "call.ended", {})))
        emit.append(event)
    elif kind in _LIVE:
        late = record.ended or (
            kind in _RINGING
            and prior_answer is not None
            and sortable(event.time) < sortable(prior_answer.time)
        )
        if late:
            record.late += 1
        emit.append(_flag_late(event) if late else event)
    else:
        emit.append(event)
    emit.extend(_decide(record, event, now=now, settle_s=settle_s))
    return Fold(record=record, emit=emit)


def _folded(record: Record, event: Event) -> None:
    record.folded += 1
    bisect.insort(record.ids, event.id)


def settle(record: Record, *, now: float) -> list[Event]:
    """The settle window of a pending miss has passed (``missed_due_at <= now``): decide it."""
    if record.missed_due_at is None or record.missed_due_at > now:
        return []
    record.missed_due_at = None
    if record.answered or record.missed or record.decided or not _missable(record):
        return []
    assert record.end is not None
    return [_missed(record, record.end, "settle_window")]


# -- merging facts ---------------------------------------------------------------------------


def _offer(
    table: dict[str, Fact], key: str, value: Any, authority: int, time: str, id_: str
) -> None:
    """Keep ``value`` for ``key`` if it beats the current one: the higher authority, then the
    earlier time, then the smaller id.

    The rank is compared before a Fact is made: most events of a call repeat what an earlier
    one said, and lose, so this runs for every field of every call event.
    """
    current = table.get(key)
    if current is None or (authority, current.time, current.id) > (
        current.authority,
        time,
        id_,
    ):
        table[key] = Fact(value, authority, time, id_)


def _merge(record: Record, event: Event) -> None:
    data = event.data
    kind = event.type
    authority = LIVE
    if kind == "call.completed":
        authority = _RECORD_AUTHORITY.get(event.vendorevent, RECORD)
        if event.id not in record.records:
            bisect.insort(record.records, event.id)
            if (event.vendor, event.vendorevent) in _PARTIAL_RECORDS:
                bisect.insort(record.partial, event.id)
    time, id_ = sortable(event.time), event.id
    facts = record.facts
    for key in _PLAIN:
        value = data.get(key)
        if value is None:
            continue
        # _offer inlined: this loop runs for every field of every call event.
        current = facts.get(key)
        if current is None or (authority, current.time, current.id) > (
            current.authority,
            time,
            id_,
        ):
            facts[key] = Fact(value, authority, time, id_)
    if authority >= RECORD:
        for key in _FROM_RECORDS:
            value = data.get(key)
            if value is not None:
                _offer(facts, key, value, authority, time, id_)
    elif (cause := data.get("hangup_cause")) is not None and kind == "call.ended":
        _offer(facts, "hangup_cause", cause, LIVE, time, id_)
    direction = data.get("direction")
    if direction is not None:
        given = INFERRED if data.get("direction_inferred") else authority
        _offer(facts, "direction", direction, given, time, id_)
    disposition = data.get("disposition")
    if disposition is None and kind == "call.completed" and data.get("pbx_answered"):
        # The PBX says the channel was answered, which the IVR does too: an answer unless a
        # more authoritative record (a call centre's) says nobody took the call.
        disposition = "answered"
    if disposition is not None and kind in ("call.completed", "call.ended"):
        # Among records of one authority, answered beats unanswered: Asterisk writes a CDR per
        # channel dialled (one NO ANSWER, one ANSWERED), a call centre a cc_cdr per agent.
        rank = authority * TIERS + (disposition == "answered")
        _offer(facts, "disposition", disposition, rank, time, id_)

    target = data.get("target")
    targets = data.get("targets")
    for number in ([target] if target else []) + (targets if isinstance(targets, list) else []):
        if isinstance(number, str) and number not in record.targets:
            bisect.insort(record.targets, number)

    timings = data.get("timings")
    if isinstance(timings, dict):
        for key, value in timings.items():
            _offer(record.timings, key, value, authority, time, id_)
    if kind == "call.initiated":
        _offer(record.timings, "started_at", event.time, LIVE, time, id_)
    elif kind in ("call.ended", "call.completed"):
        # The event's time, not the record's ended_at: a normaliser makes the event's time
        # believable (a PBX clock years off is replaced by the receipt time).
        record.end = _earliest(record.end, Fact(event.vendorevent, authority, time, id_))
        if kind == "call.ended":
            _offer(record.timings, "ended_at", event.time, LIVE, time, id_)

    if kind == "call.answered":
        record.answer = _earliest(record.answer, Fact(target, LIVE, time, id_))
        _offer(record.timings, "answered_at", event.time, LIVE, time, id_)
        if target:
            _offer(facts, "agent", target, LIVE, time, id_)


# -- what consumers see ----------------------------------------------------------------------


def _flag_late(event: Event) -> Event:
    return msgspec.structs.replace(event, data={**event.data, "late": True})


def _end(record: Record, event: Event) -> Event:
    """The call's one ``call.ended``: a call-level id, the disposition once it is known."""
    record.ended = True
    # The record's parties over the event's own: they rank every event's word so far.
    data = {**event.data, **record.parties()}
    if not record.direction_inferred:
        data.pop("direction_inferred", None)
    disposition = record.disposition
    if disposition is not None:
        data["disposition"] = disposition
    return msgspec.structs.replace(
        event, id=event_id(record.source, "call.ended", record.subject), data=data
    )


def _missable(record: Record) -> bool:
    return record.end is not None and record.direction == "inbound"


def _decide(record: Record, trigger: Event, *, now: float, settle_s: float) -> list[Event]:
    """Decide, cancel or revoke the call's miss after a fold.

    The decision follows the facts, so it can be taken back and, when a more authoritative
    record contradicts the evidence that took it back, taken again (a channel CDR's ANSWERED
    revokes a miss; the cc_cdr that says no agent took the call makes it missed again). With
    consistent evidence a call has at most one call.missed.
    """
    if (record.end is None and record.missed_due_at is None) or record.decided:
        return []  # the call goes on (most events), or was decided before the fold
    if record.missed:
        if record.answered or record.direction != "inbound":
            return [_revoked(record, trigger)]
        return []
    if record.answered or not _missable(record):
        record.missed_due_at = None
        return []
    if record.record_disposition in UNANSWERED and record.facts["disposition"].id not in (
        record.partial
    ):
        return [_missed(record, _evidence(trigger), "record")]
    if settle_s <= 0:
        assert record.end is not None
        return [_missed(record, record.end, "settle_window")]
    if record.missed_due_at is None:
        record.missed_due_at = now + settle_s
    return []


def _evidence(event: Event) -> Fact:
    return Fact(event.vendorevent, LIVE, sortable(event.time), event.id)


def _missed(record: Record, because: Fact, decided_by: str) -> Event:
    record.missed_by = decided_by
    record.missed_due_at = None
    record.misses += 1
    reason = record.value("missed_reason") or record.disposition or "no_answer"
    extra = {"missed_reason": reason, "decided_by": decided_by, "derived_from": because.id}
    end_time = record.end.time if record.end is not None else because.time
    event = _make(record, "call.missed", _plain(end_time), str(because.value), extra)
    return _nth(event, record, record.misses)


def _revoked(record: Record, trigger: Event) -> Event:
    record.revokes += 1
    reason = "answered" if record.answered else "not_inbound"
    evidence = record.answer_evidence or trigger.id
    extra = {
        "reason": reason,
        "evidence": evidence,
        "revokes": _nth_id(record, "call.missed", record.misses),
        "derived_from": trigger.id,
    }
    event = _make(record, "call.missed_revoked", trigger.time, trigger.vendorevent, extra)
    return _nth(event, record, record.revokes)


def _nth_id(record: Record, kind: str, n: int) -> str:
    """The id of a call's n-th derived event of a kind: the first has the plain call-level id."""
    if n <= 1:
        return event_id(record.source, kind, record.subject)
    return event_id(record.source, kind, record.subject, n)


def _nth(event: Event, record: Record, n: int) -> Event:
    if n <= 1:
        return event
    return msgspec.structs.replace(event, id=_nth_id(record, event.type, n))


def _derive(record: Record, trigger: Event, kind: str, extra: Mapping[str, Any]) -> Event:
    derived = {**extra, "derived_from": trigger.id}
    return _make(record, kind, trigger.time, trigger.vendorevent, derived, vendor=trigger.vendor)


def _make(
    record: Record,
    kind: str,
    time: str,
    vendorevent: str,
    extra: Mapping[str, Any],
    *,
    vendor: str | None = None,
) -> Event:
    """A derived event: a call-level id, the vendorevent of the event that decided it."""
    return Event(
        id=event_id(record.source, kind, record.subject),
        source=record.source,
        type=kind,
        time=time,
        subject=record.subject,
        vendor=vendor or record.source.split("/")[1],
        vendorevent=vendorevent,
        data={**record.summary(), **extra},
    )
