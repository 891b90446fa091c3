"""What every simulated PBX *API* shares (the command side; ``common`` is the push side).

A simulator of a vendor's API is an :class:`ApiServer`: an aiohttp server on loopback that
answers the vendor's documented requests with the document's answers, and records each request
it received, so tests can say "exactly one dial reached the PBX". Failure modes every vendor
has: :meth:`stall` (requests wait unanswered until :meth:`release`: a PBX that took the command
and never said so), and the vendor's own ones (bad key, unknown extension, busy) driven by what
the request carries, as a real PBX would.

A simulator that places calls (click-to-call) plays the pushes a real PBX would send back to the
bridge, to ``push_url``, through :func:`bridge.simulate.common.play`'s delivery rules
(retransmitted until acknowledged).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web

from bridge.errors import ConfigError
from bridge.simulate.common import Call, Report, Send, check, play


@dataclass(frozen=True, kw_only=True)
class Received:
    """One request as the simulated PBX saw it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    action: str  # the vendor's own name of what was asked (originatecall, click-number, ...)


@dataclass(kw_only=True)
class _Stall:
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: int = 0


class ApiServer:
    """Base of the simulated APIs: subclasses add routes in :meth:`routes` and call
    :meth:`record` first thing in every handler (so a stalled request is counted too)."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        check(url=f"http://{host}:{port or 1}", rate=1, concurrency=1, max_tries=1)
        self.host, self.port = host, port
        self.received: list[Received] = []
        self._stall: _Stall | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    @property
    def url(self) -> str:
        """The base URL to put in the source's ``[sources.api] url``."""
        return f"http://{self.host}:{self.port}"

    def actions(self, name: str | None = None) -> list[Received]:
        return [r for r in self.received if name is None or r.action == name]

    async def record(self, request: web.Request, action: str) -> Received:
        """Keep the request; while stalled, wait until released before going on."""
        received = Received(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={key.lower(): value for key, value in request.headers.items()},
            body=await request.read(),
            action=action,
        )
        self.received.append(received)
        stall = self._stall
        if stall is not None:
            stall.waiting += 1
            await stall.gate.wait()
        return received

    def stall(self) -> None:
        """From now on requests get no answer until :meth:`release`."""
        if self._stall is None:
            self._stall = _Stall()

    def release(self) -> None:
        if self._stall is not None:
            self._stall.gate.set()
            self._stall = None

    def spawn(self, coro: Any) -> None:
        """Run ``coro`` (the pushes of a placed call) beside the request; owned until close."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settled(self) -> None:
        """Wait until every push the simulator started has been delivered or given up."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def __aenter__(self) -> ApiServer:
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None)
        if not sockets:
            raise ConfigError("listen", "the simulated API could not listen")
        self.port = int(sockets[0].getsockname()[1])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._runner is not None:
            await self._runner.cleanup()


async def play_back(
    call: Call,
    send: Send,
    *,
    retransmit_s: float,
    max_tries: int,
    report: Report | None = None,
    rng: random.Random | None = None,
    headers: Mapping[str, str] | None = None,
) -> Report:
    """Deliver one placed call's pushes to the bridge as the PBX does: in order, each
    retransmitted until acknowledged (no extra duplicates: a click's call is played once)."""
    return await play(
        [call],
        send,
        rng=rng or random.Random(0),
        rate=1000.0,
        out=io.StringIO(),
        retransmit_s=retransmit_s,
        duplicate_ratio=0.0,
        concurrency=1,
        max_tries=max_tries,
        timeout_s=10.0,
        report=report or Report(),
        headers=headers,
    )
