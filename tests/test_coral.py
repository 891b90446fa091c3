"""The Coral IRIS IVDX normaliser: the fixtures are its specification."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.errors import PayloadError, UnsupportedMediaError
from bridge.events import TYPES, Event
from bridge.vendors.base import Payload, SourceContext
from bridge.vendors.coral import VENDOR, normalize
from tests.callplay import Player, types
from tests.fixtureutil import context_for, load_fixtures, payload_for

FIXTURES = load_fixtures("coral")
RECEIVED = datetime(2017, 12, 4, 0, 30, tzinfo=UTC)

POPUP: dict[str, Any] = {
    "Event": "Popup",
    "CallerNum": "09891612004",
    "extension": "9000",
    "uuid": "93849-405955-59598585048-499449-9000",
}
CDR: dict[str, Any] = {
    "Event": "Cdr",
    "callerextension": "9000",
    "destination": "09891612004",
    "start_time": "2017-12-04 05:56:20",
    "answer_time": "",
    "end_time": "2017-12-04 05:56:45",
    "duration": "25",
    "billsec": "0",
    "disposition": "NO ANSWER",
    "accountcode": "",
    "recordurl": "",
    "direction": "in",
    "uuid": "93849-405955-59598585048-499449-9000",
}
STATE: dict[str, Any] = {
    "extension": "9001",
    "status": "ringing",
    "uuid": "u-1",
    "secondparty": "2004",
}
HEALTH: dict[str, Any] = {"pbxstatus": 0, "pbxstatusmessage": "OK"}


def ctx(*, tz: str = "Asia/Kolkata", received_at: datetime = RECEIVED) -> SourceContext:
    return SourceContext(name="hq", vendor="coral", tz=ZoneInfo(tz), received_at=received_at)


def wrap(data: Any, message: str = "push") -> dict[str, Any]:
    return {"status": 0, "message": message, "data": data}


def run(body: Any, path: str = "", context: SourceContext | None = None) -> list[Event]:
    payload = Payload(body=json.dumps(body, ensure_ascii=False).encode(), path=path)
    return normalize(payload, context or ctx())


def only(body: Any, path: str = "", context: SourceContext | None = None) -> Event:
    (event,) = run(body, path, context)
    return event


@pytest.mark.parametrize(("case", "fixture"), FIXTURES, ids=[case for case, _ in FIXTURES])
def test_fixture(case: str, fixture: dict[str, Any]) -> None:
    """Each sample normalises to exactly the events its fixture specifies."""
    events = normalize(payload_for(fixture), context_for(fixture))
    assert msgspec.to_builtins(events) == fixture["events"]


def test_fixtures_cover_every_push_api() -> None:
    """There is a fixture for each of the four push APIs, and for an unmapped push."""
    names = {e["vendorevent"] for _, fixture in FIXTURES for e in fixture["events"]}
    assert names >= {"incomingcall", "extstatechangeevent", "cdrevent", "pbxhealthstatus"}
    assert "raw.unmapped" in {e["type"] for _, f in FIXTURES for e in f["events"]}


_RETRANSMITTABLE = [
    (case, f) for case, f in FIXTURES if not case.startswith(("extstate", "pbxhealth"))
]


@pytest.mark.parametrize(
    ("case", "fixture"), _RETRANSMITTABLE, ids=[case for case, _ in _RETRANSMITTABLE]
)
def test_retransmission_yields_identical_ids(case: str, fixture: dict[str, Any]) -> None:
    """The same push received again 2 s later makes the same event ids (the outbox drops it)."""
    first = context_for(fixture)
    later = msgspec.structs.replace(first, received_at=first.received_at + timedelta(seconds=2))
    payload = payload_for(fixture)
    assert [e.id for e in normalize(payload, later)] == [e.id for e in normalize(payload, first)]


def test_distinct_pushes_have_distinct_ids() -> None:
    """No two events of different fixtures share an id."""
    ids = [e["id"] for _, fixture in FIXTURES for e in fixture["events"]]
    assert len(ids) == len(set(ids))


def test_document_incomingcall_sample_as_printed_is_not_json() -> None:
    """The document's popup lacks a comma: those exact bytes are refused as not JSON."""
    printed = (
        b'{\n  "status":0,\n  "message":"Incoming call",\n  "data": {\n'
        b'    "Event": "Popup",\n    "CallerNum": "09891612004",\n    "extension": "9000"\n'
        b'    "uuid": "93849-405955-59598585048-499449-9000"\n  }\n}'
    )
    with pytest.raises(UnsupportedMediaError, match="not valid JSON"):
        normalize(Payload(body=printed), ctx())


def test_stray_whitespace_is_trimmed_from_ids_and_numbers() -> None:
    """A uuid, number or extension with stray spaces (the cdr sample's uuid) is trimmed."""
    initiated, ringing = run(
        wrap({**POPUP, "uuid": " abc-1 ", "CallerNum": "\t0989 ", "extension": "9000 "})
    )
    assert (ringing.subject, ringing.data["call_id"]) == ("call/abc-1", "abc-1")
    assert (ringing.data["from"], ringing.data["target"]) == ("0989", "9000")
    assert initiated.id == run(wrap({**POPUP, "uuid": "abc-1"}))[0].id


def test_naive_local_times_use_the_source_zone() -> None:
    """A PBX-local time is read in the source's zone (Kolkata is UTC+5:30)."""
    cdr = only(wrap(CDR))
    assert cdr.data["timings"]["started_at"] == "2017-12-04T00:26:20Z"
    assert cdr.time == "2017-12-04T00:26:45Z"
    assert only(wrap(CDR), context=ctx(tz="UTC")).time == "2017-12-04T05:56:45Z"


def test_cdr_without_end_time_takes_the_receipt_time() -> None:
    """A cdr with no end_time happened, as far as we know, when it arrived."""
    assert only(wrap({**CDR, "end_time": ""})).time == "2017-12-04T00:30:00Z"


def test_list_of_states_gives_one_event_per_element_in_order() -> None:
    """extstatechangeevent's list of N extensions makes N extension.state events, in order."""
    states = [{**STATE, "extension": str(9000 + n)} for n in range(4)]
    events = run(wrap(states))
    assert [e.subject for e in events] == [f"extension/{9000 + n}" for n in range(4)]
    assert {e.type for e in events} == {"extension.state"}


def test_each_state_keeps_the_wrapper_with_its_own_element() -> None:
    """A list element's raw is the wrapper as received with data narrowed to that element."""
    second = {**STATE, "extension": "9002"}
    events = run(wrap([STATE, second], "Extension State"))
    assert [e.data["raw"] for e in events] == [
        wrap([STATE], "Extension State"),
        wrap([second], "Extension State"),
    ]


def test_equal_elements_of_one_push_are_distinct_events() -> None:
    """[ringing, idle, ringing] of one extension keeps both ringing states (it ends ringing)."""
    events = run(wrap([STATE, {**STATE, "status": "idle"}, STATE]))
    assert len({e.id for e in events}) == 3


def test_extension_state_receipts_get_their_own_ids() -> None:
    """The same state pushed again later is a new event (a real repeat is kept)."""
    later = ctx(received_at=RECEIVED + timedelta(seconds=20))
    assert only(wrap([STATE])).id != only(wrap([STATE]), context=later).id


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("idle", "idle"),
        ("ringing", "ringing"),
        ("talking", "in_call"),
        ("Talking", "in_call"),
        ("hold", "unknown"),
        (3, "unknown"),
    ],
)
def test_extension_statuses(status: object, state: str) -> None:
    """idle, ringing and talking map to the schema's states; anything else is unknown."""
    event = only(wrap([{**STATE, "status": status}]))
    assert event.data["state"] == state
    assert (event.data["call_id"], event.data["other_party"]) == ("u-1", "2004")


def test_popup_without_extension_only_initiates() -> None:
    """A popup naming no extension says the call exists, not who is being rung."""
    assert [e.type for e in run(wrap({**POPUP, "extension": ""}))] == ["call.initiated"]


@pytest.mark.parametrize(
    ("path", "data", "vendorevent"),
    [
        ("incomingcall", {**POPUP, "Event": None}, "incomingcall"),
        ("api/cdrevent", {k: v for k, v in CDR.items() if k != "Event"}, "cdrevent"),
        ("API/CdrEvent/", CDR, "cdrevent"),
        ("v3/pbxhealthstatus", HEALTH, "pbxhealthstatus"),
        ("extstatechangeevent", [STATE], "extstatechangeevent"),
        ("crm/push", CDR, "cdrevent"),
    ],
)
def test_path_names_the_api(path: str, data: Any, vendorevent: str) -> None:
    """A path ending in an API name says what the push is; any other path is read by content."""
    assert {e.vendorevent for e in run(wrap(data), path)} == {vendorevent}


@pytest.mark.parametrize(
    ("path", "data", "field"),
    [
        ("incomingcall", [STATE], "data"),
        ("incomingcall", None, "data"),
        ("incomingcall", CDR, "data.Event"),
        ("incomingcall", {**POPUP, "Event": "Hangup"}, "data.Event"),
        ("cdrevent", POPUP, "data.Event"),
        ("extstatechangeevent", STATE, "data"),
        ("pbxhealthstatus", {**HEALTH, "Event": "Popup"}, "data.Event"),
        ("pbxhealthstatus", {"pbxstatusmessage": "OK"}, "data.pbxstatus"),
    ],
)
def test_path_named_api_refuses_a_body_that_does_not_fit(path: str, data: Any, field: str) -> None:
    """When the path names an API, a body of another shape is a PayloadError naming the field."""
    with pytest.raises(PayloadError) as caught:
        run(wrap(data), path)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("data", "vendorevent"),
    [
        (None, "unknown"),
        ({"Event": "Hangup", "uuid": "1"}, "Hangup"),
        ({"uuid": "1", "CallerNum": "0989"}, "unknown"),
        ([], "extstatechangeevent"),
        ({"pbxstatus": 2}, "pbxhealthstatus"),
    ],
)
def test_well_formed_push_of_no_known_shape_is_unmapped(data: Any, vendorevent: str) -> None:
    """A wrapper whose data no mapping fits is kept as raw.unmapped, never refused or dropped."""
    event = only(wrap(data))
    assert (event.type, event.vendorevent, event.data["raw"]) == (
        "raw.unmapped",
        vendorevent,
        wrap(data),
    )


def test_pbx_status_accepts_numbers_as_text() -> None:
    """pbxstatus "1" (a string) is down like 1."""
    assert only(wrap({"pbxstatus": "1"})).data == {
        "status": "down",
        "raw": wrap({"pbxstatus": "1"}),
    }


@pytest.mark.parametrize(
    ("direction", "expected", "from_", "to"),
    [
        ("in", "inbound", "09891612004", "9000"),
        ("IN", "inbound", "09891612004", "9000"),
        ("out", "outbound", "9000", "09891612004"),
        ("sideways", None, None, None),
        ("", None, None, None),
    ],
)
def test_cdr_direction_orients_from_and_to(
    direction: str, expected: str | None, from_: str | None, to: str | None
) -> None:
    """callerextension is the PBX side: inbound it is `to`, outbound `from`, unknown neither."""
    data = only(wrap({**CDR, "direction": direction})).data
    assert (data.get("direction"), data.get("from"), data.get("to")) == (expected, from_, to)
    assert (data["extension"], data["other_party"]) == ("9000", "09891612004")


@pytest.mark.parametrize(
    ("disposition", "expected"),
    [
        ("ANSWERED", None),
        ("NO ANSWER", "no_answer"),
        ("NO_ANSWER", "no_answer"),
        ("BUSY", "busy"),
        ("FAILED", "failed"),
        ("CONGESTION", "failed"),
        ("UNKNOWN", None),
    ],
)
def test_cdr_disposition(disposition: str, expected: str | None) -> None:
    """CDR dispositions map to the schema's; ANSWERED (maybe the IVR) and unknown ones do not."""
    data = only(wrap({**CDR, "disposition": disposition})).data
    assert data.get("disposition") == expected
    assert data.get("pbx_answered") is (True if disposition == "ANSWERED" else None)


def test_popup_then_unanswered_cdr_is_a_missed_call() -> None:
    """Through the writer's rules, a popup and a NO ANSWER cdr make a missed inbound call."""
    player = Player()
    player.play([*run(wrap(POPUP)), *run(wrap(CDR))])
    assert types(player.committed) == [
        "call.initiated",
        "call.ringing",
        "call.ended",
        "call.completed",
        "call.missed",
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"status": 0, "message": "Incoming call"}, "data"),
        (POPUP, "data"),
        (wrap("Popup"), "data"),
        (wrap(7), "data"),
        (wrap([STATE, STATE, "9002"]), "data[2]"),
        (wrap([STATE, {"status": "idle"}]), "data[1].extension"),
        (wrap([{**STATE, "status": {"name": "idle"}}]), "data[0].status"),
        (wrap([{**STATE, "status": None}]), "data[0].status"),
        (wrap({**POPUP, "uuid": None}), "data.uuid"),
        (wrap({k: v for k, v in POPUP.items() if k != "uuid"}), "data.uuid"),
        (wrap({**POPUP, "uuid": ["1"]}), "data.uuid"),
        (wrap({**POPUP, "CallerNum": {"n": 1}}), "data.CallerNum"),
        (wrap({**POPUP, "Event": {"name": "Popup"}}), "data.Event"),
        (wrap({**CDR, "start_time": "04/12/2017 05:56"}), "data.start_time"),
        (wrap({**CDR, "billsec": "soon"}), "data.billsec"),
        (wrap({**CDR, "uuid": "  "}), "data.uuid"),
        (wrap({"pbxstatus": None}), "data.pbxstatus"),
        (wrap({"pbxstatus": True}), "data.pbxstatus"),
    ],
)
def test_malformed_payload_names_the_field(body: Any, field: str) -> None:
    """A missing, mistyped or unreadable field is a PayloadError that names it by path."""
    with pytest.raises(PayloadError) as caught:
        run(body)
    assert caught.value.field == field


def test_json_list_body_is_refused() -> None:
    """A body that is JSON but not an object is a PayloadError for the whole body."""
    with pytest.raises(PayloadError, match="JSON object") as caught:
        run([STATE])
    assert caught.value.field == ""


def test_vendor_acks_with_the_document_success_wrapper() -> None:
    """The PBX is answered in Coral's own wrapper, status 0 (success), once committed."""
    assert (VENDOR.name, VENDOR.ack.content_type) == ("coral", "application/json")
    assert json.loads(VENDOR.ack.body) == {"status": 0, "message": "success", "data": None}


_PATHS = ["", "incomingcall", "api/cdrevent", "EXTSTATECHANGEEVENT", "pbxhealthstatus/", "x/y"]
_SAMPLES = [
    *("Popup", "Cdr", "popup", "", " ", "idle", "talking", "NO ANSWER", "in", "out", "0", "1"),
    *("2017-12-04 05:56:20", "0000-00-00 00:00:00", "0001-01-01 00:00:00", "1e400", "nan"),
    *("9999-12-31 23:59:59", "0:01:02", "-5"),
]
_KEYS = [
    *("Event", "CallerNum", "extension", "uuid", "callerextension", "destination"),
    *("start_time", "answer_time", "end_time", "duration", "billsec", "disposition"),
    *("recordurl", "direction", "status", "secondparty", "pbxstatus", "pbxstatusmessage"),
]
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
_value = st.sampled_from(_SAMPLES) | _json
_key = st.sampled_from(_KEYS).flatmap(lambda k: st.sampled_from([k, k.lower(), k.upper()]))


@st.composite
def _object(draw: st.DrawFn, bases: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """One of the documented data objects with some values replaced, dropped or added."""
    obj = dict(draw(st.sampled_from(bases)))
    for key in draw(st.lists(st.sampled_from(sorted(obj)), unique=True, max_size=4)):
        if draw(st.booleans()):
            del obj[key]
        else:
            obj[key] = draw(_value)
    obj.update(draw(st.dictionaries(_key, _value, max_size=3)))
    return obj


_objects = _object((POPUP, CDR, HEALTH))
_states = st.lists(_object((STATE,)), min_size=1, max_size=4)
_data = _objects | _states | st.lists(_object((STATE,)) | _json, max_size=4) | _json
_body = (
    st.builds(wrap, _data) | st.dictionaries(st.sampled_from(["data", "Data", "x"]), _data) | _json
)


@settings(max_examples=400, deadline=None)
@given(
    body=_body,
    path=st.sampled_from(_PATHS),
    zone=st.sampled_from(["Asia/Kolkata", "UTC", "Pacific/Kiritimati"]),
)
def test_any_json_gives_events_or_payload_error(body: Any, path: str, zone: str) -> None:
    """Whatever the PBX sends to whatever path, the result is events or a PayloadError."""
    try:
        events = run(body, path, ctx(tz=zone))
    except PayloadError:
        return
    assert events
    for event in events:
        assert isinstance(event, Event)
        assert event.type in TYPES
        raw = event.data["raw"]
        if event.type == "extension.state":
            (element,) = next(v for k, v in raw.items() if k.lower() == "data")
            assert isinstance(element, dict)
        else:
            assert raw == body
