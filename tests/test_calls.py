"""The call state machine: forward-only, one end, one derived miss."""

from __future__ import annotations

from datetime import timedelta

import msgspec

from bridge import calls
from bridge.events import Event, rfc3339
from tests.conftest import T0, call_event


def run(*events: object) -> list[str]:
    state = None
    emitted: list[str] = []
    for event in events:
        step = calls.advance(state, event)  # type: ignore[arg-type]
        state = step.state
        emitted.extend(e.type for e in step.emit)
    return emitted


def test_answered_inbound_call_is_not_missed() -> None:
    """A call a person answered ends without a call.missed."""
    assert run(
        call_event("call.initiated", direction="inbound"),
        call_event("call.ringing", n=1),
        call_event("call.answered", n=2),
        call_event("call.ended", n=3),
    ) == ["call.initiated", "call.ringing", "call.answered", "call.ended"]


def test_unanswered_inbound_call_derives_missed_once() -> None:
    """An inbound call that ends unanswered gets exactly one call.missed, even with a CDR after."""
    assert run(
        call_event("call.initiated", direction="inbound"),
        call_event("call.ringing", n=1),
        call_event("call.ended", n=2),
        call_event("call.completed", n=3, disposition="no_answer"),
    ) == ["call.initiated", "call.ringing", "call.ended", "call.missed", "call.completed"]


def test_outbound_unanswered_call_is_not_missed() -> None:
    """Only inbound calls can be missed."""
    assert "call.missed" not in run(
        call_event("call.initiated", direction="outbound"), call_event("call.ended", n=1)
    )


def test_late_ringing_after_end_is_dropped() -> None:
    """Out-of-order delivery never moves an ended call backwards."""
    assert run(
        call_event("call.initiated", direction="outbound"),
        call_event("call.ended", n=1),
        call_event("call.ringing", n=2),
        call_event("call.answered", n=3),
    ) == ["call.initiated", "call.ended"]


def test_second_end_is_dropped() -> None:
    """call.ended is emitted once per call."""
    assert run(call_event("call.ended", n=1), call_event("call.ended", n=2)) == ["call.ended"]


def test_second_initiated_is_dropped() -> None:
    """call.initiated is the first evidence only."""
    assert run(call_event("call.ringing", n=1), call_event("call.initiated")) == ["call.ringing"]


def test_completed_without_end_derives_the_end_first() -> None:
    """A CDR for a call whose hangup never came still gives the one call.ended, before it."""
    assert run(
        call_event("call.completed", direction="inbound", disposition="abandoned"),
    ) == ["call.ended", "call.completed", "call.missed"]


def test_ended_gets_disposition_from_state() -> None:
    """A hangup with no disposition is filled from whether a person answered."""
    state = calls.advance(None, call_event("call.answered", n=1)).state
    step = calls.advance(state, call_event("call.ended", n=2))
    assert step.emit[0].data["disposition"] == "answered"


def test_ivr_answered_cdr_then_unbridged_cc_cdr_is_missed() -> None:
    """A CDR saying ANSWERED (the IVR) then a record saying nobody bridged: missed."""
    assert run(
        call_event("call.initiated", direction="inbound"),
        call_event("call.completed", n=1, disposition="answered"),
        call_event("call.completed", n=2, disposition="no_answer", missed_reason="ivr"),
    ) == ["call.initiated", "call.ended", "call.completed", "call.completed", "call.missed"]


def test_derived_ids_are_deterministic() -> None:
    """The derived call.missed has the same id whichever event triggered it."""
    a = calls.advance(None, call_event("call.completed", direction="inbound", n=1))
    b = calls.advance(None, call_event("call.completed", direction="inbound", n=2))
    assert a.emit[-1].type == b.emit[-1].type == "call.missed"
    assert a.emit[-1].id == b.emit[-1].id


def late(kind: str, n: int, seconds: int) -> Event:
    """A call event that happened ``seconds`` after T0."""
    moment = rfc3339(T0 + timedelta(seconds=seconds))
    return msgspec.structs.replace(call_event(kind, n=n), time=moment)


def test_ringing_delivered_after_the_answer_is_dropped() -> None:
    """A ring that happened before the answer but arrived after it never moves the call back."""
    assert run(
        late("call.initiated", 0, 0),
        late("call.answered", 1, 10),
        late("call.ringing", 2, 5),
        late("call.ringing_ended", 3, 6),
    ) == ["call.initiated", "call.answered"]


def test_ringing_after_the_answer_is_kept() -> None:
    """A ring that happens after the answer (a transfer target) is news and is emitted."""
    assert run(
        late("call.initiated", 0, 0),
        late("call.answered", 1, 10),
        late("call.transferred", 2, 20),
        late("call.ringing", 3, 21),
    ) == ["call.initiated", "call.answered", "call.transferred", "call.ringing"]
