"""Every vendor simulator against a running daemon: each call's committed story is as expected.

The simulators deliver like the real PBXs (retransmissions, duplicates, PortSIP's reordering
when asked); the expected ``call.*`` types per call come from the simulator's plan of that call.
The daemon keeps its default missed-call settle window: every simulated miss is said by a
record (a CDR, a call log), which decides at once, so the stories are complete when the run is.
"""

from __future__ import annotations

import io
import sqlite3
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from bridge.app import Daemon
from bridge.simulate import callog, coral, oncall
from bridge.simulate.common import Report
from tests.conftest import base_url, daemon_config

TOKEN = "call-log-token-1"
USER, PASSWORD = "portsip", "event-url-pw"
BASIC = {"type": "basic", "username": USER, "password": PASSWORD}
DIGEST = {"type": "digest", "username": USER, "password": PASSWORD}
CREDENTIALS = {"username": USER, "password": PASSWORD}

Runner = Callable[..., Awaitable[Report]]
CASES: dict[str, tuple[dict[str, Any], Runner, dict[str, Any]]] = {
    "coral": ({"name": "coral", "vendor": "coral"}, coral.run, {}),
    "oncall-basic": (
        {"name": "oncall", "vendor": "oncall", "auth": BASIC},
        oncall.run,
        CREDENTIALS,
    ),
    "oncall-digest": (
        {"name": "oncall", "vendor": "oncall", "auth": DIGEST},
        oncall.run,
        {**CREDENTIALS, "digest": True},
    ),
    "oncall-reordered": (
        {"name": "oncall", "vendor": "oncall", "auth": BASIC},
        oncall.run,
        {**CREDENTIALS, "reorder": True},
    ),
    "callog": (
        {"name": "callog", "vendor": "callog", "auth": {"type": "token", "token": TOKEN}},
        callog.run,
        {"token": TOKEN},
    ),
    # The provider's own zone, configured on the source and played by the simulator.
    "callog-ist": (
        {
            "name": "callog",
            "vendor": "callog",
            "timezone": "Asia/Kolkata",
            "auth": {"type": "token", "token": TOKEN},
        },
        callog.run,
        {"token": TOKEN, "tz": callog.IST},
    ),
}


async def play(tmp_path: Path, case: str) -> tuple[Report, sqlite3.Connection]:
    source, run, extra = CASES[case]
    async with Daemon(daemon_config(tmp_path, sources=[source])) as daemon:
        report = await run(
            url=f"{base_url(daemon)}/ingest/{source['name']}",
            calls=40,
            rate=500,
            seed=5,
            out=io.StringIO(),
            retransmit_s=0.01,
            duplicate_ratio=0.3,
            **extra,
        )
        path = daemon.config.storage.path
    return report, sqlite3.connect(path)


@pytest.mark.parametrize("case", sorted(CASES))
async def test_simulator_produces_the_expected_call_stories(tmp_path: Path, case: str) -> None:
    """Per simulated call, the committed call.* types equal the plan; nothing is refused."""
    report, conn = await play(tmp_path, case)
    with conn:
        story: dict[str, list[str]] = defaultdict(list)
        for subject, kind in conn.execute(
            "SELECT subject, type FROM events WHERE type LIKE 'call.%' ORDER BY seq"
        ):
            story[subject].append(kind)
        (kept,) = conn.execute("SELECT count(*) FROM quarantine").fetchone()
    conn.close()
    assert report.failed == 0
    assert report.duplicates > 0
    assert kept == 0
    expected = {f"call/{call.call_id}": call.expected_types for call in report.calls}
    assert {s: t for s, t in story.items() if s in expected} == expected
    assert set(story) <= set(expected)  # no stray call subjects either


@pytest.mark.parametrize("case", ["callog", "callog-ist"])
async def test_call_logs_end_when_they_are_sent(tmp_path: Path, case: str) -> None:
    """A call log's date and time, in the source's zone, put the call's end at its sending.

    Local times read in another zone would be hours off (5.5 for India against UTC).
    """
    _, conn = await play(tmp_path, case)
    with conn:
        rows = conn.execute(
            "SELECT time, received_at FROM events WHERE type = 'call.completed'"
        ).fetchall()
    conn.close()
    assert len(rows) == 40
    for time, received_at in rows:
        ended = datetime.fromisoformat(time).timestamp()
        assert abs(ended - received_at) < 60, (time, received_at)
