"""The OnCall (PortSIP v16) normaliser: the fixtures are its specification."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.errors import PayloadError, UnsupportedMediaError
from bridge.events import TYPES, Event
from bridge.vendors.base import Payload, SourceContext
from bridge.vendors.oncall import VENDOR, normalize
from bridge.vendors.oncall_fields import parse_address
from tests.callplay import Player, types
from tests.fixtureutil import context_for, load_fixtures, payload_for

FIXTURES = load_fixtures("oncall")
RECEIVED = datetime(2024, 3, 19, 4, 36, 50, tzinfo=UTC)

RINGING: dict[str, Any] = {
    "event_type": "target_ringing",
    "call_id": "Kq3Vn8RZ0aW1yT5uXb2LpA..",
    "session_id": "512340000000000001",
    "caller": "sip:02873062020@192.0.2.10",
    "callee": "sip:02873000100@test01.oncall",
    "call_target": "sip:108@test01.oncall",
    "tenant_id": "239926257964425216",
    "time": "1710823002",
}
FAIL: dict[str, Any] = {**RINGING, "event_type": "call_fail", "call_target": "", "fail_code": 480}
CDR: dict[str, Any] = {
    "event_type": "call_cdr",
    "session_id": "512340000000000001",
    "direction": "in",
    "start_time": "1710823000",
    "ring_time": "1710823002",
    "answered_time": "1710823009",
    "ended_time": "1710823190",
    "call_status": "answered",
}


def ctx(*, received_at: datetime = RECEIVED) -> SourceContext:
    return SourceContext(
        name="hq", vendor="oncall", tz=UTC, received_at=received_at, extension_max_digits=5
    )


def run(obj: Any, context: SourceContext | None = None, *, path: str = "") -> list[Event]:
    return normalize(Payload(body=json.dumps(obj).encode(), path=path), context or ctx())


def only(obj: dict[str, Any], context: SourceContext | None = None) -> Event:
    (event,) = run(obj, context)
    return event


@pytest.mark.parametrize(("case", "fixture"), FIXTURES, ids=[case for case, _ in FIXTURES])
def test_fixture(case: str, fixture: dict[str, Any]) -> None:
    """Each sample normalises to exactly the events its fixture specifies."""
    events = normalize(payload_for(fixture), context_for(fixture))
    assert msgspec.to_builtins(events) == fixture["events"]


def test_fixtures_cover_every_event_type() -> None:
    """There is a fixture for all fourteen Event URL event types, call_cdr and an unknown one."""
    names = {fixture["payload"]["event_type"] for _, fixture in FIXTURES}
    assert names >= {
        *("extension_register", "call_start", "call_established", "call_ended"),
        *("call_noanswer", "call_fail", "call_reroute", "call_hold", "call_unhold"),
        *("target_add", "target_ringing", "target_noanswer", "target_fail", "target_ended"),
        "call_cdr",
    }
    assert any(e["subject"] == "pbx" for _, f in FIXTURES for e in f["events"])


@pytest.mark.parametrize(("case", "fixture"), FIXTURES, ids=[case for case, _ in FIXTURES])
def test_retry_a_day_later_yields_identical_ids(case: str, fixture: dict[str, Any]) -> None:
    """PortSIP's retry of a push (hours later) makes the same event ids: the outbox drops it."""
    first = context_for(fixture)
    later = ctx(received_at=first.received_at + timedelta(hours=20))
    later = msgspec.structs.replace(later, name=first.name)
    payload = payload_for(fixture)
    assert [e.id for e in normalize(payload, later)] == [e.id for e in normalize(payload, first)]


def test_distinct_pushes_have_distinct_ids() -> None:
    """No two events of different fixtures share an id."""
    ids = [e["id"] for _, fixture in FIXTURES for e in fixture["events"]]
    assert len(ids) == len(set(ids))


def test_every_event_carries_the_raw_payload() -> None:
    """Every event's data.raw is the push as received."""
    for _, fixture in FIXTURES:
        assert all(e["data"]["raw"] == fixture["payload"] for e in fixture["events"])


@pytest.mark.parametrize(
    ("value", "number", "name"),
    [
        ("sip:108@test01.oncall", "108", None),
        ("sip:02873062020@192.0.2.10:5060;transport=udp", "02873062020", None),
        ("sips:108@test01.oncall", "108", None),
        ("SIP:108@test01.oncall", "108", None),
        ("sip:108;user=phone@test01.oncall", "108", None),
        ("sip:108:secret@test01.oncall", "108", None),
        ("sip:%2B8428@test01.oncall", "+8428", None),
        ('"Bob" <sip:108@test01.oncall>', "108", "Bob"),
        ("Bob Smith <sip:108@test01.oncall>;tag=a1", "108", "Bob Smith"),
        ('"" <sip:108@test01.oncall>', "108", None),
        ("<sip:108@test01.oncall>", "108", None),
        ("tel:+842873062020", "+842873062020", None),
        ("tel:7042;phone-context=test01.oncall", "7042", None),
        ("108", "108", None),
        ("+842873062020", "+842873062020", None),
        ("108@test01.oncall", "108", None),
        ("sip:test01.oncall", None, None),
        ("anonymous", "anonymous", None),
    ],
)
def test_sip_party_is_reduced_to_its_user_part(
    value: str, number: str | None, name: str | None
) -> None:
    """A SIP/tel URI, name-addr or plain number gives the number as dialled and a display name."""
    assert parse_address(value) == (number, name)


def test_caller_display_name_from_the_uri_when_no_field_says() -> None:
    """A name-addr caller gives data.from_name; caller_display_name wins when present."""
    push = {**RINGING, "caller": '"Bob" <sip:108@test01.oncall>'}
    assert (only(push).data["from"], only(push).data["from_name"]) == ("108", "Bob")
    assert only({**push, "caller_display_name": "Robert"}).data["from_name"] == "Robert"


def test_numeric_party_is_its_text() -> None:
    """A caller sent as a JSON number is that number as text."""
    assert only({**RINGING, "caller": 108}).data["from"] == "108"


@pytest.mark.parametrize(
    ("direction", "expected"),
    [
        ("ext", "internal"),
        ("in", "inbound"),
        ("in2out", "inbound"),
        ("out", "outbound"),
        ("IN", "inbound"),
        ("sideways", None),
        ("", None),
        (None, None),
    ],
)
def test_call_start_direction(direction: str | None, expected: str | None) -> None:
    """call_start's direction maps to the schema's; in2out is inbound; anything else is left out."""
    push = {**RINGING, "event_type": "call_start", "direction": direction}
    assert only(push).data.get("direction") == expected


def test_unanswered_in2out_call_is_missed() -> None:
    """An in2out call nobody answered ends as a missed call in the writer's call state."""
    start = only({**RINGING, "event_type": "call_start", "direction": "in2out"})
    end = only({**RINGING, "event_type": "call_noanswer"})
    player = Player(settle_s=0)
    player.play([start])
    assert types(player.play([end])) == ["call.ended", "call.missed"]


@pytest.mark.parametrize(
    ("code", "disposition"),
    [
        (486, "busy"),
        ("600", "busy"),
        (487, "cancelled"),
        (480, "failed"),
        ("503", "failed"),
        (None, "failed"),
        (0, "failed"),
    ],
)
def test_call_fail_disposition_from_the_sip_code(code: object, disposition: str) -> None:
    """call_fail is busy for 486/600, cancelled for 487, else failed; the code is the cause."""
    event = only({**FAIL, "fail_code": code})
    assert (event.type, event.data["disposition"]) == ("call.ended", disposition)
    assert event.data.get("hangup_cause") == (str(code) if code else None)


@pytest.mark.parametrize(
    ("code", "reason"),
    [(486, "busy"), (487, "cancelled"), (603, "declined"), (480, "unavailable"), (500, "failed")],
)
def test_target_fail_reason_from_the_sip_code(code: int, reason: str) -> None:
    """target_fail ends that target's ringing with a reason read from its SIP code."""
    event = only({**RINGING, "event_type": "target_fail", "fail_code": code})
    assert (event.type, event.data["reason"]) == ("call.ringing_ended", reason)


@pytest.mark.parametrize("code", ["busy", "48.6", "1000", "-486", True, [486]])
def test_unreadable_fail_code_is_refused(code: object) -> None:
    """A fail_code that is not a SIP status code is a PayloadError naming fail_code."""
    with pytest.raises(PayloadError) as caught:
        run({**FAIL, "fail_code": code})
    assert caught.value.field == "fail_code"


def test_call_ended_has_no_disposition() -> None:
    """call_ended does not say whether anyone answered: the writer fills the disposition."""
    assert "disposition" not in only({**FAIL, "event_type": "call_ended"}).data


def test_every_end_of_a_call_has_one_id() -> None:
    """call_ended, call_noanswer and call_fail of one call are the same call.ended."""
    ids = {only({**FAIL, "event_type": name}).id for name in ("call_ended", "call_noanswer")}
    assert ids == {only(FAIL).id}


def test_two_targets_ringing_are_distinct_events() -> None:
    """Two endpoints ringing for one call are two call.ringing events."""
    other = {**RINGING, "call_target": "sip:109@test01.oncall"}
    assert only(RINGING).id != only(other).id


def test_same_target_ringing_again_later_is_a_new_event() -> None:
    """A target rung again later in the call (a queue's second round) is a new call.ringing."""
    assert only(RINGING).id != only({**RINGING, "time": "1710823032"}).id


def test_session_id_is_the_call_key() -> None:
    """session_id names the call when present; the SIP Call-ID is kept as sip_call_id."""
    event = only(RINGING)
    assert event.subject == "call/512340000000000001"
    assert event.data["sip_call_id"] == "Kq3Vn8RZ0aW1yT5uXb2LpA.."


def test_call_id_is_the_call_key_without_session_id() -> None:
    """Without session_id (the document's sample) the SIP Call-ID is the call key."""
    push = {key: value for key, value in RINGING.items() if key != "session_id"}
    event = only(push)
    assert event.subject == "call/Kq3Vn8RZ0aW1yT5uXb2LpA.."
    assert "sip_call_id" not in event.data


def test_cdr_without_answer_has_no_answered_time() -> None:
    """answered_time 0 means never: no answered_at, and no talk time is made up."""
    event = only({**CDR, "answered_time": "0", "call_status": "noanswer"})
    assert event.data["disposition"] == "no_answer"
    assert event.data["timings"] == {
        "started_at": "2024-03-19T04:36:40Z",
        "ended_at": "2024-03-19T04:39:50Z",
        "ring_s": 188,
        "total_s": 190,
    }


def test_cdr_durations_come_from_the_times_when_absent() -> None:
    """Without ring_duration and talk_duration, ring and talk time are the times' differences."""
    timings = only(CDR).data["timings"]
    assert (timings["ring_s"], timings["talk_s"], timings["total_s"]) == (7, 181, 190)


@pytest.mark.parametrize(
    ("status", "code", "disposition"),
    [
        ("answered", None, None),
        ("noanswer", "408", "no_answer"),
        ("fail", "486", "busy"),
        ("fail", "487", "cancelled"),
        ("fail", "503", "failed"),
        ("FAIL", None, "failed"),
        ("weird", None, None),
    ],
)
def test_cdr_disposition(status: str, code: str | None, disposition: str | None) -> None:
    """call_status maps to the disposition; a failure is refined by its status_code.

    Without per-target detail, "answered" (or an answer time with an unknown status) is only
    the PBX's word: it may be the IVR.
    """
    event = only({**CDR, "call_status": status, "status_code": code})
    assert event.data.get("disposition") == disposition
    assert event.data.get("pbx_answered") is (True if disposition is None else None)


def test_cdr_targets_as_uris_or_objects() -> None:
    """call_targets[] gives the targets' numbers, whether URIs or objects naming one."""
    targets = ["sip:108@test01.oncall", {"call_target": "sip:109@test01.oncall"}, {"x": 1}, 7]
    assert only({**CDR, "call_targets": targets}).data["targets"] == ["108", "109"]


def test_cdr_accepts_the_newer_field_spellings() -> None:
    """did_cid and end_reason (PortSIP's later CDR) stand in for did and ended_reason."""
    data = only({**CDR, "did_cid": "02873000100", "end_reason": "caller_disconnect"}).data
    assert (data["did"], data["hangup_cause"]) == ("02873000100", "caller_disconnect")


def test_cdr_url_push_without_event_type_is_a_cdr() -> None:
    """A push to the CDR URL (path cdr) without event_type is read as call_cdr."""
    push = {key: value for key, value in CDR.items() if key != "event_type"}
    (event,) = run(push, path="cdr")
    assert (event.type, event.vendorevent) == ("call.completed", "call_cdr")


def test_cdr_is_the_writer_end_when_no_call_ended_came() -> None:
    """A call_cdr first (unordered delivery) makes the writer derive call.ended from it."""
    out = Player().play([only(CDR)])
    assert types(out) == ["call.ended", "call.completed"]
    assert out[0].data["disposition"] == "answered"


def test_hold_and_unhold_name_the_parties() -> None:
    """call_hold names who held (aor) and the other party (peer_aor)."""
    push = {**RINGING, "event_type": "call_hold", "aor": "sip:108@x", "peer_aor": "sip:109@x"}
    event = only(push)
    assert (event.type, event.data["by"], event.data["peer"]) == ("call.held", "108", "109")
    assert only({**push, "event_type": "call_unhold"}).type == "call.resumed"


@pytest.mark.parametrize(
    ("contacts", "state"),
    [([{"user_agent": "phone"}], "registered"), ([], "unavailable"), (None, "unavailable")],
)
def test_registration_state_from_the_contacts(contacts: list[Any] | None, state: str) -> None:
    """An extension with registrations is registered; with none left, unavailable."""
    push: dict[str, Any] = {"event_type": "extension_register", "extension": "sip:108@x"}
    push["registration_contacts"] = contacts
    event = only(push)
    assert (event.subject, event.data["state"]) == ("extension/108", state)


def test_registration_changes_are_distinct_events() -> None:
    """Two registrations in the same second with other contacts are two events."""
    push = {"event_type": "extension_register", "extension": "108", "time": "1710823000"}
    one = {**push, "registration_contacts": [{"instance": "a"}]}
    two = {**push, "registration_contacts": [{"instance": "a"}, {"instance": "b"}]}
    assert only(one).id != only(two).id


def test_unbelievable_future_time_falls_back_to_receipt() -> None:
    """A vendor time over a day after receipt gives the receipt time; raw keeps the value."""
    event = only({**RINGING, "time": "1900000000"})
    assert event.time == "2024-03-19T04:36:50Z"
    assert event.data["raw"]["time"] == "1900000000"


def test_missing_time_gives_the_receipt_time() -> None:
    """A push without time (or time 0) happened when it was received."""
    assert only({**RINGING, "time": "0"}).time == "2024-03-19T04:36:50Z"
    assert only({k: v for k, v in RINGING.items() if k != "time"}).time == "2024-03-19T04:36:50Z"


def test_unknown_event_type_is_kept_unmapped() -> None:
    """A well-formed push with an unknown event_type is raw.unmapped, never dropped."""
    event = only({"event_type": "trunk_connected", "trunk": "t1"})
    assert (event.type, event.vendorevent, event.subject) == (
        "raw.unmapped",
        "trunk_connected",
        "pbx",
    )


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ({k: v for k, v in RINGING.items() if k != "event_type"}, "event_type"),
        ({**RINGING, "event_type": ["call_start"]}, "event_type"),
        ({k: v for k, v in RINGING.items() if k not in ("session_id", "call_id")}, "call_id"),
        ({**RINGING, "session_id": {"id": 1}}, "session_id"),
        ({**RINGING, "time": "yesterday"}, "time"),
        ({**RINGING, "caller": ["108"]}, "caller"),
        ({**RINGING, "call_target": True}, "call_target"),
        ({**CDR, "ended_time": "-5"}, "ended_time"),
        ({**CDR, "talk_duration": "long"}, "talk_duration"),
        ({**CDR, "call_targets": "108"}, "call_targets"),
        ({**CDR, "status_code": "OK"}, "status_code"),
        ({"event_type": "extension_register"}, "extension"),
        ({"event_type": "extension_register", "extension": "sip:test01.oncall"}, "extension"),
        (
            {"event_type": "extension_register", "extension": "108", "removed_contacts": 1},
            "removed_contacts",
        ),
    ],
)
def test_malformed_payload_names_the_field(obj: dict[str, Any], field: str) -> None:
    """A missing, mistyped or unreadable field is a PayloadError that names it."""
    with pytest.raises(PayloadError) as caught:
        run(obj)
    assert caught.value.field == field


def test_json_list_body_is_refused() -> None:
    """A body that is JSON but not an object is a PayloadError for the whole body."""
    with pytest.raises(PayloadError, match="JSON object") as caught:
        run([RINGING])
    assert caught.value.field == ""


def test_invalid_json_is_refused() -> None:
    """A body that is not JSON at all is an UnsupportedMediaError (a PayloadError)."""
    with pytest.raises(UnsupportedMediaError, match="not valid JSON"):
        normalize(Payload(body=b'{"event_type": "call_start",'), ctx())


def test_vendor_acks_with_json() -> None:
    """PortSIP is answered 200 with a small JSON body once the events are committed."""
    assert (VENDOR.name, VENDOR.ack.content_type, VENDOR.ack.status) == (
        "oncall",
        "application/json",
        200,
    )
    assert json.loads(VENDOR.ack.body) == {"status": "ok"}


_EVENT_TYPES = [
    *("extension_register", "call_start", "call_established", "call_ended", "call_noanswer"),
    *("call_fail", "call_reroute", "call_hold", "call_unhold", "target_add", "target_ringing"),
    *("target_noanswer", "target_fail", "target_ended", "call_cdr", "CALL_START", "queue_status"),
]
_KEYS = [
    *("event_type", "call_id", "session_id", "caller", "callee", "call_target", "time"),
    *("direction", "fail_code", "aor", "peer_aor", "extension", "registration_contacts"),
    *("removed_contacts", "start_time", "ring_time", "answered_time", "ended_time"),
    *("call_status", "status_code", "ring_duration", "talk_duration", "call_targets"),
    *("caller_display_name", "did", "did_cid", "tenant_id", "cdr_id"),
]
_SAMPLES = [
    *("sip:108@test01.oncall", '"B" <sip:1@h>', "tel:+1;x=y", "sip:", "<", '"', "sip:@h", "0"),
    *("1584340956", "99999999999", "1e400", "nan", "-1", "486", "487", "in2out", "fail"),
    *("noanswer", "0:01:02", "", "%", "%zz"),
]
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
_value = st.sampled_from(_SAMPLES) | _json
_event_type = st.sampled_from(_EVENT_TYPES) | st.text(max_size=8) | _json


@st.composite
def _push(draw: st.DrawFn) -> dict[str, Any]:
    """A fixture's payload with some values replaced or dropped and some keys added."""
    push = dict(draw(st.sampled_from([fixture["payload"] for _, fixture in FIXTURES])))
    for key in draw(st.lists(st.sampled_from(sorted(push)), unique=True, max_size=4)):
        replacement = draw(st.none() | _value)
        if replacement is None and draw(st.booleans()):
            del push[key]
        else:
            push[key] = replacement
    push.update(draw(st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=6), _value)))
    if draw(st.integers(0, 3)) == 0:
        push["event_type"] = draw(_event_type)
    return push


@settings(max_examples=400, deadline=None)
@given(push=_push(), path=st.sampled_from(["", "cdr", "events"]))
def test_any_json_object_gives_events_or_payload_error(push: dict[str, Any], path: str) -> None:
    """Whatever PortSIP sends, the normaliser returns events or raises PayloadError."""
    try:
        events = run(push, path=path)
    except PayloadError:
        return
    assert events
    assert all(isinstance(e, Event) and e.type in TYPES for e in events)
    assert all(e.data["raw"] == push for e in events)
