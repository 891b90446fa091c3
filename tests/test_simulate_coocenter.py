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

from bridge import calls
from bridge.errors import ConfigError
from bridge.events import Event
from bridge.simulate.coocenter import KINDS, Call, Report, run, scenario
from bridge.sources.auth import webkey_for
from bridge.vendors.base import Payload, SourceContext
from bridge.vendors.coocenter import normalize

START = 1_700_000_000.0
CTX = SourceContext(
    name="hq", vendor="coocenter", tz=UTC, received_at=datetime.fromtimestamp(START, UTC)
)


def plans(seed: int = 7, n: int = 200) -> list[Call]:
    rng = random.Random(seed)
    return [scenario(i, rng, start=START + i) for i in range(n)]


def committed(call: Call) -> list[Event]:
    """The call's events as the outbox keeps them: first of each id, call.* only."""
    seen: set[str] = set()
    kept = []
    for push in call.pushes:
        for event in normalize(Payload(body=json.dumps(push).encode()), CTX):
            if event.id not in seen and calls.is_call_event(event):
                seen.add(event.id)
                kept.append(event)
    return kept


def by_the_rules(events: list[Event]) -> list[str]:
    """call.initiated and call.ended once; call.missed after call.ended if inbound unanswered."""
    types: list[str] = []
    direction: str | None = None
    for event in events:
        direction = direction or event.data.get("direction")
        if event.type in ("call.initiated", "call.ended") and event.type in types:
            continue
        types.append(event.type)
        unanswered = "call.answered" not in types
        if event.type == "call.ended" and direction == "inbound" and unanswered:
            types.append("call.missed")
    return types


def test_every_push_normalises() -> None:
    """Every push of every kind of call is a valid CooCenter payload for the normaliser."""
    for call in plans():
        for push in call.pushes:
            assert normalize(Payload(body=json.dumps(push).encode()), CTX)


def test_every_kind_is_played() -> None:
    """A run of a few dozen calls plays every kind of call."""
    assert {call.kind for call in plans(n=50)} == set(KINDS)


def test_expected_types_follow_the_call_rules() -> None:
    """expected_types is what the normalised pushes give after the call-state rules."""
    for call in plans():
        assert by_the_rules(committed(call)) == call.expected_types, call.kind


def test_expected_types_match_the_bridge_call_state() -> None:
    """The bridge's own call state machine emits exactly expected_types, in order."""
    for call in plans():
        state: calls.CallState | None = None
        emitted: list[str] = []
        for event in committed(call):
            step = calls.advance(state, event)
            state = step.state
            emitted.extend(e.type for e in step.emit)
        assert emitted == call.expected_types, call.kind


def test_calls_of_a_run_have_distinct_ids() -> None:
    """No two calls of a run share an Asterisk uniqueid."""
    ids = [call.call_id for call in plans()]
    assert len(set(ids)) == len(ids)


def test_scenarios_are_deterministic_for_a_seed() -> None:
    """The same seed and start give the same calls; another seed gives others."""
    assert plans(seed=3) == plans(seed=3)
    assert plans(seed=3) != plans(seed=4)


def test_ivr_only_call_is_answered_by_the_cdr_but_missed() -> None:
    """An IVR-only call's cdr says ANSWERED, yet the bridge must report it missed."""
    call = next(call for call in plans() if call.kind == "ivr_only")
    cdr = next(push for push in call.pushes if push["event"] == "cdr")
    assert cdr["disposition"] == "ANSWERED"
    assert "call.missed" in call.expected_types


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
    assert report.retransmitted == report.acked == len(report.acked_payloads)
    assert report.statuses == {"200": report.acked, "503": report.acked}
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


async def test_run_refuses_a_bridge_off_loopback() -> None:
    """The simulator talks to loopback bridges only."""
    with pytest.raises(ConfigError, match="loopback"):
        await play("http://192.0.2.10:8080/ingest/coocenter")
