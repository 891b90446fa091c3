"""Reads from the outbox on a small pool of threads, one read-only connection per thread.

Each read is one function on one thread (a whole read transaction per hop), so a page and the
head it was read against are consistent.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from bridge import calls
from bridge.store import schema
from bridge.store.commit import Committed

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Page:
    events: list[Committed]
    next_after: int


def type_filter(patterns: tuple[str, ...]) -> tuple[str, list[object]]:
    """SQL for ``call.*`` style patterns (exact names or ``prefix.*``); empty means all."""
    if not patterns or "*" in patterns:
        return "1", []
    clauses: list[str] = []
    args: list[object] = []
    for pattern in patterns:
        if pattern.endswith(".*"):
            prefix = pattern[:-1]
            clauses.append("substr(type, 1, ?) = ?")
            args.extend([len(prefix), prefix])
        else:
            clauses.append("type = ?")
            args.append(pattern)
    return "(" + " OR ".join(clauses) + ")", args


class Reader:
    """Pages of committed events by ``seq``."""

    def __init__(self, path: str, *, threads: int = 2) -> None:
        self._path = path
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="outbox-reader")
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for conn in self._conns:
            conn.close()

    async def _run(self, fn: Callable[..., _T], *args: object) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run a read-only ``fn`` on one of the reader connections (its own thread)."""
        return await self._run(lambda: fn(self._conn()))

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = schema.connect(self._path, readonly=True)
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    async def page(self, *, after: int, limit: int, types: tuple[str, ...] = ()) -> Page:
        """Events with ``seq > after`` matching ``types``, oldest first.

        ``next_after`` is where the next page starts: past the last event returned, or, when
        the page is not full, past every event that existed when it was read (so a filtered
        poll does not rescan rows it already skipped).
        """
        return await self._run(self._page, after, limit, types)

    def _page(self, after: int, limit: int, types: tuple[str, ...]) -> Page:
        conn = self._conn()
        where, args = type_filter(types)
        conn.execute("BEGIN")
        try:
            (head,) = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
            rows = conn.execute(
                f"SELECT seq, type, source, subject, body, id, time, received_at FROM events"
                f" WHERE seq > ? AND seq <= ? AND {where} ORDER BY seq LIMIT ?",
                [after, head, *args, limit],
            ).fetchall()
        finally:
            conn.execute("COMMIT")
        events = [Committed(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]) for r in rows]
        if len(events) == limit:
            return Page(events, events[-1].seq)
        return Page(events, max(after, head))

    async def calls(self, query: CallQuery) -> list[tuple[object, ...]]:
        """Rows ``(source, subject, record, first_seq, last_seq, updated_at)`` of a call page."""
        return await self.run(lambda conn: _call_page(conn, query))

    async def call(self, source: str, subject: str) -> tuple[object, ...] | None:
        """One call's row (as :meth:`calls`), or None when the outbox does not know it."""
        return await self.run(lambda conn: _one_call(conn, source, subject))

    async def count(self, *, after: int, types: tuple[str, ...] = ()) -> int:
        """How many committed events with ``seq > after`` match ``types``."""
        return await self._run(self._count, after, types)

    def _count(self, after: int, types: tuple[str, ...]) -> int:
        where, args = type_filter(types)
        (count,) = (
            self._conn()
            .execute(f"SELECT count(*) FROM events WHERE seq > ? AND {where}", [after, *args])
            .fetchone()
        )
        return int(count)

    async def head(self) -> int:
        """The newest committed ``seq`` (0 for an empty outbox)."""
        return await self._run(self._head)

    def _head(self) -> int:
        (head,) = self._conn().execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
        return int(head)


@dataclass(frozen=True, slots=True)
class CallQuery:
    """A page of call records: newest activity first, or after a cursor (``last_seq``)."""

    limit: int
    after: int | None = None  # oldest first, calls whose last event is past this seq
    before: int | None = None  # newest first, from this seq down
    since: float | None = None  # updated at or after this epoch time
    missed: bool | None = None
    ended: bool | None = None
    state: str | None = None
    source: str | None = None  # the event source, "/vendor/name"


_CALL_COLUMNS = "source, subject, record, first_seq, last_seq, updated_at"


def _call_page(conn: sqlite3.Connection, query: CallQuery) -> list[tuple[object, ...]]:
    where = ["record IS NOT NULL", "last_seq IS NOT NULL"]
    args: list[object] = []
    if query.after is not None:
        where.append("last_seq > ?")
        args.append(query.after)
    if query.before is not None:
        where.append("last_seq < ?")
        args.append(query.before)
    if query.since is not None:
        where.append("updated_at >= ?")
        args.append(query.since)
    if query.missed is not None:
        # A literal, not a parameter: the planner can use the partial index of missed calls
        # (calls_missed_last_seq) only when it sees "missed = 1".
        where.append("missed = 1" if query.missed else "missed = 0")
    if query.ended is not None:
        where.append("state = 3" if query.ended else "state < 3")
    if query.state is not None:
        where.append("state = ?")
        args.append(calls.STATES.index(query.state))
    if query.source is not None:
        where.append("source = ?")
        args.append(query.source)
    order = "ASC" if query.after is not None else "DESC"
    sql = (
        f"SELECT {_CALL_COLUMNS} FROM calls WHERE {' AND '.join(where)}"
        f" ORDER BY last_seq {order} LIMIT ?"
    )
    return conn.execute(sql, [*args, query.limit]).fetchall()


def _one_call(conn: sqlite3.Connection, source: str, subject: str) -> tuple[object, ...] | None:
    row: tuple[object, ...] | None = conn.execute(
        f"SELECT {_CALL_COLUMNS} FROM calls WHERE source = ? AND subject = ?", (source, subject)
    ).fetchone()
    return row
