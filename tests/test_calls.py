"""The call fold: facts merge in any order; one end; a miss decided, not guessed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import msgspec

from bridge import calls
from bridge.events import Event, rfc3339
from tests.callplay import Player, types
from tests.conftest import T0, call_event


def at(kind: str, n: int, seconds: int, **data: Any) -> Event:
    """A call event that happened ``seconds`` after T0."""
    moment = rfc3339(T0 + timedelta(seconds=seconds))
    return msgspec.structs.replace(call_event(kind, n=n, **data), time=moment)


def run(*events: Event, settle_s: float = 10.0, settle: bool = True) -> list[str]:
    player = Player(settle_s=settle_s)
    player.play(events, now=0.0)
    if settle:
        player.settle(now=1e12)
    return types(player.committed)


def record_of(*events: Event, settle_s: float = 10.0) -> calls.Record:
    player = Player(settle_s=settle_s)
    player.play(events, now=0.0)
    (record,) = player.records.values()
    return record


INBOUND = dict(direction="inbound")


def test_answered_inbound_call_is_not_missed() -> None:
    """A call a person answered ends without a call.missed."""
    assert run(
        at("call.initiated", 0, 0, **INBOUND),
        at("call.ringing", 1, 1, target="108"),
        at("call.answered", 2, 5, target="108"),
        at("call.ended", 3, 60),
    ) == ["call.initiated", "call.ringing", "call.answered", "call.ended"]


def test_unanswered_inbound_call_is_missed_after_the_settle_window() -> None:
    """A hangup alone decides nothing at once; the settle window passing does, once."""
    events = (at("call.initiated", 0, 0, **INBOUND), at("call.ended", 1, 20))
    assert run(*events, settle=False) == ["call.initiated", "call.ended"]
    assert run(*events) == ["call.initiated", "call.ended", "call.missed"]


def test_zero_settle_window_decides_at_the_end() -> None:
    """missed_settle_s = 0: the miss is said with the end."""
    assert run(
        at("call.initiated", 0, 0, **INBOUND), at("call.ended", 1, 20), settle_s=0, settle=False
    ) == ["call.initiated", "call.ended", "call.missed"]


def test_authoritative_unanswered_record_decides_at_once() -> None:
    """A CDR that says nobody answered is the decision: no window to wait for."""
    assert run(
        at("call.initiated", 0, 0, **INBOUND),
        at("call.ended", 1, 20),
        at("call.completed", 2, 20, disposition="no_answer"),
        settle=False,
    ) == ["call.initiated", "call.ended", "call.completed", "call.missed"]


def test_answer_delivered_after_the_end_cancels_the_pending_miss() -> None:
    """PortSIP order: call_ended before call_established. The answer is kept, flagged late."""
    player = Player()
    player.play([at("call.initiated", 0, 0, **INBOUND), at("call.ended", 2, 60)], now=0.0)
    late = player.play([at("call.answered", 1, 5, target="108")], now=1.0)
    assert [(e.type, e.data.get("late")) for e in late] == [("call.answered", True)]
    assert player.settle(now=1e12) == []
    (record,) = player.records.values()
    assert record.answered
    assert record.missed_due_at is None


def test_answer_after_the_miss_went_out_revokes_it() -> None:
    """Evidence past the window: call.missed_revoked names the evidence and the miss."""
    player = Player()
    player.play([at("call.initiated", 0, 0, **INBOUND), at("call.ended", 2, 60)], now=0.0)
    (missed,) = player.settle(now=11.0)
    answer = at("call.answered", 1, 5, target="108")
    out = player.play([answer], now=20.0)
    assert types(out) == ["call.answered", "call.missed_revoked"]
    revoked = out[1]
    assert revoked.data["evidence"] == answer.id
    assert revoked.data["revokes"] == missed.id
    assert revoked.data["agent"] == "108"


def test_outbound_unanswered_call_is_not_missed() -> None:
    """Only inbound calls can be missed."""
    assert "call.missed" not in run(
        at("call.initiated", 0, 0, direction="outbound"), at("call.ended", 1, 10)
    )


def test_unknown_direction_is_never_missed() -> None:
    """No direction known: nothing to say (the normalisers infer one where they can)."""
    assert "call.missed" not in run(at("call.initiated", 0, 0), at("call.ended", 1, 10))


def test_late_ringing_after_end_is_committed_flagged_late() -> None:
    """Nothing vanishes: a ringing after the end is kept, with data.late."""
    player = Player()
    out = player.play(
        [
            at("call.initiated", 0, 0, direction="outbound"),
            at("call.ended", 1, 10),
            at("call.ringing", 2, 1, target="0901"),
        ]
    )
    assert types(out) == ["call.initiated", "call.ended", "call.ringing"]
    assert out[2].data["late"] is True
    assert "late" not in out[0].data
    assert "late" not in out[1].data


def test_second_end_is_folded_not_committed() -> None:
    """call.ended is committed once per call; a second end only adds its facts."""
    player = Player()
    out = player.play([at("call.ended", 1, 10), at("call.ended", 2, 11, hangup_cause="16")])
    assert types(out) == ["call.ended"]
    (record,) = player.records.values()
    assert record.folded == 1
    assert record.value("hangup_cause") == "16"


def test_late_initiated_is_committed_flagged_and_enriches() -> None:
    """A late call_start (DID, cdr_id) is committed with data.late and its facts are kept."""
    player = Player()
    out = player.play(
        [at("call.ringing", 1, 2, target="108"), at("call.initiated", 0, 0, did="0287")]
    )
    assert types(out) == ["call.ringing", "call.initiated"]
    assert out[1].data["late"] is True
    (record,) = player.records.values()
    assert record.value("did") == "0287"


def test_completed_without_end_derives_the_end_first() -> None:
    """A CDR for a call whose hangup never came still gives the one call.ended, before it."""
    assert run(
        at("call.completed", 0, 30, direction="inbound", disposition="abandoned"),
        settle=False,
    ) == ["call.ended", "call.completed", "call.missed"]


def test_end_id_is_the_same_from_a_hangup_or_a_cdr() -> None:
    """One call.ended id per call, whichever evidence came first."""
    hangup, cdr = at("call.ended", 1, 60), at("call.completed", 2, 60, disposition="answered")
    first = Player()
    first.play([hangup, cdr])
    second = Player()
    second.play([cdr, hangup])
    ends = [[e for e in p.committed if e.type == "call.ended"] for p in (first, second)]
    assert [len(e) for e in ends] == [1, 1]
    assert ends[0][0].id == ends[1][0].id


def test_end_carries_a_disposition_only_when_known() -> None:
    """A hangup with nothing known gets no disposition; after an answer, answered."""
    alone = Player().play([at("call.ended", 1, 10)])
    assert "disposition" not in alone[0].data
    answered = Player().play([at("call.answered", 1, 5), at("call.ended", 2, 10)])
    assert answered[1].data["disposition"] == "answered"


def test_ivr_answered_cdr_then_unbridged_call_centre_record_is_missed() -> None:
    """Zycoo: the channel CDR says ANSWERED (the IVR); the cc_cdr, which outranks it, says no."""
    cdr = at("call.completed", 1, 30, disposition="answered")
    cc_cdr = msgspec.structs.replace(
        at("call.completed", 2, 30, disposition="no_answer", missed_reason="no_agent_answer"),
        vendorevent="cc_cdr",
    )
    out = run(at("call.initiated", 0, 0, **INBOUND), cdr, cc_cdr, settle=False)
    assert out == [
        "call.initiated",
        "call.ended",
        "call.completed",
        "call.completed",
        "call.missed",
    ]
    assert not record_of(at("call.initiated", 0, 0, **INBOUND), cc_cdr, cdr).answered


def test_live_answer_outranks_a_record_and_is_shown_as_a_disagreement() -> None:
    """A bridge happened: a CDR saying no_answer does not take it back, and says so."""
    record = record_of(
        at("call.initiated", 0, 0, **INBOUND),
        at("call.answered", 1, 5, target="108"),
        at("call.completed", 2, 60, disposition="no_answer"),
    )
    assert record.answered
    assert not record.missed
    assert record.disagreements()


def test_derived_events_carry_what_the_call_accumulated() -> None:
    """call.missed has the DID and direction an earlier event carried, and the targets rung."""
    player = Player(settle_s=0)
    out = player.play(
        [
            at("call.initiated", 0, 0, did="0287", **INBOUND),
            at("call.ringing", 1, 1, target="108", queue="sales"),
            at("call.ended", 2, 30),
        ]
    )
    missed = out[-1]
    assert missed.type == "call.missed"
    assert missed.data["did"] == "0287"
    assert missed.data["direction"] == "inbound"
    assert missed.data["queue"] == "sales"
    assert missed.data["targets"] == ["108"]
    assert missed.data["decided_by"] == "settle_window"


def test_an_inferred_direction_loses_to_a_given_one() -> None:
    """A vendor's own direction beats the bridge's inference, whatever the order."""
    inferred = at("call.ringing", 1, 1, direction="internal", direction_inferred=True)
    given = at("call.completed", 2, 30, direction="inbound")
    for order in ((inferred, given), (given, inferred)):
        record = record_of(*order)
        assert record.direction == "inbound"
        assert not record.direction_inferred


def test_a_ringing_that_happened_before_the_answer_is_flagged_late() -> None:
    """A ring that happened before the answer but arrived after it is kept, flagged late."""
    out = Player().play(
        [at("call.initiated", 0, 0), at("call.answered", 1, 10), at("call.ringing", 2, 5)]
    )
    assert out[2].data["late"] is True


def test_a_ringing_after_the_answer_is_news() -> None:
    """A ring that happens after the answer (a transfer target) is not late."""
    out = Player().play(
        [at("call.initiated", 0, 0), at("call.answered", 1, 10), at("call.ringing", 3, 21)]
    )
    assert "late" not in out[2].data


def test_retransmission_changes_nothing() -> None:
    """Folding the same event again is a duplicate: no event, no change to the record."""
    event = at("call.ended", 1, 10, hangup_cause="16")
    record = calls.fold(None, event, now=0.0, settle_s=10.0).record
    before = calls.encode(record)
    step = calls.fold(record, event, now=5.0, settle_s=10.0)
    assert step.duplicate
    assert step.emit == []
    assert calls.encode(step.record) == before


def test_settle_before_the_due_time_decides_nothing() -> None:
    """The window is a wait: settle() before it passes leaves the decision pending."""
    record = record_of(at("call.initiated", 0, 0, **INBOUND), at("call.ended", 1, 10))
    assert record.missed_due_at == 10.0
    assert calls.settle(record, now=9.9) == []
    assert record.missed_due_at == 10.0
    assert types(calls.settle(record, now=10.0)) == ["call.missed"]


def test_record_round_trips_through_json() -> None:
    """What the calls table stores decodes to the same record."""
    record = record_of(
        at("call.initiated", 0, 0, did="0287", **INBOUND),
        at("call.answered", 1, 5, target="108"),
        at("call.completed", 2, 60, disposition="answered", timings={"talk_s": 55}),
    )
    assert calls.decode(calls.encode(record)) == record
