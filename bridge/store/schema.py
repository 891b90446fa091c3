"""Numbered schema migrations, tracked with ``PRAGMA user_version``.

Append a migration to ``MIGRATIONS``; never edit one that has shipped.
"""

from __future__ import annotations

import sqlite3
from typing import Final

MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: the outbox and the call-correlation table.
    """
    CREATE TABLE events (
        seq         INTEGER PRIMARY KEY,
        id          TEXT    NOT NULL UNIQUE,
        type        TEXT    NOT NULL,
        source      TEXT    NOT NULL,
        subject     TEXT    NOT NULL,
        time        TEXT    NOT NULL,
        received_at REAL    NOT NULL,
        body        BLOB    NOT NULL
    );
    CREATE TABLE calls (
        source      TEXT    NOT NULL,
        subject     TEXT    NOT NULL,
        state       INTEGER NOT NULL,
        answered    INTEGER NOT NULL,
        direction   TEXT,
        missed      INTEGER NOT NULL,
        answered_at TEXT,
        first_seq   INTEGER,
        last_seq    INTEGER,
        updated_at  REAL    NOT NULL,
        PRIMARY KEY (source, subject)
    ) WITHOUT ROWID;
    CREATE INDEX calls_updated_at ON calls (updated_at);
    """,
    # 2: quarantine: authenticated payloads that could not be read, kept to be re-processed.
    """
    CREATE TABLE quarantine (
        id             INTEGER PRIMARY KEY,
        digest         TEXT    NOT NULL UNIQUE,
        source         TEXT    NOT NULL,
        vendor         TEXT    NOT NULL,
        received_at    REAL    NOT NULL,
        path           TEXT    NOT NULL,
        query          TEXT    NOT NULL,
        content_type   TEXT    NOT NULL,
        body           BLOB    NOT NULL,
        field          TEXT    NOT NULL,
        error          TEXT    NOT NULL,
        seen           INTEGER NOT NULL DEFAULT 1,
        state          TEXT    NOT NULL DEFAULT 'held',
        reprocessed_at REAL
    );
    CREATE INDEX quarantine_state ON quarantine (state, id);
    """,
    # 3: sinks: a durable cursor each, and the events that are not simply delivered in order
    # (waiting for a retry, held behind their call's waiting event, dead-lettered).
    """
    CREATE TABLE sink_cursors (
        sink            TEXT    PRIMARY KEY,
        seq             INTEGER NOT NULL,
        disabled_at     REAL,
        disabled_reason TEXT
    ) WITHOUT ROWID;
    CREATE TABLE deliveries (
        sink            TEXT    NOT NULL,
        seq             INTEGER NOT NULL,
        subject         TEXT    NOT NULL,
        state           TEXT    NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL,
        last_status     INTEGER,
        last_error      TEXT,
        updated_at      REAL    NOT NULL,
        PRIMARY KEY (sink, seq)
    ) WITHOUT ROWID;
    CREATE INDEX deliveries_state ON deliveries (sink, state, seq);
    CREATE INDEX deliveries_seq ON deliveries (seq);
    """,
    # 4: the call fold. A call's record (the folded facts, as JSON), its pending miss decision
    # (due time, indexed: the writer settles what falls due, across restarts) and an index
    # for the calls API's newest-activity-first pages. The table becomes a rowid table: a
    # record is a few hundred bytes, and WITHOUT ROWID tables are for small rows. The columns
    # of the forward-only state machine stay, for rows written before this version.
    """
    CREATE TABLE calls_folded (
        source        TEXT    NOT NULL,
        subject       TEXT    NOT NULL,
        state         INTEGER NOT NULL,
        answered      INTEGER,
        direction     TEXT,
        missed        INTEGER NOT NULL,
        answered_at   TEXT,
        first_seq     INTEGER,
        last_seq      INTEGER,
        updated_at    REAL    NOT NULL,
        record        BLOB,
        missed_due_at REAL,
        UNIQUE (source, subject)
    );
    INSERT INTO calls_folded (source, subject, state, answered, direction, missed, answered_at,
        first_seq, last_seq, updated_at)
        SELECT source, subject, state, answered, direction, missed, answered_at, first_seq,
            last_seq, updated_at FROM calls;
    DROP TABLE calls;
    ALTER TABLE calls_folded RENAME TO calls;
    CREATE INDEX calls_updated_at ON calls (updated_at);
    CREATE INDEX calls_missed_due_at ON calls (missed_due_at) WHERE missed_due_at IS NOT NULL;
    CREATE INDEX calls_last_seq ON calls (last_seq);
    CREATE INDEX calls_missed_last_seq ON calls (last_seq) WHERE missed = 1;
    """,
    # 5: the quarantine's per-source caps. Each entry's body size as a column, so a covering
    # index answers "how many held entries, how many bytes" for a source without reading a
    # row (an index on length(body) is not covering in SQLite 3.40).
    """
    ALTER TABLE quarantine ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
    UPDATE quarantine SET size = length(body);
    CREATE INDEX quarantine_source_state ON quarantine (source, state, size);
    """,
    # 6: which channel a kept payload came by, so reprocess reads a realtime message with the
    # stream's normaliser, not the HTTP push's.
    """
    ALTER TABLE quarantine ADD COLUMN channel TEXT NOT NULL DEFAULT 'http';
    """,
    # 7: commands. Their requests and outcomes are events (the stream is the audit log); this
    # partial index holds only the requests, so finding the ones a crash left without an
    # outcome does not scan the events.
    """
    CREATE INDEX events_command_requests ON events (seq) WHERE type = 'command.requested';
    """,
)


def connect(path: str, *, synchronous: str = "full", readonly: bool = False) -> sqlite3.Connection:
    """A connection with the pragmas every user of the outbox needs."""
    if readonly:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to date; returns the version reached."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > len(MIGRATIONS):
        raise RuntimeError(
            f"outbox schema version {version} is newer than this bridge knows "
            f"({len(MIGRATIONS)}): refusing to run an older bridge on it"
        )
    for number in range(version + 1, len(MIGRATIONS) + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(MIGRATIONS[number - 1]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={number}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    return len(MIGRATIONS)


def _statements(script: str) -> list[str]:
    # executescript() would commit our transaction first; split instead (no ';' inside strings).
    return [part.strip() for part in script.split(";") if part.strip()]
