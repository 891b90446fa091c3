"""The command driver on the wire: whole answers however they arrive, and every failure mapped
to not sent (safe to retry) or unknown (may have happened) at this one seam."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from bridge import config
from bridge.commands import coocenter
from bridge.commands.actions import CALLS_ACTIVE, index
from bridge.commands.adapter import Adapter
from bridge.commands.driver import MAX_ANSWER_BYTES, Driver
from bridge.commands.model import Command, HttpAnswer, HttpRequest, Result, Target
from bridge.errors import CommandNotSent, CommandUnknown


class Pbx:
    """A loopback server whose answer a test chooses."""

    def __init__(self) -> None:
        self.hits = 0
        self.body = b"{}"
        self.chunk = 0  # > 0: stream the body in pieces of this size
        self.stall = asyncio.Event()
        self.stalled = False

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        if self.stalled:
            await self.stall.wait()
        if not self.chunk:
            return web.Response(body=self.body, content_type="application/json")
        response = web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(request)
        for start in range(0, len(self.body), self.chunk):
            await response.write(self.body[start : start + self.chunk])
            await asyncio.sleep(0)  # let each piece go out on its own
        await response.write_eof()
        return response


@pytest.fixture
async def pbx() -> AsyncIterator[tuple[Pbx, str]]:
    state = Pbx()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield state, f"http://127.0.0.1:{port}"
    state.stall.set()
    await runner.cleanup()


def source(url: str) -> config.SourceConfig:
    raw = {"name": "pbx", "vendor": "coocenter", "api": {"url": url}}
    return config.from_dict({"sources": [raw]}).sources[0]


def adapter(*, build: Any = None, parse: Any = None) -> Adapter:
    def default_build(command: Command, target: Target) -> HttpRequest:
        return HttpRequest(method="GET", url=f"{target.api.url}/calls")

    def default_parse(command: Command, answer: HttpAnswer) -> Result:
        return Result(data={"calls": json.loads(answer.body)})

    return Adapter(
        vendor="test",
        actions=index([CALLS_ACTIVE]),
        build=build or default_build,
        parse=parse or default_parse,
    )


COMMAND = Command(source="pbx", action="calls.active")


async def run(driver: Driver, adapter_: Adapter, url: str, timeout_s: float = 5.0) -> Result:
    return await driver.run(
        adapter_, COMMAND, source(url), timeout_s=timeout_s, connect_timeout_s=2
    )


async def test_an_answer_in_many_pieces_is_read_whole(pbx: tuple[Pbx, str]) -> None:
    """A 200 KB list sent 8 KB at a time arrives whole (not just the first read)."""
    state, url = pbx
    calls = [{"call_id": f"c{n}", "padding": "x" * 100} for n in range(1800)]
    state.body, state.chunk = json.dumps(calls).encode(), 8192
    driver = Driver()
    try:
        result = await run(driver, adapter(), url)
    finally:
        await driver.close()
    assert len(result.data["calls"]) == 1800


async def test_an_answer_over_the_cap_is_unknown(pbx: tuple[Pbx, str]) -> None:
    """Sent, and its answer too big to read: unknown, never a refusal."""
    state, url = pbx
    state.body, state.chunk = b"[" + b" " * (MAX_ANSWER_BYTES + 10) + b"]", 1 << 16
    driver = Driver()
    try:
        with pytest.raises(CommandUnknown, match="larger than"):
            await run(driver, adapter(), url)
    finally:
        await driver.close()


async def test_a_2xx_an_adapter_cannot_read_is_unknown(pbx: tuple[Pbx, str]) -> None:
    """The PBX took the request and answered outside its documented shape: it may have acted,
    so a real adapter (CooCenter's) makes it unknown, not a refusal a CRM would retry."""
    state, url = pbx
    state.body = b"<html>ok</html>"
    driver = Driver()
    try:
        with pytest.raises(CommandUnknown, match="does not document"):
            await run(driver, coocenter.ADAPTER, url)
    finally:
        await driver.close()


async def test_an_adapter_that_cannot_build_sends_nothing(pbx: tuple[Pbx, str]) -> None:
    """A bug in build: not sent, and the PBX saw no request."""
    state, url = pbx

    def broken(command: Command, target: Target) -> HttpRequest:
        raise KeyError("surprise")

    driver = Driver()
    try:
        with pytest.raises(CommandNotSent, match="could not build"):
            await run(driver, adapter(build=broken), url)
    finally:
        await driver.close()
    assert state.hits == 0


async def test_an_answer_the_adapter_cannot_read_is_unknown(pbx: tuple[Pbx, str]) -> None:
    """A bug in parse, after the request went: unknown."""
    _, url = pbx

    def broken(command: Command, answer: HttpAnswer) -> Result:
        raise ValueError("odd shape")

    driver = Driver()
    try:
        with pytest.raises(CommandUnknown, match="could not be read"):
            await run(driver, adapter(parse=broken), url)
    finally:
        await driver.close()


async def test_refused_connection_is_not_sent_and_silence_is_unknown(
    pbx: tuple[Pbx, str],
) -> None:
    """No listener: not sent. A listener that never answers: unknown after timeout_s."""
    state, url = pbx
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    driver = Driver()
    try:
        with pytest.raises(CommandNotSent, match="could not be reached"):
            await run(driver, adapter(), closed)
        state.stalled = True
        with pytest.raises(CommandUnknown, match="no answer from the PBX"):
            await run(driver, adapter(), url, timeout_s=0.2)
    finally:
        await driver.close()
    assert state.hits == 1
