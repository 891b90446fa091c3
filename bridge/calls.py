"""The call fold: a call's record is a fold of the facts its events carry (pure; no I/O).

Vendors deliver late, out of order and more than once, and the authoritative record (a CDR, a
``cc_cdr``, a call log) often comes last. So a call is not a ladder decided event by event: each
event adds facts to the call's :class:`Record`, and every fact merges commutatively,
associatively and idempotently (a total order picks the winner), so **the same events in any
order, with any duplicates, give the same record**:

- a party, the direction, the disposition, each timing: the value with the highest authority
  (an authoritative record over a live event, a given direction over an inferred one), then
  the earliest event time, then the smallest event id;
- the targets rung: a set;
- answered: live evidence of a person answering (``call.answered``: a bridge, never the IVR
  picking up) is never taken back; a record that says otherwise is shown as a disagreement.
  Without live evidence, the most authoritative record's disposition decides (a call centre's
  ``cc_cdr`` over the PBX's channel CDR, whose ANSWERED may be the IVR).

What consumers see is decided as facts arrive:

- every vendor event is committed, once, except those a call can have only one of: a second
  ``call.ended`` and a second, differently identified ``call.initiated`` are folded into the
  record (their ids are kept in ``ids``). Live events after the end, and ringing that happened
  before the answer but arrived after it, are committed with ``data.late = true``.
- ``call.ended`` is committed once, from the first end evidence (a hangup, or a CDR whose
  hangup never came), with a call-level id whichever it was, and a ``disposition`` only when
  it is known.
- ``call.missed`` is decided, not guessed: for an inbound call that ended with no evidence of a
  person answering, at once when an authoritative record says nobody answered, else when the
  source's settle window after the end passes with no contrary evidence (``missed_due_at``,
  kept in the calls table so a restart neither loses nor doubles the decision). Evidence that
  arrives after ``call.missed`` went out makes ``call.missed_revoked``; should a more
  authoritative record then contradict that evidence, the call is missed again (a new id).

Derived events carry everything the call has accumulated, not only what triggered them.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from bridge.events import Event, event_id

# Authority of a fact: an inferred direction < a live event < an authoritative record. A call
# centre's own record (Zycoo's cc_cdr, which knows whether an agent took a queue call) outranks
# the PBX's channel CDR, whose ANSWERED may be the IVR picking up.
INFERRED: Final = 0
LIVE: Final = 1
RECORD: Final = 2
CALL_CENTRE_RECORD: Final = 3
_RECORD_AUTHORITY: Final = {"cc_cdr": CALL_CENTRE_RECORD}
# Records that are one of several of a call: Asterisk writes a CDR per channel dialled, so one
# channel's NO ANSWER may be followed by another's ANSWERED. Their "nobody answered" waits for
# the settle window instead of deciding at once.
_PARTIAL_RECORDS: Final = frozenset({("coocenter", "cdr")})

UNANSWERED: Final = frozenset({"no_answer", "busy", "failed", "cancelled", "abandoned"})
# A disposition's rank is authority * _TIERS + 1 if it says answered: see _merge.
_TIERS: Final = 2
# A call's state, in order (the calls table keeps its index).
STATES: Final = ("initiated", "ringing", "answered", "ended")

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
# What derived events and the end copy from the record.
_CARRIED: Final = ("call_id", "direction", "from", "to", "did", "queue", "agent")


class Fact(msgspec.Struct, frozen=True, array_like=True):
    """One candidate value of a fact, with what ranks it against the others."""

    value: Any
    authority: int
    time: str  # the event's time, RFC 3339 with microseconds always (see _sortable)
    id: str  # the event's id: the last tie-break, so the order is total


def sortable(time: str) -> str:
    # rfc3339() writes microseconds only when there are any, and "…:05Z" sorts after
    # "…:05.5Z": with six digits always, the strings sort as the instants do.
    return time if "." in time else f"{time[:-1]}.000000Z"


def _plain(time: str) -> str:
    """A Fact's time as events carry it (the inverse of :func:`_sortable`)."""
    return time.replace(".000000Z", "Z")


def _earliest(a: Fact | None, b: Fact) -> Fact:
    """The earlier of two pieces of evidence, whatever their authority."""
    if a is None or (b.time, b.id) < (a.time, a.id):
        return b
    return a


class Record(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A call as the bridge knows it: the ``calls`` row's ``record`` column."""

    source: str
    subject: str
    facts: dict[str, Fact] = {}
    timings: dict[str, Fact] = {}
    targets: list[str] = []
    answer: Fact | None = None  # the earliest live evidence of a person answering
    end: Fact | None = None  # the earliest evidence of the end (value: its vendorevent)
    records: list[str] = []  # ids of the authoritative records folded in
    partial: list[str] = []  # those of them that are one of several (see _PARTIAL_RECORDS)
    # The vendor events folded in that the outbox does not hold under their own id (a second
    # end, a hangup committed as the call-level call.ended): with the outbox, the dedup set.
    ids: list[str] = []
    seen: int = 0  # vendor events folded in
    seqs: list[int] = []  # the committed events of this call, in commit order
    initiated: bool = False  # a call.initiated was committed
    ended: bool = False  # the call.ended was committed
    missed_by: str | None = None  # how the latest call.missed was decided: record, settle_window
    misses: int = 0  # call.missed committed
    revokes: int = 0  # call.missed_revoked committed
    missed_due_at: float | None = None  # wall clock (epoch s) of the pending settle decision
    late: int = 0
    folded: int = 0
    # Ended under the forward-only state machine (a schema-3 row): whether it was missed was
    # decided then, on facts this record does not have, and is not decided again.
    decided: bool = False

    # -- what the facts say ------------------------------------------------------------

    def value(self, key: str) -> Any:
        fact = self.facts.get(key)
        return None if fact is None else fact.value

    @property
    def direction(self) -> str | None:
        value = self.value("direction")
        return value if isinstance(value, str) else None

    @property
    def direction_inferred(self) -> bool:
        fact = self.facts.get("direction")
        return fact is not None and fact.authority == INFERRED

    @property
    def answered(self) -> bool:
        """A person answered: live evidence (a bridge), or the most authoritative record says so.

        Live evidence is never taken back. A record's word is: Zycoo's channel CDR says ANSWERED
        when the IVR picks up, and its cc_cdr (which outranks it) then says nobody did.
        """
        return self.answer is not None or self.record_disposition == "answered"

    @property
    def answer_evidence(self) -> str | None:
        """The id of the event that shows the answer."""
        if self.answer is not None:
            return self.answer.id
        fact = self.facts.get("disposition")
        return fact.id if fact is not None and self.answered else None

    @property
    def record_disposition(self) -> str | None:
        """What the most authoritative record says, if any record said anything."""
        fact = self.facts.get("disposition")
        if fact is None or fact.authority < RECORD * _TIERS:
            return None
        return str(fact.value)

    @property
    def disposition(self) -> str | None:
        """The call's outcome: answered if anyone answered, else the best known, else None."""
        if self.answered:
            return "answered"
        value = self.value("disposition")
        return str(value) if value is not None and value != "answered" else None

    @property
    def missed(self) -> bool:
        """A call.missed stands (none went out, or the last one was revoked: False)."""
        return self.misses > self.revokes

    @property
    def revoked(self) -> bool:
        return self.revokes > 0 and not self.missed

    @property
    def state(self) -> str:
        if self.end is not None:
            return "ended"
        if self.answered:
            return "answered"
        return "ringing" if self.targets else "initiated"

    def disagreements(self) -> list[str]:
        """Where a record and the live evidence disagree (the record's word is shown, not used)."""
        said = self.record_disposition
        if said in UNANSWERED and self.answer is not None:
            return [f"a record says {said}, but event {self.answer.id} shows a person answered"]
        return []

    def parties(self) -> dict[str, Any]:
        """The call's known parties and direction (what an end copies when it lacks them)."""
        facts = self.facts
        data = {key: fact.value for key in _CARRIED if (fact := facts.get(key)) is not None}
        if self.direction_inferred:
            data["direction_inferred"] = True
        return data

    def summary(self) -> dict[str, Any]:
        """The normalised fields a derived event carries: everything the call accumulated."""
        data = self.parties()
        if self.targets:
            data["targets"] = list(self.targets)
        disposition = self.disposition
        if disposition is not None:
            data["disposition"] = disposition
        if self.timings:
            data["timings"] = {key: fact.value for key, fact in sorted(self.timings.items())}
        return data


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
        rank = authority * _TIERS + (disposition == "answered")
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


# -- the record as the calls API shows it ----------------------------------------------------


def public(record: Record, *, first_seq: int | None, last_seq: int | None) -> dict[str, Any]:
    """A call record for ``GET /v1/calls``: what a CRM's call log and missed-call list read."""
    _, vendor, name = record.source.split("/", 2)
    body: dict[str, Any] = {
        "source": name,
        "vendor": vendor,
        "subject": record.subject,
        "call_key": record.subject.removeprefix("call/"),
        "state": record.state,
        **record.summary(),
        "answered": record.answered,
        "missed": record.missed,
        "missed_revoked": record.revoked,
        "missed_decided_by": record.missed_by,
        "missed_pending": record.missed_due_at is not None,
        "completed": bool(record.records),
        "hangup_cause": record.value("hangup_cause"),
        "recording_url": record.value("recording_url"),
        "recording_path": record.value("recording_path"),
        "seqs": list(record.seqs),
        "first_seq": first_seq,
        "last_seq": last_seq,
        "late_events": record.late,
        "folded_events": record.folded,
        "disagreements": record.disagreements() or None,
    }
    return {key: value for key, value in body.items() if value is not None}


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Record)


def encode(record: Record) -> bytes:
    return _encoder.encode(record)


def decode(body: bytes) -> Record:
    return _decoder.decode(body)
