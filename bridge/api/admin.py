"""Operator endpoints: the quarantine (list, show, reprocess). Same bearer tokens as consumers."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bridge.api.routes import authorized, error, unauthorized
from bridge.quarantine import Quarantine


def add_routes(app: web.Application, quarantine: Quarantine) -> None:
    async def entries(request: web.Request) -> web.Response:
        if not authorized(request):
            return unauthorized()
        state = request.query.get("state", "held")
        if state not in ("held", "reprocessed", "all"):
            return error(400, "invalid_query", "state is held, reprocessed or all", field="state")
        found = await quarantine.entries(state=None if state == "all" else state, limit=1000)
        return web.json_response({"entries": found})

    async def show(request: web.Request) -> web.Response:
        if not authorized(request):
            return unauthorized()
        entry_id = request.match_info["id"]
        entry = await quarantine.show(int(entry_id)) if entry_id.isdigit() else None
        if entry is None:
            return error(404, "not_found", f"no quarantine entry {entry_id}")
        return web.json_response(entry)

    async def reprocess(request: web.Request) -> web.Response:
        if not authorized(request):
            return unauthorized()
        try:
            body: Any = await request.json()
        except ValueError:
            return error(400, "invalid_body", 'expected JSON: {"ids": [...]} or {"all": true}')
        ids = body.get("ids") if isinstance(body, dict) else None
        every = isinstance(body, dict) and body.get("all") is True
        if not every and not (isinstance(ids, list) and ids and all(type(i) is int for i in ids)):
            return error(
                400, "invalid_body", "give ids (a list of integers) or all: true", field="ids"
            )
        results = await quarantine.reprocess(None if every else ids)
        return web.json_response({"results": results})

    app.router.add_get("/v1/quarantine", entries)
    app.router.add_get("/v1/quarantine/{id}", show)
    app.router.add_post("/v1/quarantine/reprocess", reprocess)
