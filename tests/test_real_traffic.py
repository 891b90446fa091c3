"""The cases real payloads broke, each through the normaliser and the call fold.

Each payload is a vendor's own shape: the OnCall document's call_ended sample (no direction),
PortSIP's knowledge base (portsip/portsip-knowledge-base: pub/sub events, the webhook event
reference's call_cdr without call_status), Zycoo's CooCenter API book (OpenVoIP/coocenter-api-
gitbook: dialstatus "hangup", cc_cdr), the cloud IVR call log as a production receiver reads it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bridge.events import Event
from bridge.vendors import callog, coocenter, oncall
from bridge.vendors.base import Payload, SourceContext
from tests.callplay import Player, types
from tests.fixtureutil import load_fixtures

RECEIVED = datetime(2024, 9, 9, 1, 34, 8, tzinfo=UTC)
FIXTURES = {vendor: dict(load_fixtures(vendor)) for vendor in ("oncall", "coocenter", "callog")}


def ctx(vendor: str, n: int = 0, **extra: Any) -> SourceContext:
    return SourceContext(
        name="hq",
        vendor=vendor,
        tz=ZoneInfo(extra.pop("tz", "UTC")),
        received_at=RECEIVED + timedelta(seconds=n),
        **extra,
    )


def pbx(*pushes: dict[str, Any], **extra: Any) -> list[Event]:
    """OnCall pushes (a CDR goes to the CDR URL) normalised in order, a second apart."""
    events: list[Event] = []
    for n, push in enumerate(pushes):
        path = "cdr" if push.get("event_type") in ("call_cdr", "cdr") else ""
        payload = Payload(body=json.dumps(push).encode(), path=path)
        events += oncall.normalize(payload, ctx("oncall", n, **extra))
    return events


def zycoo(*pushes: dict[str, Any], **extra: Any) -> list[Event]:
    events: list[Event] = []
    for n, push in enumerate(pushes):
        payload = Payload(body=json.dumps(push).encode())
        events += coocenter.normalize(payload, ctx("coocenter", n, tz="Asia/Shanghai", **extra))
    return events


def settled(events: list[Event]) -> Player:
    player = Player()
    player.play(events, now=0.0)
    player.settle(now=1e9)
    return player


def record(player: Player) -> Any:
    (only,) = player.records.values()
    return only


# -- OnCall / PortSIP --------------------------------------------------------------------------

DOC_CALL_ENDED = FIXTURES["oncall"]["call_ended_sample"]["payload"]


def test_the_oncall_documents_own_unanswered_call_is_missed() -> None:
    """A trunk caller rings extension 108 and nobody answers: no direction in any push, missed."""
    noanswer = {**DOC_CALL_ENDED, "event_type": "call_noanswer"}
    ringing = {**DOC_CALL_ENDED, "event_type": "target_ringing", "call_target": "sip:108@test01"}
    player = settled(pbx(ringing, noanswer))
    assert "call.missed" in types(player.committed)
    missed = player.committed[-1]
    assert (missed.data["direction"], missed.data["direction_inferred"]) == ("inbound", True)
    assert missed.data["from"] == "02873062020"


def test_the_documents_call_ended_alone_has_no_invented_disposition() -> None:
    """call_ended says nothing of the outcome: call.ended carries no disposition."""
    (ended,) = Player().play(pbx(DOC_CALL_ENDED))
    assert ended.type == "call.ended"
    assert "disposition" not in ended.data


def test_portsip_direction_values_of_every_generation_are_read() -> None:
    """ext/in/in2out/out, internal/inbound/inbound_outbound/outbound, and the REST enum."""
    start = FIXTURES["oncall"]["call_start_inbound"]["payload"]
    expected = {
        "in": "inbound",
        "inbound": "inbound",
        "INBOUND_CALL": "inbound",
        "in2out": "inbound",
        "inbound_outbound": "inbound",
        "out": "outbound",
        "outbound": "outbound",
        "ext": "internal",
        "internal": "internal",
        "EXTENSION_CALL": "internal",
    }
    for value, direction in expected.items():
        (event,) = pbx({**start, "direction": value})
        assert event.data["direction"] == direction, value
        assert "direction_inferred" not in event.data


def test_a_cdr_only_deployment_reports_missed_calls_with_current_direction_values() -> None:
    """Only the CDR URL, direction "inbound", nobody answered: call.missed from the record."""
    cdr = FIXTURES["oncall"]["call_cdr_noanswer"]["payload"]
    player = settled(pbx({**cdr, "direction": "inbound"}))
    assert types(player.committed) == ["call.ended", "call.completed", "call.missed"]
    assert player.committed[-1].data["decided_by"] == "record"


def test_a_cdr_sent_as_event_type_cdr_is_a_call_record() -> None:
    """Some integrations name the CDR "cdr": it is call.completed, not raw.unmapped."""
    cdr = FIXTURES["oncall"]["call_cdr_noanswer"]["payload"]
    (event,) = pbx({**cdr, "event_type": "cdr"})
    assert event.type == "call.completed"
    assert event.data["disposition"] == "no_answer"


def test_call_ended_before_call_established_is_answered_not_missed() -> None:
    """PortSIP delivers out of order: the late answer is kept and the call is not missed."""
    start = {**DOC_CALL_ENDED, "event_type": "call_start", "direction": "in"}
    answer = {**DOC_CALL_ENDED, "event_type": "call_established", "call_target": "sip:108@t"}
    player = settled(pbx(start, DOC_CALL_ENDED, answer))
    assert types(player.committed) == ["call.initiated", "call.ended", "call.answered"]
    assert player.committed[-1].data["late"] is True
    assert record(player).answered


def test_an_older_cdr_without_call_status_is_answered_from_its_targets() -> None:
    """PortSIP's 2023 CDR has no call_status: the agent target that rang, then answered, did."""
    cdr = FIXTURES["oncall"]["kb_cdr_call_cdr_2023_no_call_status"]["payload"]
    player = settled(pbx(cdr))
    (completed,) = [e for e in player.committed if e.type == "call.completed"]
    assert completed.data["disposition"] == "answered"
    assert completed.data["agent"] == "103"
    assert "call.missed" not in types(player.committed)


def test_the_ivr_answering_is_not_a_person_answering() -> None:
    """A CDR whose only answered target is the IVR (answered the instant it rang): abandoned."""
    cdr = FIXTURES["oncall"]["kb_cdr_call_cdr_2024_call_status"]["payload"]
    ivr_only = {**cdr, "call_targets": cdr["call_targets"][:1], "ended_time": "1725845655"}
    player = settled(pbx(ivr_only))
    (completed,) = [e for e in player.committed if e.type == "call.completed"]
    assert completed.data["disposition"] == "abandoned"
    assert types(player.committed)[-1] == "call.missed"


def test_the_answering_agent_comes_from_call_targets() -> None:
    """The 2024 CDR: IVR 5000 and queue 8000 answer first; agent 102 is who took the call."""
    cdr = FIXTURES["oncall"]["kb_cdr_call_cdr_2024_call_status"]["payload"]
    (event,) = pbx(cdr)
    assert (event.data["agent"], event.data["timings"]["talk_s"]) == ("102", 7)


def test_a_late_call_start_enriches_the_call() -> None:
    """call_start delivered last: its DID and cdr_id reach the call record and call.missed."""
    start = {**DOC_CALL_ENDED, "event_type": "call_start", "did": "02873000100", "cdr_id": "9"}
    noanswer = {**DOC_CALL_ENDED, "event_type": "call_noanswer"}
    player = settled(pbx(noanswer, start))
    assert record(player).value("did") == "02873000100"
    (missed,) = [e for e in player.committed if e.type == "call.missed"]
    assert missed.data["did"] == "02873000100"


def test_extension_agent_status_is_the_first_agent_state() -> None:
    """PortSIP's extension_agent_status READY in queue 8002: agent.state available."""
    push = FIXTURES["oncall"]["kb_ext_extension_agent_status"]["payload"]
    (event,) = pbx(push)
    assert (event.type, event.subject, event.data["state"]) == (
        "agent.state",
        "agent/102",
        "available",
    )
    assert event.data["queue"] == "8002"


def test_a_configured_did_makes_an_inbound_call() -> None:
    """An anonymous caller to a short DID tells nothing, until the source lists its DIDs."""
    push = {
        **DOC_CALL_ENDED,
        "event_type": "call_noanswer",
        "caller": "sip:anonymous@example.com",
        "callee": "sip:4000@example.com",
    }
    (plain,) = pbx(push)
    assert "direction" not in plain.data
    (configured,) = pbx(push, dids=frozenset({"4000"}))
    assert configured.data["direction"] == "inbound"
    (internal,) = pbx({**push, "caller": "sip:101@x"}, dids=frozenset({"4000"}))
    assert "direction" not in internal.data  # an extension calling its own DID: not inbound


def test_a_configured_trunk_host_makes_an_outside_caller() -> None:
    """A caller behind a listed trunk host is outside, however short its number."""
    push = {**DOC_CALL_ENDED, "caller": "sip:555@trunk.example.net"}
    (event,) = pbx(push, trunk_hosts=frozenset({"trunk.example.net"}))
    assert event.data["direction"] == "inbound"


# -- Zycoo CooCenter ---------------------------------------------------------------------------

BOOK = FIXTURES["coocenter"]


def _queue_call(cc_state: str, talk: str, miss: str) -> list[dict[str, Any]]:
    """The book's dialbegein/dialend ("hangup") of one call, its hangup and its cc_cdr."""
    uid = BOOK["dialbegein_book"]["payload"]["uniqueid"]
    cc_cdr = {**BOOK["cc_cdr_book"]["payload"], "uuid": uid, "cdrState": cc_state}
    cc_cdr.update(talkingTime=talk, missCause=miss)
    hangup = {**BOOK["hangup_book"]["payload"], "uniqueid": uid}
    return [BOOK["dialbegein_book"]["payload"], BOOK["dialend_book"]["payload"], hangup, cc_cdr]


def test_zycoo_hangup_dialstatus_with_a_bridged_cc_cdr_is_answered() -> None:
    """The firmware's dialstatus "hangup" is no verdict; the bridged cc_cdr says answered."""
    player = settled(zycoo(*_queue_call("bridged", "60", "")))
    assert "call.missed" not in types(player.committed)
    assert record(player).answered
    assert record(player).disposition == "answered"


def test_zycoo_hangup_dialstatus_before_the_cc_cdr_is_not_declared_missed_at_hangup() -> None:
    """At the hangup nothing is decided: the miss waits for the cc_cdr or the window."""
    pushes = _queue_call("bridged", "60", "")
    player = Player()
    player.play(zycoo(*pushes[:3]), now=0.0)
    assert "call.missed" not in types(player.committed)
    player.play(zycoo(*pushes[3:]), now=1.0)
    player.settle(now=1e9)
    assert "call.missed" not in types(player.committed)


def test_zycoo_queue_call_nobody_took_is_missed_by_the_cc_cdr() -> None:
    """cdrState queue with NO_AGENT_ANSWER: missed, at once, said by the record."""
    player = Player()
    player.play(zycoo(*_queue_call("queue", "0", "NO_AGENT_ANSWER")), now=0.0)
    missed = player.committed[-1]
    assert (missed.type, missed.data["decided_by"]) == ("call.missed", "record")
    assert missed.data["missed_reason"] == "no_agent_answer"


def test_a_hangup_and_an_answered_cdr_of_one_call_agree() -> None:
    """The book's hangup and cdr of call 1325747409.260: one end, answered, no contradiction."""
    player = settled(zycoo(BOOK["hangup_book"]["payload"], BOOK["cdr_book"]["payload"]))
    assert types(player.committed) == ["call.ended", "call.completed"]
    assert "disposition" not in player.committed[0].data  # unknown at the hangup
    assert record(player).disposition == "answered"  # the cdr's ANSWERED, for an internal call


def test_a_cdr_and_the_cc_cdr_of_one_call_do_not_contradict_each_other() -> None:
    """An IVR-answered cdr (ANSWERED) and a cc_cdr that says nobody took it: the call is missed,
    and the cdr's event does not claim a person answered (only pbx_answered)."""
    uid = BOOK["dialbegein_book"]["payload"]["uniqueid"]
    cdr = {**BOOK["cdr_book"]["payload"], "uniqueid": uid, "calltype": "inbound"}
    pushes = [*_queue_call("queue", "0", "NO_AGENT_ANSWER"), cdr]
    player = settled(zycoo(*pushes))
    completed = [e for e in player.committed if e.type == "call.completed"]
    assert [e.data.get("disposition") for e in completed] == ["no_answer", None]
    assert completed[1].data["pbx_answered"] is True
    assert record(player).missed


def test_a_recording_is_a_fetchable_url_with_the_sources_base() -> None:
    """cc_cdr filePath is PBX-relative: with recording_base_url it becomes a URL, path kept."""
    push = {**BOOK["cc_cdr_book"]["payload"], "filePath": "q-630-20181105.wav"}
    base = "http://192.0.2.10:8000/coocenter-api/monitor/"
    (event,) = zycoo(push, recording_base_url=base)
    assert event.data["recording_url"] == f"{base}q-630-20181105.wav"
    assert event.data["recording_path"] == "q-630-20181105.wav"
    (bare,) = zycoo(push)
    assert "recording_url" not in bare.data
    assert bare.data["recording_path"] == "q-630-20181105.wav"


def test_the_asterisk_dialstatus_set_decides_ringing() -> None:
    """Firmware that sends Asterisk's set: ANSWER is an answer, the rest end the ringing."""
    dialend = BOOK["dialend_book"]["payload"]
    (answer,) = zycoo({**dialend, "dialstatus": "ANSWER"})
    assert answer.type == "call.answered"
    for status in ("BUSY", "NOANSWER", "CANCEL", "CONGESTION", "CHANUNAVAIL", "ABORT"):
        (ended,) = zycoo({**dialend, "dialstatus": status})
        assert ended.type == "call.ringing_ended", status


# -- cloud IVR call log ------------------------------------------------------------------------


def test_the_call_log_reads_callernumber_and_calltype() -> None:
    """A production receiver's spelling: the caller and the direction are not lost."""
    query = dict(FIXTURES["callog"]["sample_url_missed"]["query"])
    del query["callnumber"]
    query.update(callernumber="7012345678", calltype="outgoing")
    (event,) = callog.normalize(Payload(query=query), ctx("callog", tz="Asia/Kolkata"))
    assert event.data["direction"] == "outbound"
    assert event.data["to"] == "7012345678"
    player = settled([event])
    assert "call.missed" not in types(player.committed)  # an outgoing call nobody took
    query["calltype"] = "incoming"
    (incoming,) = callog.normalize(Payload(query=query), ctx("callog", tz="Asia/Kolkata"))
    assert (incoming.data["direction"], incoming.data["from"]) == ("inbound", "7012345678")
