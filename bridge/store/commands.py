"""The outbox reads of the command service: its events by id, and requests left open.

A command's request and its outcome are events with ids derived from the command id, so these
are lookups on the ``id`` index, and :data:`OPEN_SQL` uses the partial index of migration 7.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Final

from bridge import calls

OPEN_SQL: Final = "SELECT id, body FROM events WHERE type = 'command.requested' ORDER BY seq"


def bodies(conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, bytes]:
    """The stored body of each of ``ids`` that is in the outbox."""
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    rows = conn.execute(f"SELECT id, body FROM events WHERE id IN ({marks})", list(ids))
    return {row[0]: row[1] for row in rows}


def requests(conn: sqlite3.Connection) -> list[tuple[str, bytes]]:
    """Every command request still in the outbox (retention prunes the old ones)."""
    return [(row[0], row[1]) for row in conn.execute(OPEN_SQL)]


def open_calls(conn: sqlite3.Connection, source: str, up_to_seq: int) -> list[str]:
    """The subjects of a source's calls not ended whose last event is at or before
    ``up_to_seq``: the ones a snapshot of the PBX's active calls taken after it speaks for."""
    rows = conn.execute(
        "SELECT subject FROM calls WHERE source = ? AND state < 3 AND last_seq <= ?",
        (source, up_to_seq),
    )
    return [row[0] for row in rows]


def recorded_calls(conn: sqlite3.Connection, source: str, subjects: Sequence[str]) -> set[str]:
    """Which of ``subjects`` already hold an authoritative record (a CDR folded in)."""
    if not subjects:
        return set()
    marks = ",".join("?" * len(subjects))
    rows = conn.execute(
        f"SELECT subject, record FROM calls WHERE source = ? AND subject IN ({marks})",
        [source, *subjects],
    )
    return {subject for subject, record in rows if record and calls.decode(record).records}
