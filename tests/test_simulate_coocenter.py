"""The CooCenter PBX simulator: its calls are valid pushes whose outcome it predicts."""

from __future__ import annotations

import io
import json
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge import calls, cli
from bridge.errors import ConfigError
from bridge.events import Event
from bridge.simulate import coocenter
from bridge.simulate.common import Call, Report
from bridge.simulate.coocenter import KINDS, DialStatus, run, scenario
from bridge.sources.auth import webkey_for
from bridge.vendors.base import Payload, SourceContext
from bridge.vendors.coocenter import normalize
from tests.callplay import Player, types

START = 1_700_000_000.0
CTX = SourceContext(
    name="hq", vendor="coocenter", tz=UTC, received_at=datetime.fromtimestamp(START, UTC)
)
# The keys of each push in Zycoo's API book (OpenVoIP/coocenter-api-gitbook, the push page).
BOOK_KEYS = {
    "dialbegein": {
        "event", "timestamp", "channel", "calleridnum", "destchannel", "destcalleridnum",
        "destuniqueid", "dialstring", "uniqueid", "mac",
    },
    "dialend": {
        "event", "timestamp", "channel", "calleridnum", "destchannel", "destcalleridnum",
        "uniqueid", "dialstatus",
    },
    "hangup": {
        "event", "calleridnum", "calleridname", "connectedlinenum", "connectedlinename",
        "uniqueid",
    },
    "extensionstatus": {"event", "exten", "status", "statustext"},
    "ivr": {
        "event", "uuid", "caller", "called", "callType", "queueCode", "startTime", "endTime",
        "duration", "ivrId", "ivrName", "ivrDtmf", "trunkNumber", "mac",
    },
    "cc_cdr": {
        "event", "uuid", "caller", "called", "queueCode", "agentCode", "callType", "cdrState",
        "hangupSide", "hangupCause", "startTime", "endTime", "duration", "queueTime",
        "feedbackTime", "ivrTime", "ringTime", "holdTime", "pauseTime", "talkingTime",
        "voicemailState", "ivrId", "ivrName", "ivrDtmf", "fwType", "score", "trunkNumber",
        "forwardNumber", "filePath", "missCause", "mac",
    },
    "cdr": {
        "event", "callerid", "source", "destination", "starttime", "answertime", "endtime",
        "disposition", "duration", "billableseconds", "calltype", "recordfile", "uniqueid",
    },
}  # fmt: skip


def plans(seed: int = 7, n: int = 200, dialstatus: DialStatus = "zycoo") -> list[Call]:
    rng = random.Random(seed)
    return [scenario(i, rng, start=START + i, dialstatus=dialstatus) for i in range(n)]


def normalised(call: Call) -> list[Event]:
    return [e for p in call.pushes for e in normalize(Payload(body=json.dumps(p).encode()), CTX)]


def played(call: Call) -> Player:
    """The call's pushes through the bridge's rules: the outbox, the call fold, the window."""
    player = Player()
    player.play(normalised(call), now=0.0)
    player.settle(now=float("inf"))
    return player


def story(call: Call) -> list[str]:
    return types(e for e in played(call).committed if calls.is_call_event(e))


def record(call: Call) -> calls.Record:
    (found,) = played(call).records.values()
    return found


def test_every_push_normalises() -> None:
    """Every push of every kind of call, in both dialstatus sets, is a valid CooCenter payload."""
    for dialstatus in coocenter.DIALSTATUSES:
        for call in plans(dialstatus=dialstatus):
            for push in call.pushes:
                assert normalize(Payload(body=json.dumps(push).encode()), CTX)


def test_pushes_have_the_books_keys() -> None:
    """Each push has exactly the keys of its sample in Zycoo's book (its spelling of dialbegein)."""
    for call in plans():
        for push in call.pushes:
            assert set(push) == BOOK_KEYS[push["event"]], push["event"]


def test_every_kind_is_played() -> None:
    """A run of a few dozen calls plays every kind of call."""
    assert {call.kind for call in plans(n=50)} == set(KINDS)


@pytest.mark.parametrize("dialstatus", ["zycoo", "asterisk"])
def test_expected_types_match_the_call_fold(dialstatus: DialStatus) -> None:
    """The outbox, the call fold and the settle window commit exactly expected_types, in order."""
    for call in plans(dialstatus=dialstatus):
        assert story(call) == call.expected_types, call.kind


def test_zycoo_dialends_say_hangup_and_never_answer() -> None:
    """By default every dialend says "hangup" (the book's value): no call.answered, no verdict."""
    for call in plans():
        dialends = [p for p in call.pushes if p["event"] == "dialend"]
        assert {p["dialstatus"] for p in dialends} <= {"hangup"}
        for event in normalised(call):
            if event.vendorevent == "dialend":
                assert (event.type, event.subject) == ("raw.unmapped", f"call/{call.call_id}")
        assert "call.answered" not in call.expected_types
        assert "call.ringing_ended" not in call.expected_types


def test_zycoo_answered_dial_ends_when_the_agent_hangs_up() -> None:
    """The answered agent's dialend comes as the agent hangs up: after the talk, before hangup."""
    answered = [call for call in plans() if call.kind == "answered"]
    assert answered
    for call in answered:
        names = [p["event"] for p in call.pushes if p["event"] != "extensionstatus"]
        assert names[-4:] == ["dialend", "hangup", "cdr", "cc_cdr"]
        cc = next(p for p in call.pushes if p["event"] == "cc_cdr")
        last = [p for p in call.pushes if p["event"] == "dialend"][-1]
        began = next(
            p
            for p in call.pushes
            if p["event"] == "dialbegein" and p["destcalleridnum"] == last["destcalleridnum"]
        )
        assert last["destcalleridnum"] == cc["agentCode"]
        assert float(last["timestamp"]) - float(began["timestamp"]) >= int(cc["talkingTime"])


def test_the_records_decide_answered_without_a_live_answer() -> None:
    """With Zycoo's values the cdr and cc_cdr alone tell answered calls from missed ones."""
    for call in plans():
        found = record(call)
        answered = call.kind in ("answered", "transfer", "outbound")
        assert (found.answered, found.missed) == (answered, not answered), call.kind
        if not answered:
            assert found.missed_by == "record"  # decided at once, not by the settle window


def test_asterisk_dialstatus_plays_answer_noanswer_and_cancel() -> None:
    """dialstatus="asterisk": ANSWER gives call.answered, NOANSWER and CANCEL ringing_ended."""
    run_ = plans(dialstatus="asterisk")
    statuses = {p["dialstatus"] for c in run_ for p in c.pushes if p["event"] == "dialend"}
    assert statuses == {"ANSWER", "NOANSWER", "CANCEL"}
    for call in run_:
        answers = call.expected_types.count("call.answered")
        assert answers == {"transfer": 2, "answered": 1, "outbound": 1}.get(call.kind, 0)
        if answers:
            assert call.expected_types.index("call.answered") < call.expected_types.index(
                "call.ended"
            )
        assert record(call).missed == (answers == 0)


def test_every_inbound_call_has_a_cc_cdr_of_its_outcome() -> None:
    """Inbound calls get one cc_cdr: bridged with talk time, queue with a missCause, or ivr."""
    causes = set()
    for call in plans():
        (cc,) = (p for p in call.pushes if p["event"] == "cc_cdr")
        if call.kind == "outbound":
            assert cc["callType"] == "outgoing"
            continue
        assert cc["callType"] == "incoming"
        if call.kind in ("answered", "transfer"):
            assert (cc["cdrState"], cc["missCause"]) == ("bridged", "")
            assert int(cc["talkingTime"]) > 0
        elif call.kind == "missed_queue":
            assert cc["cdrState"] == "queue"
            assert int(cc["talkingTime"]) == 0
            # The book: MEMBER_CANCEL is a caller who hung up within 10 s of queueing.
            assert (cc["missCause"] == "MEMBER_CANCEL") == (int(cc["queueTime"]) < 10)
            causes.add(cc["missCause"])
        else:
            assert (cc["cdrState"], cc["missCause"], cc["queueCode"]) == ("ivr", "", "")
    assert causes == {"MEMBER_CANCEL", "NO_AGENT_ANSWER"}


def test_the_cdr_says_answered_when_the_ivr_answered() -> None:
    """The channel cdr says ANSWERED of a call the IVR took, though nobody did; else NO ANSWER."""
    dispositions = set()
    for call in plans():
        cdr = next(p for p in call.pushes if p["event"] == "cdr")
        via_ivr = any(p["event"] == "ivr" for p in call.pushes)
        if call.kind == "missed_queue":
            dispositions.add((via_ivr, cdr["disposition"]))
            if via_ivr:
                assert cdr["disposition"] == "ANSWERED"
        if call.kind == "ivr_only":
            assert via_ivr
            assert cdr["disposition"] == "ANSWERED"
            assert "call.missed" in call.expected_types
    assert dispositions == {(True, "ANSWERED"), (False, "ANSWERED"), (False, "NO ANSWER")}


def test_calls_of_a_run_have_distinct_ids() -> None:
    """No two calls of a run share an Asterisk uniqueid."""
    ids = [call.call_id for call in plans()]
    assert len(set(ids)) == len(ids)


def test_scenarios_are_deterministic_for_a_seed() -> None:
    """The same seed and start give the same calls; another seed gives others."""
    assert plans(seed=3) == plans(seed=3)
    assert plans(seed=3) != plans(seed=4)


def test_cli_passes_dialstatus_and_timezone(monkeypatch: pytest.MonkeyPatch) -> None:
    """`simulate coocenter --dialstatus asterisk --timezone Asia/Shanghai` reaches run()."""
    seen: dict[str, Any] = {}

    async def fake_run(**kwargs: Any) -> Report:
        seen.update(kwargs)
        return Report()

    monkeypatch.setattr(coocenter, "run", fake_run)
    argv = ["simulate", "coocenter", "--dialstatus", "asterisk", "--timezone", "Asia/Shanghai"]
    assert cli.main(argv) == 0
    assert (seen["dialstatus"], str(seen["tz"])) == ("asterisk", "Asia/Shanghai")
    assert cli.main(["simulate", "coocenter"]) == 0
    assert (seen["dialstatus"], str(seen["tz"])) == ("zycoo", "UTC")
    assert cli.main(["simulate", "coocenter", "--timezone", "Mars/Olympus"]) != 0


Responder = Callable[[dict[str, Any], int], int]


@pytest.fixture
def received() -> list[tuple[dict[str, Any], str | None]]:
    return []


@pytest.fixture
def respond() -> list[Responder]:
    """The fake bridge's answer: a function of (push, how often it was seen) -> status."""
    return [lambda push, seen: 200]


@pytest.fixture
async def bridge_url(
    received: list[tuple[dict[str, Any], str | None]], respond: list[Responder]
) -> AsyncIterator[str]:
    seen: dict[str, int] = {}

    async def ingest(request: web.Request) -> web.Response:
        body = await request.read()
        seen[body.decode()] = seen.get(body.decode(), 0) + 1
        push = json.loads(body)
        received.append((push, request.headers.get("Authorization")))
        status = respond[0](push, seen[body.decode()])
        return web.json_response({"status": "success"}, status=status)

    app = web.Application()
    app.router.add_post("/ingest/coocenter", ingest)
    async with TestServer(app) as server:
        yield str(server.make_url("/ingest/coocenter"))


async def play(url: str, **options: Any) -> tuple[Report, str]:
    out = io.StringIO()
    settings: dict[str, Any] = {"calls": 3, "rate": 1000.0, "webkey": None, "seed": 1}
    settings.update(retransmit_s=0.0, duplicate_ratio=0.0)
    settings.update(options)
    report = await run(url=url, out=out, **settings)
    return report, out.getvalue()


async def test_run_delivers_every_push_in_call_order(
    bridge_url: str, received: list[tuple[dict[str, Any], str | None]]
) -> None:
    """Each call's pushes reach the bridge in order and all are reported acknowledged."""
    report, _ = await play(bridge_url)
    assert report.acked == len(received) == len(report.acked_payloads)
    for call_id in {p.get("uniqueid") or p.get("uuid") for p in report.acked_payloads} - {None}:
        sent = [p for p, _ in received if call_id in (p.get("uniqueid"), p.get("uuid"))]
        acked = [p for p in report.acked_payloads if call_id in (p.get("uniqueid"), p.get("uuid"))]
        assert sent == acked
    assert (report.failed, report.retransmitted, report.statuses) == (0, 0, {"200": report.sent})


async def test_run_retransmits_until_acknowledged(
    bridge_url: str, respond: list[Responder]
) -> None:
    """A push answered 503 is sent again until a 2xx, like the PBX's 2-second retry."""
    respond[0] = lambda push, seen: 503 if seen == 1 else 200
    report, _ = await play(bridge_url)
    # An extension's state push can repeat byte for byte: only its first send is refused.
    first_sends = len({json.dumps(push) for push in report.acked_payloads})
    assert report.retransmitted == first_sends
    assert report.acked == len(report.acked_payloads)
    assert report.statuses == {"200": report.acked, "503": first_sends}
    assert report.failed == 0


async def test_run_gives_up_after_max_tries(bridge_url: str, respond: list[Responder]) -> None:
    """A push never acknowledged is given up after max_tries and counted as failed."""
    respond[0] = lambda push, seen: 500
    report, _ = await play(bridge_url, calls=1, max_tries=3)
    assert report.acked == 0
    assert report.sent == 3 * report.failed
    assert report.failed > 0


async def test_run_counts_connection_errors(unused_tcp_port: int) -> None:
    """A bridge that is not listening is retried, then every push counts as failed."""
    report, _ = await play(f"http://127.0.0.1:{unused_tcp_port}/ingest/coocenter", max_tries=2)
    assert report.acked == 0
    assert report.statuses == {"error": report.sent}


async def test_run_sends_acknowledged_pushes_twice_at_duplicate_ratio_one(
    bridge_url: str, received: list[tuple[dict[str, Any], str | None]]
) -> None:
    """With duplicate_ratio 1 every acknowledged push is sent a second time."""
    report, _ = await play(bridge_url, duplicate_ratio=1.0)
    assert report.duplicates == report.acked
    assert len(received) == 2 * report.acked


async def test_run_sends_the_webkey_header(
    bridge_url: str, received: list[tuple[dict[str, Any], str | None]]
) -> None:
    """With a WEBKEY every request carries md5(WEBKEY + the PBX's local date)."""
    before = webkey_for("k3y", datetime.now(UTC).date().isoformat())
    await play(bridge_url, calls=1, webkey="k3y")
    after = webkey_for("k3y", datetime.now(UTC).date().isoformat())
    assert {header for _, header in received} <= {before, after}


async def test_run_prints_a_line_per_call_and_a_summary(bridge_url: str) -> None:
    """The report on `out` has one line per call, then a summary line."""
    report, text = await play(bridge_url)
    lines = text.splitlines()
    assert len(lines) == 4
    assert all(" pushes=" in line and " acked=" in line for line in lines[:3])
    assert lines[3].startswith("calls=3 ")
    assert f"acked={report.acked}" in lines[3]


async def test_run_sends_asterisk_dialstatus_when_asked(
    bridge_url: str, received: list[tuple[dict[str, Any], str | None]]
) -> None:
    """run(dialstatus="asterisk") sends Asterisk's values; the default sends Zycoo's "hangup"."""
    await play(bridge_url, calls=6, dialstatus="asterisk")
    asterisk = {p["dialstatus"] for p, _ in received if p["event"] == "dialend"}
    received.clear()
    await play(bridge_url, calls=6)
    zycoo = {p["dialstatus"] for p, _ in received if p["event"] == "dialend"}
    assert asterisk <= {"ANSWER", "NOANSWER", "CANCEL"}
    assert "ANSWER" in asterisk
    assert zycoo == {"hangup"}


async def test_run_refuses_a_bridge_off_loopback() -> None:
    """The simulator talks to loopback bridges only."""
    with pytest.raises(ConfigError, match="loopback"):
        await play("http://192.0.2.10:8080/ingest/coocenter")
