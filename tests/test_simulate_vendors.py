"""Every vendor simulator against a running daemon: each call's committed story is as expected.

The simulators deliver like the real PBXs (retransmissions, duplicates, PortSIP's reordering);
the expected ``call.*`` types per call come from the simulator's plan of that call.
"""

from __future__ import annotations

import io
import sqlite3
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.app import Daemon
from bridge.simulate import callog, coral, oncall
from bridge.simulate.common import Report
from tests.conftest import base_url, daemon_config

TOKEN = "call-log-token-1"
USER, PASSWORD = "portsip", "event-url-pw"

Runner = Callable[..., Awaitable[Report]]
CASES: dict[str, tuple[dict[str, Any], Runner, dict[str, Any]]] = {
    "coral": ({"name": "coral", "vendor": "coral"}, coral.run, {}),
    "oncall-basic": (
        {
            "name": "oncall",
            "vendor": "oncall",
            "auth": {"type": "basic", "username": USER, "password": PASSWORD},
        },
        oncall.run,
        {"username": USER, "password": PASSWORD},
    ),
    "oncall-digest": (
        {
            "name": "oncall",
            "vendor": "oncall",
            "auth": {"type": "digest", "username": USER, "password": PASSWORD},
        },
        oncall.run,
        {"username": USER, "password": PASSWORD, "digest": True},
    ),
    "callog": (
        {"name": "callog", "vendor": "callog", "auth": {"type": "token", "token": TOKEN}},
        callog.run,
        {"token": TOKEN},
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_simulator_produces_the_expected_call_stories(tmp_path: Path, case: str) -> None:
    """Per simulated call, the committed call.* types equal the plan; nothing is refused."""
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
        assert report.failed == 0
        assert report.duplicates > 0
        with sqlite3.connect(daemon.config.storage.path) as conn:
            story: dict[str, list[str]] = defaultdict(list)
            for subject, kind in conn.execute(
                "SELECT subject, type FROM events WHERE type LIKE 'call.%' ORDER BY seq"
            ):
                story[subject].append(kind)
            (kept,) = conn.execute("SELECT count(*) FROM quarantine").fetchone()
    assert kept == 0
    expected = {f"call/{call.call_id}": call.expected_types for call in report.calls}
    assert {s: t for s, t in story.items() if s in expected} == expected
    assert set(story) <= set(expected)  # no stray call subjects either
