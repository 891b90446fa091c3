"""The calls API: ``GET /v1/calls`` and ``GET /v1/calls/{source}/{key}``.

What a CRM's call log and missed-call list read: each call's folded record (parties, direction,
whether a person answered, the final disposition, missed or revoked, timings, and the seqs of
the events that built it), as the writer keeps it in the ``calls`` table.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Final

import msgspec
from aiohttp import web

from bridge import calls
from bridge.api.routes import (
    ACCESS,
    MAX_SEQ,
    READER,
    BadQuery,
    authorized,
    error,
    int_param,
    unauthorized,
)
from bridge.config import Config
from bridge.store.reader import CallQuery

# Source name -> the events' source attribute ("/vendor/name"), as the calls table keys calls.
SOURCES: Final = web.AppKey("call_sources", dict[str, str])

STATES: Final = (*calls.STATES, "active")
_BOOLEANS: Final = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}

_encoder = msgspec.json.Encoder()


def _boolean(request: web.Request, name: str) -> bool | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    value = _BOOLEANS.get(raw.lower())
    if value is None:
        raise BadQuery(name, f"expected true or false, got {raw!r}")
    return value


def _since(request: web.Request) -> float | None:
    """``since``: RFC 3339 (``2024-05-01T09:30:00Z``) or epoch seconds."""
    raw = request.query.get("since")
    if raw is None or raw == "":
        return None
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise BadQuery("since", f"expected a finite number of epoch seconds, got {raw!r}")
        return seconds
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        raise BadQuery("since", f"expected RFC 3339 or epoch seconds, got {raw!r}") from None
    if moment.tzinfo is None:
        raise BadQuery("since", f"needs a time zone (Z or +hh:mm), got {raw!r}")
    return moment.timestamp()


def _query(request: web.Request) -> CallQuery:
    config = request.app[ACCESS].config
    limit = int_param(request, "limit", 100, lo=1, hi=config.page_limit_max)
    after = before = None
    if request.query.get("after"):
        after = int_param(request, "after", 0, lo=0, hi=MAX_SEQ)
    if request.query.get("before"):
        before = int_param(request, "before", 0, lo=1, hi=MAX_SEQ)
    if after is not None and before is not None:
        raise BadQuery("before", "give after (oldest first) or before (newest first), not both")
    state = request.query.get("state") or None
    if state is not None and state not in STATES:
        raise BadQuery("state", f"expected one of {', '.join(STATES)}, got {state!r}")
    source = request.query.get("source") or None
    event_source = None
    if source is not None:
        event_source = request.app[SOURCES].get(source)
        if event_source is None:
            raise BadQuery("source", f"no source named {source!r} is configured")
    return CallQuery(
        limit=limit,
        after=after,
        before=before,
        since=_since(request),
        missed=_boolean(request, "missed"),
        ended=False if state == "active" else None,
        state=None if state in (None, "active") else state,
        source=event_source,
    )


def _public(row: tuple[Any, ...]) -> dict[str, Any]:
    _, _, body, first_seq, last_seq, updated_at = row
    record = calls.decode(body)
    return {
        **calls.public(record, first_seq=first_seq, last_seq=last_seq),
        "updated_at": updated_at,
    }


async def list_calls(request: web.Request) -> web.StreamResponse:
    """A page of call records, newest activity first (``before``), or after a cursor."""
    if not authorized(request):
        return unauthorized()
    try:
        query = _query(request)
    except BadQuery as exc:
        return error(400, "invalid_query", exc.problem, field=exc.field)
    rows = await request.app[READER].calls(query)
    page = [_public(row) for row in rows]
    body: dict[str, Any] = {"calls": page}
    if query.after is not None:
        # The cursor for the next page: past the newest call returned, or where we were.
        body["next_after"] = page[-1]["last_seq"] if page else query.after
    elif len(page) == query.limit:
        body["next_before"] = page[-1]["last_seq"]
    return web.Response(body=_encoder.encode(body), content_type="application/json")


async def get_call(request: web.Request) -> web.StreamResponse:
    """One call's folded record."""
    if not authorized(request):
        return unauthorized()
    name, key = request.match_info["source"], request.match_info["key"]
    source = request.app[SOURCES].get(name)
    if source is None:
        return error(404, "unknown_source", f"no source named {name!r} is configured")
    row = await request.app[READER].call(source, f"call/{key}")
    if row is None or row[2] is None:
        return error(404, "unknown_call", f"source {name!r} has no call {key!r}")
    return web.Response(body=_encoder.encode(_public(row)), content_type="application/json")


def configure(app: web.Application, config: Config) -> None:
    """The configured sources' names (kept in place: a reload changes them under the app)."""
    names = app[SOURCES]
    names.clear()
    names.update({source.name: f"/{source.vendor}/{source.name}" for source in config.sources})


def add_routes(app: web.Application, config: Config) -> None:
    app[SOURCES] = {}
    configure(app, config)
    app.router.add_get("/v1/calls", list_calls)
    # (?s:): a key may hold a newline (%0A), which a bare "." would leave to aiohttp's 404.
    app.router.add_get("/v1/calls/{source}/{key:(?s:.+)}", get_call)
