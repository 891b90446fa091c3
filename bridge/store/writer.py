"""The one writer: group commit of events from every source into the outbox.

Ingest handlers ``await writer.submit(events)``. One task gathers what is waiting (up to
``max_batch`` events, lingering ``linger_ms`` for more), then a single transaction on the
writer's own thread inserts the events (dedup on ``id``), advances the per-call state, inserts
derived events and commits. Only then are the waiting handlers released, so a vendor is answered
2xx only for what is on disk, and the committed events are handed to the hub in ``seq`` order.
If the commit fails the transaction is rolled back whole and every waiter gets an OutboxError.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final, TypeVar

import structlog

from bridge.config import StorageConfig
from bridge.errors import OutboxError, OverloadedError
from bridge.events import Event
from bridge.histogram import BATCH_EVENTS, LATENCY_S, Histogram
from bridge.lifecycle import Service
from bridge.store import schema
from bridge.store.commit import Committed, Tally, commit, next_due, settle_due

log = structlog.get_logger("bridge.writer")

_T = TypeVar("_T")

PRUNE_BATCH: Final = 1000
PRUNE_INTERVAL_S: Final = 60.0


Publish = Callable[[Sequence[Committed]], None]


@dataclass(slots=True)
class _Request:
    events: Sequence[Event]
    done: asyncio.Future[list[Committed]]
    committed: list[Committed] = field(default_factory=list)


class Writer:
    """Owns the outbox's write connection, its thread and the group-commit task."""

    def __init__(
        self,
        config: StorageConfig,
        publish: Publish,
        *,
        sinks: tuple[str, ...] = (),
        settle_s: Mapping[str, float] | None = None,
    ) -> None:
        self._config = config
        # Event source ("/vendor/name") -> its missed-call settle window; others get the default.
        self._settle_s = dict(settle_s or {})
        self._next_due: float | None = None  # the earliest pending miss decision (epoch s)
        self._sinks = sinks  # retention waits for every configured sink's cursor
        self._publish = publish
        self._path = str(config.path)
        self._pending: deque[_Request] = deque()
        self._pending_events = 0
        self._wake = asyncio.Event()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox-writer")
        self._conn: sqlite3.Connection | None = None
        self._next_seq = 1
        self._closing = False
        self.commit_service = Service("writer", self._commit_loop, health=self._health, vital=True)
        self.prune_service = Service("writer-prune", self._prune_loop)
        self.failing: str | None = None  # the last write failed, with this error
        self.commits = 0
        self.commit_failures = 0
        self.commit_seconds = 0.0
        self.committed_events = 0
        # For /metrics: new events by (event source "/vendor/name", type); per transaction
        # its seconds and the events submitted to it.
        self.committed_by: Counter[tuple[str, str]] = Counter()
        self.commit_latency = Histogram(LATENCY_S)
        self.commit_events = Histogram(BATCH_EVENTS)
        self.tally = Tally()  # duplicates, late, folded, missed, revoked: for /metrics
        self.settle_failures = 0

    def reconfigure(self, *, sinks: tuple[str, ...], settle_s: Mapping[str, float]) -> None:
        """A reload's new sinks (for retention) and settle windows; each swapped whole."""
        self._sinks = sinks
        self._settle_s = dict(settle_s)

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Writer:
        await self._run(self._open)
        self.commit_service.start()
        self.prune_service.start()
        log.info("outbox_opened", path=self._path, last_seq=self._next_seq - 1)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Drain: everything already submitted is committed (or failed) before we close.
        self._closing = True
        self.commit_service.ending()
        self._wake.set()
        await self.prune_service.stop()
        await self.commit_service.finish()
        await self._run(self._close)
        self._thread.shutdown(wait=True)
        log.info("outbox_closed", last_seq=self._next_seq - 1)

    @property
    def last_seq(self) -> int:
        return self._next_seq - 1

    @property
    def alive(self) -> bool:
        """The commit loop runs (one that died is being restarted: not alive meanwhile)."""
        return self.commit_service.alive

    def _health(self) -> str | None:
        if self.failing is not None:
            return f"outbox writes failing: {self.failing}"
        return None

    async def _run(self, fn: Callable[..., _T], *args: object) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def _open(self) -> None:
        Path(self._config.data_dir).mkdir(parents=True, exist_ok=True)
        self._conn = schema.connect(self._path, synchronous=self._config.synchronous)
        schema.migrate(self._conn)
        (last,) = self._conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
        self._next_seq = last + 1
        self._next_due = next_due(self._conn)  # decisions a previous run left pending

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- submit ----------------------------------------------------------------------------

    async def submit(self, events: Sequence[Event]) -> list[Committed]:
        """Commit ``events``; returns those that were new (duplicates are already stored)."""
        return await self.enqueue(events)

    def enqueue(self, events: Sequence[Event]) -> asyncio.Future[list[Committed]]:
        """Queue ``events`` now (keeping the caller's order) and return the commit's future.

        For streams that must not wait for each commit before reading on (realtime sources);
        raises at once when the writer is down or too far behind.
        """
        if self._closing or not self.alive:
            raise OutboxError("the outbox writer is not running")
        if self._pending_events + len(events) > self._config.max_pending:
            raise OverloadedError(f"{self._pending_events} events already waiting for the outbox")
        request = _Request(events, asyncio.get_running_loop().create_future())
        self._pending.append(request)
        self._pending_events += len(events)
        self._wake.set()
        return request.done

    # -- the commit loop -------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        linger_s = self._config.linger_ms / 1000
        while True:
            due = self._next_due
            if due is not None and due <= time.time() and not self._closing:
                await self._settle()
                continue
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                wait_s = None if due is None else max(0.0, due - time.time())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait_s):
                        await self._wake.wait()
                continue
            if linger_s and self._pending_events < self._config.max_batch and not self._closing:
                # Group commit: give concurrent senders a moment to join this transaction.
                await asyncio.sleep(linger_s)
            batch = self._take_batch()
            await self._commit_batch(batch)

    def _take_batch(self) -> list[_Request]:
        batch: list[_Request] = []
        size = 0
        while self._pending and (
            not batch or size + len(self._pending[0].events) <= self._config.max_batch
        ):
            request = self._pending.popleft()
            batch.append(request)
            size += len(request.events)
        self._pending_events -= size
        return batch

    @property
    def pending_events(self) -> int:
        return self._pending_events

    async def _commit_batch(self, batch: list[_Request]) -> None:
        started = time.perf_counter()
        try:
            await self._run(self._commit, batch)
        except Exception as exc:  # every failure means: not committed
            self.commit_failures += 1
            self.failing = str(exc)
            log.error(
                "outbox_commit_failed", error=str(exc), events=sum(len(r.events) for r in batch)
            )
            error = OutboxError(f"outbox commit failed: {exc}")
            for request in batch:
                if not request.done.done():
                    request.done.set_exception(error)
            return
        self.commits += 1
        self.failing = None
        elapsed = time.perf_counter() - started
        self.commit_seconds += elapsed
        self.commit_latency.observe(elapsed)
        self.commit_events.observe(sum(len(request.events) for request in batch))
        new: list[Committed] = []
        for request in batch:
            new.extend(request.committed)
            if not request.done.done():  # the handler may have been cancelled (client gone)
                request.done.set_result(request.committed)
        self._published(new)

    def _published(self, new: list[Committed]) -> None:
        self.committed_events += len(new)
        if new:
            self.committed_by.update([(event.source, event.type) for event in new])
            try:
                self._publish(new)
            except Exception:  # a consumer bug must not stop commits; consumers catch up
                log.exception("publish_failed", first_seq=new[0].seq)

    def _commit(self, batch: list[_Request]) -> None:
        """One transaction for the whole batch (runs on the writer thread)."""
        assert self._conn is not None
        added, tally = commit(
            self._conn,
            [r.events for r in batch],
            next_seq=self._next_seq,
            now=time.time(),
            settle_s=self._settle_s,
        )
        for request, committed in zip(batch, added, strict=True):
            request.committed = committed
            if committed:
                self._next_seq = committed[-1].seq + 1
        self.tally.add(tally)
        due = tally.next_due
        if due is not None and (self._next_due is None or due < self._next_due):
            self._next_due = due

    async def _settle(self) -> None:
        """Decide the misses whose settle window has passed (a transaction of their own)."""
        try:
            new = await self._run(self._settle_due)
        except Exception as exc:  # not decided yet: the rows still say so; try again soon
            self.settle_failures += 1
            self._next_due = time.time() + 1.0
            log.error("missed_settle_failed", error=str(exc))
            return
        self._published(new)

    def _settle_due(self) -> list[Committed]:
        assert self._conn is not None
        added, tally = settle_due(self._conn, next_seq=self._next_seq, now=time.time())
        if added:
            self._next_seq = added[-1].seq + 1
        self.tally.add(tally)
        self._next_due = tally.next_due
        return added

    async def transact(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn`` in its own transaction on the writer's connection and thread.

        For writes beside the event stream (quarantine entries, sink cursors and delivery
        rows); serialised with the group commits, one transaction per call.
        """
        if not self.alive:
            raise OutboxError("the outbox writer is not running")

        def run() -> _T:
            assert self._conn is not None
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            return result

        try:
            result = await self._run(run)
        except sqlite3.Error as exc:
            self.failing = str(exc)
            raise OutboxError(f"outbox write failed: {exc}") from exc
        self.failing = None
        return result

    # -- retention -------------------------------------------------------------------------

    async def _prune_loop(self) -> None:
        while True:
            await asyncio.sleep(PRUNE_INTERVAL_S)
            try:
                await self.prune()
            except sqlite3.Error as exc:
                log.warning("outbox_prune_failed", error=str(exc))

    async def prune(self, *, now: float | None = None) -> int:
        """Delete expired events and call rows in small transactions; returns events deleted."""
        moment = time.time() if now is None else now
        total = 0
        if self._config.retention_days is not None:
            cutoff = moment - self._config.retention_days * 86400
            while True:
                deleted = await self._run(self._prune_events, cutoff)
                total += deleted
                if deleted < PRUNE_BATCH:
                    break
        await self._run(self._prune_calls, moment - self._config.calls_ttl_hours * 3600)
        if total:
            log.info("outbox_pruned", events=total)
        return total

    def _prune_events(self, cutoff: float) -> int:
        assert self._conn is not None
        conn = self._conn
        # Never past a sink's cursor (it has not delivered them yet), never an event a delivery
        # row still refers to (waiting, held, dead-lettered), never the newest row (it holds
        # max(seq), which the next start continues from). Oldest first: the rows to delete are
        # at the start, so this never scans far.
        floor = conn.execute("SELECT max(seq) FROM events").fetchone()[0] or 0
        if self._sinks:
            marks = ",".join("?" * len(self._sinks))
            rows = dict(
                conn.execute(
                    f"SELECT sink, seq FROM sink_cursors WHERE sink IN ({marks})", self._sinks
                ).fetchall()
            )
            floor = min([floor, *(rows.get(sink, 0) + 1 for sink in self._sinks)])
        cursor = conn.execute(
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE received_at < ?"
            " AND seq < ? AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.seq = events.seq)"
            " ORDER BY seq LIMIT ?)",
            (cutoff, floor, PRUNE_BATCH),
        )
        return cursor.rowcount

    def _prune_calls(self, cutoff: float) -> None:
        assert self._conn is not None
        self._conn.execute("DELETE FROM calls WHERE updated_at < ?", (cutoff,))
