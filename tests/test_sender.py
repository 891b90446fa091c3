"""The webhook sender against real servers on loopback: bounded reads, mapped errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from bridge.errors import TransportError
from bridge.sinks.sender import MAX_RESPONSE_BYTES, HttpSender

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/hook", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        await runner.cleanup()


async def test_a_huge_response_body_is_not_read() -> None:
    """200 with a 128 MiB body: the status comes back; the body is dropped with the connection."""
    written = {"bytes": 0}
    chunk = b"x" * (1 << 20)

    async def huge(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Length": str(128 * len(chunk))})
        await response.prepare(request)
        try:
            for _ in range(128):
                await response.write(chunk)
                written["bytes"] += len(chunk)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    sender = HttpSender(limit=2)
    try:
        async with server(huge) as url:
            answer = await sender(url, b"{}", {}, 10.0)
    finally:
        await sender.close()
    assert answer.status == 200
    assert written["bytes"] < 32 * len(chunk)  # the rest was never wanted, so never sent


async def test_a_small_body_keeps_the_connection() -> None:
    """Bodies under the limit are read whole, and the connection is reused."""
    peers: set[object] = set()

    async def small(request: web.Request) -> web.Response:
        await request.read()
        assert request.transport is not None
        peers.add(request.transport.get_extra_info("peername"))
        return web.Response(status=202, body=b"y" * (MAX_RESPONSE_BYTES // 2))

    sender = HttpSender(limit=1)
    try:
        async with server(small) as url:
            answers = [await sender(url, b"{}", {}, 10.0) for _ in range(3)]
    finally:
        await sender.close()
    assert [a.status for a in answers] == [202, 202, 202]
    assert len(peers) == 1


async def test_a_dropped_connection_is_a_transport_error() -> None:
    async def drop(request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.abort()
        return web.Response()

    sender = HttpSender(limit=1)
    try:
        async with server(drop) as url:
            with pytest.raises(TransportError, match="Disconnected"):
                await sender(url, b"{}", {}, 10.0)
    finally:
        await sender.close()


async def test_a_slow_receiver_is_a_timeout() -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response()

    sender = HttpSender(limit=1)
    try:
        async with server(slow) as url:
            with pytest.raises(TimeoutError):
                await sender(url, b"{}", {}, 0.2)
            release.set()
    finally:
        await sender.close()
