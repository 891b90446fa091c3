"""Every sink's SQL: cursors, delivery rows, the disabled state, dead letters.

Writes run through :meth:`Writer.transact` (one transaction each, serialised with the group
commits) and reads through the :class:`Reader`; an SQLite failure on either comes out as
:class:`OutboxError`, which a sink treats as "start again from what is stored".
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from bridge.errors import OutboxError
from bridge.sinks.items import Disable, Flush, Forget, Item, Row
from bridge.store.reader import Reader
from bridge.store.writer import Writer

_T = TypeVar("_T")

_UPSERT = (
    "INSERT INTO deliveries (sink, seq, subject, state, attempts, next_attempt_at,"
    " last_status, last_error, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (sink, seq) DO UPDATE SET state = excluded.state,"
    " attempts = excluded.attempts, next_attempt_at = excluded.next_attempt_at,"
    " last_status = coalesce(excluded.last_status, last_status),"
    " last_error = coalesce(excluded.last_error, last_error),"
    " updated_at = excluded.updated_at"
)
_CURSOR = (
    "INSERT INTO sink_cursors (sink, seq) VALUES (?, ?)"
    " ON CONFLICT (sink) DO UPDATE SET seq = excluded.seq"
)


@dataclass(frozen=True, slots=True)
class Stored:
    """What a sink resumes from."""

    cursor: int
    disabled: str | None
    items: list[Item]  # waiting and held, in seq order
    finished: list[int]  # dead or expired past the cursor: not to be sent again


async def _read(reader: Reader, fn: Callable[[sqlite3.Connection], _T]) -> _T:
    try:
        return await reader.run(fn)
    except sqlite3.Error as exc:
        raise OutboxError(f"outbox read failed: {exc}") from exc


async def load(reader: Reader, sink: str) -> Stored:
    def read(conn: sqlite3.Connection) -> Stored:
        cursor = conn.execute(
            "SELECT seq, disabled_reason FROM sink_cursors WHERE sink = ?", (sink,)
        ).fetchone()
        rows = conn.execute(
            "SELECT d.seq, d.subject, d.attempts, d.next_attempt_at, d.state, e.type, e.id,"
            " e.time, e.body, e.received_at FROM deliveries d JOIN events e ON e.seq = d.seq"
            " WHERE d.sink = ? AND d.state IN ('waiting', 'held') ORDER BY d.seq",
            (sink,),
        ).fetchall()
        items = []
        for seq, subject, attempts, due, state, kind, event_id, time, body, received in rows:
            item = Item(seq, subject, kind, event_id, time, bytes(body), attempts, received)
            item.due = (due or 0.0) if state == "waiting" else 0.0
            item.recorded = True
            items.append(item)
        seq, disabled = (0, None) if cursor is None else (int(cursor[0]), cursor[1])
        finished = [
            row[0]
            for row in conn.execute(
                "SELECT seq FROM deliveries WHERE sink = ? AND state IN ('dead', 'expired')"
                " AND seq > ?",
                (sink, seq),
            )
        ]
        return Stored(seq, disabled, items, finished)

    return await _read(reader, read)


async def save(writer: Writer, sink: str, flush: Flush, now: float) -> None:
    """The dispatcher's rows, then its cursor, in one transaction."""
    rows: list[tuple[Any, ...]] = []
    forget: list[tuple[str, int]] = []
    disabled: str | None = None
    for write in flush.writes:
        if isinstance(write, Row):
            row = (sink, write.seq, write.subject, write.state, write.attempts, write.due)
            rows.append((*row, write.status, write.error, now))
        elif isinstance(write, Forget):
            forget.append((sink, write.seq))
        elif isinstance(write, Disable):
            disabled = write.reason

    def run(conn: sqlite3.Connection) -> None:
        if rows:
            conn.executemany(_UPSERT, rows)
        if forget:
            conn.executemany("DELETE FROM deliveries WHERE sink = ? AND seq = ?", forget)
        conn.execute(_CURSOR, (sink, flush.cursor))
        if disabled is not None:
            conn.execute(
                "UPDATE sink_cursors SET disabled_at = ?, disabled_reason = ? WHERE sink = ?",
                (now, disabled, sink),
            )

    await writer.transact(run)


async def cursor(reader: Reader, sink: str) -> int:
    def read(conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT seq FROM sink_cursors WHERE sink = ?", (sink,)).fetchone()
        return int(row[0]) if row is not None else 0

    return await _read(reader, read)


async def begin_at_head(writer: Writer, sink: str) -> int | None:
    """A sink never seen before starts after the newest event (``start = "now"``); one that
    has a cursor keeps it. The seq it starts after, when its cursor was created here."""

    def run(conn: sqlite3.Connection) -> int | None:
        row = conn.execute(
            "INSERT INTO sink_cursors (sink, seq) SELECT ?, coalesce(max(seq), 0) FROM events"
            " WHERE true ON CONFLICT (sink) DO NOTHING RETURNING seq",
            (sink,),
        ).fetchone()
        return None if row is None else int(row[0])

    return await writer.transact(run)


async def save_cursor(writer: Writer, sink: str, seq: int) -> None:
    await writer.transact(lambda conn: conn.execute(_CURSOR, (sink, seq)))


async def replay(writer: Writer, sink: str, from_seq: int) -> None:
    """Send history again from ``from_seq``: forget pending rows there, re-enable the sink."""

    def run(conn: sqlite3.Connection) -> None:
        conn.execute(
            "DELETE FROM deliveries WHERE sink = ? AND state IN ('waiting', 'held') AND seq >= ?",
            (sink, from_seq),
        )
        conn.execute(
            "INSERT INTO sink_cursors (sink, seq) VALUES (?, ?) ON CONFLICT (sink) DO UPDATE"
            " SET seq = excluded.seq, disabled_at = NULL, disabled_reason = NULL",
            (sink, max(0, from_seq - 1)),
        )

    await writer.transact(run)


async def dead_letters(reader: Reader, sink: str, *, limit: int = 1000) -> list[dict[str, Any]]:
    def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
        rows = conn.execute(
            "SELECT d.seq, d.subject, e.type, d.attempts, d.last_status, d.last_error,"
            " d.updated_at FROM deliveries d LEFT JOIN events e ON e.seq = d.seq"
            " WHERE d.sink = ? AND d.state = 'dead' ORDER BY d.seq LIMIT ?",
            (sink, limit),
        ).fetchall()
        keys = ("seq", "subject", "type", "attempts", "last_status", "last_error", "at")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    return await _read(reader, read)


async def dead_counts(reader: Reader) -> dict[str, int]:
    """Dead letters stored per sink, all time."""

    def read(conn: sqlite3.Connection) -> dict[str, int]:
        rows = conn.execute(
            "SELECT sink, count(*) FROM deliveries WHERE state = 'dead' GROUP BY sink"
        )
        return {name: int(count) for name, count in rows}

    return await _read(reader, read)


def _selected(sql: str, args: list[Any], seqs: list[int] | None) -> tuple[str, list[Any]]:
    if seqs is None:
        return sql, args
    return sql + f" AND seq IN ({','.join('?' * len(seqs))})", [*args, *seqs]


async def retry_dead(
    writer: Writer, sink: str, seqs: list[int] | None, now: float, *, limit: int
) -> int:
    """The oldest ``limit`` dead letters (of all, or of these seqs) wait again, from attempt 1;
    returns how many. A restart loads every waiting row: ``limit`` keeps that in bounds."""
    chosen, args = _selected(
        "SELECT seq FROM deliveries WHERE sink = ? AND state = 'dead'", [sink], seqs
    )
    sql = (
        "UPDATE deliveries SET state = 'waiting', attempts = 0, next_attempt_at = ?,"
        f" updated_at = ? WHERE sink = ? AND seq IN ({chosen} ORDER BY seq LIMIT ?)"
    )
    values = [now, now, sink, *args, limit]
    return await writer.transact(lambda conn: int(conn.execute(sql, values).rowcount))


async def purge_dead(writer: Writer, sink: str, seqs: list[int] | None) -> int:
    """Forget dead letters (all, or these seqs); returns how many."""
    sql, args = _selected("DELETE FROM deliveries WHERE sink = ? AND state = 'dead'", [sink], seqs)
    return await writer.transact(lambda conn: int(conn.execute(sql, args).rowcount))
