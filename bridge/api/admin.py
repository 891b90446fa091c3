"""Operator endpoints: quarantine, sinks and their dead letters.

The sinks list needs the ``read`` scope; everything else ``admin`` (it shows raw payloads or
changes what is delivered).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web

from bridge.api.routes import (
    MAX_SEQ,
    BadQuery,
    denied,
    error,
    int_param,
    json_body,
    seq_text,
)
from bridge.config import Scope
from bridge.sinks.sink import DeadLetters, Sink
from bridge.sources.quarantine import Quarantine
from bridge.store import deliveries
from bridge.store.reader import Reader

Handler = Callable[[web.Request], Awaitable[web.Response]]
QUARANTINE_PAGE = 1000


def guarded(handler: Handler, scope: Scope) -> Handler:
    async def guarded(request: web.Request) -> web.Response:
        if (refused := denied(request, scope)) is not None:
            return refused
        return await handler(request)

    return guarded


async def _selection(request: web.Request) -> list[int] | web.Response | None:
    """``{"seqs": [...]}`` / ``{"ids": [...]}`` or ``{"all": true}``; None means all."""
    try:
        body: Any = await json_body(request)
    except BadQuery:
        return error(400, "invalid_body", 'expected JSON: {"ids": [...]} or {"all": true}')
    if isinstance(body, dict) and body.get("all") is True:
        return None
    chosen = body.get("ids", body.get("seqs")) if isinstance(body, dict) else None
    if isinstance(chosen, list) and chosen and all(_storable(i) for i in chosen):
        return chosen
    return error(400, "invalid_body", "give ids (a list of integers) or all: true", field="ids")


def _storable(value: object) -> bool:
    """An id or seq SQLite can hold (a larger integer would make the query raise)."""
    return type(value) is int and 0 <= value <= MAX_SEQ


def add_routes(
    app: web.Application, quarantine: Quarantine, sinks: Sequence[Sink], reader: Reader
) -> None:
    """``sinks`` is the daemon's live list: a reload adds and removes sinks in it."""

    def named(name: str) -> Sink | None:
        return next((sink for sink in sinks if sink.name == name), None)

    async def entries(request: web.Request) -> web.Response:
        """Every source's entries (HTTP and realtime), a page at a time, and each one's room."""
        state = request.query.get("state", "held")
        if state not in ("held", "reprocessed", "all"):
            return error(400, "invalid_query", "state is held, reprocessed or all", field="state")
        try:
            after = int_param(request, "after", 0, lo=0, hi=MAX_SEQ)
            limit = int_param(request, "limit", QUARANTINE_PAGE, lo=1, hi=QUARANTINE_PAGE)
        except BadQuery as exc:
            return error(400, "invalid_query", exc.problem, field=exc.field)
        found = await quarantine.entries(
            state=None if state == "all" else state,
            source=request.query.get("source") or None,
            after=after,
            limit=limit,
        )
        # A full page may have more behind it: page on from its last id.
        next_after = found[-1]["id"] if len(found) == limit else None
        return web.json_response(
            {"entries": found, "next_after": next_after, "sources": await quarantine.usage()}
        )

    async def show(request: web.Request) -> web.Response:
        entry_id = request.match_info["id"]
        number = seq_text(entry_id)
        entry = await quarantine.show(number) if number is not None else None
        if entry is None:
            return error(404, "not_found", f"no quarantine entry {entry_id}")
        return web.json_response(entry)

    async def reprocess(request: web.Request) -> web.Response:
        chosen = await _selection(request)
        if isinstance(chosen, web.Response):
            return chosen
        return web.json_response({"results": await quarantine.reprocess(chosen)})

    def sink_of(request: web.Request) -> DeadLetters | web.Response:
        name = request.match_info["name"]
        sink = named(name)
        if sink is None:
            return error(404, "not_found", f"no sink named {name!r}")
        if not isinstance(sink, DeadLetters):
            return error(404, "not_found", f"sink {name!r} ({sink.kind}) keeps no dead letters")
        return sink

    async def list_sinks(request: web.Request) -> web.Response:
        head = await reader.head()
        dead = await deliveries.dead_counts(reader)
        shown = []
        for sink in list(sinks):
            snapshot = sink.snapshot(head)
            if isinstance(sink, DeadLetters):
                snapshot["dead"] = dead.get(sink.name, 0)  # dead letters stored, all time
            shown.append(snapshot)
        return web.json_response({"sinks": shown})

    async def dead(request: web.Request) -> web.Response:
        sink = sink_of(request)
        if isinstance(sink, web.Response):
            return sink
        return web.json_response({"dead": await sink.dead_letters()})

    async def dead_retry(request: web.Request) -> web.Response:
        sink = sink_of(request)
        if isinstance(sink, web.Response):
            return sink
        chosen = await _selection(request)
        if isinstance(chosen, web.Response):
            return chosen
        return web.json_response({"retried": await sink.retry_dead(chosen)})

    async def dead_purge(request: web.Request) -> web.Response:
        sink = sink_of(request)
        if isinstance(sink, web.Response):
            return sink
        chosen = await _selection(request)
        if isinstance(chosen, web.Response):
            return chosen
        return web.json_response({"purged": await sink.purge_dead(chosen)})

    async def replay(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        sink = named(name)
        if sink is None:
            return error(404, "not_found", f"no sink named {name!r}")
        try:
            body: Any = await json_body(request)
        except BadQuery:
            body = None
        from_seq = body.get("from_seq") if isinstance(body, dict) else None
        if not (isinstance(from_seq, int) and _storable(from_seq) and from_seq >= 1):
            return error(400, "invalid_body", "from_seq: a seq >= 1", field="from_seq")
        head = await reader.head()
        if from_seq > head + 1:
            # Moving the cursor there would skip every event committed before that seq exists.
            detail = f"from_seq {from_seq} is past the newest event ({head})"
            return error(400, "invalid_body", detail, field="from_seq")
        events = await reader.count(after=from_seq - 1, types=sink.config.types)
        await sink.replay(from_seq)
        return web.json_response({"replaying_from": from_seq, "head": head, "events": events})

    routes: tuple[tuple[str, str, Handler, Scope], ...] = (
        ("GET", "/v1/quarantine", entries, "admin"),
        ("GET", "/v1/quarantine/{id}", show, "admin"),
        ("POST", "/v1/quarantine/reprocess", reprocess, "admin"),
        ("GET", "/v1/sinks", list_sinks, "read"),
        ("GET", "/v1/sinks/{name}/dead", dead, "admin"),
        ("POST", "/v1/sinks/{name}/dead/retry", dead_retry, "admin"),
        ("POST", "/v1/sinks/{name}/dead/purge", dead_purge, "admin"),
        ("POST", "/v1/sinks/{name}/replay", replay, "admin"),
    )
    for method, path, handler, scope in routes:
        app.router.add_route(method, path, guarded(handler, scope))
