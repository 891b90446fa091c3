"""The CooCenter simulator against a running daemon: each call's story is exactly as expected.

The daemon keeps its default missed-call settle window: a CooCenter miss is said by the call's
cdr or cc_cdr, which decides at once, so every story is complete when the run is.
"""

from __future__ import annotations

import io
import json
import sqlite3
from collections import defaultdict

import pytest

from bridge.app import Daemon
from bridge.simulate import coocenter
from bridge.simulate.common import Report
from tests.conftest import base_url


async def simulate(
    daemon: Daemon,
    *,
    calls: int,
    seed: int,
    out: io.StringIO,
    dialstatus: coocenter.DialStatus = "zycoo",
) -> Report:
    """Fast calls with many duplicate pushes (retransmissions 10 ms apart)."""
    return await coocenter.run(
        url=base_url(daemon) + "/ingest/coocenter",
        calls=calls,
        rate=500,
        webkey=None,
        retransmit_s=0.01,
        duplicate_ratio=0.3,
        seed=seed,
        out=out,
        dialstatus=dialstatus,
    )


@pytest.mark.parametrize("dialstatus", coocenter.DIALSTATUSES)
async def test_simulated_calls_produce_the_expected_call_events(
    daemon: Daemon, dialstatus: coocenter.DialStatus
) -> None:
    """Per call: initiated once, ringing per leg, one end, the records; missed when unanswered."""
    out = io.StringIO()
    report = await simulate(daemon, calls=40, seed=11, out=out, dialstatus=dialstatus)
    assert report.failed == 0
    assert report.duplicates > 0  # retransmissions really happened and were absorbed
    with sqlite3.connect(daemon.config.storage.path) as conn:
        rows = conn.execute(
            "SELECT subject, type FROM events WHERE type LIKE 'call.%' ORDER BY seq"
        )
        story: dict[str, list[str]] = defaultdict(list)
        for subject, kind in rows:
            story[subject].append(kind)
    expected = {f"call/{call.call_id}": call.expected_types for call in report.calls}
    assert dict(story) == expected
    assert {call.kind for call in report.calls} == set(coocenter.KINDS)
    assert "acked=" in out.getvalue()


async def test_tail_prints_the_stream_as_json_lines(daemon: Daemon) -> None:
    """`pbx-bridge tail` (not on a TTY) prints one CloudEvent JSON object per line."""
    from bridge.tail import tail

    await simulate(daemon, calls=1, seed=3, out=io.StringIO())
    out = io.StringIO()
    printed = await tail(
        url=base_url(daemon), types=("call.*",), after=0, token=None, out=out, limit=2
    )
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert printed == 2
    seqs = [line["seq"] for line in lines]
    assert seqs[0] == 1
    assert seqs == sorted(set(seqs))
    assert all(line["type"].startswith("call.") for line in lines)
