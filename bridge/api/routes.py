"""Consumer endpoints: ``GET /v1/events`` (polling), ``/v1/events/stream`` (SSE), ``/v1/ws``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import msgspec
import structlog
from aiohttp import WSMsgType, web

from bridge.api.access import Access
from bridge.api.access import unauthorized as unauthorized
from bridge.api.follow import follow
from bridge.api.hub import Hub
from bridge.config import Scope
from bridge.store.reader import Reader

log = structlog.get_logger("bridge.api")

HUB: Final = web.AppKey("hub", Hub)
READER: Final = web.AppKey("reader", Reader)
ACCESS: Final = web.AppKey("access", Access)
STREAMS: Final = web.AppKey("streams", set[asyncio.Task[Any]])
CLOSE_WAIT_S: Final = 0.5

SSE_KEEPALIVE_S: Final = 15.0


def error(status: int, code: str, detail: str, **extra: object) -> web.Response:
    return web.json_response({"error": code, "detail": detail, **extra}, status=status)


def authorized(request: web.Request) -> bool:
    """The request may read (events, streams, calls): see :mod:`bridge.api.access`."""
    return request.app[ACCESS].denied(request, "read") is None


def denied(request: web.Request, scope: Scope = "read") -> web.Response | None:
    """None when the request holds ``scope``; else the 401 or 403 answer to give."""
    return request.app[ACCESS].denied(request, scope)


class BadQuery(Exception):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field = field
        self.problem = problem


def int_param(request: web.Request, name: str, default: int, *, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if len(raw) > 20:  # no integer we take is longer (and int() of 4,300 digits raises)
        raise BadQuery(name, f"expected an integer from {lo} to {hi}, got {raw[:24]!r}...")
    try:
        value = int(raw)
    except ValueError:
        raise BadQuery(name, f"expected an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise BadQuery(name, f"must be between {lo} and {hi}, got {value}")
    return value


MAX_TYPE_PATTERNS: Final = 64


def _types(request: web.Request) -> tuple[str, ...]:
    patterns: list[str] = []
    for value in request.query.getall("type", []):
        patterns.extend(part.strip() for part in value.split(",") if part.strip())
    if len(patterns) > MAX_TYPE_PATTERNS:
        # Each is a term of one SQL expression, which SQLite caps in depth.
        raise BadQuery("type", f"at most {MAX_TYPE_PATTERNS} type patterns, got {len(patterns)}")
    return tuple(patterns)


MAX_SEQ: Final = 2**63 - 1  # SQLite's largest integer


def seq_text(value: str) -> int | None:
    """A seq written as text (a header, a path segment), or None when it is not one.

    ASCII digits only (``str.isdigit`` takes ``²``), and no more than SQLite can hold.
    """
    if not (value.isascii() and value.isdigit()) or len(value) > 19:
        return None
    number = int(value)
    return number if number <= MAX_SEQ else None


async def _start_after(request: web.Request) -> int:
    """Resume point: ``Last-Event-ID`` (SSE reconnect), ``?after=``, or the current head."""
    last_id = request.headers.get("Last-Event-ID")
    if last_id:
        seq = seq_text(last_id)
        if seq is None:
            raise BadQuery("Last-Event-ID", f"expected a seq (0 to {MAX_SEQ}), got {last_id!r}")
        return seq
    if request.query.get("after"):
        return int_param(request, "after", 0, lo=0, hi=MAX_SEQ)
    return await request.app[READER].head()


async def list_events(request: web.Request) -> web.StreamResponse:
    if (refused := denied(request)) is not None:
        return refused
    config = request.app[ACCESS].config
    try:
        after = int_param(request, "after", 0, lo=0, hi=MAX_SEQ)
        limit = int_param(request, "limit", 100, lo=1, hi=config.page_limit_max)
        types = _types(request)
    except BadQuery as exc:
        return error(400, "invalid_query", exc.problem, field=exc.field)
    page = await request.app[READER].page(after=after, limit=limit, types=types)
    # The bodies are stored encoded: splice them rather than decode and re-encode.
    body = (
        b'{"events":['
        + b",".join(e.body for e in page.events)
        + b'],"next_after":%d}' % (page.next_after)
    )
    return web.Response(body=body, content_type="application/json")


async def _opening(request: web.Request) -> tuple[int, tuple[str, ...]] | web.Response:
    """A stream's resume point and type patterns, or the error answer to give instead."""
    if (refused := denied(request)) is not None:
        return refused
    try:
        return await _start_after(request), _types(request)
    except BadQuery as exc:
        return error(400, "invalid_query", exc.problem, field=exc.field)


async def stream_events(request: web.Request) -> web.StreamResponse:
    opening = await _opening(request)
    if isinstance(opening, web.Response):
        return opening
    after, types = opening
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    app = request.app
    stream = follow(app[HUB], app[READER], after=after, types=types, idle_s=SSE_KEEPALIVE_S)
    log.info("subscriber_connected", kind="sse", after=after, peer=request.remote)
    try:
        with _registered(request):
            async for batch in stream:
                if not batch:
                    await response.write(b": keepalive\n\n")  # keeps proxies from timing out
                    continue
                await response.write(
                    b"".join(b"id: %d\ndata: %s\n\n" % (e.seq, e.body) for e in batch)
                )
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        await stream.aclose()
        log.info("subscriber_disconnected", kind="sse", peer=request.remote)
    return response


async def websocket(request: web.Request) -> web.StreamResponse:
    opening = await _opening(request)
    if isinstance(opening, web.Response):
        return opening
    after, types = opening
    # timeout: how long close() waits for the client's close frame; shutdown waits no longer.
    ws = web.WebSocketResponse(heartbeat=30.0, timeout=CLOSE_WAIT_S)
    try:
        await ws.prepare(request)
    except web.HTTPBadRequest as exc:
        # Not an upgrade (no Upgrade header, a bad key or version): aiohttp's own answer is
        # text/plain; ours is the JSON error every endpoint gives.
        detail = " ".join((exc.text or "not a WebSocket handshake").split())
        return error(400, "invalid_handshake", detail)
    except (ValueError, UnicodeError):
        # aiohttp's handshake chokes on header bytes that are not ASCII (a key, a version).
        return error(400, "invalid_handshake", "the WebSocket handshake headers are not ASCII")
    app = request.app
    log.info("subscriber_connected", kind="ws", after=after, peer=request.remote)

    async def pump() -> None:
        try:
            async for batch in follow(app[HUB], app[READER], after=after, types=types):
                for event in batch:
                    # A text frame (CloudEvents JSON is text) straight from the stored UTF-8
                    # bytes: no decode and re-encode per event per client.
                    await ws.send_frame(event.body, WSMsgType.TEXT)
        except ConnectionResetError:
            pass
        except Exception:
            log.exception("subscriber_failed", kind="ws")
            await ws.close(code=1011, message=b"internal error")

    sender = asyncio.create_task(pump(), name="ws-pump")
    try:
        with _registered(request):
            async for message in ws:  # we expect nothing from the client; this notices the close
                if message.type == WSMsgType.ERROR:
                    break
    except asyncio.CancelledError:
        sender.cancel()
        await _going_away(request, ws)
        raise
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionResetError):
            await sender
        log.info("subscriber_disconnected", kind="ws", peer=request.remote)
    return ws


async def _going_away(request: web.Request, ws: web.WebSocketResponse) -> None:
    """Shutdown: a 1001 close, within ``CLOSE_WAIT_S`` even to a client that stopped reading
    (whose full buffers would hold the close frame forever); past that, drop the connection."""
    try:
        async with asyncio.timeout(CLOSE_WAIT_S):
            await ws.close(code=1001, message=b"server shutting down")
            return
    except (TimeoutError, ConnectionResetError):
        pass
    if request.transport is not None:
        request.transport.abort()


@contextmanager
def _registered(request: web.Request) -> Iterator[None]:
    """Track a long-lived stream so shutdown can end it instead of waiting for it."""
    task = asyncio.current_task()
    assert task is not None
    streams = request.app[STREAMS]
    streams.add(task)
    try:
        yield
    finally:
        streams.discard(task)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/events", list_events)
    app.router.add_get("/v1/events/stream", stream_events)
    app.router.add_get("/v1/ws", websocket)


async def json_body(request: web.Request) -> Any:
    """The request's JSON body, or :class:`BadQuery` saying why it is not one."""
    raw = await request.read()
    try:
        return _body_decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        raise BadQuery("", "the body is not JSON (or is nested too deeply)") from None


_body_decoder = msgspec.json.Decoder()
