"""Outbox migrations: numbered, tracked in user_version, never run backwards."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bridge.store import schema


def test_fresh_database_reaches_the_latest_version(tmp_path: Path) -> None:
    """A new outbox is migrated to the newest schema and says so in user_version."""
    conn = schema.connect(str(tmp_path / "o.sqlite3"))
    assert schema.migrate(conn) == len(schema.MIGRATIONS)
    assert conn.execute("PRAGMA user_version").fetchone() == (len(schema.MIGRATIONS),)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


def test_migrate_is_idempotent(tmp_path: Path) -> None:
    """Opening an up-to-date outbox changes nothing."""
    path = str(tmp_path / "o.sqlite3")
    for _ in range(2):
        conn = schema.connect(path)
        schema.migrate(conn)
        conn.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """An older bridge will not run on an outbox a newer one has migrated."""
    path = str(tmp_path / "o.sqlite3")
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version={len(schema.MIGRATIONS) + 1}")
    with pytest.raises(RuntimeError, match="newer"):
        schema.migrate(schema.connect(path))
