"""Group-commit transactions, as plain functions on the writer's connection (its thread).

The statement count per batch is constant, not per event: the sqlite3 module releases and
retakes the GIL around every statement step, and each retake can wait for the event loop
thread, so a statement per event would make the writer crawl under load. A batch is:
one SELECT for ids already stored, one for the state of the calls it touches, multi-row
INSERTs for the new events, one multi-row upsert of the calls, COMMIT. A settle transaction
(misses whose window has passed) is one SELECT of the due calls, the same INSERTs and upsert,
and one SELECT of the next due time.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
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
    "SELECT source, subject, record, state, answered, direction, missed, answered_at,"
    " first_seq, last_seq FROM calls WHERE source = ? AND subject IN ({marks})"
)
DUE_CALLS_SQL: Final = (
    "SELECT source, subject, record, state, answered, direction, missed, answered_at,"
    " first_seq, last_seq FROM calls WHERE missed_due_at <= ? ORDER BY missed_due_at LIMIT ?"
)

DEFAULT_SETTLE_S: Final = 10.0

_STATES: Final = {"initiated": 0, "ringing": 1, "answered": 2, "ended": 3}


@dataclass(frozen=True, slots=True)
class Committed:
    """An event as it stands in the outbox: its ``seq`` and its encoded CloudEvent."""

    seq: int
    type: str
    source: str
    subject: str
    body: bytes


@dataclass(slots=True)
class Tally:
    """What a transaction did besides adding events: read by ``/metrics`` and the writer."""

    duplicates: int = 0  # vendor retransmissions absorbed
    late: int = 0  # committed with data.late
    folded: int = 0  # folded into their call's record, no event of their own
    missed: int = 0
    revoked: int = 0
    next_due: float | None = None  # the earliest miss decision this transaction scheduled

    def add(self, other: Tally) -> None:
        self.duplicates += other.duplicates
        self.late += other.late
        self.folded += other.folded
        self.missed += other.missed
        self.revoked += other.revoked


@dataclass(slots=True)
class _Call:
    record: calls.Record
    first_seq: int | None
    last_seq: int | None
    changed: bool = False


class _Batch:
    """The events one transaction commits: gathered first, then numbered and written."""

    def __init__(self, next_seq: int, now: float, incoming: set[str], stored: set[str]) -> None:
        self.seq = next_seq
        self.now = now
        self.incoming = incoming  # the ids of the events submitted
        self.known = stored  # ids the outbox has, then also those this batch commits
        self.requests: list[list[tuple[Event, _Call | None]]] = []
        self.tally = Tally()

    def request(self) -> list[tuple[Event, _Call | None]]:
        out: list[tuple[Event, _Call | None]] = []
        self.requests.append(out)
        return out

    def emit(
        self, event: Event, call: _Call | None, into: list[tuple[Event, _Call | None]]
    ) -> None:
        if event.id not in self.known:
            self.known.add(event.id)
            into.append((event, call))

    def write(self, conn: sqlite3.Connection) -> list[list[Committed]]:
        """Number and insert what was gathered; returns each request's committed events.

        A derived event's id was not in the first lookup (only the submitted ids were): one
        more lookup finds any an earlier transaction already holds, as when a call's row
        expired and a late CDR derives the call's end again.
        """
        derived = {event.id for request in self.requests for event, _ in request}
        derived -= self.incoming
        held = _stored_ids(conn, derived) if derived else set()
        rows: list[tuple[object, ...]] = []
        added: list[list[Committed]] = []
        for request in self.requests:
            mine: list[Committed] = []
            for event, call in request:
                if event.id in held:
                    continue
                seq = self.seq
                self.seq += 1
                body = encode(msgspec.structs.replace(event, seq=seq))
                rows.append(
                    (
                        seq,
                        event.id,
                        event.type,
                        event.source,
                        event.subject,
                        event.time,
                        self.now,
                        body,
                    )
                )
                mine.append(Committed(seq, event.type, event.source, event.subject, body))
                if call is not None:
                    call.first_seq = call.first_seq or seq
                    call.last_seq = seq
                    call.record.seqs.append(seq)
                if event.type == "call.missed":
                    self.tally.missed += 1
                elif event.type == "call.missed_revoked":
                    self.tally.revoked += 1
            added.append(mine)
        _insert_events(conn, rows)
        return added


def commit(
    conn: sqlite3.Connection,
    requests: Sequence[Sequence[Event]],
    *,
    next_seq: int,
    now: float,
    settle_s: Mapping[str, float] | None = None,
) -> tuple[list[list[Committed]], Tally]:
    """Commit every request's events in one transaction; returns what each one added.

    Duplicates (by ``id``, against the outbox, the batch and the call's record) add nothing.
    Call events are folded into their call's record (:func:`bridge.calls.fold`), which decides
    what is committed and may add derived events. ``settle_s`` maps an event's ``source`` to
    its missed-call settle window. On any error the transaction is rolled back and the error
    propagates: nothing is half-written.
    """
    windows = settle_s or {}
    conn.execute("BEGIN IMMEDIATE")
    try:
        flat = [event for events in requests for event in events]
        incoming = {event.id for event in flat}
        batch = _Batch(next_seq, now, incoming, _stored_ids(conn, incoming))
        call_rows = _load_calls(
            conn, {(e.source, e.subject) for e in flat if calls.is_call_event(e)}
        )
        tally = batch.tally
        for events in requests:
            mine = batch.request()
            for event in events:
                stored = event.id in batch.known
                if not calls.is_call_event(event):
                    if stored:
                        tally.duplicates += 1  # a retransmission: no new event
                    else:
                        batch.emit(event, None, mine)
                    continue
                key = (event.source, event.subject)
                call = call_rows.get(key)
                before = (call.record.folded, call.record.late) if call else (0, 0)
                window = windows.get(event.source, DEFAULT_SETTLE_S)
                step = calls.fold(
                    call.record if call else None, event, now=now, settle_s=window, stored=stored
                )
                if call is None:
                    call = call_rows[key] = _Call(step.record, None, None)
                call.changed = True
                tally.duplicates += step.duplicate
                tally.folded += step.record.folded - before[0]
                tally.late += step.record.late - before[1]
                for out in step.emit:
                    batch.emit(out, call, mine)
        for call in call_rows.values():
            if call.changed and call.record.missed_due_at is not None:
                due = call.record.missed_due_at
                tally.next_due = due if tally.next_due is None else min(tally.next_due, due)
        added = batch.write(conn)
        _upsert_calls(conn, call_rows.items(), now)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return added, tally


def settle_due(
    conn: sqlite3.Connection, *, next_seq: int, now: float, limit: int = 256
) -> tuple[list[Committed], Tally]:
    """Decide the misses whose settle window has passed, in one transaction.

    Returns the derived events and, in ``Tally.next_due``, the earliest decision still pending
    (None when none is), so the writer knows when to come back.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        rows = conn.execute(DUE_CALLS_SQL, (now, limit)).fetchall()
        due = {(row[0], row[1]): _row_call(row) for row in rows}
        batch = _Batch(next_seq, now, set(), set())
        mine = batch.request()
        for call in due.values():
            call.changed = True
            for out in calls.settle(call.record, now=now):
                batch.emit(out, call, mine)
        (added,) = batch.write(conn)
        _upsert_calls(conn, due.items(), now)
        (next_due,) = conn.execute("SELECT min(missed_due_at) FROM calls").fetchone()
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    batch.tally.next_due = next_due
    return added, batch.tally


def next_due(conn: sqlite3.Connection) -> float | None:
    """The earliest pending miss decision in the outbox (at start)."""
    (due,) = conn.execute("SELECT min(missed_due_at) FROM calls").fetchone()
    return None if due is None else float(due)


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
    for source, subjects in by_source.items():
        sql = LOAD_CALLS_SQL.format(marks=",".join("?" * len(subjects)))
        for row in conn.execute(sql, [source, *subjects]):
            if (row[0], row[1]) in keys:
                loaded[(row[0], row[1])] = _row_call(row)
    return loaded


def _row_call(row: tuple[Any, ...]) -> _Call:
    source, subject, body, state, answered, direction, missed, answered_at, first, last = row
    if body is not None:
        return _Call(calls.decode(body), first, last)
    # A row written before the call fold (schema 3): what the forward-only state machine kept.
    record = calls.Record(source=source, subject=subject, initiated=True)
    if direction is not None:
        record.facts["direction"] = calls.Fact(direction, calls.LIVE, "", "")
    if answered:
        record.answer = calls.Fact(None, calls.LIVE, answered_at or "", "")
    if state >= 3:
        record.end = calls.Fact("hangup", calls.LIVE, "", "")
        record.ended = True
    if missed:
        record.missed_by, record.misses = "record", 1
    return _Call(record, first, last)


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
            _STATES[call.record.state],
            int(call.record.missed),
            call.first_seq,
            call.last_seq,
            now,
            calls.encode(call.record),
            call.record.missed_due_at,
        )
        for (source, subject), call in items
        if call.changed
    ]
    for chunk in _chunks(rows):
        conn.execute(
            "INSERT INTO calls (source, subject, state, missed, first_seq, last_seq, updated_at,"
            " record, missed_due_at) VALUES "
            + _placeholders(len(chunk), 9)
            + " ON CONFLICT (source, subject) DO UPDATE SET state = excluded.state,"
            " missed = excluded.missed, first_seq = coalesce(first_seq, excluded.first_seq),"
            " last_seq = coalesce(excluded.last_seq, last_seq), updated_at = excluded.updated_at,"
            " record = excluded.record, missed_due_at = excluded.missed_due_at",
            [value for row in chunk for value in row],
        )
