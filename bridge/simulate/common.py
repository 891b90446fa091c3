"""What every vendor simulator shares: the plan of a call, the run report, and the PBX's way of
delivering pushes (in order per call, retransmitted until acknowledged, sometimes twice).

A vendor module provides the pure part (``scenario``: seeded call plans with the ``call.*``
types a correct bridge makes of them) and a :data:`Send` (how one push goes over HTTP).
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO, TypedDict, Unpack
from urllib.parse import urlsplit

import aiohttp

from bridge.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class Call:
    """One simulated call: its pushes in send order and what the bridge must make of them.

    ``call_id`` is the subject's key (``call/<call_id>``); ``expected_types`` are that
    subject's ``call.*`` events in commit order, after the bridge's call-state rules.
    """

    kind: str
    call_id: str
    pushes: list[dict[str, Any]]
    expected_types: list[str]


@dataclass(kw_only=True)
class Report:
    """What a run did: ``calls`` as planned, and the pushes the bridge acknowledged, in order."""

    sent: int = 0
    acked: int = 0
    retransmitted: int = 0
    duplicates: int = 0
    failed: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    acked_payloads: list[dict[str, Any]] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)


# Sends one push; returns the HTTP status, or None when no answer came (refused, timed out).
Send = Callable[[aiohttp.ClientSession, dict[str, Any]], Awaitable[int | None]]

# Plans call number n, starting at epoch ``start`` (pure, seeded through the rng).
Plan = Callable[[int, random.Random, float], Call]


class PlayOptions(TypedDict, total=False):
    """How the PBX delivers: every simulator's ``run()`` takes these."""

    retransmit_s: float  # retransmit an unacknowledged push this often (default 2 s)
    duplicate_ratio: float  # send this share of acknowledged pushes once more (default 0.1)
    concurrency: int  # calls in progress at once (default 32)
    max_tries: int  # give a push up after this many tries (default 5)
    timeout_s: float  # per request (default 10 s)
    report: Report | None  # pass one to watch progress while it runs


async def simulate(
    plan: Plan,
    send: Send,
    *,
    url: str,
    calls: int,
    rate: float,
    seed: int | None,
    out: TextIO,
    headers: Mapping[str, str] | None = None,
    middlewares: Sequence[aiohttp.ClientMiddlewareType] = (),
    **options: Unpack[PlayOptions],
) -> Report:
    """Plan ``calls`` calls (``rate`` per second from now) and play them against ``url``."""
    concurrency = options.get("concurrency", 32)
    max_tries = options.get("max_tries", 5)
    check(url=url, rate=rate, concurrency=concurrency, max_tries=max_tries)
    rng = random.Random(seed)
    start = time.time()
    plans = [plan(n, rng, start + n / rate) for n in range(calls)]
    return await play(
        plans,
        send,
        rng=rng,
        rate=rate,
        out=out,
        retransmit_s=options.get("retransmit_s", 2.0),
        duplicate_ratio=options.get("duplicate_ratio", 0.1),
        concurrency=concurrency,
        max_tries=max_tries,
        timeout_s=options.get("timeout_s", 10.0),
        report=options.get("report") or Report(),
        headers=headers,
        middlewares=middlewares,
    )


def basic_auth(username: str, password: str) -> dict[str, str]:
    """The Authorization header of HTTP Basic (RFC 7617)."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def check(*, url: str, rate: float, concurrency: int, max_tries: int) -> None:
    """Refuse anything but a loopback bridge, and nonsense numbers."""
    host = urlsplit(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError("url", f"the simulator only talks to a loopback bridge, not {host!r}")
    if rate <= 0:
        raise ConfigError("rate", "must be more than 0 calls per second")
    if concurrency < 1 or max_tries < 1:
        raise ConfigError("concurrency" if concurrency < 1 else "max_tries", "must be at least 1")


async def play(
    plans: list[Call],
    send: Send,
    *,
    rng: random.Random,
    rate: float,
    out: TextIO,
    retransmit_s: float,
    duplicate_ratio: float,
    concurrency: int,
    max_tries: int,
    timeout_s: float,
    report: Report,
    headers: Mapping[str, str] | None = None,
    middlewares: Sequence[aiohttp.ClientMiddlewareType] = (),
) -> Report:
    """Play the calls, starting ``rate`` per second, each call's pushes in order.

    ``headers`` (e.g. from :func:`basic_auth`) and ``middlewares`` (e.g. aiohttp's
    ``DigestAuthMiddleware``) apply to the session every push goes through.
    """
    # Decided up front so a seed fixes which pushes are sent twice.
    resend = [[rng.random() < duplicate_ratio for _ in plan.pushes] for plan in plans]
    report.calls = plans
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    session = aiohttp.ClientSession(
        timeout=timeout, headers=headers, middlewares=tuple(middlewares)
    )
    async with session:
        pbx = _Pbx(session, send, retransmit_s, max_tries, report)
        slots = asyncio.Semaphore(concurrency)
        loop = asyncio.get_running_loop()
        began = loop.time()

        async def one(plan: Call, twice: list[bool]) -> None:
            try:
                acked = await pbx.play(plan, twice)
            finally:
                slots.release()
            print(
                f"{plan.kind:<12} {plan.call_id:<24} pushes={len(plan.pushes)} acked={acked}",
                file=out,
            )

        async with asyncio.TaskGroup() as group:
            for n, (plan, twice) in enumerate(zip(plans, resend, strict=True)):
                await asyncio.sleep(max(0.0, began + n / rate - loop.time()))
                await slots.acquire()
                group.create_task(one(plan, twice))
    statuses = " ".join(f"{status}:{count}" for status, count in sorted(report.statuses.items()))
    print(
        f"calls={len(plans)} sent={report.sent} acked={report.acked} "
        f"retransmitted={report.retransmitted} duplicates={report.duplicates} "
        f"failed={report.failed} statuses={statuses or '-'}",
        file=out,
    )
    return report


class _Pbx:
    """The PBX's HTTP side: one push at a time per call, retransmitted until acknowledged."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        send: Send,
        retransmit_s: float,
        max_tries: int,
        report: Report,
    ) -> None:
        self.session, self.send, self.report = session, send, report
        self.retransmit_s, self.max_tries = retransmit_s, max_tries

    async def play(self, plan: Call, twice: list[bool]) -> int:
        """Send a call's pushes in order; returns how many were acknowledged."""
        acked = 0
        for push, again in zip(plan.pushes, twice, strict=True):
            if not await self.deliver(push):
                self.report.failed += 1  # given up: the PBX moves on to the next event
                continue
            acked += 1
            self.report.acked += 1
            self.report.acked_payloads.append(push)
            if again:  # the ack was "lost": the PBX sends the same push once more
                await asyncio.sleep(self.retransmit_s)
                self.report.duplicates += 1
                await self.deliver(push)
        return acked

    async def deliver(self, push: dict[str, Any]) -> bool:
        """Send until a 2xx, at most ``max_tries`` times, ``retransmit_s`` apart."""
        for attempt in range(self.max_tries):
            if attempt:
                self.report.retransmitted += 1
                await asyncio.sleep(self.retransmit_s)
            try:
                status = await self.send(self.session, push)
            except (aiohttp.ClientError, TimeoutError):
                status = None
            self.report.sent += 1
            key = str(status) if status is not None else "error"
            self.report.statuses[key] = self.report.statuses.get(key, 0) + 1
            if status is not None and 200 <= status < 300:
                return True
        return False
