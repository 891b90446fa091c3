"""The realtime client against the simulated Coral STOMP-over-WebSocket server, on loopback.

The first tests run it in a whole daemon; the later ones run one StompSource on a real Writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import sqlite3
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from bridge.app import Daemon
from bridge.config import RealtimeConfig
from bridge.errors import OutboxError, PayloadError
from bridge.events import Event
from bridge.lifecycle import Backoff, Service
from bridge.simulate import coral_streams
from bridge.simulate.coral_realtime import RealtimeServer
from bridge.sources.realtime_intake import Counts, RealtimeIntake, status_event
from bridge.sources.stomp import RECEIPT_TIMEOUT_S, StompSource, backoff_s
from bridge.store.writer import Writer
from bridge.vendors.base import Payload, SourceContext
from bridge.vendors.registry import STREAMS
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


async def test_the_simulator_answers_disconnect_with_its_receipt(server: RealtimeServer) -> None:
    """A client offering no subprotocol: CONNECTED, then DISCONNECT gets its RECEIPT, and the
    client's close ends the connection cleanly (the simulator sees its code)."""
    async with connect(server.url) as ws:
        assert ws.subprotocol is None
        await ws.send("CONNECT\naccept-version:1.2\nhost:\nheart-beat:0,0\n\n\0")
        assert str(await ws.recv()).startswith("CONNECTED\n")
        await ws.send("DISCONNECT\nreceipt:77\n\n\0")
        assert await ws.recv() == "RECEIPT\nreceipt-id:77\n\n\0"
    await until(lambda: server.close_codes == [1000], what="the close")
    assert (server.disconnects, server.receipts) == (1, 1)


# -- one StompSource on a real Writer: shutdown, restarts, poison messages ------------------


T0 = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)
DEEP = b'{"a":' * 5000 + b"1" + b"}" * 5000
NOT_UTF8 = b'{"uuid": "\xff\xfe", "state": "CHANNEL_BRIDGE"}'
BOOM = json.dumps({**BRIDGE, "boom": True}).encode()


class FakeClock:
    """The source's wall clock: a settable time, and one failure on demand (a bug)."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now
        self.fail_next = False

    def __call__(self) -> datetime:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("a bug in the bridge")
        return self.now


class RecordingQuarantine:
    """Keeps what it is given in a list, or fails as a full quarantine does."""

    def __init__(self, failure: Exception | None = None) -> None:
        self.kept: list[tuple[str, str, Payload, PayloadError]] = []
        self.failure = failure

    async def keep(
        self,
        *,
        source: str,
        vendor: str,
        payload: Payload,
        received_at: datetime,
        error: PayloadError,
        channel: str,
    ) -> int:
        assert channel == "realtime"  # a reprocess reads it with the stream normaliser
        if self.failure is not None:
            raise self.failure
        self.kept.append((source, vendor, payload, error))
        return len(self.kept)


def buggy_on_boom(payload: Payload, ctx: SourceContext) -> list[Event]:
    """The Coral stream normaliser, with a bug on messages that say "boom"."""
    from bridge.vendors import coral_realtime

    if b"boom" in payload.body:
        raise KeyError("a bug in a normaliser")
    return coral_realtime.normalize(payload, ctx)


@contextlib.asynccontextmanager
async def standalone(
    tmp_path: Path, url: str, **options: Any
) -> AsyncIterator[tuple[StompSource, Path]]:
    """A StompSource on a real Writer in ``tmp_path`` (not started); yields it and the outbox."""
    config = daemon_config(tmp_path, sources=[realtime(url)])
    async with Writer(config.storage, lambda committed: None) as writer:
        options.setdefault("normalize", STREAMS["coral"])
        yield StompSource(config.sources[0], writer, vendor="coral", **options), config.storage.path


def outbox_statuses(path: Path) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        bodies = conn.execute("SELECT body FROM events WHERE type = 'source.status' ORDER BY seq")
        return [json.loads(body)["data"] for (body,) in bodies]


def outbox_types(path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return [kind for (kind,) in conn.execute("SELECT type FROM events ORDER BY seq")]


async def test_shutdown_disconnects_waits_for_the_receipt_and_closes_going_away(
    tmp_path: Path, server: RealtimeServer
) -> None:
    """Stopping: DISCONNECT, its RECEIPT, a WebSocket close 1001, then a committed "stopped"."""
    async with standalone(tmp_path, server.url) as (source, outbox):
        async with source:
            await until(lambda: server.subscribers == 1, what="subscription")
        assert (server.disconnects, server.receipts) == (1, 1)
        await until(lambda: server.close_codes == [1001], what="the client's close")
        assert [s["status"] for s in outbox_statuses(outbox)] == ["connected", "stopped"]
        assert source.health() == "realtime disconnected: stopped"


async def test_shutdown_takes_under_a_second_when_the_server_never_answers(
    tmp_path: Path,
) -> None:
    """A server that reads nothing after CONNECTED (no RECEIPT, no close): stopped within 1 s."""
    connected, release = asyncio.Event(), asyncio.Event()

    async def mute(ws: ServerConnection) -> None:
        await ws.recv()  # the CONNECT
        await ws.send("CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\0")
        ws.transport.pause_reading()  # deaf from now on: DISCONNECT and close frame unread
        connected.set()
        await release.wait()
        ws.transport.resume_reading()

    async with serve(mute, "127.0.0.1", 0, close_timeout=0.1) as mute_server:
        port = next(iter(mute_server.sockets)).getsockname()[1]
        async with standalone(tmp_path, f"ws://127.0.0.1:{port}/realtime") as (source, outbox):
            async with source:
                await until(lambda: source.status.connected, what="CONNECTED")
                started = time.monotonic()
            elapsed = time.monotonic() - started
            release.set()
            assert RECEIPT_TIMEOUT_S <= elapsed < 1.0, elapsed
            assert outbox_statuses(outbox)[-1]["status"] == "stopped"


async def test_the_first_connect_after_a_restart_reports_the_gap_since_the_stop(
    tmp_path: Path, server: RealtimeServer
) -> None:
    """Two lifetimes on one data dir: the second "connected" carries the gap since "stopped"."""
    for now in (T0, T0 + timedelta(seconds=90)):
        async with standalone(tmp_path, server.url, clock=FakeClock(now)) as (source, outbox):
            async with source:
                await until(lambda: source.status.connected, what="CONNECTED")
    first, stopped, again, _ = outbox_statuses(outbox)
    assert "gap_s" not in first  # nothing was streamed before the very first connect
    assert stopped["status"] == "stopped"
    assert again == {
        "status": "connected",
        "url": server.url,
        "gap_s": 90.0,
        "gap_since": "2024-05-01T09:30:00Z",
    }


async def test_a_gap_that_began_with_a_disconnect_is_counted_from_it_across_a_restart(
    tmp_path: Path, server: RealtimeServer
) -> None:
    """Stopped while disconnected (no "stopped": the stream was not up), the gap counts from the
    disconnect."""
    clock = FakeClock(T0)
    async with standalone(tmp_path, server.url, clock=clock) as (source, outbox):
        async with source:
            await until(lambda: source.status.connected, what="CONNECTED")
            clock.now = T0 + timedelta(seconds=10)
            server.refuse = 1000
            server.drop_all()
            await until(lambda: not source.status.connected, what="the disconnect")
    server.refuse = 0
    clock.now = T0 + timedelta(seconds=100)
    async with standalone(tmp_path, server.url, clock=clock) as (source, outbox):
        async with source:
            await until(lambda: source.status.connected, what="CONNECTED")
    statuses = outbox_statuses(outbox)
    assert [s["status"] for s in statuses] == ["connected", "disconnected", "connected", "stopped"]
    assert (statuses[2]["gap_s"], statuses[2]["gap_since"]) == (90.0, "2024-05-01T09:30:10Z")


async def test_poison_messages_are_quarantined_byte_for_byte_and_the_stream_goes_on(
    tmp_path: Path, server: RealtimeServer
) -> None:
    """JSON nested 5,000 deep, a body that is not UTF-8, one the normaliser raises on: each is
    kept as received and counted; the next good message still becomes events."""
    quarantine = RecordingQuarantine()
    options = {"normalize": buggy_on_boom, "quarantine": quarantine}
    async with standalone(tmp_path, server.url, **options) as (source, outbox):
        async with source:
            await until(lambda: server.subscribers == 1, what="subscription")
            for body in (DEEP, NOT_UTF8, BOOM):
                assert await server.publish_body(OC, body) == 1
            await server.publish(OC, BRIDGE)
            await until(lambda: "call.answered" in outbox_types(outbox), what="the good message")
            assert source.status.connected
        kept = [
            (payload.body, payload.path, payload.content_type) for *_, payload, _ in quarantine.kept
        ]
        assert kept == [(body, OC, "application/json") for body in (DEEP, NOT_UTF8, BOOM)]
        assert {(source, vendor) for source, vendor, *_ in quarantine.kept} == {("coral", "coral")}
        assert "nested too deeply" in str(quarantine.kept[0][3])
        assert (source.status.messages, source.status.rejected, source.status.lost) == (4, 3, 0)
        assert server.connects == 1


async def test_a_message_the_quarantine_cannot_keep_is_counted_lost_and_the_stream_goes_on(
    tmp_path: Path, server: RealtimeServer
) -> None:
    """keep() failing (quarantine or disk full) is a lost message, logged; not a crash."""
    quarantine = RecordingQuarantine(OutboxError("the quarantine is full"))
    async with standalone(tmp_path, server.url, quarantine=quarantine) as (source, outbox):
        async with source:
            await until(lambda: server.subscribers == 1, what="subscription")
            await server.publish_body(OC, b"not json")
            await server.publish(OC, BRIDGE)
            await until(lambda: "call.answered" in outbox_types(outbox), what="the good message")
        assert (source.status.rejected, source.status.lost) == (1, 1)
        assert server.connects == 1


async def test_an_unexpected_error_escaping_run_is_restarted_by_its_service(
    tmp_path: Path, server: RealtimeServer
) -> None:
    """A bug ends run: the Service restarts it; meanwhile health says not ready, the stream
    says disconnected, and the restart reconnects with the gap."""
    clock = FakeClock()
    async with standalone(tmp_path, server.url, clock=clock) as (source, outbox):
        service = Service(
            "realtime-coral", source.run, health=source.health, backoff=Backoff(0.3, 0.3)
        )
        service.start()
        try:
            await until(lambda: server.subscribers == 1, what="subscription")
            clock.now, clock.fail_next = T0 + timedelta(seconds=1), True
            await server.publish(OC, BRIDGE)
            await until(lambda: service.state == "backoff", what="run dying")
            assert source.health() == "realtime disconnected: internal error: RuntimeError"
            assert service.problem() == "backoff: RuntimeError: a bug in the bridge"
            await until(lambda: source.status.connected, what="the restarted run connecting")
            assert (service.restarts, server.connects) == (1, 2)
            assert source.health() is None
        finally:
            await service.stop()
            await source.drain()
    statuses = outbox_statuses(outbox)
    assert [s["status"] for s in statuses] == ["connected", "disconnected", "connected", "stopped"]
    assert statuses[1]["reason"] == "internal error: RuntimeError"
    assert statuses[2]["gap_s"] >= 0.3


async def test_the_previous_runs_last_status_is_read_even_with_the_writer_down(
    tmp_path: Path,
) -> None:
    """The gap marker's start is a read: through the reader, it does not need the writer."""
    config = daemon_config(
        tmp_path,
        sources=[
            {
                "name": "hq",
                "vendor": "coral",
                "realtime": {"url": "ws://127.0.0.1:9/ws", "destinations": ["/topic/x"]},
            }
        ],
    )
    stopped = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    async with Daemon(config) as daemon:
        await daemon.writer.submit([status_event("hq", "coral", "stopped", stopped)])
        intake = RealtimeIntake(
            config.sources[0],
            daemon.writer,
            STREAMS["coral"],
            vendor="coral",
            clock=lambda: stopped,
            counts=Counts(),
            reader=daemon.reader,
        )
        await daemon.writer.commit_service.stop()  # as if it were in a backoff
        try:
            assert await intake.last_status_at() == stopped
        finally:
            daemon.writer.commit_service.start()
