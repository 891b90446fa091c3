"""The call-log provider simulator: its calls are valid requests whose outcome it predicts."""

from __future__ import annotations

import io
import random
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge import calls, cli
from bridge.errors import ConfigError
from bridge.events import rfc3339
from bridge.simulate import callog
from bridge.simulate.callog import IST, KINDS, run, scenario
from bridge.simulate.common import Call, Report
from bridge.vendors.base import Payload, SourceContext
from bridge.vendors.callog import normalize
from tests.callplay import Player, types

START = 1_709_613_242.0
CTX = SourceContext(
    name="ivr", vendor="callog", tz=IST, received_at=datetime.fromtimestamp(START, UTC)
)


def plans(seed: int = 7, n: int = 200) -> list[Call]:
    rng = random.Random(seed)
    return [scenario(i, rng, start=START + i, tz=IST) for i in range(n)]


def played(call: Call) -> Player:
    """The call's log through the outbox, the call fold and the settle window."""
    player = Player()
    player.play([e for push in call.pushes for e in normalize(Payload(query=push), CTX)])
    player.settle(now=float("inf"))
    return player


def test_every_request_normalises_to_one_call_completed() -> None:
    """Every call's one request is a valid call log: one call.completed on the call's subject."""
    for call in plans():
        (push,) = call.pushes
        (event,) = normalize(Payload(query=push), CTX)
        assert (event.type, event.subject) == ("call.completed", f"call/{call.call_id}")


def test_every_kind_is_played() -> None:
    """A run of a few dozen calls plays every kind of call."""
    assert {call.kind for call in plans(n=50)} == set(KINDS)


def test_every_spelling_and_both_duration_formats_are_played() -> None:
    """Runs use the sample URL's, the table's and a production receiver's names (callernumber,
    calltype), and seconds and H:MM:SS durations."""
    pushes = [call.pushes[0] for call in plans()]
    assert {"calllogid" in push for push in pushes} == {True, False}
    callers = {
        next(k for k in ("callnumber", "caller_number", "callernumber") if k in p) for p in pushes
    }
    assert callers == {"callnumber", "caller_number", "callernumber"}
    assert {p.get("calltype") or p.get("call_type") for p in pushes} == {
        None,
        "incoming",
        "outgoing",
    }
    durations = [push.get("ivrduration") or push["total_call_duration"] for push in pushes]
    assert {":" in value for value in durations} == {True, False}


def test_expected_types_match_the_call_fold() -> None:
    """The outbox, the call fold and the settle window make exactly expected_types of each log."""
    for call in plans():
        story = [e for e in played(call).committed if calls.is_call_event(e)]
        assert types(story) == call.expected_types, call.kind


def test_missed_and_dropped_calls_are_missed_by_the_logs_word() -> None:
    """The log itself says nobody answered: missed at once; an outgoing call is never missed."""
    for call in plans():
        (record,) = played(call).records.values()
        assert record.direction == ("outbound" if call.kind == "outbound" else "inbound")
        assert record.missed == (call.kind in ("missed", "dropped")), call.kind
        if record.missed:
            assert record.missed_by == "record"
    outgoing = [call.pushes[0] for call in plans() if call.kind == "outbound"]
    assert {p.get("calltype") or p.get("call_type") for p in outgoing} == {"outgoing"}
    assert {p.get("callstatus") or p.get("call_status") for p in outgoing} == {"ANSWER", "MISSED"}


def test_the_log_ends_when_it_is_sent() -> None:
    """A call's ended_at is the time its log is sent: the provider calls at the end."""
    rng = random.Random(1)
    (push,) = scenario(0, rng, start=START, tz=IST).pushes
    (event,) = normalize(Payload(query=push), CTX)
    assert event.time == "2024-03-05T04:34:02Z"


@pytest.mark.parametrize("zone", [UTC, IST, ZoneInfo("America/New_York")])
def test_date_and_time_are_in_the_given_zone(zone: tzinfo) -> None:
    """Read in the zone it was played in (the source's), every log ends when it is sent."""
    ctx = SourceContext(
        name="ivr", vendor="callog", tz=zone, received_at=datetime.fromtimestamp(START, UTC)
    )
    rng = random.Random(4)
    for n in range(50):
        (push,) = scenario(n, rng, start=START + n, tz=zone).pushes
        (event,) = normalize(Payload(query=push), ctx)
        assert event.time == rfc3339(datetime.fromtimestamp(START + n, UTC))


def test_cli_passes_the_timezone(monkeypatch: pytest.MonkeyPatch) -> None:
    """`simulate callog --timezone Asia/Kolkata` plays IST; without it, UTC (the default
    source's zone)."""
    zones: list[str] = []

    async def fake_run(**kwargs: Any) -> Report:
        zones.append(str(kwargs["tz"]))
        return Report()

    monkeypatch.setattr(callog, "run", fake_run)
    assert cli.main(["simulate", "callog", "--timezone", "Asia/Kolkata"]) == 0
    assert cli.main(["simulate", "callog"]) == 0
    assert zones == ["Asia/Kolkata", "UTC"]


def test_calls_of_a_run_have_distinct_ids() -> None:
    """No two calls of a run share a call log id."""
    ids = [call.call_id for call in plans()]
    assert len(set(ids)) == len(ids)


def test_scenarios_are_deterministic_for_a_seed() -> None:
    """The same seed and start give the same calls; another seed gives others."""
    assert plans(seed=3) == plans(seed=3)
    assert plans(seed=3) != plans(seed=4)


Responder = Callable[[dict[str, str], int], int]


@pytest.fixture
def received() -> list[tuple[str, dict[str, str]]]:
    return []


@pytest.fixture
def respond() -> list[Responder]:
    """The fake bridge's answer: a function of (query, how often it was seen) -> status."""
    return [lambda query, seen: 200]


@pytest.fixture
async def bridge_url(
    received: list[tuple[str, dict[str, str]]], respond: list[Responder]
) -> AsyncIterator[str]:
    seen: dict[str, int] = {}

    async def ingest(request: web.Request) -> web.Response:
        query = dict(request.query)
        received.append((request.method, query))
        seen[request.query_string] = seen.get(request.query_string, 0) + 1
        status = respond[0](query, seen[request.query_string])
        return web.Response(text="Success" if status < 300 else "Failure", status=status)

    app = web.Application()
    app.router.add_route("*", "/ingest/callog", ingest)
    async with TestServer(app, host="127.0.0.1") as server:
        yield str(server.make_url("/ingest/callog"))


async def play(url: str, **options: Any) -> tuple[Report, str]:
    out = io.StringIO()
    settings: dict[str, Any] = {"calls": 3, "rate": 1000.0, "seed": 1}
    settings.update(retransmit_s=0.0, duplicate_ratio=0.0)
    settings.update(options)
    report = await run(url=url, out=out, **settings)
    return report, out.getvalue()


async def test_run_sends_each_call_log_as_a_get_with_the_token(
    bridge_url: str, received: list[tuple[str, dict[str, str]]]
) -> None:
    """Each call's log is one GET, its fields and the token as query parameters."""
    report, _ = await play(bridge_url, token="s3cret-token", token_param="key")
    assert [method for method, _ in received] == ["GET"] * 3
    assert [query.pop("key") for _, query in received] == ["s3cret-token"] * 3
    planned = [call.pushes[0] for call in report.calls]
    assert sorted(sorted(query.items()) for _, query in received) == sorted(
        sorted(push.items()) for push in planned
    )


async def test_run_plays_utc_by_default(
    bridge_url: str, received: list[tuple[str, dict[str, str]]]
) -> None:
    """run() without tz writes UTC local times (the bridge's default source zone): read so,
    each log ends about now."""
    await play(bridge_url, calls=5)
    ctx = SourceContext(name="ivr", vendor="callog", tz=UTC, received_at=datetime.now(UTC))
    for _, query in received:
        (event,) = normalize(Payload(query=query), ctx)
        ended = datetime.fromisoformat(event.time).timestamp()
        assert abs(ended - time.time()) < 60


async def test_run_without_a_token_sends_only_the_fields(
    bridge_url: str, received: list[tuple[str, dict[str, str]]]
) -> None:
    """With no token, the query is exactly the call log's fields."""
    report, _ = await play(bridge_url, calls=1)
    assert [query for _, query in received] == [report.calls[0].pushes[0]]


async def test_run_retransmits_on_5xx_until_acknowledged(
    bridge_url: str, respond: list[Responder], received: list[tuple[str, dict[str, str]]]
) -> None:
    """A GET answered 503 is sent again until a 2xx, as the provider retries."""
    respond[0] = lambda query, seen: 503 if seen == 1 else 200
    report, _ = await play(bridge_url, token="s3cret-token")
    assert report.retransmitted == report.acked == 3
    assert report.statuses == {"200": 3, "503": 3}
    assert len(received) == 6
    assert report.failed == 0


async def test_run_gives_up_after_max_tries(bridge_url: str, respond: list[Responder]) -> None:
    """A call log never acknowledged is given up after max_tries and counted as failed."""
    respond[0] = lambda query, seen: 500
    report, _ = await play(bridge_url, calls=1, max_tries=3)
    assert (report.acked, report.sent, report.failed) == (0, 3, 1)


async def test_run_sends_acknowledged_logs_twice_at_duplicate_ratio_one(
    bridge_url: str, received: list[tuple[str, dict[str, str]]]
) -> None:
    """With duplicate_ratio 1 every acknowledged call log is sent a second time."""
    report, _ = await play(bridge_url, duplicate_ratio=1.0)
    assert report.duplicates == report.acked == 3
    assert len(received) == 6


async def test_run_refuses_a_bridge_off_loopback() -> None:
    """The simulator talks to loopback bridges only."""
    with pytest.raises(ConfigError, match="loopback"):
        await play("http://192.0.2.10:8080/ingest/callog")
