"""``pbx-bridge tail``: follow the event stream over SSE, resuming after drops."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any, TextIO

import aiohttp

RETRY_S = 1.0


class OutputClosed(Exception):
    """Whoever reads our output is gone (``pbx-bridge tail | head -1``): time to stop."""


class StreamRefused(Exception):
    """The bridge answered the stream request with an error (a wrong token, a bad pattern)."""


def pretty(event: dict[str, Any]) -> str:
    """One readable line: seq, time, type, subject and the few fields people look at."""
    data = event.get("data") or {}
    fields = ("from", "to", "target", "agent", "queue", "disposition", "state", "missed_reason")
    extras = " ".join(f"{key}={data[key]}" for key in fields if key in data)
    return (
        f"{event.get('seq', ''):>6}  {event.get('time', '')}  {event.get('type', ''):<20} "
        f"{event.get('subject', '')}  {extras}".rstrip()
    )


async def tail(
    *,
    url: str,
    types: tuple[str, ...],
    after: int | None,
    token: str | None,
    out: TextIO = sys.stdout,
    limit: int | None = None,
    err: TextIO = sys.stderr,
) -> int:
    """Print events until interrupted (or until ``limit`` were printed); returns the count.

    Without ``after`` it starts at the bridge's newest event, which it asks for first so it
    can say (on ``err``) where it starts. Raises :class:`OutputClosed` when ``out`` is a closed
    pipe and :class:`StreamRefused` when the bridge refuses the stream.
    """
    as_json = not out.isatty()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    base = url.rstrip("/")
    last = after
    announced = False
    said: str | None = None  # the connect problem last reported
    printed = 0
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=None)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            try:
                if last is None:
                    last = await _head(session, base)
                params = {"after": str(last), **({"type": ",".join(types)} if types else {})}
                async with session.get(
                    base + "/v1/events/stream", params=params, headers=headers
                ) as response:
                    if response.status != 200:
                        raise StreamRefused(f"{response.status} {await response.text()}")
                    said = None
                    if not announced:  # once the stream is open: now it is true
                        what = ",".join(types) + " events" if types else "events"
                        print(
                            f"following {what} after seq {last}; waiting...", file=err, flush=True
                        )
                        announced = True
                    async for line in response.content:
                        if not line.startswith(b"data: "):
                            continue
                        event = json.loads(line[6:])
                        last = int(event["seq"])
                        _write(out, json.dumps(event) if as_json else pretty(event))
                        printed += 1
                        if limit is not None and printed >= limit:
                            return printed
            except aiohttp.ClientConnectorError as exc:
                problem = f"cannot reach {base} ({exc.os_error}): is the daemon running?"
                if problem != said:  # once per outage, not every second
                    print(f"{problem} retrying every {RETRY_S:g} s", file=err, flush=True)
                    said = problem
            except (aiohttp.ClientError, ConnectionError) as exc:
                print(f"disconnected from {base} ({exc}); retrying", file=err, flush=True)
                said = None
            await asyncio.sleep(RETRY_S)


async def _head(session: aiohttp.ClientSession, base: str) -> int:
    """The newest committed seq, from ``/readyz`` (open to all, answered even when not ready)."""
    async with session.get(base + "/readyz") as response:
        text = await response.text()
    try:
        return int(json.loads(text)["outbox"]["last_seq"])
    except (KeyError, TypeError, ValueError):
        raise StreamRefused(f"{base}/readyz does not say the newest seq; pass --after") from None


def _write(out: TextIO, line: str) -> None:
    try:
        print(line, file=out, flush=True)
    except BrokenPipeError:
        raise OutputClosed from None
