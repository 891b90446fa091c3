"""``GET /v1/sources``: each configured source's intake as the daemon counts it.

What an operator (and the status page) asks first when calls stop showing up: is the PBX still
pushing, is it being refused, is its realtime connection up.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol

from aiohttp import web

from bridge.api.routes import denied
from bridge.config import Config

# What a refused push is answered: a credential problem (401) or an address not allowed (403).
AUTH_FAILURES = (401, 403)


class _Ingest(Protocol):
    @property
    def responses(self) -> Counter[tuple[str, int]]: ...

    @property
    def last_push(self) -> dict[str, float]: ...


class _Realtime(Protocol):
    @property
    def name(self) -> str: ...

    def snapshot(self) -> dict[str, Any]: ...


class Watched(Protocol):
    """The parts of the daemon this endpoint reads (all of them at request time)."""

    @property
    def config(self) -> Config: ...

    @property
    def ingest(self) -> _Ingest: ...

    @property
    def realtime(self) -> Sequence[_Realtime]: ...


def sources(daemon: Watched) -> list[dict[str, Any]]:
    """One entry per configured source, in config order."""
    by_source: dict[str, Counter[int]] = {}
    for (name, status), count in daemon.ingest.responses.items():
        by_source.setdefault(name, Counter())[status] += count
    realtime = {source.name: source.snapshot() for source in daemon.realtime}
    shown = []
    for source in daemon.config.sources:
        counts = by_source.get(source.name, Counter())
        shown.append(
            {
                "name": source.name,
                "vendor": source.vendor,
                "last_push": daemon.ingest.last_push.get(source.name),
                # JSON keys are text: the status as a string, in numeric order.
                "responses": {str(status): counts[status] for status in sorted(counts)},
                "auth_failures": sum(counts[status] for status in AUTH_FAILURES),
                "realtime": realtime.get(source.name),
            }
        )
    return shown


def add_routes(app: web.Application, daemon: Watched) -> None:
    async def list_sources(request: web.Request) -> web.Response:
        if (refused := denied(request, "read")) is not None:
            return refused
        # "now" lets a client show ages by the daemon's clock, not its own (which may be off).
        return web.json_response({"now": time.time(), "sources": sources(daemon)})

    app.router.add_get("/v1/sources", list_sources)
