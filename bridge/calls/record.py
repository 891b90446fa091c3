"""A call's record: the facts its events carry, each ranked by its authority (pure; no I/O).

:class:`Record` is the ``calls`` row's ``record`` column (msgspec JSON, :func:`encode` and
:func:`decode`); :class:`Fact` one candidate value with what ranks it; :func:`public` the record
as ``GET /v1/calls`` shows it. How events are folded into it: :mod:`bridge.calls.folding`.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

# Authority of a fact: an inferred direction < a live event < an authoritative record. A call
# centre's own record (Zycoo's cc_cdr, which knows whether an agent took a queue call) outranks
# the PBX's channel CDR, whose ANSWERED may be the IVR picking up.
INFERRED: Final = 0
LIVE: Final = 1
RECORD: Final = 2
CALL_CENTRE_RECORD: Final = 3

UNANSWERED: Final = frozenset({"no_answer", "busy", "failed", "cancelled", "abandoned"})
# A disposition's rank is authority * TIERS + 1 if it says answered: see folding's _merge.
TIERS: Final = 2
# A call's state, in order (the calls table keeps its index).
STATES: Final = ("initiated", "ringing", "answered", "ended")
# What derived events and the end copy from the record.
_CARRIED: Final = ("call_id", "direction", "from", "to", "did", "queue", "agent")


class Fact(msgspec.Struct, frozen=True, array_like=True):
    """One candidate value of a fact, with what ranks it against the others."""

    value: Any
    authority: int
    time: str  # the event's time, RFC 3339 with microseconds always (see sortable)
    id: str  # the event's id: the last tie-break, so the order is total


def sortable(time: str) -> str:
    # rfc3339() writes microseconds only when there are any, and "…:05Z" sorts after
    # "…:05.5Z": with six digits always, the strings sort as the instants do.
    return time if "." in time else f"{time[:-1]}.000000Z"


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
    partial: list[str] = []  # those of them that are one of several (see folding.py)
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
        if fact is None or fact.authority < RECORD * TIERS:
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
