"""The Zycoo CooCenter normaliser: the fixtures are its specification."""

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
from bridge.vendors.coocenter import VENDOR, normalize
from tests.fixtureutil import context_for, load_fixtures, payload_for

FIXTURES = load_fixtures("coocenter")
RECEIVED = datetime(2018, 11, 8, 2, 21, 40, tzinfo=UTC)

DIALBEGIN: dict[str, Any] = {
    "event": "dialbegin",
    "timestamp": "1541643689.5",
    "channel": "DAHDI/i1/13800138000-51",
    "calleridnum": "13800138000",
    "destchannel": "SIP/808-00000065",
    "destcalleridnum": "808",
    "destuniqueid": "1541643689.16",
    "dialstring": "SIP/808",
    "uniqueid": "1541643689.15",
    "mac": "68:69:2e:03:8b:3e",
}
IVR: dict[str, Any] = {
    "event": "ivr",
    "uuid": "1541643689.15",
    "caller": "13800138000",
    "callType": "IN",
    "startTime": "2018-11-08 10:21:29",
    "endTime": "2018-11-08 10:21:32",
    "duration": "3",
    "ivrId": "610",
}
CC_CDR: dict[str, Any] = {
    "event": "cc_cdr",
    "uuid": "1541643689.15",
    "caller": "13800138000",
    "called": "100",
    "queueCode": "630",
    "callType": "incoming",
    "cdrState": "queue",
    "startTime": "2018-11-08 10:21:29",
    "endTime": "2018-11-08 10:22:10",
    "talkingTime": "0",
    "missCause": "MEMBER_CANCEL",
}


def ctx(
    *, tz: str = "Asia/Shanghai", received_at: datetime = RECEIVED, digits: int = 5
) -> SourceContext:
    return SourceContext(
        name="hq",
        vendor="coocenter",
        tz=ZoneInfo(tz),
        received_at=received_at,
        extension_max_digits=digits,
    )


def run(obj: Any, context: SourceContext | None = None) -> list[Event]:
    return normalize(Payload(body=json.dumps(obj).encode()), context or ctx())


def only(obj: dict[str, Any], context: SourceContext | None = None) -> Event:
    (event,) = run(obj, context)
    return event


@pytest.mark.parametrize(("case", "fixture"), FIXTURES, ids=[case for case, _ in FIXTURES])
def test_fixture(case: str, fixture: dict[str, Any]) -> None:
    """Each vendor sample normalises to exactly the events its fixture specifies."""
    events = normalize(payload_for(fixture), context_for(fixture))
    assert msgspec.to_builtins(events) == fixture["events"]


def test_fixtures_cover_every_mapped_event() -> None:
    """There is a fixture for every CooCenter event the bridge maps, and for an unmapped one."""
    names = {fixture["payload"]["event"] for _, fixture in FIXTURES}
    expected = {"dialbegin", "dialbegein", "dialend", "hangup", "extensionstatus", "ivr", "cdr"}
    assert names >= {*expected, "cc_cdr"}
    assert "raw.unmapped" in {e["type"] for _, f in FIXTURES for e in f["events"]}


@pytest.mark.parametrize(
    ("case", "fixture"),
    [(case, f) for case, f in FIXTURES if not case.startswith("extensionstatus")],
    ids=[case for case, _ in FIXTURES if not case.startswith("extensionstatus")],
)
def test_retransmission_yields_identical_ids(case: str, fixture: dict[str, Any]) -> None:
    """The same push retransmitted 2 s later makes the same event ids (the outbox drops it)."""
    first = context_for(fixture)
    later = SourceContext(
        name=first.name,
        vendor=first.vendor,
        tz=first.tz,
        received_at=first.received_at + timedelta(seconds=2),
    )
    payload = payload_for(fixture)
    assert [e.id for e in normalize(payload, later)] == [e.id for e in normalize(payload, first)]


def test_distinct_pushes_have_distinct_ids() -> None:
    """No two events of different fixtures share an id."""
    ids = [e["id"] for _, fixture in FIXTURES for e in fixture["events"]]
    assert len(ids) == len(set(ids))


def test_second_target_rings_with_its_own_id_but_the_same_call() -> None:
    """A second dialbegin of a call makes a new call.ringing but the same call.initiated id."""
    first = run(DIALBEGIN)
    second = run({**DIALBEGIN, "destcalleridnum": "809", "destuniqueid": "1541643689.17"})
    assert first[0].id == second[0].id
    assert first[1].id != second[1].id


def test_misspelt_dialbegein_is_dialbegin() -> None:
    """The manual's spelling 'dialbegein' maps like dialbegin, to the same ids."""
    assert [e.id for e in run({**DIALBEGIN, "event": "dialbegein"})] == [
        e.id for e in run(DIALBEGIN)
    ]


def test_ivr_initiates_the_call_with_the_same_id_as_dialbegin() -> None:
    """An ivr push's call.initiated has dialbegin's id, so the outbox keeps only the first."""
    initiated = run(IVR)[0]
    assert initiated.type == "call.initiated"
    assert initiated.data["direction"] == "inbound"
    assert initiated.id == run(DIALBEGIN)[0].id


def test_naive_local_times_use_the_source_zone() -> None:
    """A PBX-local time is converted with the source's time zone (Shanghai is UTC+8)."""
    ivr = run(IVR)[1]
    assert ivr.data["timings"]["started_at"] == "2018-11-08T02:21:29Z"
    assert ivr.time == "2018-11-08T02:21:32Z"


def test_unbelievable_future_time_falls_back_to_receipt() -> None:
    """A vendor time over a day after receipt (the manual's typo) gives the receipt time."""
    event = run({**DIALBEGIN, "timestamp": "15634993059.785012"})[1]
    assert event.time == "2018-11-08T02:21:40Z"
    assert event.data["raw"]["timestamp"] == "15634993059.785012"


def test_keys_are_case_insensitive() -> None:
    """Upper- or lower-cased keys map the same as the documented spelling."""
    lowered = {key.lower(): value for key, value in CC_CDR.items()}
    uppered = {key.upper(): value for key, value in CC_CDR.items()}
    expected = {k: v for k, v in only(CC_CDR).data.items() if k != "raw"}
    for variant in (lowered, uppered):
        assert {k: v for k, v in only(variant).data.items() if k != "raw"} == expected


def test_extension_status_receipts_get_their_own_ids() -> None:
    """The same extension status received again later is a new event (a real repeat is kept)."""
    push = {"event": "extensionstatus", "exten": "808", "status": "0", "statustext": "Idle"}
    later = ctx(received_at=RECEIVED + timedelta(seconds=20))
    assert only(push).id != only(push, later).id


@pytest.mark.parametrize(
    ("status", "state", "flags"),
    [
        ("0", "idle", []),
        ("1", "in_call", ["in_use"]),
        ("2", "busy", ["busy"]),
        ("3", "busy", ["in_use", "busy"]),
        ("4", "unavailable", ["unavailable"]),
        ("8", "ringing", ["ringing"]),
        ("9", "ringing", ["in_use", "ringing"]),
        ("12", "unavailable", ["unavailable", "ringing"]),
        ("16", "on_hold", ["on_hold"]),
        ("17", "on_hold", ["in_use", "on_hold"]),
        (9, "ringing", ["in_use", "ringing"]),
        ("-1", "unknown", None),
        ("-2", "unknown", None),
        ("32", "unknown", None),
    ],
)
def test_extension_status_bits(status: object, state: str, flags: list[str] | None) -> None:
    """Asterisk's state bits give one state by priority and every set bit as a flag."""
    event = only({"event": "extensionstatus", "exten": "808", "status": status})
    assert (event.data["state"], event.data.get("flags")) == (state, flags)


@pytest.mark.parametrize(
    ("caller", "channel", "callee", "dest_channel", "direction"),
    [
        ("13800138000", "DAHDI/i1/13800138000-51", "808", "SIP/808-0000001", "inbound"),
        ("85322361", "DAHDI/3-1", "808", "SIP/808-0000001", "inbound"),
        ("808", "SIP/808-00000012", "013800138000", "SIP/trunk1-00000013", "outbound"),
        ("808", "SIP/808-00000012", "110", "DAHDI/i1/110-52", "outbound"),
        ("808", "SIP/808-00000012", "809", "SIP/809-00000013", "internal"),
        ("808", "DAHDI/1-1", "809", "SIP/809-00000013", "internal"),
        ("13800138000", "DAHDI/i1/13800138000-51", "02088886666", "DAHDI/i1/x-2", None),
        ("anonymous", "SIP/proxy-0001", "808", "SIP/808-0000001", None),
        ("808", "SIP/808-00000012", None, None, None),
    ],
)
def test_dial_direction_heuristic(
    caller: str, channel: str, callee: str | None, dest_channel: str | None, direction: str | None
) -> None:
    """dialbegin has no direction: the ends' numbers and channels give it, or it stays out."""
    push = {**DIALBEGIN, "calleridnum": caller, "channel": channel}
    push.update(destcalleridnum=callee, destchannel=dest_channel)
    assert run(push)[0].data.get("direction") == direction


def test_extension_length_comes_from_the_source() -> None:
    """Six-digit numbers are extensions when the source says extensions have six digits."""
    push = {**DIALBEGIN, "calleridnum": "100808", "channel": "SIP/100808-00000012"}
    push.update(destcalleridnum="100809", destchannel="SIP/100809-00000013")
    assert run(push, ctx(digits=6))[0].data["direction"] == "internal"


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ("NOANSWER", "no_answer"),
        ("CANCEL", "cancelled"),
        ("BUSY", "busy"),
        ("CHANUNAVAIL", "unavailable"),
        ("CONGESTION", "congestion"),
        ("ABORT", "aborted"),
        ("CONTINUE", "forwarded"),
        ("GOTO", "forwarded"),
        ("DONTCALL", "refused"),
    ],
)
def test_dialend_without_answer_ends_the_ringing(status: str, reason: str) -> None:
    """Asterisk's DialStatus set other than ANSWER is call.ringing_ended with its reason."""
    event = only({**DIALBEGIN, "event": "dialend", "dialstatus": status})
    assert (event.type, event.data["reason"]) == ("call.ringing_ended", reason)


def test_dialend_answer_is_an_answer() -> None:
    """dialstatus ANSWER (firmware that sends Asterisk's set) is call.answered."""
    event = only({**DIALBEGIN, "event": "dialend", "dialstatus": "ANSWER"})
    assert event.type == "call.answered"


@pytest.mark.parametrize("status", ["hangup", "HANGUP", "SOMETHINGELSE"])
def test_dialend_hangup_is_no_verdict(status: str) -> None:
    """Zycoo's "hangup" says the dial is over, not how: neither answered nor unanswered."""
    event = only({**DIALBEGIN, "event": "dialend", "dialstatus": status})
    assert event.type == "raw.unmapped"
    assert event.subject == f"call/{DIALBEGIN['uniqueid']}"
    assert event.data["dialstatus"] == status.lower()


@pytest.mark.parametrize(
    ("disposition", "expected"),
    [
        ("ANSWERED", None),
        ("NO ANSWER", "no_answer"),
        ("BUSY", "busy"),
        ("FAILED", "failed"),
        ("CONGESTION", "failed"),
        ("UNKNOWN", None),
    ],
)
def test_cdr_disposition(disposition: str, expected: str | None) -> None:
    """cdr dispositions map to the schema's; ANSWERED (maybe the IVR) and unknown ones do not."""
    event = only({"event": "cdr", "uniqueid": "1.1", "disposition": disposition})
    assert event.data.get("disposition") == expected
    assert event.data.get("pbx_answered") is (True if disposition == "ANSWERED" else None)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"cdrState": "bridged", "missCause": "", "agentCode": "808"}, "answered"),
        ({}, "abandoned"),
        ({"missCause": "NO_AGENT_ANSWER"}, "no_answer"),
        ({"missCause": "NO_AGENT_LOGIN"}, "no_answer"),
        ({"cdrState": "ivr", "missCause": "NO_ASSIGN"}, "no_answer"),
        ({"cdrState": "ivr", "missCause": ""}, "no_answer"),
        ({"cdrState": "ivr", "missCause": "", "callType": "outgoing"}, None),
        ({"cdrState": "feedback", "missCause": "", "talkingTime": "60"}, "answered"),
        ({"cdrState": "feedback", "missCause": "", "talkingTime": "0"}, "no_answer"),
        ({"cdrState": "queue", "missCause": "", "hangupSide": "caller"}, "abandoned"),
    ],
)
def test_cc_cdr_disposition(changes: dict[str, str], expected: str | None) -> None:
    """bridged, or a survey after a conversation, is answered; else missCause decides."""
    assert only({**CC_CDR, **changes}).data.get("disposition") == expected


def test_cdr_without_calltype_has_no_direction() -> None:
    """An absent calltype is unknown, unlike an empty one (internal)."""
    assert "direction" not in only({"event": "cdr", "uniqueid": "1.1"}).data
    assert only({"event": "cdr", "uniqueid": "1.1", "calltype": ""}).data["direction"] == "internal"


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ({**DIALBEGIN, "uniqueid": None}, "uniqueid"),
        ({k: v for k, v in DIALBEGIN.items() if k != "uniqueid"}, "uniqueid"),
        ({**DIALBEGIN, "uniqueid": ["1.2"]}, "uniqueid"),
        ({**DIALBEGIN, "timestamp": "yesterday"}, "timestamp"),
        ({**DIALBEGIN, "event": "dialend"}, "dialstatus"),
        ({**IVR, "startTime": "08/11/2018 10:21"}, "startTime"),
        ({**IVR, "startTime": "0001-01-01 00:00:00"}, "startTime"),
        ({**CC_CDR, "queueTime": "soon"}, "queueTime"),
        ({"event": "extensionstatus", "exten": "808", "status": "Idle"}, "status"),
        ({"event": "extensionstatus", "status": "0"}, "exten"),
        ({"uniqueid": "1.1"}, "event"),
        ({"event": {"name": "cdr"}}, "event"),
    ],
)
def test_malformed_payload_names_the_field(obj: dict[str, Any], field: str) -> None:
    """A missing, mistyped or unreadable field is a PayloadError that names it."""
    with pytest.raises(PayloadError, match=field) as caught:
        run(obj)
    assert caught.value.field == field


def test_json_list_body_is_refused() -> None:
    """A body that is JSON but not an object is a PayloadError for the whole body."""
    with pytest.raises(PayloadError, match="JSON object") as caught:
        run([{"event": "hangup", "uniqueid": "1.1"}])
    assert caught.value.field == ""


def test_invalid_json_is_refused() -> None:
    """A body that is not JSON at all is an UnsupportedMediaError (a PayloadError)."""
    with pytest.raises(UnsupportedMediaError, match="not valid JSON"):
        normalize(Payload(body=b'{"event": "hangup",'), ctx())


def test_vendor_acks_with_json_success() -> None:
    """The PBX is answered with the JSON body it expects once the events are committed."""
    assert (VENDOR.name, VENDOR.ack.content_type) == ("coocenter", "application/json")
    assert json.loads(VENDOR.ack.body) == {"status": "success"}


_EVENTS = ["dialbegin", "dialbegein", "dialend", "hangup", "extensionstatus", "ivr", "cdr"]
_KEYS = [
    *("timestamp", "channel", "calleridnum", "destchannel", "destcalleridnum", "destuniqueid"),
    *("uniqueid", "mac", "destexten", "dialstatus", "connectedlinenum", "exten", "status"),
    *("statustext", "uuid", "caller", "called", "callType", "queueCode", "startTime"),
    *("endTime", "duration", "ivrId", "ivrDtmf", "callerid", "source", "starttime"),
    *("answertime", "endtime", "disposition", "billableseconds", "calltype", "cdrState"),
    *("missCause", "queueTime", "ringTime", "talkingTime", "holdTime", "agentCode"),
]
_SAMPLES = [
    *("1534993059.785012", "15634993059.785012", "2018-11-08 10:21:29", "0000-00-00 00:00:00"),
    *("0001-01-01 00:00:00", "9999-12-31 23:59:59", "ANSWER", "NO ANSWER", "bridged", "IN"),
    *("MEMBER_CANCEL", "9", "-1", "1e400", "nan", "0:01:02", "DAHDI/i1/1-1", '"a" <1>', ""),
]
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
_key = st.sampled_from(_KEYS).flatmap(lambda k: st.sampled_from([k, k.lower(), k.upper()]))
_value = st.sampled_from(_SAMPLES) | _json
_event_name = st.sampled_from([*_EVENTS, "cc_cdr", " CDR "]) | st.text(max_size=8) | _json


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
    push.update(draw(st.dictionaries(_key | st.text(max_size=6), _value, max_size=4)))
    if draw(st.booleans()):
        push = {key.upper(): value for key, value in push.items()}
    if draw(st.integers(0, 3)) == 0:
        push["event"] = draw(_event_name)
    return push


@settings(max_examples=300, deadline=None)
@given(push=_push(), zone=st.sampled_from(["Asia/Shanghai", "UTC", "Pacific/Kiritimati"]))
def test_any_json_object_gives_events_or_payload_error(push: dict[str, Any], zone: str) -> None:
    """Whatever the PBX sends, the normaliser returns events or raises PayloadError."""
    try:
        events = run(push, ctx(tz=zone))
    except PayloadError:
        return
    assert all(isinstance(e, Event) and e.type in TYPES for e in events)
    assert all(e.data["raw"] == push for e in events)
