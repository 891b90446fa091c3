"""The cloud IVR call-log normaliser: the fixtures are its specification."""

from __future__ import annotations

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
from bridge.vendors.callog import VENDOR, normalize, reject
from tests.callplay import Player, types
from tests.fixtureutil import context_for, load_fixtures, payload_for

FIXTURES = load_fixtures("callog")
RECEIVED = datetime(2024, 3, 5, 4, 34, 2, tzinfo=UTC)

# The document's sample URL spelling, with made-up values for its placeholders.
SAMPLE: dict[str, str] = {
    "callnumber": "9845012345",
    "date": "2024-03-05",
    "time": "10:00:00",
    "agentnumber": "9900112233",
    "ivrduration": "25",
    "callduration": "185",
    "callstatus": "ANSWER",
    "state": "Karnataka",
    "ibizfonenumber": "08069991234",
    "recordingurl": "http://127.0.0.1:8080/recordings/1.mp3",
    "calllogid": "5f0c2a9e-3d41-4b8a-9a57-0c6e1b7d2f10",
    "department": "Sales",
}
# The table's names for the same parameters.
TABLE_NAMES: dict[str, str] = {
    "calllogid": "call_uuid",
    "callnumber": "caller_number",
    "agentnumber": "agent_connected",
    "ivrduration": "total_call_duration",
    "callduration": "conversation_duration",
    "callstatus": "call_status",
    "state": "caller_circle",
    "ibizfonenumber": "knumber",
    "recordingurl": "recording_url",
}


def ctx(*, tz: str = "Asia/Kolkata", received_at: datetime = RECEIVED) -> SourceContext:
    return SourceContext(name="ivr", vendor="callog", tz=ZoneInfo(tz), received_at=received_at)


def only(query: dict[str, str], context: SourceContext | None = None) -> Event:
    (event,) = normalize(Payload(query=query), context or ctx())
    return event


def table(query: dict[str, str]) -> dict[str, str]:
    return {TABLE_NAMES.get(key, key): value for key, value in query.items()}


def without_raw(event: Event) -> dict[str, Any]:
    return {key: value for key, value in event.data.items() if key != "raw"}


@pytest.mark.parametrize(("case", "fixture"), FIXTURES, ids=[case for case, _ in FIXTURES])
def test_fixture(case: str, fixture: dict[str, Any]) -> None:
    """Each call-log request normalises to exactly the events its fixture specifies."""
    events = normalize(payload_for(fixture), context_for(fixture))
    assert msgspec.to_builtins(events) == fixture["events"]


def test_fixtures_cover_both_spellings_every_status_and_unmapped() -> None:
    """There are fixtures for both spellings, each status, H:MM:SS and an unmapped request."""
    queries = [fixture["query"] for _, fixture in FIXTURES]
    statuses = {(q.get("callstatus") or q.get("call_status") or "").upper() for q in queries}
    assert statuses >= {"ANSWER", "MISSED", "DROPPED"}
    assert any("call_uuid" in q for q in queries)
    assert any("calllogid" in q for q in queries)
    assert any(":" in q.get("callduration", "") for q in queries)
    assert "raw.unmapped" in {e["type"] for _, f in FIXTURES for e in f["events"]}


@pytest.mark.parametrize(("case", "fixture"), FIXTURES, ids=[case for case, _ in FIXTURES])
def test_retry_yields_identical_ids(case: str, fixture: dict[str, Any]) -> None:
    """The same request retried later makes the same event ids (the outbox drops the copy)."""
    first = context_for(fixture)
    later = SourceContext(
        name=first.name,
        vendor=first.vendor,
        tz=first.tz,
        received_at=first.received_at + timedelta(minutes=5),
    )
    payload = payload_for(fixture)
    assert [e.id for e in normalize(payload, later)] == [e.id for e in normalize(payload, first)]


def test_distinct_calls_have_distinct_ids() -> None:
    """Fixtures of different calls never share an id (the two spellings of one call do)."""
    ids = [e["id"] for case, f in FIXTURES for e in f["events"] if case != "table_spelling_answer"]
    assert len(ids) == len(set(ids))


def test_both_spellings_give_the_same_event() -> None:
    """The table's parameter names and the sample URL's give the same id and data."""
    sample, tabled = only(SAMPLE), only(table(SAMPLE))
    assert tabled.id == sample.id
    assert without_raw(tabled) == without_raw(sample)
    assert tabled.data["raw"] == table(SAMPLE)


def test_parameter_names_are_case_insensitive() -> None:
    """CallStatus or CALLNUMBER map like the documented lower-case names."""
    event = only({key.upper(): value for key, value in SAMPLE.items()})
    assert without_raw(event) == without_raw(only(SAMPLE))


def test_ist_local_time_is_converted_to_utc() -> None:
    """date 2024-03-05 + time 10:00:00 in Asia/Kolkata (UTC+5:30) starts at 04:30Z."""
    assert only(SAMPLE).data["timings"]["started_at"] == "2024-03-05T04:30:00Z"


def test_the_source_zone_decides_the_conversion() -> None:
    """The same local time in a UTC source is 10:00Z: the zone comes from the source."""
    assert only(SAMPLE, ctx(tz="UTC")).data["timings"]["started_at"] == "2024-03-05T10:00:00Z"


def test_durations_in_h_mm_ss() -> None:
    """ivrduration 0:00:42 and callduration 0:12:05 are 42 and 725 seconds."""
    event = only({**SAMPLE, "ivrduration": "0:00:42", "callduration": "0:12:05"})
    timings = event.data["timings"]
    assert (timings["ivr_s"], timings["talk_s"], timings["total_s"]) == (42, 725, 767)


def test_answered_call_timings_follow_the_ivr_then_the_conversation() -> None:
    """An agent took the call after the IVR time; it ended after the conversation."""
    timings = only(SAMPLE).data["timings"]
    assert timings["answered_at"] == "2024-03-05T04:30:25Z"
    assert timings["ended_at"] == "2024-03-05T04:33:30Z"
    assert only(SAMPLE).time == timings["ended_at"]


@pytest.mark.parametrize(
    ("status", "disposition", "reason"),
    [
        ("ANSWER", "answered", None),
        ("answer", "answered", None),
        ("MISSED", "no_answer", "missed"),
        ("Missed", "no_answer", "missed"),
        ("DROPPED", "abandoned", "dropped"),
        (" dropped ", "abandoned", "dropped"),
    ],
)
def test_call_status_maps_to_disposition(status: str, disposition: str, reason: str | None) -> None:
    """ANSWER, MISSED and DROPPED (any case) give the disposition and missed_reason."""
    data = only({**SAMPLE, "callstatus": status}).data
    assert (data["disposition"], data.get("missed_reason")) == (disposition, reason)


def test_unanswered_call_has_no_answer_time() -> None:
    """A MISSED call has no answered_at even though an IVR time is given."""
    assert "answered_at" not in only({**SAMPLE, "callstatus": "MISSED"}).data["timings"]


def test_dropped_call_through_the_call_rules_is_ended_then_missed() -> None:
    """The writer's rules make a DROPPED log call.ended, call.completed, call.missed (dropped)."""
    out = Player().play([only({**SAMPLE, "callstatus": "DROPPED"})])
    assert types(out) == ["call.ended", "call.completed", "call.missed"]
    assert out[2].data["missed_reason"] == "dropped"
    assert out[2].data["decided_by"] == "record"


def test_answered_call_through_the_call_rules_is_not_missed() -> None:
    """The writer's rules make an ANSWER log call.ended then call.completed, nothing missed."""
    assert types(Player().play([only(SAMPLE)])) == ["call.ended", "call.completed"]


@pytest.mark.parametrize("key", ["callstatus", "call_status", "CallStatus"])
def test_unknown_status_names_the_field_as_sent(key: str) -> None:
    """A status other than ANSWER, MISSED or DROPPED is a PayloadError naming the key sent."""
    query = {k: v for k, v in SAMPLE.items() if k != "callstatus"} | {key: "BUSY"}
    with pytest.raises(PayloadError, match="expected ANSWER, MISSED or DROPPED") as caught:
        only(query)
    assert caught.value.field == key


def test_missing_status_names_the_field() -> None:
    """A call log without a status cannot say whether it was answered: a PayloadError."""
    with pytest.raises(PayloadError, match="missing") as caught:
        only({k: v for k, v in SAMPLE.items() if k != "callstatus"})
    assert caught.value.field == "callstatus"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"date": "05/03/2024"}, "date"),
        ({"date": "2024-02-30"}, "date"),
        ({"time": "10 AM"}, "time"),
        ({"time": "24:00:00"}, "time"),
        ({"ivrduration": "soon"}, "ivrduration"),
        ({"callduration": "-5"}, "callduration"),
        ({"date": "9999-12-31", "time": "23:59:00", "ivrduration": "999999"}, "ivrduration"),
        ({"date": "0001-01-01", "time": "01:00:00"}, "date"),
    ],
)
def test_unreadable_field_is_named(changes: dict[str, str], field: str) -> None:
    """A date, time or duration that cannot be read is a PayloadError naming its key."""
    with pytest.raises(PayloadError) as caught:
        only({**SAMPLE, **changes})
    assert caught.value.field == field


def test_contradicting_spellings_are_refused() -> None:
    """callstatus=ANSWER with call_status=MISSED in one request is a PayloadError."""
    with pytest.raises(PayloadError, match="contradicts") as caught:
        only({**SAMPLE, "call_status": "MISSED"})
    assert caught.value.field == "call_status"


def test_agreeing_spellings_are_accepted() -> None:
    """A field given in both spellings with the same value maps as if given once."""
    assert without_raw(only({**SAMPLE, "call_uuid": SAMPLE["calllogid"]})) == without_raw(
        only(SAMPLE)
    )


def test_without_call_id_a_digest_is_the_key() -> None:
    """No calllogid: the subject and id come from the fields, the same for either spelling."""
    query = {k: v for k, v in SAMPLE.items() if k != "calllogid"}
    event, tabled = only(query), only(table(query))
    assert event.subject.startswith("call/calllog-")
    assert (tabled.subject, tabled.id) == (event.subject, event.id)
    assert "call_id" not in event.data


def test_without_call_id_unrecognised_parameters_do_not_change_the_key() -> None:
    """An extra parameter (a cache buster) leaves the digest identity of a call unchanged."""
    query = {k: v for k, v in SAMPLE.items() if k != "calllogid"}
    assert only({**query, "_": "1709613242"}).id == only(query).id


def test_generic_names_alone_are_unmapped() -> None:
    """A request with only date, time, state or department is not a call log: raw.unmapped."""
    event = only({"date": "2024-03-05", "state": "AVAIL", "x": "1"})
    assert (event.type, event.data["raw"]) == (
        "raw.unmapped",
        {"date": "2024-03-05", "state": "AVAIL", "x": "1"},
    )


def test_unbelievable_future_time_falls_back_to_receipt() -> None:
    """A call log dated over a day after receipt takes the receipt time; raw keeps the date."""
    event = only({**SAMPLE, "date": "2030-01-01"})
    assert event.time == "2024-03-05T04:34:02Z"


def test_empty_request_is_refused() -> None:
    """No query parameters and no body is a PayloadError for the whole request."""
    with pytest.raises(PayloadError, match="empty") as caught:
        normalize(Payload(), ctx())
    assert caught.value.field == ""


def test_body_without_query_is_unsupported() -> None:
    """A JSON body and no query parameters is an UnsupportedMediaError."""
    with pytest.raises(UnsupportedMediaError, match="query parameters"):
        normalize(Payload(body=b'{"callstatus":"ANSWER"}', content_type="application/json"), ctx())


def test_form_body_is_read_like_a_query() -> None:
    """A provider that POSTs the fields as a form gives the same event as the GET."""
    body = "&".join(f"{k}={v}" for k, v in SAMPLE.items()).encode()
    payload = Payload(body=body, content_type="application/x-www-form-urlencoded")
    (event,) = normalize(payload, ctx())
    assert without_raw(event) == without_raw(only(SAMPLE))


def test_reject_is_a_plain_text_400_naming_the_field() -> None:
    """The provider's failure answer: 400, text/plain, one line naming the field."""
    with pytest.raises(PayloadError) as caught:
        only({**SAMPLE, "callstatus": "BUSY\nX"})
    answer = reject(caught.value)
    assert (answer.status, answer.content_type) == (400, "text/plain")
    assert answer.body.startswith(b"Failure: callstatus: expected ANSWER, MISSED or DROPPED")
    assert b"\n" not in answer.body
    assert VENDOR.reject is reject


def test_vendor_acks_with_plain_text_success() -> None:
    """An accepted call log is answered 200 text/plain 'Success'."""
    assert (VENDOR.name, VENDOR.ack.status) == ("callog", 200)
    assert (VENDOR.ack.content_type, VENDOR.ack.body) == ("text/plain", b"Success")


_KEYS = [*SAMPLE, *TABLE_NAMES.values(), "CALLSTATUS", "Date", "token"]
_VALUES = [
    *("ANSWER", "missed", "DROPPED", "BUSY", "", " ", "2024-03-05", "0001-01-01", "9999-12-31"),
    *("2024-02-30 10:00:00", "10:00:00", "23:59:59", "24:00", "0:12:05", "1e400", "nan", "-1"),
    *("999999999", "12", "٣", "2024-03-05T10:00:00+05:30"),
]
_value = st.sampled_from(_VALUES) | st.text(max_size=12)


@st.composite
def _query(draw: st.DrawFn) -> dict[str, str]:
    """A sample query with values replaced or dropped, plus arbitrary and known keys."""
    query = dict(SAMPLE) if draw(st.booleans()) else {}
    for key in draw(st.lists(st.sampled_from(sorted(SAMPLE)), unique=True, max_size=4)):
        if draw(st.booleans()):
            query.pop(key, None)
        else:
            query[key] = draw(_value)
    keys = st.sampled_from(_KEYS) | st.text(max_size=8)
    query.update(draw(st.dictionaries(keys, _value, max_size=5)))
    return query


@settings(max_examples=400, deadline=None)
@given(query=_query(), zone=st.sampled_from(["Asia/Kolkata", "UTC", "Pacific/Kiritimati"]))
def test_any_query_gives_events_or_payload_error(query: dict[str, str], zone: str) -> None:
    """Whatever the provider sends, the normaliser returns events or raises PayloadError."""
    try:
        events = normalize(Payload(query=query), ctx(tz=zone))
    except PayloadError:
        return
    assert len(events) == 1
    assert all(isinstance(e, Event) and e.type in TYPES for e in events)
    assert all(e.data["raw"] == query for e in events)
