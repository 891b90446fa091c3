"""SSE and WebSocket subscribers: live delivery, resume across a daemon restart, slow clients."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
from websockets.asyncio.client import connect

from bridge.app import Daemon
from tests.conftest import base_url, daemon_config, until


def extension_push(n: int) -> dict[str, Any]:
    """A distinct CooCenter push per n (one extension.state event each)."""
    return {"event": "extensionstatus", "exten": str(800 + n), "status": "0", "statustext": "Idle"}


async def push(daemon: Daemon, payloads: list[dict[str, Any]]) -> None:
    async with aiohttp.ClientSession() as http:
        for payload in payloads:
            async with http.post(base_url(daemon) + "/ingest/coocenter", json=payload) as response:
                assert response.status == 200


async def sse_read(
    daemon: Daemon, count: int, *, last_id: int | None = None, **params: str
) -> list[dict[str, Any]]:
    headers = {"Last-Event-ID": str(last_id)} if last_id is not None else {}
    got: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as http, asyncio.timeout(10):
        url = base_url(daemon) + "/v1/events/stream"
        async with http.get(url, params=params, headers=headers) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "text/event-stream"
            seq_line: int | None = None
            async for line in response.content:
                if line.startswith(b"id: "):
                    seq_line = int(line[4:])
                elif line.startswith(b"data: "):
                    event = json.loads(line[6:])
                    assert event["seq"] == seq_line  # the SSE id is the seq
                    got.append(event)
                    if len(got) == count:
                        return got
    return got


async def test_sse_delivers_live_events(daemon: Daemon) -> None:
    """A subscriber that connected first receives events pushed after it."""
    reader = asyncio.create_task(sse_read(daemon, 3, after="0"))
    await push(daemon, [extension_push(n) for n in range(3)])
    assert [e["seq"] for e in await reader] == [1, 2, 3]


async def test_sse_without_after_starts_at_the_head(daemon: Daemon) -> None:
    """No resume point means: only new events."""
    await push(daemon, [extension_push(0)])
    reader = asyncio.create_task(sse_read(daemon, 1))
    await until(lambda: daemon.hub.subscribers == 1, what="the stream attaching")
    await push(daemon, [extension_push(1)])
    assert [e["seq"] for e in await reader] == [2]


async def test_sse_resumes_after_restart_without_gap_or_duplicate(tmp_path: Path) -> None:
    """Last-Event-ID after a daemon restart continues exactly after the last event seen."""
    config = daemon_config(tmp_path)
    async with Daemon(config) as daemon:
        await push(daemon, [extension_push(n) for n in range(5)])
        seen = await sse_read(daemon, 3, after="0")
    async with Daemon(config) as daemon:
        await push(daemon, [extension_push(n) for n in range(5, 8)])
        rest = await sse_read(daemon, 5, last_id=seen[-1]["seq"])
    assert [e["seq"] for e in seen + rest] == list(range(1, 9))


async def test_ws_resumes_after_restart_without_gap_or_duplicate(tmp_path: Path) -> None:
    """A WebSocket client resuming with ?after= after a restart misses nothing, repeats nothing."""
    config = daemon_config(tmp_path)
    seqs: list[int] = []
    async with Daemon(config) as daemon:
        await push(daemon, [extension_push(n) for n in range(4)])
        async with (
            connect(f"ws://127.0.0.1:{daemon.port}/v1/ws?after=0") as ws,
            asyncio.timeout(10),
        ):
            for _ in range(2):
                seqs.append(json.loads(await ws.recv())["seq"])
    async with Daemon(config) as daemon:
        await push(daemon, [extension_push(n) for n in range(4, 6)])
        url = f"ws://127.0.0.1:{daemon.port}/v1/ws?after={seqs[-1]}"
        async with connect(url) as ws, asyncio.timeout(10):
            for _ in range(4):
                seqs.append(json.loads(await ws.recv())["seq"])
    assert seqs == [1, 2, 3, 4, 5, 6]


async def test_ws_type_filter(daemon: Daemon) -> None:
    """?type=call.* on the WebSocket skips other types."""
    await push(daemon, [extension_push(0)])
    call = {
        "event": "hangup",
        "calleridnum": "808",
        "connectedlinenum": "809",
        "uniqueid": "1325747409.260",
    }
    await push(daemon, [call])
    async with connect(f"ws://127.0.0.1:{daemon.port}/v1/ws?after=0&type=call.*") as ws:
        async with asyncio.timeout(10):
            event = json.loads(await ws.recv())
    assert event["type"] == "call.ended"


async def test_slow_ws_client_gets_every_event_with_bounded_buffers(tmp_path: Path) -> None:
    """A client that does not read while thousands of events arrive still gets them all, in order.

    The daemon never buffers more than client_queue events for it: it falls back to the outbox.
    """
    config = daemon_config(tmp_path, api={"client_queue": 16})
    total = 2000
    async with Daemon(config) as daemon:
        # A tiny receive buffer and no reading: the server's sends block, its buffer overflows.
        async with connect(f"ws://127.0.0.1:{daemon.port}/v1/ws?after=0", max_queue=1) as ws:
            await until(lambda: daemon.hub.subscribers == 1, what="the stream attaching")
            (subscription,) = daemon.hub._subscriptions
            async with aiohttp.ClientSession() as http:
                for start in range(0, total, 200):
                    # ~5 kB per event, 10 MB in all: more than the kernel's socket buffers hold.
                    batch = [
                        {**extension_push(n), "pad": "x" * 5000} for n in range(start, start + 200)
                    ]
                    await asyncio.gather(
                        *(http.post(base_url(daemon) + "/ingest/coocenter", json=p) for p in batch)
                    )
            assert subscription.overflows >= 1
            assert subscription.high_water <= 16
            seqs = []
            async with asyncio.timeout(30):
                while len(seqs) < total:
                    seqs.append(json.loads(await ws.recv())["seq"])
    assert seqs == list(range(1, total + 1))
