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
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from bridge import calls
from bridge.events import Event, encode, event_id, rfc3339

# Rows per multi-row statement: well under SQLite's 32766 bound variables, and a fixed size so
# full chunks reuse one prepared statement.
CHUNK: Final = 64

# Source first: the primary key (source, subject) serves this; by subject alone it is a scan of
# every call kept, on every commit.
_COLUMNS: Final = (
    "source, subject, record, first_seq, last_seq, state, answered, direction, missed,"
    " answered_at, updated_at"
)
LOAD_CALLS_SQL: Final = f"SELECT {_COLUMNS} FROM calls WHERE source = ? AND subject IN ({{marks}})"
DUE_CALLS_SQL: Final = (
    f"SELECT {_COLUMNS} FROM calls WHERE missed_due_at <= ? ORDER BY missed_due_at LIMIT ?"
)
# The partial index holds only pending decisions: without the IS NOT NULL it is a full scan.
NEXT_DUE_SQL: Final = "SELECT min(missed_due_at) FROM calls WHERE missed_due_at IS NOT NULL"

DEFAULT_SETTLE_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class Committed:
    """An event as it stands in the outbox: its ``seq`` and its encoded CloudEvent."""

    seq: int
    type: str
    source: str
    subject: str
    body: bytes
    id: str = ""
    time: str = ""  # RFC 3339, as in the body (sinks read both without decoding it)
    received_at: float = 0.0  # when the bridge received it (epoch s): delivery latency's start


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
    """The rows one transaction is building: events with their seqs, and the calls touched."""

    def __init__(self, next_seq: int, now: float, known: set[str]) -> None:
        self.seq = next_seq
        self.now = now
        self.known = known  # ids the outbox holds, then also those this batch adds
        self.rows: list[tuple[object, ...]] = []
        self.tally = Tally()

    def add(self, out: Event, call: _Call | None, into: list[Committed]) -> None:
        if out.id in self.known:
            return  # a derived event the outbox already holds
        self.known.add(out.id)
        seq = self.seq
        body = encode(msgspec.structs.replace(out, seq=seq))
        self.rows.append((seq, out.id, out.type, out.source, out.subject, out.time, self.now, body))
        into.append(
            Committed(seq, out.type, out.source, out.subject, body, out.id, out.time, self.now)
        )
        if call is not None:
            call.first_seq = call.first_seq or seq
            call.last_seq = seq
            call.record.seqs.append(seq)
        if out.type == "call.missed":
            self.tally.missed += 1
        elif out.type == "call.missed_revoked":
            self.tally.revoked += 1
        self.seq += 1


# Derived events of a call: their call-level ids, the first few of each kind
# (see calls.folding._nth).
_DERIVED: Final = ("call.ended", "call.missed", "call.missed_revoked")


def _derived_ids(keys: Iterable[tuple[str, str]]) -> set[str]:
    ids = set()
    for source, subject in keys:
        for kind in _DERIVED:
            ids.add(event_id(source, kind, subject))
            ids.update(event_id(source, kind, subject, n) for n in range(2, 5))
    return ids


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

    A derived event's id is looked up only when the insert says it is already there: a call
    whose row expired (``calls_ttl_hours``) and then gets a late CDR derives its end again. The
    batch is then rolled back and done once more with that lookup, instead of failing (which
    would make the PBX retry the same batch forever).
    """
    try:
        return _commit(conn, requests, next_seq=next_seq, now=now, settle_s=settle_s)
    except sqlite3.IntegrityError as exc:
        if "events.id" not in str(exc):
            raise
    return _commit(
        conn, requests, next_seq=next_seq, now=now, settle_s=settle_s, check_derived=True
    )


def _commit(
    conn: sqlite3.Connection,
    requests: Sequence[Sequence[Event]],
    *,
    next_seq: int,
    now: float,
    settle_s: Mapping[str, float] | None,
    check_derived: bool = False,
) -> tuple[list[list[Committed]], Tally]:
    windows = settle_s or {}
    conn.execute("BEGIN IMMEDIATE")
    try:
        flat = [event for events in requests for event in events]
        keys = {(e.source, e.subject) for e in flat if calls.is_call_event(e)}
        call_rows = _load_calls(conn, keys)
        lookup = {event.id for event in flat}
        if check_derived:
            # The slow path: the derived events that calls with no row could repeat.
            lookup |= _derived_ids(keys - call_rows.keys())
        batch = _Batch(next_seq, now, _stored_ids(conn, lookup))
        added: list[list[Committed]] = []
        tally = batch.tally
        for events in requests:
            mine: list[Committed] = []
            for event in events:
                stored = event.id in batch.known
                if not calls.is_call_event(event):
                    if stored:
                        tally.duplicates += 1  # a retransmission: no new event
                    else:
                        batch.add(event, None, mine)
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
                    batch.add(out, call, mine)
            added.append(mine)
        for call in call_rows.values():
            if call.changed and call.record.missed_due_at is not None:
                due = call.record.missed_due_at
                tally.next_due = due if tally.next_due is None else min(tally.next_due, due)
        _insert_events(conn, batch.rows)
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
        decided = [(call, calls.settle(call.record, now=now)) for call in due.values()]
        derived = {event.id for _, emit in decided for event in emit}
        batch = _Batch(next_seq, now, _stored_ids(conn, derived))
        added: list[Committed] = []
        for call, emit in decided:
            call.changed = True
            for out in emit:
                batch.add(out, call, added)
        _insert_events(conn, batch.rows)
        _upsert_calls(conn, due.items(), now)
        (next_due,) = conn.execute(NEXT_DUE_SQL).fetchone()
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    batch.tally.next_due = next_due
    return added, batch.tally


def next_due(conn: sqlite3.Connection) -> float | None:
    """The earliest pending miss decision in the outbox (at start)."""
    (due,) = conn.execute(NEXT_DUE_SQL).fetchone()
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
    source, subject, body, first, last, state, answered, direction, missed, answered_at, at = row
    if body is not None:
        return _Call(calls.decode(body), first, last)
    # A row written before the call fold (schema 3): what the forward-only state machine kept.
    when = calls.sortable(rfc3339(datetime.fromtimestamp(at, UTC)))
    record = calls.Record(source=source, subject=subject, initiated=True, seen=1)
    if direction is not None:
        record.facts["direction"] = calls.Fact(direction, calls.LIVE, when, "")
    if answered:
        record.answer = calls.Fact(
            None,
            calls.LIVE,
            calls.sortable(answered_at or rfc3339(datetime.fromtimestamp(at, UTC))),
            "",
        )
    if state >= 3:
        record.end = calls.Fact("hangup", calls.LIVE, when, "")
        record.ended = record.decided = True
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
            calls.STATES.index(call.record.state),
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
