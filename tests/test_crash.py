"""Crash safety with a real daemon process: what got a 2xx survives SIGKILL."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp

from bridge.simulate import coocenter
from tests.conftest import until
from tests.daemonproc import DaemonProcess


def stored_raws(data_dir: Path) -> list[Any]:
    with sqlite3.connect(data_dir / "outbox.sqlite3") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        bodies = [row[0] for row in conn.execute("SELECT body FROM events ORDER BY seq")]
    return [json.loads(body)["data"].get("raw") for body in bodies]


async def test_sigkill_while_the_simulator_sends_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """Every push that got a 2xx before a SIGKILL is in the outbox after the restart."""
    data_dir = tmp_path / "data"
    daemon = await DaemonProcess(data_dir).start()
    report = coocenter.Report()
    sender = asyncio.create_task(
        coocenter.run(
            url=f"{daemon.url}/ingest/coocenter",
            calls=400,
            rate=2000,
            webkey=None,
            retransmit_s=0.01,
            duplicate_ratio=0.1,
            seed=7,
            out=io.StringIO(),
            max_tries=2,
            timeout_s=5,
            report=report,
        )
    )
    await until(lambda: len(report.acked_payloads) >= 300, timeout_s=60, what="300 acks")
    await daemon.kill()  # mid-stream: requests are in flight and batches uncommitted
    await sender
    acked = list(report.acked_payloads)
    assert report.failed > 0  # the kill really happened while the simulator was sending

    restarted = await DaemonProcess(data_dir).start()
    try:
        raws = stored_raws(data_dir)
        missing = [payload for payload in acked if payload not in raws]
        assert missing == []
        async with aiohttp.ClientSession() as http:  # and the restarted daemon carries on
            async with http.get(f"{restarted.url}/readyz") as response:
                assert (await response.json())["outbox"]["last_seq"] == len(raws)
    finally:
        assert await restarted.stop() == 0


async def test_sigterm_drains_and_exits_cleanly(tmp_path: Path) -> None:
    """SIGTERM stops the daemon gracefully: exit code 0, a 'stopped' log line."""
    daemon = await DaemonProcess(tmp_path / "data").start()
    async with aiohttp.ClientSession() as http:
        payload = {"event": "extensionstatus", "exten": "808", "status": "0", "statustext": "Idle"}
        async with http.post(f"{daemon.url}/ingest/coocenter", json=payload) as response:
            assert response.status == 200
    assert await daemon.stop() == 0
    assert any(line.get("event") == "stopped" for line in daemon.lines)
    assert stored_raws(tmp_path / "data") == [payload]


def missed_rows(data_dir: Path) -> list[tuple[float, str]]:
    """The committed call.missed events: (received_at, id)."""
    with sqlite3.connect(data_dir / "outbox.sqlite3") as conn:
        return conn.execute(
            "SELECT received_at, id FROM events WHERE type = 'call.missed' ORDER BY seq"
        ).fetchall()


async def test_a_pending_miss_survives_sigkill_and_is_said_once_on_time(tmp_path: Path) -> None:
    """Killed inside the settle window, restarted: one call.missed, not before it was due."""
    data_dir = tmp_path / "data"
    config = tmp_path / "bridge.toml"
    config.write_text(
        '[[sources]]\nname = "coocenter"\nvendor = "coocenter"\nmissed_settle_s = 2.0\n'
    )
    daemon = await DaemonProcess(data_dir, "--config", str(config)).start()
    call = "1725845648.77"
    ivr = {"event": "ivr", "uuid": call, "caller": "13800138000", "callType": "IN"}
    hangup = {"event": "hangup", "uniqueid": call, "calleridnum": "13800138000"}
    async with aiohttp.ClientSession() as http:
        for push in (ivr, hangup):
            async with http.post(f"{daemon.url}/ingest/coocenter", json=push) as response:
                assert response.status == 200
    await daemon.kill()  # well inside the 2 s window
    with sqlite3.connect(data_dir / "outbox.sqlite3") as conn:
        ((due,),) = conn.execute("SELECT missed_due_at FROM calls").fetchall()
    assert due is not None
    assert missed_rows(data_dir) == []

    restarted = await DaemonProcess(data_dir, "--config", str(config)).start()
    await until(lambda: missed_rows(data_dir) != [], timeout_s=20, what="the miss after restart")
    await restarted.kill()  # and once more: the decision is not taken twice
    again = await DaemonProcess(data_dir, "--config", str(config)).start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{again.url}/ingest/coocenter", json=hangup) as response:
                assert response.status == 200  # a retransmission of the end, later
    finally:
        assert await again.stop() == 0
    ((said_at, _),) = missed_rows(data_dir)
    assert said_at >= due  # not before the window passed (and the wait above bounds how late)
