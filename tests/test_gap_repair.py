"""Gap repair: after a realtime reconnect the PBX's active calls end the calls that ended
unseen; a reconcile run folds in only the call records that never arrived."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.app import Daemon
from bridge.simulate.coral_api import CoralApi
from bridge.simulate.coral_realtime import RealtimeServer
from tests.conftest import base_url, daemon_config, until

OC = "/topic/OC_778"


def message(uuid: str, state: str, number: str = "09876543210") -> dict[str, Any]:
    return {
        "uuid": uuid,
        "name": "Caller",
        "number": number,
        "state": state,
        "topic": "OC_778",
        "subTopic": "",
        "talkingToNumber": "9001",
    }


def active_row(uuid: str) -> dict[str, Any]:
    return {
        "uuid": uuid,
        "direction": "IN",
        "callere": "9001",
        "destination": "0987654321",
        "state": "active",
        "start_time": "2026-12-02 10:00:00",
    }


def events(daemon: Daemon) -> list[dict[str, Any]]:
    with sqlite3.connect(daemon.config.storage.path) as conn:
        return [json.loads(b) for (b,) in conn.execute("SELECT body FROM events ORDER BY seq")]


def ended(daemon: Daemon, uuid: str) -> list[dict[str, Any]]:
    return [
        e for e in events(daemon) if e["type"] == "call.ended" and e["subject"] == f"call/{uuid}"
    ]


@pytest.fixture
async def stream() -> AsyncIterator[RealtimeServer]:
    async with RealtimeServer(heartbeat_ms=(100, 100)) as running:
        yield running


@pytest.fixture
async def pbx() -> AsyncIterator[CoralApi]:
    async with CoralApi(api_key="dev-coral-key") as running:
        yield running


def coral_source(stream: RealtimeServer, pbx: CoralApi, **api: Any) -> dict[str, Any]:
    return {
        "name": "coral",
        "vendor": "coral",
        "realtime": {
            "url": stream.url,
            "destinations": [OC],
            "heartbeat_ms": [100, 100],
            "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.2,
        },
        "api": {"url": pbx.url, "api_key": "dev-coral-key", **api},
    }


async def test_a_call_that_ended_during_the_gap_is_ended_from_the_active_calls(
    tmp_path: Path, stream: RealtimeServer, pbx: CoralApi
) -> None:
    """Two calls up; the stream drops; one ends unseen: after the reconnect only it is ended,
    learned from getactivecalls, and the call still up stays open."""
    config = daemon_config(tmp_path, sources=[coral_source(stream, pbx)])
    async with Daemon(config) as daemon:
        await until(lambda: stream.subscribers == 1, what="subscription")
        await stream.publish(OC, message("gone-1", "CHANNEL_BRIDGE"))
        await stream.publish(OC, message("still-2", "CHANNEL_BRIDGE", number="0911111111"))
        await until(
            lambda: sum(e["type"] == "call.answered" for e in events(daemon)) == 2,
            what="both answered",
        )
        pbx.active["still-2"] = active_row("still-2")  # gone-1 hung up while we were away
        stream.drop_all()
        await until(lambda: bool(ended(daemon, "gone-1")), what="the repair's call.ended")
        (end,) = ended(daemon, "gone-1")
        assert end["data"]["learned_from"] == "query"
        assert ended(daemon, "still-2") == []
        assert [r.action for r in pbx.received] == ["getactivecalls"]


async def test_the_repair_is_also_on_demand_and_spares_calls_newer_than_its_question(
    tmp_path: Path, stream: RealtimeServer, pbx: CoralApi
) -> None:
    """POST /v1/sources/coral/repair ends what the PBX does not list; a call the bridge saw
    after asking is not ended by a snapshot that predates it."""
    config = daemon_config(tmp_path, sources=[coral_source(stream, pbx, repair_after_gap=False)])
    async with Daemon(config) as daemon, aiohttp.ClientSession() as http:
        await until(lambda: stream.subscribers == 1, what="subscription")
        await stream.publish(OC, message("old-1", "CHANNEL_BRIDGE"))
        await until(
            lambda: any(e["type"] == "call.answered" for e in events(daemon)), what="answered"
        )
        pbx.stall()  # hold the question while a new call arrives

        async def repair() -> tuple[int, dict[str, Any]]:
            async with http.post(f"{base_url(daemon)}/v1/sources/coral/repair") as response:
                return response.status, await response.json()

        task = asyncio.create_task(repair())
        await until(lambda: len(pbx.received) == 1, what="the question at the PBX")
        await stream.publish(OC, message("new-2", "CHANNEL_BRIDGE", number="0922222222"))
        await until(
            lambda: sum(e["type"] == "call.answered" for e in events(daemon)) == 2,
            what="the new call",
        )
        pbx.release()
        status, summary = await task
        assert status == 200, summary
        assert summary["ended"] == ["old-1"]
        assert ended(daemon, "new-2") == []
        daemon.repairer.after_gap("coral")  # what a reconnect calls: off by repair_after_gap
        assert len(pbx.received) == 1
        assert daemon.repairer.tasks == 0


async def test_an_active_list_with_an_unnamed_call_ends_nothing(
    tmp_path: Path, stream: RealtimeServer, pbx: CoralApi
) -> None:
    """A getactivecalls row without a uuid could be any open call: the repair refuses (422)
    and ends none, rather than ending a live call the list failed to name."""
    config = daemon_config(tmp_path, sources=[coral_source(stream, pbx, repair_after_gap=False)])
    async with Daemon(config) as daemon, aiohttp.ClientSession() as http:
        await until(lambda: stream.subscribers == 1, what="subscription")
        await stream.publish(OC, message("live-1", "CHANNEL_BRIDGE"))
        await until(
            lambda: any(e["type"] == "call.answered" for e in events(daemon)), what="answer"
        )
        pbx.active["?"] = {**active_row("x"), "uuid": ""}
        async with http.post(f"{base_url(daemon)}/v1/sources/coral/repair") as response:
            answer = await response.json()
            assert response.status == 422, answer
        assert "without a uuid" in answer["error"]["message"]
        assert ended(daemon, "live-1") == []
