"""Slow clients and connection floods: they are cut off on time and real pushes go on."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bridge import config, server
from bridge.config import ServerConfig
from bridge.errors import ConfigError
from tests.conftest import until
from tests.daemonproc import DaemonProcess

TIMEOUT_S = 2.0  # header_timeout_s and body_timeout_s of the flood test
CAP = 100
FLOOD = 300
PUSHERS = 4  # keep-alive connections opened before the flood, pushing through it
PUSHES = 32
SLOW_PUSH = {"event": "extensionstatus", "exten": "7999", "status": "0", "statustext": "Idle"}


def extension(n: int) -> dict[str, str]:
    return {"event": "extensionstatus", "exten": str(1000 + n), "status": "0", "statustext": "Idle"}


async def start_daemon(tmp_path: Path, **server_keys: float) -> DaemonProcess:
    lines = ["[server]", *(f"{key} = {value}" for key, value in server_keys.items())]
    lines += ["[[sources]]", 'name = "coocenter"', 'vendor = "coocenter"']  # auth = none
    path = tmp_path / "bridge.toml"
    path.write_text("\n".join(lines) + "\n")
    return await DaemonProcess(tmp_path / "data", "--config", str(path)).start()


def stored_raws(data_dir: Path) -> list[Any]:
    with sqlite3.connect(data_dir / "outbox.sqlite3") as conn:
        bodies = [row[0] for row in conn.execute("SELECT body FROM events ORDER BY seq")]
    return [json.loads(body)["data"].get("raw") for body in bodies]


@dataclass
class Outcome:
    """What a raw connection got back before the server ended it."""

    kind: str
    opened_at: float
    closed_at: float
    received: bytes
    reset: bool

    @property
    def lasted_s(self) -> float:
        return self.closed_at - self.opened_at


async def watch(kind: str, reader: asyncio.StreamReader, opened_at: float) -> Outcome:
    received, reset = b"", False
    try:
        while chunk := await reader.read(4096):
            received += chunk
    except ConnectionResetError:
        reset = True
    return Outcome(kind, opened_at, asyncio.get_running_loop().time(), received, reset)


def slow_request(kind: str) -> bytes:
    """Nothing; a head cut short; or a whole head whose body stops halfway."""
    if kind == "idle":
        return b""
    if kind == "head":
        return b"POST /ingest/coocenter HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl"
    body = json.dumps(SLOW_PUSH).encode()  # valid JSON: only the length says it is not all
    return (
        b"POST /ingest/coocenter HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body) * 2, body)
    )


async def test_slow_and_surplus_connections_do_not_stop_pushes(tmp_path: Path) -> None:
    """300 idle or half-sent connections: the surplus is refused, the rest cut off on time,
    pushes on open connections get 2xx throughout, and a half-sent body is never an event."""
    daemon = await start_daemon(
        tmp_path,
        header_timeout_s=TIMEOUT_S,
        body_timeout_s=TIMEOUT_S,
        keepalive_timeout_s=30,
        max_connections=CAP,
    )
    loop = asyncio.get_running_loop()
    url = f"{daemon.url}/ingest/coocenter"
    try:
        connector = aiohttp.TCPConnector(limit=PUSHERS)
        async with aiohttp.ClientSession(connector=connector) as http:

            async def push(n: int) -> tuple[int, float]:
                async with http.post(url, json=extension(n)) as response:
                    await response.read()
                    return response.status, loop.time()

            warm = await asyncio.gather(*(push(n) for n in range(PUSHERS)))
            assert [status for status, _ in warm] == [200] * PUSHERS

            kinds = ("idle", "head", "body")
            watchers = []
            writers = []
            for index in range(FLOOD):
                kind = kinds[index % len(kinds)]
                # Before connecting: the server's timer cannot start earlier than this, however
                # late this process gets to run after the connect.
                attempted_at = loop.time()
                reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
                writer.write(slow_request(kind))
                watchers.append(asyncio.create_task(watch(kind, reader, attempted_at)))
                writers.append(writer)

            pushes = []
            for first in range(PUSHERS, PUSHERS + PUSHES, PUSHERS):
                pushes += await asyncio.gather(*(push(n) for n in range(first, first + PUSHERS)))
            async with asyncio.timeout(15):
                outcomes = await asyncio.gather(*watchers)
            for writer in writers:
                writer.close()
    finally:
        assert await daemon.stop() == 0

    refused = [o for o in outcomes if o.reset or o.received.startswith(b"HTTP/1.1 503")]
    cut = [o for o in outcomes if o not in refused]
    assert (len(refused), len(cut)) == (FLOOD - (CAP - PUSHERS), CAP - PUSHERS)
    assert max(o.lasted_s for o in refused) < TIMEOUT_S / 2  # promptly, not by a timeout

    heads = [o for o in cut if o.kind in ("idle", "head")]
    bodies = [o for o in cut if o.kind == "body"]
    assert all(o.received == b"" for o in heads)  # closed without an answer
    assert all(o.received.startswith(b"HTTP/1.1 408 ") for o in bodies)
    assert heads
    assert bodies
    for o in cut:
        assert TIMEOUT_S - 0.01 <= o.lasted_s < TIMEOUT_S + 3  # (a timer may round down 1 ms)

    assert [status for status, _ in pushes] == [200] * PUSHES
    first_cut_at = min(o.closed_at for o in cut)
    assert max(at for _, at in pushes) < first_cut_at  # answered while the slow ones were open

    raws = stored_raws(tmp_path / "data")
    assert SLOW_PUSH not in raws
    assert sorted(raws, key=lambda raw: raw["exten"]) == [
        extension(n) for n in range(PUSHERS + PUSHES)
    ]  # concurrent pushes: any order
    assert any(line.get("event") == "connections_refused" for line in daemon.lines)


async def read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await reader.readexactly(length)


async def closed_after_s(reader: asyncio.StreamReader, since: float) -> float:
    async with asyncio.timeout(10):
        assert await reader.read() == b""
    return asyncio.get_running_loop().time() - since


HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


async def test_an_idle_keepalive_connection_is_closed_after_keepalive_timeout(
    tmp_path: Path,
) -> None:
    """Kept alive for a second request, then closed keepalive_timeout_s after the last answer."""
    daemon = await start_daemon(tmp_path, keepalive_timeout_s=1.0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
        for _ in range(2):
            # Before the request: the server's idle timer starts after it answers, however late
            # this process reads that answer.
            asked_at = asyncio.get_running_loop().time()
            writer.write(HEALTHZ)
            assert (await read_response(reader)).startswith(b"HTTP/1.1 200 ")
        idle_s = await closed_after_s(reader, asked_at)
        writer.close()
    finally:
        assert await daemon.stop() == 0
    assert 0.99 <= idle_s < 5


async def test_a_later_request_head_on_a_kept_alive_connection_must_arrive_on_time(
    tmp_path: Path,
) -> None:
    """After an answer, a second head started but not finished is cut off after header_timeout_s."""
    daemon = await start_daemon(tmp_path, header_timeout_s=1.0, keepalive_timeout_s=30)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
        writer.write(HEALTHZ)
        assert (await read_response(reader)).startswith(b"HTTP/1.1 200 ")
        started_at = asyncio.get_running_loop().time()  # the head's timer starts after this
        writer.write(HEALTHZ[:20])
        cut_s = await closed_after_s(reader, started_at)
        writer.close()
    finally:
        assert await daemon.stop() == 0
    assert 0.99 <= cut_s < 5  # the head's limit, not keep-alive's 30 s


async def test_connections_above_the_cap_are_refused_and_counted() -> None:
    """At max_connections a new connection gets 503 and is closed; the open ones still work."""

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/healthz", ok)
    running = await server.start(app, ServerConfig(listen="127.0.0.1:0", max_connections=3))
    try:
        opened = [await asyncio.open_connection("127.0.0.1", running.port) for _ in range(3)]
        await until(lambda: running.connections == 3, what="three connections")
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        async with asyncio.timeout(5):
            assert (await reader.read()).startswith(b"HTTP/1.1 503 ")
        writer.close()
        assert (running.connections, running.refused) == (3, 1)
        for reader, writer in opened:  # the open ones are not hurt
            writer.write(HEALTHZ)
            assert (await read_response(reader)).endswith(b"\r\n\r\nok")
        opened[0][1].close()
        await until(lambda: running.connections == 2, what="a connection to close")
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        writer.write(HEALTHZ)
        assert (await read_response(reader)).endswith(b"\r\n\r\nok")  # a free slot is used
        assert running.refused == 1
        for _, other in [*opened[1:], (reader, writer)]:
            other.close()
    finally:
        await running.close()


@pytest.mark.parametrize(
    "key", ["header_timeout_s", "body_timeout_s", "keepalive_timeout_s", "max_connections"]
)
def test_limits_must_be_positive(key: str) -> None:
    """A zero limit is a config error naming its key."""
    with pytest.raises(ConfigError) as caught:
        config.from_dict({"server": {key: 0}})
    assert caught.value.path == f"server.{key}"
