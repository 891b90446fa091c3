"""``pbx-bridge tail``: follow the event stream over SSE, resuming after drops."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any, TextIO

import aiohttp
import structlog

log = structlog.get_logger("bridge.tail")

RETRY_S = 1.0


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
) -> int:
    """Print events until interrupted (or until ``limit`` were printed); returns the count."""
    as_json = not out.isatty()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    last = after
    printed = 0
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=None)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            params: dict[str, str] = {}
            if types:
                params["type"] = ",".join(types)
            if last is not None:
                params["after"] = str(last)
            try:
                async with session.get(
                    url.rstrip("/") + "/v1/events/stream", params=params, headers=headers
                ) as response:
                    if response.status != 200:
                        print(f"error: {response.status} {await response.text()}", file=sys.stderr)
                        return printed
                    async for line in response.content:
                        if not line.startswith(b"data: "):
                            continue
                        event = json.loads(line[6:])
                        last = int(event["seq"])
                        print(json.dumps(event) if as_json else pretty(event), file=out, flush=True)
                        printed += 1
                        if limit is not None and printed >= limit:
                            return printed
            except (aiohttp.ClientError, ConnectionError) as exc:
                print(f"disconnected ({exc}); retrying", file=sys.stderr)
            await asyncio.sleep(RETRY_S)
