"""The webhook sender against real servers on loopback: bounded reads, mapped errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from bridge.errors import TransportError
from bridge.sinks.sender import MAX_RESPONSE_BYTES, HttpSender, Response

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


RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_server(handle: RawHandler) -> AsyncIterator[str]:
    """A receiver written byte by byte, for answers no HTTP library would give."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        server.close()
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> None:
    """One request, head and body (by its Content-Length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    await reader.readexactly(length)


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
            with pytest.raises(TransportError, match="closed before a response"):
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


async def test_a_connection_the_receiver_closed_while_idle_is_not_an_error() -> None:
    """The receiver answers keep-alive, then closes while the connection is idle: the next
    request goes out on a new connection instead of failing (and being retried seconds later)."""
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()  # no "Connection: close": the client thinks it may reuse it

    sender = HttpSender(limit=1)
    try:
        async with raw_server(handle) as url:
            answers = [(await sender(url, b"{}", {}, 5.0)).status for _ in range(3)]
    finally:
        await sender.close()
    assert answers == [200, 200, 200]
    assert connections == 3


async def test_the_request_is_what_a_receiver_expects() -> None:
    """Host, a length, the caller's headers, and the body as given."""
    seen: dict[str, object] = {}

    async def record(request: web.Request) -> web.Response:
        seen["body"] = await request.read()
        seen["headers"] = dict(request.headers)
        seen["query"] = dict(request.query)
        return web.Response(status=204, headers={"Retry-After": "7"})

    sender = HttpSender(limit=1)
    try:
        async with server(record) as url:
            answer = await sender(url + "?tenant=42", b'{"a":1}', {"webhook-id": "msg_1"}, 5.0)
    finally:
        await sender.close()
    assert answer == Response(204, "7")
    headers = seen["headers"]
    assert isinstance(headers, dict)
    assert seen["body"] == b'{"a":1}'
    assert seen["query"] == {"tenant": "42"}
    assert headers["webhook-id"] == "msg_1"
    assert headers["Content-Length"] == "7"
    assert headers["Host"].startswith("127.0.0.1:")
    assert headers["User-Agent"].startswith("pbx-bridge/")


async def test_nothing_listening_is_a_transport_error() -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    sender = HttpSender(limit=1)
    try:
        with pytest.raises(TransportError, match="cannot connect"):
            await sender(f"http://127.0.0.1:{port}/hook", b"{}", {}, 5.0)
    finally:
        await sender.close()


async def test_interim_1xx_answers_are_not_the_answer() -> None:
    """100 Continue and 103 Early Hints, unasked for and in separate reads, then the real
    answer: the real one counts, and the next request on the connection gets its own."""
    answers = iter([b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"])

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                break
            final = next(answers, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            for part in (b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\n\r\n"):
                writer.write(part)  # each its own write: likely a read of its own
                await writer.drain()
            writer.write(final)
            await writer.drain()
        writer.close()

    sender = HttpSender(limit=1)
    try:
        async with raw_server(handle) as url:
            statuses = [(await sender(url, b"{}", {}, 5.0)).status for _ in range(3)]
    finally:
        await sender.close()
    assert statuses == [503, 200, 200]
