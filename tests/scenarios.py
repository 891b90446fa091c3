"""Whole calls as each vendor pushes them: the payloads of realistic scenarios, normalised.

The shapes are the vendors' real ones: Zycoo's CooCenter API book (OpenVoIP/coocenter-api-
gitbook, http-client/untitled.md: dialbegein/dialend with dialstatus "hangup", hangup, cdr,
cc_cdr), PortSIP's knowledge base (portsip/portsip-knowledge-base: the v16 pub/sub events and
the webhook event reference's call_cdr with call_targets[]), the OnCall document's call_ended
(no direction), the cloud IVR call log's sample URL and Coral's push and stream samples. Values
are invented but consistent within a call. Each push gets its own fixed receipt time, so a
scenario is the same set of events whatever order it is delivered in.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bridge.events import Event
from bridge.vendors.base import Normalizer, Payload, SourceContext
from bridge.vendors.registry import STREAMS, VENDORS

T0 = datetime(2024, 9, 9, 1, 34, 8, tzinfo=UTC)
EPOCH = int(T0.timestamp())


@dataclass(frozen=True)
class Scenario:
    vendor: str
    name: str
    events: tuple[Event, ...]
    missed: bool  # what a correct bridge finally says
    answered: bool


def _normalise(vendor: str, pushes: list[Payload], tz: str = "UTC") -> tuple[Event, ...]:
    normalize: Normalizer = (
        STREAMS["coral"] if vendor == "coral_realtime" else VENDORS[vendor].normalize
    )
    events: list[Event] = []
    for n, payload in enumerate(pushes):
        ctx = SourceContext(
            name="hq",
            vendor=vendor.removesuffix("_realtime"),
            tz=ZoneInfo(tz),
            received_at=T0 + timedelta(seconds=2 * n + 1),
        )
        events.extend(normalize(payload, ctx))
    return tuple(events)


def _json(body: dict[str, Any], path: str = "") -> Payload:
    return Payload(body=json.dumps(body).encode(), content_type="application/json", path=path)


# -- Zycoo CooCenter, as its firmware pushes (dialstatus "hangup") -----------------------------

_CALLER = "13800138000"


def _coo_dial(uid: str, agent: str, n: int, status: str = "hangup") -> list[Payload]:
    dial = {
        "timestamp": f"{EPOCH + 5 + n}.785012",
        "channel": "DAHDI/i1/13800138000-51",
        "calleridnum": _CALLER,
        "destchannel": f"SIP/{agent}-0000006{n}",
        "destcalleridnum": agent,
        "destuniqueid": f"{uid}{n}",
        "uniqueid": uid,
    }
    return [
        _json({"event": "dialbegein", "dialstring": f"SIP/{agent}", **dial}),
        _json({"event": "dialend", **dial, "dialstatus": status}),
    ]


def _coo_ivr(uid: str) -> Payload:
    return _json(
        {
            "event": "ivr",
            "uuid": uid,
            "caller": _CALLER,
            "called": "",
            "callType": "IN",
            "queueCode": "630",
            "startTime": "2024-09-09 09:34:08",
            "endTime": "2024-09-09 09:34:12",
            "duration": "4",
            "ivrId": "610",
            "ivrName": "working time",
            "ivrDtmf": "1",
            "trunkNumber": "02066668888",
        }
    )


def _coo_hangup(uid: str, other: str) -> Payload:
    return _json(
        {"event": "hangup", "uniqueid": uid, "calleridnum": _CALLER, "connectedlinenum": other}
    )


def _coo_cdr(uid: str, disposition: str, calltype: str = "inbound") -> Payload:
    return _json(_coo_cdr_body(uid, disposition, calltype))


def _coo_cdr_body(uid: str, disposition: str, calltype: str = "inbound") -> dict[str, Any]:
    return {
        "event": "cdr",
        "callerid": f'"{_CALLER}" <{_CALLER}>',
        "source": _CALLER,
        "destination": "630",
        "starttime": "2024-09-09 09:34:08",
        "answertime": "2024-09-09 09:34:08" if disposition == "ANSWERED" else "",
        "endtime": "2024-09-09 09:35:20",
        "disposition": disposition,
        "duration": "72",
        "billableseconds": "72" if disposition == "ANSWERED" else "0",
        "calltype": calltype,
        "recordfile": "",
        "uniqueid": uid,
    }


def _coo_cc_cdr(uid: str, state: str, talk: str, miss: str, side: str = "caller") -> Payload:
    return _json(
        {
            "event": "cc_cdr",
            "uuid": uid,
            "caller": _CALLER,
            "called": "100",
            "queueCode": "630",
            "agentCode": "801",
            "callType": "incoming",
            "cdrState": state,
            "hangupSide": side,
            "startTime": "2024-09-09 09:34:08",
            "endTime": "2024-09-09 09:35:20",
            "duration": "72",
            "queueTime": "5",
            "ringTime": "6",
            "talkingTime": talk,
            "trunkNumber": "02066668888",
            "filePath": "q-630-20240909-093408.wav" if talk != "0" else "",
            "missCause": miss,
        }
    )


def coocenter() -> list[Scenario]:
    tz = "Asia/Shanghai"

    def make(name: str, pushes: list[Payload], *, missed: bool, answered: bool) -> Scenario:
        return Scenario("coocenter", name, _normalise("coocenter", pushes, tz), missed, answered)

    a, m, i, c, o, n, t = (
        "1725845648.70",
        "1725845648.20",
        "1725845648.30",
        "1725845648.40",
        "1725845648.50",
        "1725845648.60",
        "1725845648.10",
    )
    return [
        make(
            "answered_in_queue",
            [
                _coo_ivr(a),
                *_coo_dial(a, "801", 1),
                _coo_hangup(a, "801"),
                _coo_cdr(a, "ANSWERED"),
                _coo_cc_cdr(a, "bridged", "60", ""),
            ],
            missed=False,
            answered=True,
        ),
        make(
            "missed_in_queue",
            [
                _coo_ivr(m),
                *_coo_dial(m, "801", 1),
                *_coo_dial(m, "802", 2),
                _coo_hangup(m, "802"),
                _coo_cdr(m, "ANSWERED"),  # the IVR answered the channel
                _coo_cc_cdr(m, "queue", "0", "NO_AGENT_ANSWER"),
            ],
            missed=True,
            answered=False,
        ),
        make(
            "abandoned_in_ivr",
            [
                _coo_ivr(i),
                _coo_hangup(i, ""),
                _coo_cdr(i, "ANSWERED"),
                _coo_cc_cdr(i, "ivr", "0", ""),
            ],
            missed=True,
            answered=False,
        ),
        make(
            # Asterisk's DialStatus firmware, straight to an extension: no call-centre record.
            "caller_cancels_while_ringing",
            [*_coo_dial(c, "801", 1, "CANCEL"), _coo_hangup(c, "801"), _coo_cdr(c, "NO ANSWER")],
            missed=True,
            answered=False,
        ),
        make(
            # Asterisk writes a CDR per channel dialled: the first agent's NO ANSWER, the
            # second's ANSWERED. No call-centre record, firmware dialstatus "hangup".
            "second_agent_answered_two_cdrs",
            [
                *_coo_dial(t, "801", 1),
                *_coo_dial(t, "802", 2),
                _coo_hangup(t, "802"),
                _json({**_coo_cdr_body(t, "NO ANSWER"), "destination": "801"}),
                _json({**_coo_cdr_body(t, "ANSWERED"), "destination": "802"}),
            ],
            missed=False,
            answered=True,
        ),
        make(
            "outbound_not_answered",
            [
                _json(
                    {
                        "event": "dialbegin",
                        "timestamp": f"{EPOCH}.5",
                        "channel": "SIP/801-00000001",
                        "calleridnum": "801",
                        "destchannel": "SIP/trunk1-00000002",
                        "destcalleridnum": "13900139000",
                        "destuniqueid": f"{o}1",
                        "uniqueid": o,
                    }
                ),
                _coo_hangup(o, "13900139000"),
                _coo_cdr(o, "NO ANSWER", "outbound"),
            ],
            missed=False,
            answered=False,
        ),
        make(
            "internal_answered",
            [
                _json(
                    {
                        "event": "dialbegin",
                        "timestamp": f"{EPOCH}.5",
                        "channel": "SIP/808-00000001",
                        "calleridnum": "808",
                        "destchannel": "SIP/809-00000002",
                        "destcalleridnum": "809",
                        "destuniqueid": f"{n}1",
                        "uniqueid": n,
                    }
                ),
                _coo_hangup(n, "809"),
                _coo_cdr(n, "ANSWERED", ""),
            ],
            missed=False,
            answered=True,
        ),
    ]


# -- OnCall / PortSIP ------------------------------------------------------------------------

_TENANT = "test.example.com"
_OUTSIDE = "0287306202"


def _pbx(event: str, session: str, dt: int, **fields: Any) -> Payload:
    body = {
        "event_type": event,
        "session_id": session,
        "call_id": f"{session}-sip",
        "caller": f"sip:{_OUTSIDE}@192.0.2.10",
        "callee": f"sip:18800606@{_TENANT}",
        "tenant_id": "883611252155219968",
        "time": str(EPOCH + dt),
        **fields,
    }
    return _json(body, "cdr" if event in ("call_cdr", "cdr") else "")


def _target(
    number: str, *, rang: int, answered: int | None, ended: int, end: str = "None"
) -> dict[str, Any]:
    return {
        "callee": number,
        "caller": _OUTSIDE,
        "destination": f"sip:{number}@192.0.2.135:5960",
        "call_type": "normal_call",
        "start_time": str(EPOCH + rang),
        "ring_time": str(EPOCH + rang),
        "answered_time": str(EPOCH + answered) if answered is not None else "0",
        "ended_time": str(EPOCH + ended),
        "status": "answered" if answered is not None else "noanswer",
        "status_code": 0,
        "end_reason": end,
    }


def _cdr(session: str, targets: list[dict[str, Any]], **fields: Any) -> Payload:
    return _pbx(
        fields.pop("event", "call_cdr"),
        session,
        60,
        start_time=str(EPOCH),
        ended_time=str(EPOCH + 60),
        did="18800606",
        callee="5000",  # as in PortSIP's samples: the number dialled first, the IVR
        call_targets=targets,
        **fields,
    )


def oncall() -> list[Scenario]:
    def make(name: str, pushes: list[Payload], *, missed: bool, answered: bool) -> Scenario:
        return Scenario("oncall", name, _normalise("oncall", pushes), missed, answered)

    # The IVR answers the instant it rings, and hands the call on ("referred").
    ivr = _target("5000", rang=0, answered=0, ended=5, end="referred")
    agent = _target("102", rang=6, answered=12, ended=60)
    unanswered = _target("102", rang=6, answered=None, ended=30)
    auto = _target("102", rang=6, answered=6, ended=60)  # a headset on auto-answer
    return [
        make(
            "answered_by_an_auto_answer_agent",
            [
                _pbx("call_start", "1009", 0, direction="in"),
                _pbx("cdr_target_answer", "1009", 0, destination="sip:5000@192.0.2.93"),
                _pbx("cdr_target_answer", "1009", 6, destination="sip:102@192.0.2.135"),
                _pbx("call_ended", "1009", 60),
                _cdr("1009", [ivr, auto], event="cdr"),
            ],
            missed=False,
            answered=True,
        ),
        make(
            "abandoned_after_the_ivr_answered",
            [
                _pbx("call_start", "1010", 0, direction="in"),
                _pbx("cdr_target_answer", "1010", 0, destination="sip:5000@192.0.2.93"),
                _pbx("call_ended", "1010", 5),
                _cdr("1010", [_target("5000", rang=0, answered=0, ended=5)], answered_time="0"),
            ],
            missed=True,
            answered=False,
        ),
        make(
            "answered",
            [
                _pbx("call_start", "1001", 0, direction="in", did="18800606"),
                _pbx("target_ringing", "1001", 6, call_target=f"sip:102@{_TENANT}"),
                _pbx("call_established", "1001", 12, call_target=f"sip:102@{_TENANT}"),
                _pbx("call_ended", "1001", 60),
                _cdr("1001", [ivr, agent], call_status="answered", answered_time=str(EPOCH)),
            ],
            missed=False,
            answered=True,
        ),
        make(
            # The OnCall document's shape: no direction anywhere; an older CDR without
            # call_status, delivered as event_type "cdr".
            "answered_no_direction_old_cdr",
            [
                _pbx("target_ringing", "1002", 6, call_target=f"sip:102@{_TENANT}"),
                _pbx("call_established", "1002", 12, call_target=f"sip:102@{_TENANT}"),
                _pbx("call_ended", "1002", 60),
                _cdr("1002", [ivr, agent], event="cdr", answered_time=str(EPOCH)),
            ],
            missed=False,
            answered=True,
        ),
        make(
            "missed_in_queue",
            [
                _pbx("call_start", "1003", 0, direction="in"),
                _pbx("target_ringing", "1003", 6, call_target=f"sip:102@{_TENANT}"),
                _pbx("target_noanswer", "1003", 30, call_target=f"sip:102@{_TENANT}"),
                _pbx("call_noanswer", "1003", 30),
                _cdr("1003", [ivr, unanswered], call_status="answered", answered_time=str(EPOCH)),
            ],
            missed=True,
            answered=False,
        ),
        make(
            "abandoned_in_ivr",
            [
                _pbx("call_start", "1004", 0, direction="inbound"),
                _pbx("call_ended", "1004", 5),
                _cdr("1004", [ivr], call_status="answered", answered_time=str(EPOCH)),
            ],
            missed=True,
            answered=False,
        ),
        make(
            "caller_cancels_while_ringing",
            [
                _pbx("call_start", "1005", 0, direction="in"),
                _pbx("target_ringing", "1005", 2, call_target=f"sip:102@{_TENANT}"),
                _pbx("call_fail", "1005", 9, fail_code=487),
                _cdr("1005", [], call_status="fail", status_code="487"),
            ],
            missed=True,
            answered=False,
        ),
        make(
            "outbound_not_answered",
            [
                _pbx(
                    "call_start",
                    "1006",
                    0,
                    direction="out",
                    caller=f"sip:102@{_TENANT}",
                    callee=f"sip:{_OUTSIDE}@{_TENANT}",
                ),
                _pbx(
                    "call_noanswer",
                    "1006",
                    30,
                    caller=f"sip:102@{_TENANT}",
                    callee=f"sip:{_OUTSIDE}@{_TENANT}",
                ),
            ],
            missed=False,
            answered=False,
        ),
        make(
            "transferred",
            [
                _pbx("call_start", "1007", 0, direction="in"),
                _pbx("call_established", "1007", 12, call_target=f"sip:102@{_TENANT}"),
                _pbx("call_reroute", "1007", 40, call_target=f"sip:103@{_TENANT}"),
                _pbx("call_established", "1007", 45, call_target=f"sip:103@{_TENANT}"),
                _pbx("call_ended", "1007", 90),
            ],
            missed=False,
            answered=True,
        ),
        make(
            "internal",
            [
                _pbx(
                    "call_start",
                    "1008",
                    0,
                    direction="ext",
                    caller=f"sip:101@{_TENANT}",
                    callee=f"sip:102@{_TENANT}",
                ),
                _pbx(
                    "call_noanswer",
                    "1008",
                    20,
                    caller=f"sip:101@{_TENANT}",
                    callee=f"sip:102@{_TENANT}",
                ),
            ],
            missed=False,
            answered=False,
        ),
    ]


# -- cloud IVR call log, Coral -----------------------------------------------------------------


def callog() -> list[Scenario]:
    def log(status: str, n: int) -> Payload:
        query = {
            "calllogid": f"log-{n}",
            "callernumber": "7012345678",
            "calltype": "incoming",
            "date": "2024-09-09",
            "time": "07:04:08",
            "ivrduration": "38",
            "callduration": "60" if status == "ANSWER" else "0",
            "callstatus": status,
            "knumber": "08069991234",
        }
        return Payload(query=query)

    return [
        Scenario("callog", name, _normalise("callog", [log(status, n)], "Asia/Kolkata"), m, a)
        for n, (name, status, m, a) in enumerate(
            [
                ("answered", "ANSWER", False, True),
                ("missed", "MISSED", True, False),
                ("dropped", "DROPPED", True, False),
            ]
        )
    ]


def coral() -> list[Scenario]:
    def popup(uid: str) -> Payload:
        data = {"Event": "Popup", "CallerNum": "09891612004", "extension": "9000", "uuid": uid}
        return _json({"status": 0, "message": "Incoming call", "data": data})

    def cdr(uid: str, disposition: str, billsec: str) -> Payload:
        data = {
            "Event": "Cdr",
            "callerextension": "9000",
            "destination": "09891612004",
            "start_time": "2024-09-09 07:04:08",
            "answer_time": "2024-09-09 07:04:12" if billsec != "0" else "0000-00-00 00:00:00",
            "end_time": "2024-09-09 07:05:08",
            "duration": "60",
            "billsec": billsec,
            "disposition": disposition,
            "direction": "in",
            "uuid": uid,
        }
        return _json({"status": 0, "message": "CDR", "data": data})

    def make(name: str, pushes: list[Payload], *, missed: bool, answered: bool) -> Scenario:
        return Scenario(
            "coral", name, _normalise("coral", pushes, "Asia/Kolkata"), missed, answered
        )

    return [
        make("answered", [popup("u-1"), cdr("u-1", "ANSWERED", "56")], missed=False, answered=True),
        make("missed", [popup("u-2"), cdr("u-2", "NO ANSWER", "0")], missed=True, answered=False),
    ]


def coral_realtime() -> list[Scenario]:
    def leg(uid: str, *states: str) -> list[Payload]:
        return [
            Payload(
                body=json.dumps(
                    {
                        "uuid": uid,
                        "name": "Customer",
                        "number": "09891612004",
                        "state": state,
                        "topic": "STATE_UPDATE",
                        "subTopic": "",
                        "talkingToNumber": "9001" if state == "CHANNEL_BRIDGE" else "",
                    }
                ).encode(),
                path="/topic/STATE_UPDATE",
            )
            for state in states
        ]

    def make(name: str, pushes: list[Payload], *, missed: bool, answered: bool) -> Scenario:
        return Scenario(
            "coral_realtime", name, _normalise("coral_realtime", pushes), missed, answered
        )

    answered = leg("r-1", "CHANNEL_PARK", "CHANNEL_ANSWER", "CHANNEL_BRIDGE", "CHANNEL_HANGUP")
    abandoned = leg("r-2", "CHANNEL_PARK", "CHANNEL_ANSWER", "CHANNEL_HANGUP_COMPLETE")
    # The B-leg of a click-to-call: the customer's number, placed by the PBX, never picked up.
    outbound = leg(
        "r-3", "CHANNEL_CREATE", "CHANNEL_OUTGOING", "CHANNEL_PROGRESS", "CHANNEL_HANGUP"
    )
    return [
        make("answered", answered, missed=False, answered=True),
        make("abandoned_while_parked", abandoned, missed=True, answered=False),
        make("outbound_leg_not_answered", outbound, missed=False, answered=False),
    ]


ALL: tuple[Callable[[], list[Scenario]], ...] = (coocenter, oncall, callog, coral, coral_realtime)


def every() -> list[Scenario]:
    return [scenario for make in ALL for scenario in make()]
