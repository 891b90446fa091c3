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

The record model (:class:`Record`, :class:`Fact`, the authorities, :func:`public`) is in
:mod:`bridge.calls.record`; folding events into it and deciding what consumers see, in
:mod:`bridge.calls.folding`. Import both from here: ``from bridge import calls``.
"""

from __future__ import annotations

from bridge.calls.folding import Fold, fold, is_call_event, settle
from bridge.calls.record import (
    CALL_CENTRE_RECORD,
    INFERRED,
    LIVE,
    RECORD,
    STATES,
    UNANSWERED,
    Fact,
    Record,
    decode,
    encode,
    public,
    sortable,
)

__all__ = [
    "CALL_CENTRE_RECORD",
    "INFERRED",
    "LIVE",
    "RECORD",
    "STATES",
    "UNANSWERED",
    "Fact",
    "Fold",
    "Record",
    "decode",
    "encode",
    "fold",
    "is_call_event",
    "public",
    "settle",
    "sortable",
]
