"""The Coral realtime stream scenarios: valid messages whose outcome they predict."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from itertools import pairwise

from bridge import calls
from bridge.events import Event
from bridge.simulate.coral_streams import KINDS, Scenario, scenario, scenarios
from bridge.vendors.base import Payload, SourceContext
from bridge.vendors.coral_realtime import normalize
from tests.callplay import Player

START = datetime(2024, 1, 1, tzinfo=UTC)


def ctx(received_at: datetime = START) -> SourceContext:
    return SourceContext(name="hq", vendor="coral", tz=UTC, received_at=received_at)


def played(leg: Scenario) -> Player:
    """The leg's messages, received a second apart, through the outbox and the call fold; then
    the settle window passes."""
    player = Player()
    for n, (destination, body) in enumerate(leg.messages):
        payload = Payload(body=json.dumps(body).encode(), path=destination)
        player.play(normalize(payload, ctx(START + timedelta(seconds=n))), now=float(n))
    player.settle(now=float("inf"))
    return player


def committed(leg: Scenario) -> list[Event]:
    """The leg's call.* events as the bridge commits them."""
    return [event for event in played(leg).committed if calls.is_call_event(event)]


def legs(seed: int = 7, n: int = 200) -> list[Scenario]:
    return scenarios(random.Random(seed), count=n)


def test_every_message_normalises_to_call_events_of_its_leg() -> None:
    """Every message is a mapped channel state of its scenario's leg (nothing unmapped)."""
    for leg in legs():
        for destination, body in leg.messages:
            payload = Payload(body=json.dumps(body).encode(), path=destination)
            events = normalize(payload, ctx())
            assert {e.subject for e in events} == {f"call/{leg.call_id}"}


def test_expected_types_match_the_call_fold() -> None:
    """Replayed through dedup, the call fold and the settle window: exactly the expected types."""
    for leg in legs():
        assert [e.type for e in committed(leg)] == leg.expected_types, leg.kind


def test_first_four_scenarios_are_one_of_each_kind() -> None:
    """A short run still plays every kind: the first four are one of each."""
    assert [leg.kind for leg in scenarios(random.Random(1))] == list(KINDS)


def test_messages_use_both_topics_of_the_group() -> None:
    """Legs enter on the group's console topic; later states come on STATE_UPDATE."""
    destinations = {
        d for leg in scenarios(random.Random(3), count=20, group="555") for d, _ in leg.messages
    }
    assert destinations == {"/topic/OC_555", "/topic/STATE_UPDATE"}


def test_some_states_are_published_on_both_topics() -> None:
    """Now and then one state goes to both topics: the bridge must count it once."""
    assert any(
        a.body["state"] == b.body["state"] and a.destination != b.destination
        for leg in legs()
        for a, b in pairwise(leg.messages)
    )


def test_answered_inbound_leg_story() -> None:
    """Inbound via the queue: parked, answered by FreeSWITCH, bridged to an operator, hung up."""
    leg = scenario("answered", random.Random(2))
    states = list(dict.fromkeys(body["state"] for _, body in leg.messages))
    assert states == ["CHANNEL_PARK", "CHANNEL_ANSWER", "CHANNEL_BRIDGE", "CHANNEL_HANGUP_COMPLETE"]
    assert leg.expected_types == ["call.initiated", "call.answered", "call.ended"]
    assert committed(leg)[-1].data["disposition"] == "answered"
    (record,) = played(leg).records.values()
    assert (record.direction, record.missed) == ("inbound", False)


def test_abandoned_outside_caller_is_missed_after_the_settle_window() -> None:
    """A caller from outside who gives up while parked: no bridge, so a missed inbound call,
    said when the settle window passes (no record follows on this stream)."""
    for seed in range(20):
        leg = scenario("abandoned", random.Random(seed))
        assert "CHANNEL_BRIDGE" not in {body["state"] for _, body in leg.messages}
        assert leg.expected_types == ["call.initiated", "call.ended", "call.missed"]
        player = Player()
        for n, (destination, body) in enumerate(leg.messages):
            payload = Payload(body=json.dumps(body).encode(), path=destination)
            player.play(normalize(payload, ctx(START + timedelta(seconds=n))), now=float(n))
        assert player.settle(now=float(len(leg.messages))) == []  # the window is still open
        (missed,) = player.settle(now=float("inf"))
        assert missed.type == "call.missed"
        assert (missed.data["direction"], missed.data["decided_by"]) == ("inbound", "settle_window")
        assert missed.data["direction_inferred"] is True


def test_outbound_leg_rings_the_dialled_number() -> None:
    """An operator's call out rings the dialled number, then is answered or given up."""
    for seed in range(20):
        leg = scenario("outbound", random.Random(seed))
        ringing = next(e for e in committed(leg) if e.type == "call.ringing")
        assert ringing.data["target"] == leg.messages[0].body["talkingToNumber"]
        assert leg.expected_types in (
            ["call.initiated", "call.ringing", "call.answered", "call.ended"],
            ["call.initiated", "call.ringing", "call.ended"],
        )
        (record,) = played(leg).records.values()
        assert not record.missed  # an operator's own leg (an extension's number): never missed


def test_hold_leg_keeps_every_hold_and_unhold() -> None:
    """Hold and unhold cycles each reach the consumer between the answer and the end."""
    for seed in range(20):
        leg = scenario("hold", random.Random(seed))
        middle = leg.expected_types[2:-1]
        assert middle
        assert middle == ["call.held", "call.resumed"] * (len(middle) // 2)


def test_same_seed_same_scenarios() -> None:
    """A seed fixes the scenarios (a run can be replayed)."""
    assert legs(seed=11, n=30) == legs(seed=11, n=30)
