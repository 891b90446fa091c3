"""``/v1/commands`` and the per-source command endpoints.

- ``POST /v1/commands`` ``{"source", "action", "args"}`` (scope ``command``): runs it and
  answers its outcome: 200 succeeded, 422 the PBX refused (its message in ``error``), 502 the
  PBX was not reached (nothing sent: safe to retry), 504 the outcome is unknown (never re-sent).
  ``Idempotency-Key`` makes a retry answer the stored outcome (``replayed: true``).
- ``GET /v1/commands/{id}``: a command's outcome, or ``pending`` while in flight.
- ``GET /v1/sources/{name}/capabilities``: the actions a source supports, with the JSON Schema
  of their arguments.
- ``POST /v1/sources/{name}/repair`` and ``/reconcile`` (scope ``admin``): gap repair from the
  PBX's active calls, and call history folded in since a time.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bridge.api.access import Access
from bridge.api.admin import guarded
from bridge.api.routes import ACCESS, BadQuery, error, json_body
from bridge.commands.bound import capabilities
from bridge.commands.outcome import answer_of
from bridge.commands.repair import Repairer
from bridge.commands.service import Commander, Conflict, RateLimited
from bridge.errors import CommandError, CommandInvalid, OutboxError
from bridge.events import decode
from bridge.store import commands as sql

COMMANDER = web.AppKey("commander", Commander)
REPAIRER = web.AppKey("repairer", Repairer)


def add_routes(app: web.Application, commander: Commander, repairer: Repairer) -> None:
    app[COMMANDER] = commander
    app[REPAIRER] = repairer
    app.router.add_post("/v1/commands", guarded(_command, "command"))
    app.router.add_get("/v1/commands/{id}", guarded(_outcome, "command"))
    app.router.add_get("/v1/sources/{name}/capabilities", guarded(_capabilities, "command"))
    app.router.add_post("/v1/sources/{name}/repair", guarded(_repair, "admin"))
    app.router.add_post("/v1/sources/{name}/reconcile", guarded(_reconcile, "admin"))


async def _command(request: web.Request) -> web.Response:
    commander = request.app[COMMANDER]
    try:
        body: Any = await json_body(request)
    except BadQuery as exc:
        return error(400, "invalid_command", exc.problem, field="")
    key = request.headers.get("Idempotency-Key")
    try:
        status, answer = await commander.submit(body, key=key, by=_who(request))
    except CommandError as exc:
        return failed(exc)
    except OutboxError as exc:
        return error(503, "outbox_unavailable", f"the command was not sent: {exc}")
    return web.json_response(answer, status=status)


def failed(exc: CommandError) -> web.Response:
    """The answer for a command (or query) that ended in ``exc``."""
    if isinstance(exc, CommandInvalid):
        extra: dict[str, object] = {"field": exc.field}
        if exc.supported:
            extra["supported"] = list(exc.supported)
        return error(400, exc.code, exc.message, **extra)
    if isinstance(exc, Conflict):
        return error(409, exc.code, exc.message)
    if isinstance(exc, RateLimited):
        response = error(429, exc.code, exc.message)
        response.headers["Retry-After"] = str(max(1, round(exc.retry_after_s + 0.5)))
        return response
    # A query that did not succeed: the same shapes and statuses as a command's outcome.
    code = exc.code
    status = 504 if code == "unknown" else 502 if code == "not_sent" else 422
    outcome = "unknown" if code == "unknown" else "failed"
    return web.json_response(
        {"outcome": outcome, "error": {"code": code, "message": exc.message}}, status=status
    )


def _who(request: web.Request) -> str:
    access: Access = request.app[ACCESS]
    grant = access.grant_of(request)
    return grant.name if grant is not None else ""


async def _outcome(request: web.Request) -> web.Response:
    commander = request.app[COMMANDER]
    command_id = request.match_info["id"]
    if commander.pending(command_id):
        return web.json_response({"id": command_id, "outcome": "pending"}, status=202)
    ids = [command_id, commander.outcome_id(command_id)]
    stored = await request.app[COMMANDER].reader.run(lambda conn: sql.bodies(conn, ids))
    if command_id not in stored:
        return error(404, "unknown_command", f"no command {command_id!r} in the outbox")
    if ids[1] not in stored:
        return web.json_response({"id": command_id, "outcome": "pending"}, status=202)
    return web.json_response(answer_of(decode(stored[ids[0]]), decode(stored[ids[1]])))


async def _capabilities(request: web.Request) -> web.Response:
    source = request.app[COMMANDER].source(request.match_info["name"])
    if source is None:
        return error(404, "unknown_source", "no such source")
    return web.json_response(capabilities(source))


async def _repair(request: web.Request) -> web.Response:
    try:
        summary = await request.app[REPAIRER].active_calls(request.match_info["name"])
    except CommandError as exc:
        return failed(exc)
    except OutboxError as exc:
        return error(503, "outbox_unavailable", str(exc))
    return web.json_response(summary)


async def _reconcile(request: web.Request) -> web.Response:
    try:
        body: Any = await json_body(request)
    except BadQuery as exc:
        return error(400, "invalid_body", exc.problem, field="")
    since = body.get("since") if isinstance(body, dict) else None
    until = body.get("until") if isinstance(body, dict) else None
    if not isinstance(since, str | int) or isinstance(since, bool) or since == "":
        return error(
            400, "invalid_body", "since: required, RFC 3339 or epoch seconds", field="since"
        )
    if until is not None and (not isinstance(until, str | int) or isinstance(until, bool)):
        return error(400, "invalid_body", "until: RFC 3339 or epoch seconds", field="until")
    try:
        summary = await request.app[REPAIRER].reconcile(
            request.match_info["name"],
            since=str(since),
            until=None if until is None else str(until),
        )
    except CommandError as exc:
        return failed(exc)
    except OutboxError as exc:
        return error(503, "outbox_unavailable", str(exc))
    return web.json_response(summary)
