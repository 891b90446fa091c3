"""The OnCall simulator: unordered, repeated pushes whose outcome it predicts."""

from __future__ import annotations

import base64
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
from bridge.errors import AuthError, ConfigError
from bridge.events import Event
from bridge.simulate import oncall
from bridge.simulate.common import Call, Report
from bridge.simulate.oncall import CDR_EVENTS, KINDS, deliver, expected_types, run, scenario
from bridge.sources.digest import DigestAuth
from bridge.vendors.base import Payload, SourceContext
from bridge.vendors.oncall import normalize
from tests.callplay import Player, types

START = 1_700_000_000.0
CTX = SourceContext(
    name="hq", vendor="oncall", tz=UTC, received_at=datetime.fromtimestamp(START, UTC)
)
ENDS = {"call_ended", "call_noanswer", "call_fail"}


def plans(seed: int = 7, n: int = 300, *, reorder: bool = False) -> list[Call]:
    rng = random.Random(seed)
    return [scenario(i, rng, start=START + i, reorder=reorder) for i in range(n)]


def events_of(push: dict[str, Any]) -> list[Event]:
    path = "cdr" if push["event_type"] in CDR_EVENTS else ""
    return normalize(Payload(body=json.dumps(push).encode(), path=path), CTX)


def played(call: Call) -> Player:
    """The pushes in delivery order through the outbox, the call fold and the settle window."""
    player = Player()
    player.play([event for push in call.pushes for event in events_of(push)], now=0.0)
    player.settle(now=float("inf"))
    return player


def bridge_story(call: Call) -> list[Event]:
    return [event for event in played(call).committed if calls.is_call_event(event)]


def first_call_event(call: Call) -> str:
    silent = ("target_add", "target_ended")  # no call.* event of their own
    return next(str(p["event_type"]) for p in call.pushes if p["event_type"] not in silent)


def after_the_end(call: Call) -> list[dict[str, Any]]:
    """The live pushes first delivered after the call's end (its end push or the CDR)."""
    names = [push["event_type"] for push in call.pushes]
    end = next(n for n, name in enumerate(names) if name in ENDS | CDR_EVENTS)
    before = call.pushes[:end]
    return [
        push
        for push in call.pushes[end + 1 :]
        if push["event_type"] not in ENDS | CDR_EVENTS and push not in before
    ]


def test_every_push_normalises() -> None:
    """Every push of every kind of call is a valid OnCall payload for the normaliser."""
    for call in plans(reorder=True):
        for push in call.pushes:
            assert events_of(push)


def test_every_kind_is_played() -> None:
    """A run of a few dozen calls plays every kind of call."""
    assert {call.kind for call in plans(n=50)} == set(KINDS)


@pytest.mark.parametrize("reorder", [False, True])
def test_expected_types_match_the_call_fold(reorder: bool) -> None:
    """The delivery order through the normaliser and the call fold gives exactly expected_types."""
    for call in plans(reorder=reorder):
        assert types(bridge_story(call)) == call.expected_types, (call.kind, call.pushes)


def test_default_delivery_is_in_the_order_things_happened() -> None:
    """Without reorder: no repeats, call_start first, times in order, the CDR last."""
    for call in plans():
        texts = [json.dumps(push, sort_keys=True) for push in call.pushes]
        assert len(texts) == len(set(texts))
        assert call.pushes[0]["event_type"] == "call_start"
        assert call.pushes[-1]["event_type"] in CDR_EVENTS
        times = [int(push["time"]) for push in call.pushes[:-1]]
        assert times == sorted(times)


def test_an_answered_call_is_answered_before_it_ends() -> None:
    """A plain run never shows call.ended before the call.answered of an answered call."""
    for call in plans():
        if "call.answered" in call.expected_types:
            answered = call.expected_types.index("call.answered")
            assert answered < call.expected_types.index("call.ended"), call.kind
        assert not any(e.data.get("late") for e in bridge_story(call))


def test_only_call_start_and_the_cdr_carry_a_direction() -> None:
    """Like the OnCall document's call_ended sample, the live events carry no direction."""
    for call in plans():
        with_direction = {p["event_type"] for p in call.pushes if "direction" in p}
        assert with_direction <= {"call_start", *CDR_EVENTS}
        assert "call_start" in with_direction


def test_cdrs_have_target_objects_in_both_generations_and_both_names() -> None:
    """CDRs: call_targets[] objects, PortSIP's 2024 shape or its 2023 one, call_cdr or cdr."""
    cdrs = [p for call in plans() for p in call.pushes if p["event_type"] in CDR_EVENTS]
    assert {cdr["event_type"] for cdr in cdrs} == CDR_EVENTS
    assert {"call_status" in cdr for cdr in cdrs} == {True, False}
    for cdr in cdrs:
        assert cdr["call_targets"]
        assert all(isinstance(target, dict) for target in cdr["call_targets"])
        modern = "call_status" in cdr
        assert all(("status" in target) == modern for target in cdr["call_targets"])


def test_the_cdr_tells_who_answered_and_who_was_missed() -> None:
    """The call fold's record: answered by the person call_established names, or missed by
    the CDR's word (not the settle window); outbound and internal calls are never missed."""
    for call in plans():
        (record,) = played(call).records.values()
        answers = [p for p in call.pushes if p["event_type"] == "call_established"]
        assert record.answered == bool(answers), call.kind
        assert record.missed == (call.kind == "missed"), call.kind
        if call.kind == "missed":
            assert record.missed_by == "record"
        if answers:
            # the first person who answered (the CDR's earliest target that rang, then answered)
            assert record.value("agent") == answers[0]["call_target"].split(":")[1].split("@")[0]


def test_reordered_delivery_is_really_out_of_order_and_repeated() -> None:
    """With reorder: pushes are reordered and repeated, ringing lands late, call_start comes
    late, a live push arrives after the end and CDRs overtake it."""
    reordered = repeated = late_ringing = late_start = after_end = cdr_first = 0
    for call in plans(reorder=True):
        names = [push["event_type"] for push in call.pushes]
        texts = [json.dumps(push, sort_keys=True) for push in call.pushes]
        repeated += len(texts) != len(set(texts))
        times = [int(p["time"]) for p in call.pushes if "time" in p]
        reordered += times != sorted(times)
        if "call_established" in names:
            late_ringing += "target_ringing" in names[names.index("call_established") :]
        late_start += first_call_event(call) != "call_start"
        after_end += bool(after_the_end(call))
        cdr_first += names[-1] not in CDR_EVENTS
    assert min(reordered, repeated, late_ringing, late_start, after_end, cdr_first) > 0


def test_a_late_call_start_is_committed_once_and_flagged_late() -> None:
    """When another event overtakes call_start, call.initiated still comes, once, late."""
    late = [call for call in plans(reorder=True) if first_call_event(call) != "call_start"]
    assert late
    for call in late:
        assert call.expected_types[0] != "call.initiated"
        assert call.expected_types.count("call.initiated") == 1
        (initiated,) = (e for e in bridge_story(call) if e.type == "call.initiated")
        assert initiated.data.get("late") is True


def test_live_pushes_after_the_end_are_committed_late() -> None:
    """A live push that arrives after the end is still committed, flagged late."""
    found = 0
    for call in plans(reorder=True):
        if not after_the_end(call):
            continue
        story = bridge_story(call)
        ended = types(story).index("call.ended")
        live = [e for e in story[ended + 1 :] if e.type not in ("call.completed", "call.missed")]
        assert len(live) == len(after_the_end(call)), call.pushes
        assert all(e.data.get("late") is True for e in live)
        found += 1
    assert found


@pytest.mark.parametrize("reorder", [False, True])
def test_missed_inbound_calls_expect_call_missed(reorder: bool) -> None:
    """Every missed inbound call is expected to produce call.missed once; answered ones never."""
    for call in plans(reorder=reorder):
        assert call.expected_types.count("call.missed") == (call.kind == "missed")


@pytest.mark.parametrize("reorder", [False, True])
def test_transfer_calls_expect_a_transfer_and_two_answers(reorder: bool) -> None:
    """A transfer call is answered, transferred, answered again by the colleague."""
    for call in plans(reorder=reorder):
        if call.kind == "transfer":
            assert call.expected_types.count("call.transferred") == 1
            assert call.expected_types.count("call.answered") == 2


@pytest.mark.parametrize("reorder", [False, True])
def test_every_call_ends_once_and_completes(reorder: bool) -> None:
    """Each call's story has exactly one call.ended and one call.completed."""
    for call in plans(reorder=reorder):
        assert call.expected_types.count("call.ended") == 1
        assert call.expected_types.count("call.completed") == 1


def test_calls_of_a_run_have_distinct_keys() -> None:
    """No two calls of a run share a session_id or a SIP Call-ID."""
    runs = plans()
    assert len({call.call_id for call in runs}) == len(runs)
    assert len({call.pushes[0]["call_id"] for call in runs}) == len(runs)


def test_scenarios_are_deterministic_for_a_seed() -> None:
    """The same seed and start give the same calls; another seed gives others."""
    assert plans(seed=3, reorder=True) == plans(seed=3, reorder=True)
    assert plans(seed=3) != plans(seed=4)


def test_deliver_keeps_every_push() -> None:
    """Delivery reorders and repeats pushes but never loses one."""
    rng = random.Random(5)
    names = ["call_start", "target_ringing", "call_established", "call_hold", "call_ended"]
    pushes = [{"event_type": name, "n": n} for n, name in enumerate(names)]
    pushes.append({"event_type": "call_cdr"})
    for _ in range(50):
        delivered = deliver(pushes, rng)
        assert all(push in delivered for push in pushes)


def test_expected_types_for_a_cdr_before_the_end() -> None:
    """A CDR that overtakes call_noanswer ends the call (derived), then completes it; missed."""
    start = {"event_type": "call_start", "direction": "in"}
    cdr = {"event_type": "call_cdr", "call_status": "noanswer"}
    end = {"event_type": "call_noanswer"}
    assert expected_types([start, cdr, end]) == [
        "call.initiated",
        "call.ended",
        "call.completed",
        "call.missed",
    ]


def test_expected_types_for_a_missed_call_without_a_cdr() -> None:
    """No CDR: the settle window says call.missed, after everything else."""
    start = {"event_type": "call_start", "direction": "in"}
    ringing = {"event_type": "target_ringing", "time": "2"}
    end = {"event_type": "call_noanswer"}
    assert expected_types([ringing, end, start]) == [
        "call.ringing",
        "call.ended",
        "call.initiated",
        "call.missed",
    ]


def test_simulator_uses_no_vendor_document_hosts() -> None:
    """The simulated tenant names nothing from the vendor documents."""
    text = json.dumps([call.pushes for call in plans(n=30)])
    for borrowed in ("test01", "oncall", "118.69.", "239926257964425216"):
        assert borrowed not in text


def test_cli_reorders_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """`simulate oncall` delivers in order; `--reorder` asks for PortSIP's disorder."""
    seen: list[bool] = []

    async def fake_run(**kwargs: Any) -> Report:
        seen.append(kwargs["reorder"])
        return Report()

    monkeypatch.setattr(oncall, "run", fake_run)
    assert cli.main(["simulate", "oncall"]) == 0
    assert cli.main(["simulate", "oncall", "--reorder"]) == 0
    assert seen == [False, True]


Responder = Callable[[dict[str, Any], int], int]
Received = list[tuple[str, dict[str, Any], str | None]]


@pytest.fixture
def received() -> Received:
    return []


@pytest.fixture
def respond() -> list[Responder]:
    """The fake bridge's answer: a function of (push, how often it was seen) -> status."""
    return [lambda push, seen: 200]


@pytest.fixture
async def bridge_url(received: Received, respond: list[Responder]) -> AsyncIterator[str]:
    seen: dict[bytes, int] = {}

    async def ingest(request: web.Request) -> web.Response:
        body = await request.read()
        seen[body] = seen.get(body, 0) + 1
        push = json.loads(body)
        received.append((request.path, push, request.headers.get("Authorization")))
        return web.json_response({"status": "ok"}, status=respond[0](push, seen[body]))

    app = web.Application()
    app.router.add_post("/ingest/oncall", ingest)
    app.router.add_post("/ingest/oncall/cdr", ingest)
    async with TestServer(app) as server:
        yield str(server.make_url("/ingest/oncall"))


async def play(url: str, **options: Any) -> tuple[Report, str]:
    out = io.StringIO()
    settings: dict[str, Any] = {"calls": 3, "rate": 1000.0, "seed": 1}
    settings.update(retransmit_s=0.0, duplicate_ratio=0.0)
    settings.update(options)
    report = await run(url=url, out=out, **settings)
    return report, out.getvalue()


async def test_run_delivers_every_push_in_plan_order(bridge_url: str, received: Received) -> None:
    """Each call's pushes reach the bridge in the planned (disordered) order, all acknowledged."""
    report, _ = await play(bridge_url)
    assert report.acked == len(received) == sum(len(call.pushes) for call in report.calls)
    for call in report.calls:
        got = [push for _, push, _ in received if push["session_id"] == call.call_id]
        assert got == call.pushes
    assert (report.failed, report.retransmitted, report.statuses) == (0, 0, {"200": report.sent})


async def test_run_sends_cdrs_to_the_cdr_url(bridge_url: str, received: Received) -> None:
    """call_cdr pushes go to url + /cdr, every other push to the Event URL itself."""
    await play(bridge_url)
    paths = {(push["event_type"] in CDR_EVENTS, path) for path, push, _ in received}
    assert paths == {(True, "/ingest/oncall/cdr"), (False, "/ingest/oncall")}


async def test_run_delivers_out_of_order_when_asked(bridge_url: str, received: Received) -> None:
    """run(reorder=True) sends each call's pushes in the planned disorder."""
    report, _ = await play(bridge_url, calls=20, reorder=True)
    assert any(call.pushes[0]["event_type"] != "call_start" for call in report.calls)
    for call in report.calls:
        got = [push for _, push, _ in received if push["session_id"] == call.call_id]
        assert got == call.pushes


async def test_run_sends_basic_credentials(bridge_url: str, received: Received) -> None:
    """With a username, every request carries HTTP Basic credentials."""
    await play(bridge_url, calls=1, username="pbx", password="s3cret")
    expected = "Basic " + base64.b64encode(b"pbx:s3cret").decode()
    assert {header for _, _, header in received} == {expected}


async def test_run_sends_no_credentials_by_default(bridge_url: str, received: Received) -> None:
    """Without a username, requests carry no Authorization header."""
    await play(bridge_url, calls=1)
    assert {header for _, _, header in received} == {None}


async def test_run_retransmits_on_5xx(bridge_url: str, respond: list[Responder]) -> None:
    """A push answered 503 is sent again until a 2xx, like PortSIP's retries."""
    respond[0] = lambda push, seen: 503 if seen == 1 else 200
    report, _ = await play(bridge_url)
    # A push repeated in the plan was already seen once: its first send is answered 200.
    first_sends = len({json.dumps(p, sort_keys=True) for c in report.calls for p in c.pushes})
    assert report.retransmitted == first_sends
    assert report.statuses == {"200": report.acked, "503": first_sends}
    assert report.failed == 0


async def test_run_gives_up_after_max_tries(bridge_url: str, respond: list[Responder]) -> None:
    """A push never acknowledged is given up after max_tries and counted as failed."""
    respond[0] = lambda push, seen: 500
    report, _ = await play(bridge_url, calls=1, max_tries=3)
    assert report.acked == 0
    assert report.sent == 3 * report.failed > 0


async def test_run_answers_digest_challenges(received: Received) -> None:
    """With digest=True, run() answers the bridge's Digest challenges and every push lands."""
    verifier = DigestAuth(username="pbx", password="s3cret", realm="bridge")
    refused = 0

    async def ingest(request: web.Request) -> web.Response:
        nonlocal refused
        try:
            verifier.check(request)
        except AuthError as exc:
            refused += 1
            response = web.json_response({"error": "unauthorized"}, status=401)
            for challenge in exc.challenges:
                response.headers.add("WWW-Authenticate", challenge)
            return response
        push = await request.json()
        received.append((request.path, push, request.headers.get("Authorization")))
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/ingest/oncall", ingest)
    app.router.add_post("/ingest/oncall/cdr", ingest)
    async with TestServer(app) as server:
        url = str(server.make_url("/ingest/oncall"))
        report, _ = await play(url, calls=2, username="pbx", password="s3cret", digest=True)
    assert report.acked == len(received) == sum(len(call.pushes) for call in report.calls)
    assert refused > 0
    assert all(header and header.startswith("Digest ") for _, _, header in received)


async def test_run_refuses_digest_without_a_username() -> None:
    """Digest authentication needs credentials: refused before any traffic."""
    with pytest.raises(ConfigError, match="username"):
        await play("http://127.0.0.1:9/ingest/oncall", digest=True)


async def test_run_refuses_a_bridge_off_loopback() -> None:
    """The simulator talks to loopback bridges only."""
    with pytest.raises(ConfigError, match="loopback"):
        await play("http://192.0.2.10:8080/ingest/oncall")
