"""The Coral realtime (STOMP channel-state) normaliser: the fixtures are its specification."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jsonschema
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.errors import PayloadError, UnsupportedMediaError
from bridge.events import TYPES, Event
from bridge.vendors.base import Payload, SourceContext
from bridge.vendors.coral_realtime import STATES, normalize
from tests.callplay import Player
from tests.fixtureutil import context_for, load_fixtures, payload_for

FIXTURES = load_fixtures("coral_realtime")
SCHEMA = json.loads(
    (Path(__file__).parent.parent / "bridge" / "schema" / "event.schema.json").read_text()
)
RECEIVED = datetime(2017, 12, 4, 6, 10, tzinfo=UTC)
LEG = "5f0c2a8e-6b1d-4c44-9d0e-1a2b3c4d5e6f"
MESSAGE: dict[str, Any] = {
    "uuid": LEG,
    "name": "Customer",
    "number": "09891612004",
    "state": "CHANNEL_BRIDGE",
    "topic": "OC_778",
    "subTopic": "",
    "talkingToNumber": "9001",
}


def ctx(received_at: datetime = RECEIVED) -> SourceContext:
    return SourceContext(name="hq", vendor="coral", tz=ZoneInfo("UTC"), received_at=received_at)


def run(
    body: Any, path: str = "/topic/OC_778", context: SourceContext | None = None
) -> list[Event]:
    payload = Payload(body=json.dumps(body, ensure_ascii=False).encode(), path=path)
    return normalize(payload, context or ctx())


def state(channel_state: str, /, **changes: Any) -> dict[str, Any]:
    return {**MESSAGE, "state": channel_state, **changes}


def story(*bodies: dict[str, Any]) -> list[Event]:
    """What the outbox commits for these messages, received a second apart, in this order."""
    player = Player()
    for n, body in enumerate(bodies):
        player.play(run(body, context=ctx(RECEIVED + timedelta(seconds=n))), now=float(n))
    player.settle(now=1e12)
    return player.committed


def types(events: list[Event]) -> list[str]:
    return [event.type for event in events]


@pytest.mark.parametrize(("case", "fixture"), FIXTURES, ids=[case for case, _ in FIXTURES])
def test_fixture(case: str, fixture: dict[str, Any]) -> None:
    """Each message normalises to exactly the events its fixture specifies."""
    events = normalize(payload_for(fixture), context_for(fixture))
    assert msgspec.to_builtins(events) == fixture["events"]


@pytest.mark.parametrize(("case", "fixture"), FIXTURES, ids=[case for case, _ in FIXTURES])
def test_fixture_events_match_the_json_schema(case: str, fixture: dict[str, Any]) -> None:
    """Every fixture event validates against the published event schema."""
    for event in fixture["events"]:
        jsonschema.validate(event, SCHEMA)


def test_fixtures_cover_every_mapped_state_and_an_unmapped_one() -> None:
    """There is a fixture for each channel state with a mapping, and one without."""
    names = {e["vendorevent"] for _, f in FIXTURES for e in f["events"]}
    assert names >= set(STATES)
    assert "raw.unmapped" in {e["type"] for _, f in FIXTURES for e in f["events"]}


def test_channel_answer_is_not_a_person_answering() -> None:
    """CHANNEL_ANSWER (the IVR or queue picking up) only says the leg exists."""
    assert types(run(state("CHANNEL_ANSWER"))) == ["call.initiated"]


def test_channel_bridge_is_answered_by_the_talking_to_party() -> None:
    """CHANNEL_BRIDGE is call.answered, its target the party the leg is bridged to."""
    initiated, answered = run(state("CHANNEL_BRIDGE"))
    assert (initiated.type, answered.type) == ("call.initiated", "call.answered")
    assert (answered.data["target"], answered.data["number"]) == ("9001", "09891612004")


def test_full_leg_lifecycle_is_a_forward_story() -> None:
    """PARK, ANSWER, BRIDGE, HOLD, UNHOLD, HANGUP_COMPLETE: one initiated, one answer, one end."""
    names = ("PARK", "ANSWER", "BRIDGE", "HOLD", "UNHOLD", "HANGUP_COMPLETE")
    events = story(*(state(f"CHANNEL_{name}") for name in names))
    assert types(events) == [
        "call.initiated",
        "call.answered",
        "call.held",
        "call.resumed",
        "call.ended",
    ]
    assert events[0].vendorevent == "CHANNEL_PARK"
    assert events[-1].data["disposition"] == "answered"


def test_caller_abandoned_while_parked_is_missed() -> None:
    """An outside caller's leg that hangs up while parked is a missed call (after the window)."""
    events = story(state("CHANNEL_PARK"), state("CHANNEL_ANSWER"), state("CHANNEL_HANGUP_COMPLETE"))
    assert types(events) == ["call.initiated", "call.ended", "call.missed"]
    assert "disposition" not in events[1].data  # nothing says how it ended: not invented
    assert events[2].data["direction"] == "inbound"
    assert events[2].data["decided_by"] == "settle_window"


def test_an_operator_leg_that_ends_unbridged_is_not_missed() -> None:
    """An extension's own leg has no direction to infer: nothing is said missed."""
    operator = {"number": "9001", "talkingToNumber": ""}
    events = story(state("CHANNEL_CREATE", **operator), state("CHANNEL_HANGUP", **operator))
    assert types(events) == ["call.initiated", "call.ended"]


def test_bridge_delivered_before_answer_still_opens_with_one_initiated() -> None:
    """Out of order (BRIDGE, then ANSWER, then PARK), the call opens once and is answered once."""
    events = story(state("CHANNEL_BRIDGE"), state("CHANNEL_ANSWER"), state("CHANNEL_PARK"))
    assert types(events) == ["call.initiated", "call.answered"]


def test_states_after_the_hangup_are_kept_flagged_late() -> None:
    """A bridge or a hold delivered after the leg ended is kept with data.late; a late bridge
    is still an answer, so the leg is not missed."""
    events = story(state("CHANNEL_HANGUP_COMPLETE"), state("CHANNEL_BRIDGE"), state("CHANNEL_HOLD"))
    assert types(events) == ["call.initiated", "call.ended", "call.answered", "call.held"]
    assert [e.data.get("late") for e in events] == [None, None, True, True]


@pytest.mark.parametrize("name", sorted(STATES))
def test_the_same_message_twice_yields_the_same_ids(name: str) -> None:
    """A message received twice (at the same moment) makes the same event ids."""
    assert [e.id for e in run(state(name))] == [e.id for e in run(state(name))]


@pytest.mark.parametrize("name", sorted(set(STATES) - {"CHANNEL_HOLD", "CHANNEL_UNHOLD"}))
def test_a_state_seen_again_on_the_other_topic_is_the_same_event(name: str) -> None:
    """The same state of a leg on STATE_UPDATE a moment later has the same ids as on OC_778."""
    later = ctx(RECEIVED + timedelta(seconds=1))
    again = run(state(name, topic="STATE_UPDATE"), "/topic/STATE_UPDATE", later)
    assert [e.id for e in again] == [e.id for e in run(state(name))]


@pytest.mark.parametrize("name", ["CHANNEL_HOLD", "CHANNEL_UNHOLD"])
def test_hold_and_unhold_receipts_get_their_own_ids(name: str) -> None:
    """A hold (or unhold) received again later is a new event: hold, unhold, hold is real."""
    _, first = run(state(name))
    _, later = run(state(name), context=ctx(RECEIVED + timedelta(seconds=30)))
    assert first.id != later.id


def test_hold_unhold_hold_again_keeps_every_change() -> None:
    """Two hold/unhold cycles on one leg all reach the consumer, in order."""
    hold, unhold = state("CHANNEL_HOLD"), state("CHANNEL_UNHOLD")
    events = story(state("CHANNEL_BRIDGE"), hold, unhold, hold, unhold)
    assert types(events)[2:] == ["call.held", "call.resumed", "call.held", "call.resumed"]


def test_progress_and_early_media_are_one_ringing() -> None:
    """CHANNEL_PROGRESS then CHANNEL_PROGRESS_MEDIA ring the same party once."""
    events = story(state("CHANNEL_PROGRESS"), state("CHANNEL_PROGRESS_MEDIA"))
    assert types(events) == ["call.initiated", "call.ringing"]
    assert events[1].data["target"] == "9001"


def test_hangup_hangup_complete_and_destroy_end_the_leg_once() -> None:
    """FreeSWITCH's three end-of-leg events make one call.ended."""
    names = ("CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE", "CHANNEL_DESTROY")
    ended = [e for e in story(*(state(name) for name in names)) if e.type == "call.ended"]
    assert len(ended) == 1


def test_a_bridge_to_another_party_is_a_new_answer() -> None:
    """A leg bridged to 9001 and later to 9002 (a transfer) keeps both bridges."""
    events = story(state("CHANNEL_BRIDGE"), state("CHANNEL_BRIDGE", talkingToNumber="9002"))
    assert [e.data.get("target") for e in events] == [None, "9001", "9002"]


def test_an_outside_callers_parked_leg_is_inbound_inferred_and_from_to_are_not_invented() -> None:
    """The message has no direction: an outside number parked is an inbound caller (inferred)."""
    for event in run(state("CHANNEL_PARK")):
        assert (event.data["direction"], event.data["direction_inferred"]) == ("inbound", True)
        assert not {"from", "to"} & set(event.data)


@pytest.mark.parametrize("name", ["CHANNEL_CREATE", "CHANNEL_BRIDGE", "CHANNEL_PROGRESS"])
def test_an_outside_number_alone_says_no_direction(name: str) -> None:
    """An outbound B-leg's party is outside too: only a park makes an outside leg inbound."""
    for event in run(state(name)):
        assert "direction" not in event.data


@pytest.mark.parametrize("name", ["CHANNEL_ORIGINATE", "CHANNEL_OUTGOING"])
def test_a_leg_the_pbx_placed_is_outbound(name: str) -> None:
    """A leg the PBX originated is outbound whoever its party is, as the PBX's word."""
    (event,) = run(state(name))
    assert event.data["direction"] == "outbound"
    assert "direction_inferred" not in event.data


def test_an_extensions_leg_gets_no_direction() -> None:
    """An extension's leg may be an agent's leg of an inbound call: no direction is guessed."""
    for event in run(state("CHANNEL_BRIDGE", number="9001", talkingToNumber="09891612004")):
        assert "direction" not in event.data


def test_the_receipt_time_is_the_event_time() -> None:
    """The stream carries no time: every event is stamped with its receipt time."""
    assert {e.time for e in run(state("CHANNEL_BRIDGE"))} == {"2017-12-04T06:10:00Z"}


def test_keys_state_case_and_whitespace_are_tolerated() -> None:
    """Keys in any case, a lower-case state and padded ids read like the tidy message."""
    messy = {
        "UUID": f"  {LEG}\t",
        "State": " channel_bridge ",
        "TALKINGTONUMBER": " 9001",
        "Number": 9891612004,
    }
    events = run(messy)
    assert [e.id for e in events] == [e.id for e in run(MESSAGE)]
    assert (events[1].subject, events[1].data["number"]) == (f"call/{LEG}", "9891612004")


@pytest.mark.parametrize("name", ["CHANNEL_EXECUTE", "CHANNEL_UNBRIDGE", "RINGING", "bridge"])
def test_unknown_state_is_kept_unmapped(name: str) -> None:
    """A channel state with no mapping is raw.unmapped with the message, never dropped."""
    (event,) = run(state(name))
    assert (event.type, event.vendorevent, event.subject) == ("raw.unmapped", name.upper(), "pbx")
    assert event.data == {"raw": state(name), "path": "/topic/OC_778"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({k: v for k, v in MESSAGE.items() if k != "uuid"}, "uuid"),
        (state("CHANNEL_BRIDGE", uuid=None), "uuid"),
        (state("CHANNEL_BRIDGE", uuid="  "), "uuid"),
        (state("CHANNEL_BRIDGE", uuid=[LEG]), "uuid"),
        ({k: v for k, v in MESSAGE.items() if k != "state"}, "state"),
        (state(""), "state"),
        (state("CHANNEL_BRIDGE", state={"name": "CHANNEL_BRIDGE"}), "state"),
        (state("CHANNEL_BRIDGE", state=True), "state"),
        (state("CHANNEL_BRIDGE", name={"first": "A"}), "name"),
        (state("CHANNEL_BRIDGE", number=[9001]), "number"),
        (state("CHANNEL_BRIDGE", talkingToNumber=False), "talkingToNumber"),
        (state("CHANNEL_EXECUTE", subTopic={}), "subTopic"),
        (state("CHANNEL_EXECUTE", topic=["OC_778"]), "topic"),
    ],
)
def test_malformed_message_names_the_field(body: dict[str, Any], field: str) -> None:
    """A missing, empty or mistyped field is a PayloadError that names it."""
    with pytest.raises(PayloadError) as caught:
        run(body)
    assert caught.value.field == field


def test_body_that_is_not_json_is_refused() -> None:
    """A body that is not JSON is an UnsupportedMediaError for the whole body."""
    with pytest.raises(UnsupportedMediaError) as caught:
        normalize(Payload(body=b"CHANNEL_BRIDGE", path="/topic/OC_778"), ctx())
    assert caught.value.field == ""


@pytest.mark.parametrize(
    "body",
    [
        b'{"a":' * 5000 + b"1" + b"}" * 5000,  # nested past any vendor's (and msgspec's) depth
        b'{"uuid": "\xff\xfe", "state": "CHANNEL_BRIDGE"}',  # not UTF-8
    ],
    ids=["nested-5000-deep", "not-utf-8"],
)
def test_body_that_cannot_be_read_as_json_is_refused_not_a_crash(body: bytes) -> None:
    """JSON too deep to read, or bytes that are not UTF-8: an UnsupportedMediaError."""
    with pytest.raises(UnsupportedMediaError):
        normalize(Payload(body=body, path="/topic/OC_778"), ctx())


@pytest.mark.parametrize("body", [[MESSAGE], "CHANNEL_BRIDGE", 7, None])
def test_body_that_is_not_an_object_is_refused(body: Any) -> None:
    """JSON that is not an object is a PayloadError for the whole body."""
    with pytest.raises(PayloadError, match="JSON object") as caught:
        run(body)
    assert caught.value.field == ""


_KEYS = ["uuid", "name", "number", "state", "topic", "subTopic", "talkingToNumber"]
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
_states = st.sampled_from([*STATES, "CHANNEL_EXECUTE", "channel_bridge", " ", ""])
_value = _states | st.sampled_from([LEG, " 9001 ", "OC_778", "STATE_UPDATE"]) | _json
_key = st.sampled_from(_KEYS).flatmap(lambda k: st.sampled_from([k, k.lower(), k.upper()]))


@st.composite
def _message(draw: st.DrawFn) -> dict[str, Any]:
    """The documented message with a random state and some values replaced, dropped or added."""
    body = state(draw(_states))
    for key in draw(st.lists(st.sampled_from(_KEYS), unique=True, max_size=4)):
        if draw(st.booleans()):
            del body[key]
        else:
            body[key] = draw(_value)
    body.update(draw(st.dictionaries(_key | st.text(max_size=4), _value, max_size=3)))
    return body


@settings(max_examples=400, deadline=None)
@given(body=_message() | _json, path=st.sampled_from(["/topic/OC_778", "/topic/STATE_UPDATE", ""]))
def test_any_json_gives_events_or_payload_error(body: Any, path: str) -> None:
    """Whatever the stream carries, the result is events or a PayloadError, nothing else."""
    try:
        events = run(body, path)
    except PayloadError:
        return
    assert events
    for event in events:
        assert event.type in TYPES
        assert event.data["raw"] == body
        if event.type != "raw.unmapped":
            assert event.subject == f"call/{event.data['call_id']}"
