"""The Coral PBX simulator: its calls are valid pushes whose outcome it predicts."""

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

from bridge import calls
from bridge.errors import ConfigError
from bridge.events import Event
from bridge.simulate.common import Call, Report
from bridge.simulate.coral import KINDS, api_of, path_for, run, scenario
from bridge.vendors.base import Payload, SourceContext
from bridge.vendors.coral import normalize
from tests.callplay import Player, types

START = 1_700_000_000.0
CTX = SourceContext(
    name="hq", vendor="coral", tz=UTC, received_at=datetime.fromtimestamp(START, UTC)
)


def plans(seed: int = 7, n: int = 200) -> list[Call]:
    rng = random.Random(seed)
    return [scenario(i, rng, start=START + i) for i in range(n)]


def normalised(push: dict[str, Any]) -> list[Event]:
    """A push as the bridge reads it at the URL the simulator sends it to."""
    return normalize(Payload(body=json.dumps(push).encode(), path=path_for(push)), CTX)


def committed(call: Call) -> list[Event]:
    """The call's events as the outbox keeps them: first of each id, call.* only."""
    seen: set[str] = set()
    kept = []
    for push in call.pushes:
        for event in normalised(push):
            if event.id not in seen and calls.is_call_event(event):
                seen.add(event.id)
                kept.append(event)
    return kept


def test_every_push_normalises_to_mapped_events() -> None:
    """Every push of every call is a valid Coral push the bridge maps (nothing unmapped)."""
    for call in plans():
        for push in call.pushes:
            events = normalised(push)
            assert events
            assert {e.vendorevent for e in events} == {api_of(push)}


def test_every_kind_and_every_api_is_played() -> None:
    """A run of a few dozen calls plays every kind of call and pushes through every API."""
    some = plans(n=50)
    assert {call.kind for call in some} == set(KINDS)
    assert {api_of(p) for call in some for p in call.pushes} == {
        "incomingcall",
        "extstatechangeevent",
        "cdrevent",
        "pbxhealthstatus",
    }


def test_pushes_go_to_both_the_source_url_and_per_api_paths() -> None:
    """Some pushes go to the source's URL, others to a path naming their API."""
    paths = {path_for(p) for call in plans() for p in call.pushes}
    assert paths == {"", "incomingcall", "extstatechangeevent", "cdrevent", "pbxhealthstatus"}


def played(call: Call) -> Player:
    """The call's pushes through the outbox, the call fold and the settle window."""
    player = Player()
    player.play([event for push in call.pushes for event in normalised(push)], now=0.0)
    player.settle(now=float("inf"))
    return player


def test_expected_types_match_the_call_fold() -> None:
    """The outbox, the call fold and the settle window commit exactly expected_types, in order."""
    for call in plans():
        assert {event.subject for event in committed(call)} == {f"call/{call.call_id}"}
        story = [event for event in played(call).committed if calls.is_call_event(event)]
        assert types(story) == call.expected_types, call.kind


def test_a_missed_call_is_missed_by_its_cdr() -> None:
    """The cdrevent says NO ANSWER of an inbound call: missed at once, by the record's word."""
    for call in plans():
        (record,) = played(call).records.values()
        assert record.missed == (call.kind == "missed"), call.kind
        if record.missed:
            assert record.missed_by == "record"


@pytest.mark.parametrize(
    ("kind", "ends"),
    [
        ("answered", ["call.ended", "call.completed"]),
        ("missed", ["call.ended", "call.completed", "call.missed"]),
        ("outbound", ["call.ended", "call.completed"]),
    ],
)
def test_each_kind_ends_as_specified(kind: str, ends: list[str]) -> None:
    """Inbound calls start with a popup; a missed one ends missed, an outbound one does not."""
    for call in (call for call in plans() if call.kind == kind):
        assert call.expected_types[-len(ends) :] == ends
        starts = call.expected_types[: -len(ends)]
        if kind == "outbound":
            assert starts == []
        else:
            assert starts[0] == "call.initiated"
            assert set(starts[1:]) == {"call.ringing"}


def test_calls_of_a_run_have_distinct_ids() -> None:
    """No two calls of a run share a uuid."""
    ids = [call.call_id for call in plans()]
    assert len(set(ids)) == len(ids)


def test_scenarios_are_deterministic_for_a_seed() -> None:
    """The same seed and start give the same calls; another seed gives others."""
    assert plans(seed=3) == plans(seed=3)
    assert plans(seed=3) != plans(seed=4)


def test_some_cdr_uuids_carry_the_documents_leading_space() -> None:
    """Like the document's sample, some cdrevent uuids have a leading space to be trimmed."""
    uuids = [p["data"]["uuid"] for c in plans() for p in c.pushes if api_of(p) == "cdrevent"]
    assert any(u.startswith(" ") for u in uuids)
    assert any(not u.startswith(" ") for u in uuids)


Responder = Callable[[dict[str, Any], int], int]


@pytest.fixture
def received() -> list[tuple[str, dict[str, Any]]]:
    """(path tail, push) of every request the fake bridge got, in arrival order."""
    return []


@pytest.fixture
def respond() -> list[Responder]:
    """The fake bridge's answer: a function of (push, how often it was seen) -> status."""
    return [lambda push, seen: 200]


@pytest.fixture
async def bridge_url(
    received: list[tuple[str, dict[str, Any]]], respond: list[Responder]
) -> AsyncIterator[str]:
    seen: dict[bytes, int] = {}

    async def ingest(request: web.Request) -> web.Response:
        body = await request.read()
        seen[body] = seen.get(body, 0) + 1
        push = json.loads(body)
        received.append((request.match_info.get("tail", ""), push))
        status = respond[0](push, seen[body])
        return web.json_response({"status": 0, "message": "success", "data": None}, status=status)

    app = web.Application()
    app.router.add_post("/ingest/coral", ingest)
    app.router.add_post("/ingest/coral/{tail:.*}", ingest)
    async with TestServer(app, host="127.0.0.1") as server:
        yield str(server.make_url("/ingest/coral"))


async def play(url: str, **options: Any) -> tuple[Report, str]:
    out = io.StringIO()
    settings: dict[str, Any] = {"calls": 6, "rate": 1000.0, "seed": 1}
    settings.update(retransmit_s=0.0, duplicate_ratio=0.0)
    settings.update(options)
    report = await run(url=url, out=out, **settings)
    return report, out.getvalue()


def _call_of(push: dict[str, Any]) -> str | None:
    """The call a push belongs to (None for health and other extensions' elements)."""
    data = push["data"]
    if isinstance(data, list):
        return next((e["uuid"] for e in data if e["uuid"]), None)
    return data.get("uuid", "").strip() or None


async def test_run_delivers_every_push_in_call_order(
    bridge_url: str, received: list[tuple[str, dict[str, Any]]]
) -> None:
    """Each call's pushes reach the bridge in order and all are reported acknowledged."""
    report, _ = await play(bridge_url)
    assert report.acked == len(received) == len(report.acked_payloads)
    for call in report.calls:
        sent = [p for _, p in received if _call_of(p) == call.call_id]
        assert sent == [p for p in call.pushes if _call_of(p) == call.call_id]
    assert (report.failed, report.retransmitted, report.statuses) == (0, 0, {"200": report.sent})


async def test_run_posts_each_push_to_its_path(
    bridge_url: str, received: list[tuple[str, dict[str, Any]]]
) -> None:
    """A push goes to the source's URL or to url + "/<api>", as path_for says."""
    await play(bridge_url)
    assert [tail for tail, _ in received] == [path_for(push) for _, push in received]
    assert {tail for tail, _ in received} > {""}


async def test_run_retransmits_until_acknowledged(
    bridge_url: str, respond: list[Responder]
) -> None:
    """A push answered 503 is sent again until a 2xx."""
    respond[0] = lambda push, seen: 503 if seen == 1 else 200
    report, _ = await play(bridge_url)
    assert report.retransmitted == report.acked == len(report.acked_payloads)
    assert report.statuses == {"200": report.acked, "503": report.acked}


async def test_run_sends_acknowledged_pushes_twice_at_duplicate_ratio_one(
    bridge_url: str, received: list[tuple[str, dict[str, Any]]]
) -> None:
    """With duplicate_ratio 1 every acknowledged push is sent a second time, to the same URL."""
    report, _ = await play(bridge_url, duplicate_ratio=1.0)
    assert report.duplicates == report.acked
    assert len(received) == 2 * report.acked


async def test_run_prints_a_line_per_call_and_a_summary(bridge_url: str) -> None:
    """The report on `out` has one line per call, then a summary line."""
    report, text = await play(bridge_url, calls=3)
    lines = text.splitlines()
    assert len(lines) == 4
    assert all(" pushes=" in line and " acked=" in line for line in lines[:3])
    assert lines[3].startswith("calls=3 ")
    assert f"acked={report.acked}" in lines[3]


async def test_run_refuses_a_bridge_off_loopback() -> None:
    """The simulator talks to loopback bridges only."""
    with pytest.raises(ConfigError, match="loopback"):
        await play("http://192.0.2.10:8080/ingest/coral")
