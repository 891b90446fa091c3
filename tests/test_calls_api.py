"""The calls API on a real daemon: folded records, the missed list, cursors, precise errors."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge import cli
from bridge.app import Daemon
from tests.conftest import base_url, daemon_config, until_true

TOKEN = "calls-api-token-0123456789"
CALLER = "13800138000"


def coocenter_call(uniqueid: str, *, answered: bool) -> list[dict[str, Any]]:
    """An inbound queue call as Zycoo's firmware pushes it (dialstatus "hangup", then records)."""
    dial = {
        "timestamp": "1541416806.5",
        "channel": f"SIP/trunk1-{uniqueid[-3:]}",
        "calleridnum": CALLER,
        "destchannel": "SIP/801-00000001",
        "destcalleridnum": "801",
        "destuniqueid": f"{uniqueid}1",
        "uniqueid": uniqueid,
    }
    cc_cdr = {
        "event": "cc_cdr",
        "uuid": uniqueid,
        "caller": CALLER,
        "called": "100",
        "queueCode": "630",
        "agentCode": "801",
        "callType": "incoming",
        "trunkNumber": "02066668888",
        "startTime": "2018-11-05 19:20:00",
        "endTime": "2018-11-05 19:21:08",
        "cdrState": "bridged" if answered else "queue",
        "talkingTime": "60" if answered else "0",
        "missCause": "" if answered else "NO_AGENT_ANSWER",
    }
    return [
        {"event": "dialbegin", **dial},
        {"event": "dialend", **dial, "dialstatus": "hangup"},
        {"event": "hangup", "uniqueid": uniqueid, "calleridnum": CALLER, "connectedlinenum": "801"},
        cc_cdr,
    ]


@pytest.fixture
async def bridge(tmp_path: Path) -> AsyncIterator[Daemon]:
    config = daemon_config(
        tmp_path / "data",
        api={"tokens": [TOKEN]},
        sources=[
            {"name": "hq", "vendor": "coocenter", "timezone": "Asia/Shanghai"},
            {"name": "branch", "vendor": "coocenter", "missed_settle_s": 3600},
        ],
    )
    async with Daemon(config) as running:
        yield running


async def push(daemon: Daemon, source: str, pushes: list[dict[str, Any]]) -> None:
    async with aiohttp.ClientSession() as http:
        for body in pushes:
            url = f"{base_url(daemon)}/ingest/{source}"
            async with http.post(url, json=body) as response:
                assert response.status == 200, await response.text()


async def get(daemon: Daemon, path: str, *, token: str | None = TOKEN) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http:
        async with http.get(base_url(daemon) + path, headers=headers) as response:
            return response.status, await response.json()


async def test_an_answered_call_is_listed_answered_with_its_events(bridge: Daemon) -> None:
    """The firmware's "hangup" dialstatus and a bridged cc_cdr: answered, never missed."""
    await push(bridge, "hq", coocenter_call("1541416800.900", answered=True))
    status, page = await get(bridge, "/v1/calls")
    assert status == 200
    (record,) = page["calls"]
    assert record["source"] == "hq"
    assert record["call_key"] == "1541416800.900"
    assert (record["answered"], record["missed"], record["disposition"]) == (
        True,
        False,
        "answered",
    )
    assert record["agent"] == "801"
    assert record["did"] == "02066668888"
    assert record["state"] == "ended"
    status, events = await get(bridge, "/v1/events?limit=100")
    mine = [e for e in events["events"] if e["subject"] == "call/1541416800.900"]
    assert record["seqs"] == [e["seq"] for e in mine if e["type"].startswith("call.")]
    assert {e["type"] for e in mine} - {"call.initiated", "call.ringing"} == {
        "raw.unmapped",  # the dialend with no verdict, kept on the call's subject
        "call.ended",
        "call.completed",
    }
    assert "call.missed" not in {e["type"] for e in events["events"]}


async def test_a_missed_call_is_in_the_missed_list_only(bridge: Daemon) -> None:
    """missed=true lists the call nobody took (decided by the cc_cdr), not the answered one."""
    await push(bridge, "hq", coocenter_call("1541417400.950", answered=False))
    await push(bridge, "hq", coocenter_call("1541416800.900", answered=True))
    _, missed = await get(bridge, "/v1/calls?missed=true")
    assert [c["call_key"] for c in missed["calls"]] == ["1541417400.950"]
    assert missed["calls"][0]["missed_decided_by"] == "record"
    assert missed["calls"][0]["direction"] == "inbound"
    _, answered = await get(bridge, "/v1/calls?missed=false")
    assert [c["call_key"] for c in answered["calls"]] == ["1541416800.900"]


async def test_a_pending_decision_is_shown_as_pending(bridge: Daemon) -> None:
    """Inside the settle window an unanswered end is neither missed nor answered: pending."""
    pushes = coocenter_call("1541417400.951", answered=False)[:3]  # no cc_cdr yet
    await push(bridge, "branch", pushes)
    status, record = await get(bridge, "/v1/calls/branch/1541417400.951")
    assert status == 200
    assert (record["missed"], record["missed_pending"], record["answered"]) == (False, True, False)


async def test_one_call_by_source_and_key(bridge: Daemon) -> None:
    """GET /v1/calls/{source}/{key} is the same record the list shows."""
    await push(bridge, "hq", coocenter_call("1541416800.900", answered=True))
    _, page = await get(bridge, "/v1/calls")
    status, record = await get(bridge, "/v1/calls/hq/1541416800.900")
    assert status == 200
    assert record == page["calls"][0]


async def test_the_after_cursor_pages_oldest_first_and_stops(bridge: Daemon) -> None:
    """after= walks every call once by its newest event; next_after is the next cursor."""
    for n in range(3):
        await push(bridge, "hq", coocenter_call(f"15414168{n}0.900", answered=True))
    keys: list[str] = []
    after = 0
    for _ in range(5):
        _, page = await get(bridge, f"/v1/calls?after={after}&limit=2")
        keys += [c["call_key"] for c in page["calls"]]
        if page["next_after"] == after:
            break
        after = page["next_after"]
    assert keys == [f"15414168{n}0.900" for n in range(3)]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("missed=maybe", "missed"),
        ("state=over", "state"),
        ("source=nowhere", "source"),
        ("limit=0", "limit"),
        ("since=yesterday", "since"),
        ("since=2024-05-01T09:30:00", "since"),
        ("since=nan", "since"),
        ("since=9e999", "since"),
        ("after=1&before=9", "before"),
        ("after=-1", "after"),
    ],
)
async def test_bad_queries_name_the_field(bridge: Daemon, query: str, field: str) -> None:
    """A bad parameter is a 400 that says which one and what was wrong."""
    status, body = await get(bridge, f"/v1/calls?{query}")
    assert status == 400
    assert body["field"] == field


async def test_unknown_calls_and_sources_are_404(bridge: Daemon) -> None:
    """No such call, no such source: 404 with a reason, never a 500."""
    assert (await get(bridge, "/v1/calls/hq/nope"))[0] == 404
    assert (await get(bridge, "/v1/calls/nowhere/1"))[0] == 404


async def test_calls_need_a_token(bridge: Daemon) -> None:
    """The calls API is behind the API token like the event stream."""
    assert (await get(bridge, "/v1/calls", token=None))[0] == 401
    assert (await get(bridge, "/v1/calls/hq/1", token="wrong-token-000000000"))[0] == 401


async def test_cli_lists_the_missed_calls(bridge: Daemon) -> None:
    """pbx-bridge calls --missed --json prints the missed call records."""
    await push(bridge, "hq", coocenter_call("1541417400.950", answered=False))
    await push(bridge, "hq", coocenter_call("1541416800.900", answered=True))

    async def listed() -> bool:
        _, page = await get(bridge, "/v1/calls")
        return len(page["calls"]) == 2

    await until_true(listed, what="both calls")
    args = ["calls", "--missed", "--json", "--url", base_url(bridge), "--token", TOKEN]
    out = io.StringIO()
    code = await _cli(args, out)
    assert code == 0
    lines = out.getvalue().splitlines()
    assert [json.loads(line)["call_key"] for line in lines] == ["1541417400.950"]


async def _cli(args: list[str], out: io.StringIO) -> int:
    """The CLI's calls command on this loop (cli.main would start a loop of its own)."""
    return await cli.calls_command(cli._parser().parse_args(args), out)
