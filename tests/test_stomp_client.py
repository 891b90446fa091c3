"""The realtime client against the simulated Coral STOMP-over-WebSocket server, on loopback."""

from __future__ import annotations

import itertools
import json
import random
import sqlite3
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.app import Daemon
from bridge.config import RealtimeConfig
from bridge.events import Event
from bridge.simulate import coral_streams
from bridge.simulate.coral_realtime import RealtimeServer
from bridge.sources.stomp import backoff_s
from bridge.vendors.base import Payload, SourceContext
from tests.conftest import base_url, daemon_config, until

OC = "/topic/OC_778"
BRIDGE = {
    "uuid": "leg-1",
    "name": "Caller",
    "number": "09876543210",
    "state": "CHANNEL_BRIDGE",
    "topic": "OC_778",
    "subTopic": "",
    "talkingToNumber": "9001",
}


def realtime(url: str, **extra: Any) -> dict[str, Any]:
    settings = {
        "url": url,
        "destinations": [OC, "/topic/STATE_UPDATE"],
        "heartbeat_ms": [100, 100],
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.2,
        "connect_timeout_s": 5,
        **extra,
    }
    return {"name": "coral", "vendor": "coral", "realtime": settings}


def rows(daemon: Daemon) -> list[dict[str, Any]]:
    with sqlite3.connect(daemon.config.storage.path) as conn:
        return [
            json.loads(body) for (body,) in conn.execute("SELECT body FROM events ORDER BY seq")
        ]


def statuses(daemon: Daemon) -> list[dict[str, Any]]:
    return [e["data"] for e in rows(daemon) if e["type"] == "source.status"]


@pytest.fixture
async def server() -> AsyncIterator[RealtimeServer]:
    async with RealtimeServer(heartbeat_ms=(100, 100)) as running:
        yield running


@pytest.fixture
async def daemon(tmp_path: Path, server: RealtimeServer) -> AsyncIterator[Daemon]:
    async with Daemon(daemon_config(tmp_path, sources=[realtime(server.url)])) as running:
        yield running


async def test_subscribes_and_commits_messages(daemon: Daemon, server: RealtimeServer) -> None:
    """Both destinations are subscribed; a MESSAGE becomes committed events, after 'connected'."""
    await until(lambda: server.subscribers == 1, what="subscription")
    assert await server.publish(OC, BRIDGE) == 1
    await until(lambda: any(e["type"] == "call.answered" for e in rows(daemon)), what="commit")
    types = [e["type"] for e in rows(daemon)]
    assert types[0] == "source.status"
    assert "call.answered" in types
    assert statuses(daemon)[0]["status"] == "connected"


async def test_server_drop_reconnects_resubscribes_and_reports_the_gap(
    daemon: Daemon, server: RealtimeServer
) -> None:
    """A dropped connection is re-established and re-subscribed; the gap is on the stream."""
    await until(lambda: server.subscribers == 1, what="subscription")
    server.drop_all()
    await until(lambda: server.connects == 2 and server.subscribers == 1, what="resubscription")
    await until(lambda: len(statuses(daemon)) == 3, what="status events")
    connected, disconnected, again = statuses(daemon)
    assert (connected["status"], disconnected["status"], again["status"]) == (
        "connected",
        "disconnected",
        "connected",
    )
    assert again["gap_s"] >= 0.05  # at least the minimum backoff passed
    assert await server.publish(OC, BRIDGE) == 1
    await until(lambda: any(e["type"] == "call.answered" for e in rows(daemon)), what="commit")


async def test_heartbeat_stall_is_detected(daemon: Daemon, server: RealtimeServer) -> None:
    """When the server's heart-beats stop, the client gives up on it and reconnects."""
    await until(lambda: server.subscribers == 1, what="subscription")
    server.stalled = True
    await until(lambda: len(statuses(daemon)) >= 2, what="the disconnect")
    assert "heart-beat" in statuses(daemon)[1]["reason"]
    server.stalled = False
    await until(lambda: server.connects >= 2 and server.subscribers == 1, what="reconnect")


async def test_refused_connects_back_off(tmp_path: Path, server: RealtimeServer) -> None:
    """An ERROR before CONNECTED (bad login) still waits before the next try: no hot loop."""
    server.refuse = 4
    async with Daemon(daemon_config(tmp_path, sources=[realtime(server.url)])) as daemon:
        await until(lambda: server.subscribers == 1, what="the fifth connect succeeding")
        snapshot = daemon.realtime[0].snapshot()
    attempts = server.connect_times
    assert len(attempts) == 5
    assert all(later - earlier >= 0.05 for earlier, later in itertools.pairwise(attempts))
    assert snapshot["connected"]
    assert snapshot["connects"] == 1


async def test_wrong_login_is_refused_and_logged_not_connected(tmp_path: Path) -> None:
    """With credentials the server refuses, the source stays disconnected with the reason."""
    async with RealtimeServer(login="op", passcode="right") as server:
        source = realtime(server.url, login="op", passcode="wrong")
        async with Daemon(daemon_config(tmp_path, sources=[source])) as daemon:
            await until(lambda: server.connects >= 2, what="two refused attempts")
            snapshot = daemon.realtime[0].snapshot()
    assert not snapshot["connected"]
    assert "access refused" in snapshot["last_error"]


async def test_readyz_reflects_the_realtime_connection(
    daemon: Daemon, server: RealtimeServer
) -> None:
    """/readyz is 200 with the source connected, 503 while it is not."""
    await until(lambda: server.subscribers == 1, what="subscription")
    async with aiohttp.ClientSession() as http:
        async with http.get(base_url(daemon) + "/readyz") as response:
            body = await response.json()
            assert response.status == 200
            assert body["realtime"]["coral"]["connected"] is True
        server.refuse = 1000
        server.drop_all()
        await until(lambda: not daemon.realtime[0].status.connected, what="the disconnect")
        async with http.get(base_url(daemon) + "/readyz") as response:
            assert response.status == 503


def test_backoff_grows_and_is_capped() -> None:
    """Delays stay within [min, min * 2**attempt] and never exceed the maximum."""
    config = RealtimeConfig(url="ws://127.0.0.1:1/x", reconnect_min_s=1.0, reconnect_max_s=30.0)
    rng = random.Random(1)
    for attempt in range(12):
        delay = backoff_s(attempt, config, rng)
        assert 1.0 <= delay <= min(30.0, 2.0**attempt)


async def test_simulated_streams_produce_the_expected_call_stories(tmp_path: Path) -> None:
    """The realtime simulator's scenarios, through the client and writer, give the planned story."""

    plans = coral_streams.scenarios(random.Random(9), count=12, group="778")
    expected = {f"call/{plan.call_id}": plan.expected_types for plan in plans}
    async with RealtimeServer(heartbeat_ms=(100, 100)) as server:
        # No settle window: an abandoned outside caller's call.missed follows its end at once.
        source = {**realtime(server.url), "missed_settle_s": 0}
        async with Daemon(daemon_config(tmp_path, sources=[source])) as daemon:
            await until(lambda: server.subscribers == 1, what="subscription")
            for plan in plans:
                for destination, message in plan.messages:
                    await server.publish(destination, message)

            def stories() -> dict[str, list[str]]:
                found: dict[str, list[str]] = defaultdict(list)
                for event in rows(daemon):
                    if event["type"].startswith("call."):
                        found[event["subject"]].append(event["type"])
                return dict(found)

            await until(lambda: stories() == expected, what="every planned call.* event")


async def test_error_frame_mid_session_ends_it_and_reconnects(
    daemon: Daemon, server: RealtimeServer
) -> None:
    """An ERROR frame from the server ends the session (logged with its message); it reconnects."""
    await until(lambda: server.subscribers == 1, what="subscription")
    await server.error_all("broker going down")
    await until(lambda: len(statuses(daemon)) >= 2, what="the disconnect")
    assert "broker going down" in statuses(daemon)[1]["reason"]
    await until(lambda: server.connects == 2 and server.subscribers == 1, what="reconnect")


async def test_a_normaliser_bug_on_one_message_does_not_end_the_stream(
    tmp_path: Path, server: RealtimeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message the normaliser raises on is refused and counted; the next one commits."""
    from bridge.vendors import coral_realtime
    from bridge.vendors.registry import STREAMS

    def broken(payload: Payload, ctx: SourceContext) -> list[Event]:
        if b"boom" in payload.body:
            raise KeyError("a bug in a normaliser")
        return coral_realtime.normalize(payload, ctx)

    monkeypatch.setitem(STREAMS, "coral", broken)
    async with Daemon(daemon_config(tmp_path, sources=[realtime(server.url)])) as daemon:
        await until(lambda: server.subscribers == 1, what="subscription")
        await server.publish(OC, {**BRIDGE, "boom": True})
        await server.publish(OC, BRIDGE)
        await until(lambda: any(e["type"] == "call.answered" for e in rows(daemon)), what="commit")
        (source,) = daemon.realtime
        assert source.status.rejected == 1
        assert source.status.connected


async def test_no_subprotocol_is_offered_when_none_is_configured(
    tmp_path: Path, server: RealtimeServer
) -> None:
    """subprotocols = []: no empty Sec-WebSocket-Protocol header; the simulator serves it."""
    source = realtime(server.url, subprotocols=[])
    async with Daemon(daemon_config(tmp_path, sources=[source])) as daemon:
        await until(lambda: server.subscribers == 1, what="subscription without a subprotocol")
        await server.publish(OC, BRIDGE)
        await until(lambda: any(e["type"] == "call.answered" for e in rows(daemon)), what="commit")
