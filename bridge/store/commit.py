"""One group-commit transaction, as a plain function on the writer's connection (its thread).

The statement count per batch is constant, not per event: the sqlite3 module releases and
retakes the GIL around every statement step, and each retake can wait for the event loop
thread, so a statement per event would make the writer crawl under load. A batch is:
one SELECT for ids already stored, one for the state of the calls it touches, multi-row
INSERTs for the new events, one multi-row upsert of the calls, COMMIT.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from bridge import calls
from bridge.events import Event, encode

# Rows per multi-row statement: well under SQLite's 32766 bound variables, and a fixed size so
# full chunks reuse one prepared statement.
CHUNK: Final = 64

# Source first: the primary key (source, subject) serves this; by subject alone it is a scan of
# every call kept, on every commit.
LOAD_CALLS_SQL: Final = (
    "SELECT source, subject, state, answered, direction, missed, answered_at, first_seq, last_seq"
    " FROM calls WHERE source = ? AND subject IN ({marks})"
)


@dataclass(frozen=True, slots=True)
class Committed:
    """An event as it stands in the outbox: its ``seq`` and its encoded CloudEvent."""

    seq: int
    type: str
    source: str
    subject: str
    body: bytes


@dataclass(slots=True)
class _Call:
    state: calls.CallState
    first_seq: int | None
    last_seq: int | None
    changed: bool = False


def commit(
    conn: sqlite3.Connection, requests: Sequence[Sequence[Event]], *, next_seq: int, now: float
) -> list[list[Committed]]:
    """Commit every request's events in one transaction; returns what each one added.

    Duplicates (by ``id``, against the outbox and within the batch) add nothing. Call events
    go through the call state machine, which may drop them or add derived events. On any
    error the transaction is rolled back and the error propagates: nothing is half-written.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        flat = [event for events in requests for event in events]
        known = _stored_ids(conn, {event.id for event in flat})
        call_rows = _load_calls(
            conn, {(e.source, e.subject) for e in flat if calls.is_call_event(e)}
        )
        rows: list[tuple[object, ...]] = []
        added: list[list[Committed]] = []
        seq = next_seq
        for events in requests:
            mine: list[Committed] = []
            for event in events:
                if event.id in known:
                    continue  # a retransmission: no new event, no change to the call
                call = call_rows.get((event.source, event.subject))
                if calls.is_call_event(event):
                    step = calls.advance(call.state if call else None, event)
                    if call is None:
                        call = call_rows[(event.source, event.subject)] = _Call(
                            step.state, None, None
                        )
                    call.state, call.changed = step.state, True
                    emit = step.emit
                else:
                    emit = [event]
                for out in emit:
                    if out.id in known:
                        continue  # a derived event an earlier batch already produced
                    known.add(out.id)
                    body = encode(msgspec.structs.replace(out, seq=seq))
                    rows.append(
                        (seq, out.id, out.type, out.source, out.subject, out.time, now, body)
                    )
                    mine.append(Committed(seq, out.type, out.source, out.subject, body))
                    if call is not None and calls.is_call_event(out):
                        call.first_seq = call.first_seq or seq
                        call.last_seq = seq
                    seq += 1
            added.append(mine)
        _insert_events(conn, rows)
        _upsert_calls(conn, call_rows.items(), now)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return added


def _chunks(items: Sequence[tuple[object, ...]]) -> Iterable[Sequence[tuple[object, ...]]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def _placeholders(rows: int, columns: int) -> str:
    row = "(" + ",".join("?" * columns) + ")"
    return ",".join([row] * rows)


def _stored_ids(conn: sqlite3.Connection, ids: set[str]) -> set[str]:
    found: set[str] = set()
    ordered = sorted(ids)
    for start in range(0, len(ordered), CHUNK * 8):
        part = ordered[start : start + CHUNK * 8]
        sql = f"SELECT id FROM events WHERE id IN ({','.join('?' * len(part))})"
        found.update(row[0] for row in conn.execute(sql, part))
    return found


def _load_calls(
    conn: sqlite3.Connection, keys: set[tuple[str, str]]
) -> dict[tuple[str, str], _Call]:
    if not keys:
        return {}
    by_source: dict[str, list[str]] = {}
    for source, subject in sorted(keys):
        by_source.setdefault(source, []).append(subject)
    loaded: dict[tuple[str, str], _Call] = {}
    rows: list[tuple[Any, ...]] = []
    for source, subjects in by_source.items():
        sql = LOAD_CALLS_SQL.format(marks=",".join("?" * len(subjects)))
        rows.extend(conn.execute(sql, [source, *subjects]).fetchall())
    for source, subject, state, answered, direction, missed, answered_at, first, last in rows:
        if (source, subject) in keys:
            loaded[(source, subject)] = _Call(
                calls.CallState(
                    state=state,
                    answered=bool(answered),
                    direction=direction,
                    missed=bool(missed),
                    answered_at=answered_at,
                ),
                first,
                last,
            )
    return loaded


def _insert_events(conn: sqlite3.Connection, rows: list[tuple[object, ...]]) -> None:
    # Plain INSERT, not OR IGNORE: dedup happened above, so a conflict here is a bug and must
    # fail the batch rather than silently skip an event that was meant to be committed.
    for chunk in _chunks(rows):
        sql = (
            "INSERT INTO events (seq, id, type, source, subject, time, received_at, body) VALUES "
            + _placeholders(len(chunk), 8)
        )
        conn.execute(sql, [value for row in chunk for value in row])


def _upsert_calls(
    conn: sqlite3.Connection, items: Iterable[tuple[tuple[str, str], _Call]], now: float
) -> None:
    rows = [
        (
            source,
            subject,
            call.state.state,
            int(call.state.answered),
            call.state.direction,
            int(call.state.missed),
            call.state.answered_at,
            call.first_seq,
            call.last_seq,
            now,
        )
        for (source, subject), call in items
        if call.changed
    ]
    for chunk in _chunks(rows):
        conn.execute(
            "INSERT INTO calls (source, subject, state, answered, direction, missed,"
            " answered_at, first_seq, last_seq, updated_at) VALUES "
            + _placeholders(len(chunk), 10)
            + " ON CONFLICT (source, subject) DO UPDATE SET state = excluded.state,"
            " answered = excluded.answered, direction = excluded.direction,"
            " missed = excluded.missed, answered_at = excluded.answered_at,"
            " first_seq = coalesce(first_seq, excluded.first_seq),"
            " last_seq = coalesce(excluded.last_seq, last_seq), updated_at = excluded.updated_at",
            [value for row in chunk for value in row],
        )
