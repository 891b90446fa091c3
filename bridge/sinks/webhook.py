"""Webhook sinks: every matching committed event delivered at least once, signed, in order per
call, through any outage of the receiver.

One dispatcher task per sink reads the outbox by ``seq`` after its durable cursor. Events of one
call (same ``subject``) go out one at a time in ``seq`` order; other calls overtake a call
whose event waits for a retry. The cursor only moves past an event once it is settled: delivered,
dead-lettered, expired, filtered out, or durably recorded in ``deliveries`` (waiting for a retry,
or held behind its call's waiting event). So a restart resumes where delivery was: recorded
events come back from ``deliveries``, the rest is read again after the cursor, and only events
that were in flight are sent twice.

Memory is bounded: at most ``max_in_memory`` unsettled events are held, and while the receiver's
circuit breaker is open nothing new is read (the backlog stays in the outbox).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import sqlite3
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Protocol

import aiohttp
import msgspec
import structlog

from bridge.api.hub import Hub, Subscription
from bridge.config import WebhookSinkConfig
from bridge.events import type_matches
from bridge.sinks import policy, signing
from bridge.store.commit import Committed
from bridge.store.reader import Reader
from bridge.store.writer import Writer

log = structlog.get_logger("bridge.sinks")

PAGE = 500
CURSOR_FLUSH_S = 0.02


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    retry_after: str | None = None


class Sender(Protocol):
    """The one-method seam to the receiver (tests may pass their own)."""

    async def __call__(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float
    ) -> Response: ...


class HttpSender:
    """POSTs with aiohttp, one connection pool per sink."""

    def __init__(self, limit: int) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limit), auto_decompress=False
        )

    async def __call__(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float
    ) -> Response:
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with self._session.post(
            url, data=body, headers=headers, timeout=timeout, allow_redirects=False
        ) as response:
            await response.read()
            return Response(response.status, response.headers.get("Retry-After"))

    async def close(self) -> None:
        await self._session.close()


class _Event(msgspec.Struct):
    id: str
    time: str


_decode_event = msgspec.json.Decoder(_Event).decode


@dataclass(slots=True)
class _Item:
    seq: int
    subject: str
    type: str
    body: bytes
    id: str
    time: str
    attempts: int = 0
    due: float = 0.0  # wall-clock time of the next attempt
    recorded: bool = False  # in ``deliveries`` (waiting or held)


@dataclass(slots=True)
class Stats:
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    expired: int = 0
    last_error: str | None = None
    disabled: str | None = None


@dataclass(slots=True)
class _Call:
    items: deque[_Item] = field(default_factory=deque)
    busy: bool = False  # its head is in flight


class WebhookSink:
    """One sink's dispatcher; an async context manager that owns its task."""

    def __init__(
        self,
        config: WebhookSinkConfig,
        *,
        writer: Writer,
        reader: Reader,
        hub: Hub,
        sender: Sender | None = None,
        rng: random.Random | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.name = config.name
        self.config = config
        self._writer, self._reader, self._hub = writer, reader, hub
        self._own_sender = sender is None
        self._sender: Sender = sender or HttpSender(config.concurrency)
        self._secrets = [signing.parse_secret(secret) for secret in config.secrets]
        self._rng = rng or random.Random()
        self._wall = wall
        self.breaker = self._breaker()
        self.stats = Stats()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._reset_state()

    def _breaker(self) -> policy.Breaker:
        cool_down = self.config.breaker_cool_down_s
        return policy.Breaker(
            threshold=self.config.breaker_threshold,
            cool_down_s=cool_down,
            max_cool_down_s=cool_down * 10,
        )

    def _reset_state(self) -> None:
        self.cursor = 0
        self._read_pos = 0
        self._calls: OrderedDict[str, _Call] = OrderedDict()
        self._order: deque[int] = deque()  # unsettled seqs in read order
        self._settled: set[int] = set()
        self._in_memory = 0
        self._in_flight: set[asyncio.Task[None]] = set()
        self._dirty: list[Callable[[sqlite3.Connection], None]] = []
        self._saved_cursor = -1
        self._flushed_at = 0.0
        self._more = True  # there may be unread events in the outbox

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> WebhookSink:
        self._task = asyncio.create_task(self._run(), name=f"sink-{self.name}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop()
        if self._own_sender and isinstance(self._sender, HttpSender):
            await self._sender.close()

    async def _stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        for task in list(self._in_flight):
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._flush(force=True)

    async def restart(self) -> None:
        """Drop in-memory state and start again from what is stored (after replay, DLQ retry)."""
        await self._stop()
        self._reset_state()
        self._task = asyncio.create_task(self._run(), name=f"sink-{self.name}")

    # -- the loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        with structlog.contextvars.bound_contextvars(sink=self.name):
            try:
                await self._load()
                with self._hub.subscribe() as news:
                    while self.stats.disabled is None:
                        # Reset before reading: a commit after this point wakes the wait below,
                        # and one since the last wait (its wake-up may have lost the race with
                        # a finished delivery) means there is more to read now.
                        if news.pending:
                            self._more = True
                        news.reset()
                        if self._more:
                            await self._fill()
                        self._dispatch()
                        await self._flush()
                        if await self._wait(news):
                            self._more = True
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sink_failed")
                raise

    async def _load(self) -> None:
        def read(conn: sqlite3.Connection) -> tuple[Any, list[tuple[Any, ...]]]:
            cursor = conn.execute(
                "SELECT seq, disabled_reason FROM sink_cursors WHERE sink = ?", (self.name,)
            ).fetchone()
            rows = conn.execute(
                "SELECT d.seq, d.subject, d.attempts, d.next_attempt_at, d.state, e.type, e.body"
                " FROM deliveries d JOIN events e ON e.seq = d.seq"
                " WHERE d.sink = ? AND d.state IN ('waiting', 'held') ORDER BY d.seq",
                (self.name,),
            ).fetchall()
            return cursor, rows

        cursor, rows = await self._reader.run(read)
        if cursor is not None:
            self.cursor = self._read_pos = int(cursor[0])
            self.stats.disabled = cursor[1]
        for seq, subject, attempts, due, _, kind, body in rows:
            event = _decode_event(body)
            item = _Item(
                seq, subject, kind, bytes(body), event.id, event.time, attempts, due or 0.0
            )
            item.recorded = True
            self._add(item, settled=True)  # durably recorded: the cursor is already past it
        if rows:
            log.info("sink_resumed", cursor=self.cursor, pending=len(rows))

    async def _fill(self) -> None:
        """Read new events after the read position, while there is room and the receiver is up."""
        # An open breaker means the receiver is down: leave the backlog in the outbox.
        while True:
            if self._in_memory >= self.config.max_in_memory or self.breaker.state != "closed":
                return  # more to read later (``_more`` stays set)
            limit = min(PAGE, self.config.max_in_memory - self._in_memory)
            page = await self._reader.page(
                after=self._read_pos, limit=limit, types=self.config.types
            )
            for event in page.events:
                self._take(event)
            # Past rows the type filter skipped, too: nothing to deliver there.
            self._read_pos = max(self._read_pos, page.next_after)
            self._advance()
            if len(page.events) < limit:  # not the page size: memory may have capped the limit
                self._more = False  # caught up: the next commit's news sets it again
                return

    def _take(self, event: Committed) -> None:
        if self.config.sources and event.source.rsplit("/", 1)[-1] not in self.config.sources:
            return  # another source's event: never unsettled (the cursor passes it when read)
        parsed = _decode_event(event.body)
        self._add(_Item(event.seq, event.subject, event.type, event.body, parsed.id, parsed.time))

    def _add(self, item: _Item, *, settled: bool = False) -> None:
        call = self._calls.get(item.subject)
        if call is None:
            call = self._calls[item.subject] = _Call()
        call.items.append(item)
        self._in_memory += 1
        if not settled:
            self._order.append(item.seq)
            head = call.items[0]
            if head is not item and head.recorded and not item.recorded:
                self._record(item, "held")  # behind a waiting event: keep it across restarts

    def _dispatch(self) -> None:
        """Start deliveries: the due head of each call, up to the concurrency.

        With ``batch_size`` > 1, up to that many heads (each of a different call, so per-call
        order holds) go out together in one request.
        """
        now = self._wall()
        group: list[tuple[_Call, _Item]] = []
        for call in list(self._calls.values()):
            if len(self._in_flight) >= self.config.concurrency:
                break
            if call.busy or not call.items or call.items[0].due > now:
                continue
            if not group and not self.breaker.allow(time.monotonic()):
                return  # open (or its one half-open probe is out): wait
            call.busy = True
            group.append((call, call.items[0]))
            if len(group) >= self.config.batch_size:
                self._start(group)
                group = []
        if group:
            self._start(group)

    def _start(self, group: list[tuple[_Call, _Item]]) -> None:
        task = asyncio.create_task(self._deliver(group))
        self._in_flight.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("sink_delivery_crashed", error=repr(task.exception()))

    async def _wait(self, news: Subscription) -> bool:
        """Until a delivery finishes, new events are committed, or a retry falls due.

        Returns whether new events were committed (only the wake-up is used: the events
        themselves are read from the outbox, in order, by ``_fill``).
        """
        if self.breaker.state != "closed":
            # Nothing can be sent or read: sleep until the probe (half-open: until its answer).
            probe = self.breaker.probe_at
            timeout = None if probe is None else max(0.0, probe - time.monotonic())
        else:
            timeout = self._next_due_in()
            if self._more and self._in_memory < self.config.max_in_memory:
                timeout = 0.0  # more to read and room for it: go round at once
        if self.cursor != self._saved_cursor:
            # A cursor-only write is held back a little (see _flush): come back to do it.
            wait = max(0.0, self._flushed_at + CURSOR_FLUSH_S - time.monotonic())
            timeout = wait if timeout is None else min(timeout, wait)
        self._wake.clear()
        woken = asyncio.ensure_future(self._wake.wait())
        committed = asyncio.ensure_future(news.get())
        try:
            await asyncio.wait((woken, committed), timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            woken.cancel()
            committed.cancel()
        return committed.done() and not committed.cancelled()

    def _next_due_in(self) -> float | None:
        """Seconds until a waiting head falls due; None if there is none to wait for."""
        if len(self._in_flight) >= self.config.concurrency:
            return None  # every slot busy: a finished delivery wakes the loop
        now = self._wall()
        dues = [call.items[0].due for call in self._calls.values() if call.items and not call.busy]
        return max(0.0, min(dues) - now) if dues else None

    # -- one delivery -------------------------------------------------------------------

    async def _deliver(self, group: list[tuple[_Call, _Item]]) -> None:
        try:
            now = self._wall()
            live = []
            for call, item in group:
                limit = _expiry(self.config.expire_s, item.type)
                if limit is not None and _age_s(item.time, now) > limit:
                    self.stats.expired += 1
                    self._done(call, item, state="expired", status=None, error="expired")
                else:
                    live.append((call, item))
            if not live:
                return
            if self.config.batch_size == 1:
                ((_, only),) = live
                body, msg_id = only.body, only.id
            else:
                body = b"[" + b",".join(item.body for _, item in live) + b"]"
                msg_id = _batch_id([item.id for _, item in live])
            headers = {
                **self.config.headers,
                "Content-Type": "application/json",
                **signing.headers(
                    secrets=self._secrets, msg_id=msg_id, timestamp=int(now), body=body
                ),
            }
            status: int | None = None
            retry_after: str | None = None
            error: BaseException | None = None
            try:
                response = await self._sender(self.config.url, body, headers, self.config.timeout_s)
                status, retry_after = response.status, response.retry_after
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                error = exc
            attempts = max(item.attempts for _, item in live) + 1
            decision = policy.classify(
                status=status,
                error=error,
                retry_after=retry_after,
                attempt=attempts,
                schedule=self.config.retry_schedule_s,
                rng=self._rng,
                now=datetime.fromtimestamp(now, UTC),
            )
            self.breaker.record(decision.action is not policy.Action.RETRY, time.monotonic())
            for call, item in live:
                item.attempts = attempts
                self._apply(call, item, decision, status)
        finally:
            for call, _ in group:
                call.busy = False

    def _apply(
        self,
        call: _Call,
        item: _Item,
        decision: policy.Decision,
        status: int | None,
    ) -> None:
        action = decision.action
        if action is policy.Action.DELIVERED:
            self.stats.delivered += 1
            self._done(call, item, state=None, status=status, error=None)
        elif action is policy.Action.RETRY:
            self.stats.retried += 1
            self.stats.last_error = decision.reason
            item.due = self._wall() + (decision.delay_s or 0.0)
            self._record(item, "waiting", status=status, error=decision.reason)
            for later in list(call.items)[1:]:
                if not later.recorded:
                    self._record(later, "held")
            log.info(
                "sink_retry_scheduled", seq=item.seq, attempt=item.attempts, reason=decision.reason
            )
        elif action is policy.Action.DEAD:
            self.stats.dead += 1
            self.stats.last_error = decision.reason
            self._done(call, item, state="dead", status=status, error=decision.reason)
            log.warning("sink_dead_lettered", seq=item.seq, reason=decision.reason)
        else:  # DISABLE: the receiver says this endpoint is gone (410)
            self.stats.disabled = decision.reason
            self._disable(decision.reason)
            log.error("sink_disabled", reason=decision.reason, status=status)
            self._wake.set()

    def _done(
        self, call: _Call, item: _Item, *, state: str | None, status: int | None, error: str | None
    ) -> None:
        """The event is finished with: delivered, dead or expired. Its call moves on."""
        call.items.popleft()
        self._in_memory -= 1
        if not call.items:
            self._calls.pop(item.subject, None)
        if state is None:
            if item.recorded:
                self._dirty.append(_delete(self.name, item.seq))
        else:
            self._dirty.append(_upsert(self.name, item, state, status, error, self._wall()))
        self._settle(item.seq)
        self._wake.set()

    def _record(
        self, item: _Item, state: str, status: int | None = None, error: str | None = None
    ) -> None:
        self._dirty.append(_upsert(self.name, item, state, status, error, self._wall()))
        if not item.recorded:
            item.recorded = True
            self._settle(item.seq)

    def _disable(self, reason: str) -> None:
        name, now = self.name, self._wall()

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO sink_cursors (sink, seq, disabled_at, disabled_reason)"
                " VALUES (?, ?, ?, ?)"
                " ON CONFLICT (sink) DO UPDATE SET disabled_at = excluded.disabled_at,"
                " disabled_reason = excluded.disabled_reason",
                (name, self.cursor, now, reason),
            )

        self._dirty.append(write)

    # -- the cursor -----------------------------------------------------------------------

    def _settle(self, seq: int) -> None:
        self._settled.add(seq)
        self._advance()

    def _advance(self) -> None:
        """The cursor: just below the oldest unsettled event, or the read position if none."""
        order, settled = self._order, self._settled
        while order and order[0] in settled:
            settled.discard(order.popleft())
        self.cursor = max(self.cursor, order[0] - 1 if order else self._read_pos)

    async def _flush(self, *, force: bool = False) -> None:
        """Write what changed (deliveries rows, then the cursor) in one transaction.

        Delivery rows go at once. A cursor that only moved waits up to ``CURSOR_FLUSH_S``, so a
        busy sink commits a few times a second rather than once per delivery; a crash in that
        window re-sends at most what was delivered in it.
        """
        if not self._dirty:
            if self.cursor == self._saved_cursor:
                return
            if not force and time.monotonic() - self._flushed_at < CURSOR_FLUSH_S:
                return
        writes, self._dirty = self._dirty, []
        name, cursor = self.name, self.cursor

        def write(conn: sqlite3.Connection) -> None:
            for change in writes:
                change(conn)
            conn.execute(
                "INSERT INTO sink_cursors (sink, seq) VALUES (?, ?)"
                " ON CONFLICT (sink) DO UPDATE SET seq = excluded.seq",
                (name, cursor),
            )

        await self._writer.transact(write)
        self._saved_cursor = cursor
        self._flushed_at = time.monotonic()

    # -- operations -----------------------------------------------------------------------

    async def dead_letters(self, *, limit: int = 1000) -> list[dict[str, Any]]:
        name = self.name

        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                "SELECT d.seq, d.subject, e.type, d.attempts, d.last_status, d.last_error,"
                " d.updated_at FROM deliveries d LEFT JOIN events e ON e.seq = d.seq"
                " WHERE d.sink = ? AND d.state = 'dead' ORDER BY d.seq LIMIT ?",
                (name, limit),
            ).fetchall()
            keys = ("seq", "subject", "type", "attempts", "last_status", "last_error", "at")
            return [dict(zip(keys, row, strict=True)) for row in rows]

        return await self._reader.run(read)

    async def retry_dead(self, seqs: list[int] | None) -> int:
        """Re-drive dead letters (all, or these seqs): they are delivered again from attempt 1."""
        name, now = self.name, self._wall()

        def write(conn: sqlite3.Connection) -> int:
            sql = (
                "UPDATE deliveries SET state = 'waiting', attempts = 0, next_attempt_at = ?,"
                " updated_at = ? WHERE sink = ? AND state = 'dead'"
            )
            args: list[Any] = [now, now, name]
            if seqs is not None:
                sql += f" AND seq IN ({','.join('?' * len(seqs))})"
                args += seqs
            return int(conn.execute(sql, args).rowcount)

        count = await self._writer.transact(write)
        if count:
            await self.restart()
        return count

    async def purge_dead(self, seqs: list[int] | None) -> int:
        """Forget dead letters (all, or these seqs)."""
        name = self.name

        def write(conn: sqlite3.Connection) -> int:
            sql = "DELETE FROM deliveries WHERE sink = ? AND state = 'dead'"
            args: list[Any] = [name]
            if seqs is not None:
                sql += f" AND seq IN ({','.join('?' * len(seqs))})"
                args += seqs
            return int(conn.execute(sql, args).rowcount)

        return await self._writer.transact(write)

    async def replay(self, from_seq: int) -> None:
        """Send history again from ``from_seq`` (and re-enable a disabled sink)."""
        await self._stop()
        name = self.name

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "DELETE FROM deliveries WHERE sink = ? AND state IN ('waiting', 'held')"
                " AND seq >= ?",
                (name, from_seq),
            )
            conn.execute(
                "INSERT INTO sink_cursors (sink, seq) VALUES (?, ?) ON CONFLICT (sink) DO UPDATE"
                " SET seq = excluded.seq, disabled_at = NULL, disabled_reason = NULL",
                (name, max(0, from_seq - 1)),
            )

        await self._writer.transact(write)
        self.stats.disabled = None
        self.breaker = self._breaker()
        self._reset_state()
        self._task = asyncio.create_task(self._run(), name=f"sink-{self.name}")

    def snapshot(self, head: int) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": "webhook",
            "url": self.config.url,
            "cursor": self.cursor,
            "lag": max(0, head - self.cursor),
            "in_flight": len(self._in_flight),
            "in_memory": self._in_memory,
            "breaker": self.breaker.state,
            "failing_for_s": (
                None
                if self.breaker.failing_since is None
                else round(time.monotonic() - self.breaker.failing_since, 3)
            ),
            "delivered": self.stats.delivered,
            "retried": self.stats.retried,
            "dead_lettered": self.stats.dead,  # since start; "dead" (stored) is added by the API
            "expired": self.stats.expired,
            "last_error": self.stats.last_error,
            "disabled": self.stats.disabled,
        }


def _batch_id(ids: list[str]) -> str:
    """A webhook-id for a batch: the same events, the same id (receivers may dedup on it)."""
    return "batch_" + hashlib.sha256("\n".join(ids).encode()).hexdigest()[:32]


def _expiry(limits: Mapping[str, float], kind: str) -> float | None:
    for pattern, limit in limits.items():
        if type_matches(kind, (pattern,)):
            return limit
    return None


def _age_s(event_time: str, now: float) -> float:
    return now - datetime.fromisoformat(event_time).timestamp()


def _upsert(
    sink: str, item: _Item, state: str, status: int | None, error: str | None, now: float
) -> Callable[[sqlite3.Connection], None]:
    row = (sink, item.seq, item.subject, state, item.attempts, item.due, status, error, now)

    def write(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO deliveries (sink, seq, subject, state, attempts, next_attempt_at,"
            " last_status, last_error, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (sink, seq) DO UPDATE SET state = excluded.state,"
            " attempts = excluded.attempts, next_attempt_at = excluded.next_attempt_at,"
            " last_status = coalesce(excluded.last_status, last_status),"
            " last_error = coalesce(excluded.last_error, last_error),"
            " updated_at = excluded.updated_at",
            row,
        )

    return write


def _delete(sink: str, seq: int) -> Callable[[sqlite3.Connection], None]:
    def write(conn: sqlite3.Connection) -> None:
        conn.execute("DELETE FROM deliveries WHERE sink = ? AND seq = ?", (sink, seq))

    return write
