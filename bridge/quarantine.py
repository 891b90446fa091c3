"""Quarantine: authenticated payloads that could not be read are kept, not lost.

A payload that fails to normalise is answered 400 (naming the problem) and stored here once
(deduplicated by source and request bytes; ``seen`` counts the vendor's retries). After a
mapping fix, ``reprocess`` runs the current normaliser on the kept payloads: what now reads is
committed like a fresh push (with its original receipt time, so ids match what a working bridge
would have made) and the row is marked ``reprocessed``.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from bridge.errors import PayloadError
from bridge.sources.normalise import normalise
from bridge.store.reader import Reader
from bridge.store.writer import Writer
from bridge.vendors.base import Payload, SourceContext, Vendor

# Source name -> its vendor and a context for a receipt time (None when the source is gone).
Resolve = Callable[[str, datetime], tuple[Vendor, SourceContext] | None]

_SUMMARY: Final = (
    "id, source, vendor, received_at, path, field, error, seen, state, reprocessed_at, length(body)"
)


def _summary(row: tuple[Any, ...]) -> dict[str, Any]:
    keys = ("id", "source", "vendor", "received_at", "path", "field", "error", "seen", "state")
    entry = dict(zip(keys, row, strict=False))
    entry["reprocessed_at"] = row[9]
    entry["size"] = row[10]
    return entry


class Quarantine:
    def __init__(self, writer: Writer, reader: Reader, resolve: Resolve) -> None:
        self._writer = writer
        self._reader = reader
        self._resolve = resolve

    async def keep(
        self,
        *,
        source: str,
        vendor: str,
        payload: Payload,
        received_at: datetime,
        error: PayloadError,
    ) -> int:
        """Store a refused payload (once per distinct request); returns its quarantine id."""
        query = json.dumps(dict(payload.query), sort_keys=True)
        digest = hashlib.sha256(
            b"\x1f".join([source.encode(), payload.path.encode(), query.encode(), payload.body])
        ).hexdigest()
        row = (
            digest,
            source,
            vendor,
            received_at.timestamp(),
            payload.path,
            query,
            payload.content_type,
            payload.body,
            error.field,
            error.problem,
        )

        def insert(conn: sqlite3.Connection) -> int:
            (entry_id,) = conn.execute(
                "INSERT INTO quarantine (digest, source, vendor, received_at, path, query,"
                " content_type, body, field, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (digest) DO UPDATE SET seen = seen + 1 RETURNING id",
                row,
            ).fetchone()
            return int(entry_id)

        return await self._writer.transact(insert)

    async def entries(
        self, *, state: str | None = "held", limit: int = 100
    ) -> list[dict[str, Any]]:
        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            where, args = ("WHERE state = ?", [state]) if state else ("", [])
            rows = conn.execute(
                f"SELECT {_SUMMARY} FROM quarantine {where} ORDER BY id LIMIT ?", [*args, limit]
            ).fetchall()
            return [_summary(row) for row in rows]

        return await self._reader.run(read)

    async def show(self, entry_id: int) -> dict[str, Any] | None:
        def read(conn: sqlite3.Connection) -> dict[str, Any] | None:
            row = conn.execute(
                f"SELECT {_SUMMARY}, query, content_type, body FROM quarantine WHERE id = ?",
                (entry_id,),
            ).fetchone()
            if row is None:
                return None
            entry = _summary(row[:11])
            entry["query"] = json.loads(row[11])
            entry["content_type"] = row[12]
            try:
                entry["body"] = bytes(row[13]).decode()
            except UnicodeDecodeError:
                entry["body_hex"] = bytes(row[13]).hex()
            return entry

        return await self._reader.run(read)

    async def reprocess(self, ids: list[int] | None) -> list[dict[str, Any]]:
        """Re-run the current normalisers on held entries (``None``: all of them)."""

        def read(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            sql = (
                "SELECT id, source, received_at, path, query, content_type, body FROM quarantine"
                " WHERE state = 'held'"
            )
            if ids is None:
                return conn.execute(sql + " ORDER BY id").fetchall()
            marks = ",".join("?" * len(ids))
            return conn.execute(f"{sql} AND id IN ({marks}) ORDER BY id", ids).fetchall()

        results = []
        for entry_id, source, received, path, query, content_type, body in await self._reader.run(
            read
        ):
            results.append(
                await self._reprocess_one(
                    entry_id,
                    source,
                    datetime.fromtimestamp(received, UTC),
                    Payload(
                        body=bytes(body),
                        query=json.loads(query),
                        content_type=content_type,
                        path=path,
                    ),
                )
            )
        return results

    async def _reprocess_one(
        self, entry_id: int, source: str, received_at: datetime, payload: Payload
    ) -> dict[str, Any]:
        resolved = self._resolve(source, received_at)
        if resolved is None:
            return {"id": entry_id, "result": "failed", "error": f"source {source!r} is gone"}
        vendor, context = resolved
        try:
            events = normalise(vendor.normalize, payload, context)
        except PayloadError as exc:
            field, problem = exc.field, exc.problem

            def note(conn: sqlite3.Connection) -> None:
                conn.execute(
                    "UPDATE quarantine SET field = ?, error = ? WHERE id = ?",
                    (field, problem, entry_id),
                )

            await self._writer.transact(note)
            return {"id": entry_id, "result": "failed", "field": field, "error": problem}
        # Commit first, then mark: a crash in between leaves it held, and a second reprocess
        # commits nothing new (the ids are deterministic).
        committed = await self._writer.submit(events) if events else []

        def mark(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE quarantine SET state = 'reprocessed', reprocessed_at = ? WHERE id = ?",
                (time.time(), entry_id),
            )

        await self._writer.transact(mark)
        return {
            "id": entry_id,
            "result": "reprocessed",
            "events": len(events),
            "new": len(committed),
        }
