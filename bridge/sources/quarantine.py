"""Quarantine: authenticated payloads that could not be read are kept, not lost.

Every source keeps its refused payloads here, HTTP pushes and realtime messages alike (``path``
is the request's path tail or the STOMP destination). A payload is stored once (deduplicated by
source, path, query and bytes; ``seen`` counts the vendor's retries). Each source's held entries
are capped by count and by body bytes (``quarantine_max_entries``, ``quarantine_max_bytes``):
a new payload that would pass a cap is not stored and :class:`QuarantineFullError` says so (HTTP
answers 503, so the vendor keeps it and retries), so a flood of bad pushes cannot fill the disk.
A retry of a payload already held is still counted when the quarantine is full.

After a mapping fix, ``reprocess`` runs the current normaliser on the kept payloads: what now
reads is committed like a fresh push (with its original receipt time, so ids match what a
working bridge would have made) and the row is marked ``reprocessed``, which frees its room.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import structlog

from bridge.config import QUARANTINE_MAX_BYTES, QUARANTINE_MAX_ENTRIES, SourceConfig
from bridge.errors import PayloadError, QuarantineFullError
from bridge.sources.normalise import normalise
from bridge.store.reader import Reader
from bridge.store.writer import Writer
from bridge.vendors.base import Normalizer, Payload, SourceContext, at, context_template
from bridge.vendors.registry import STREAMS, VENDORS

log = structlog.get_logger("bridge.quarantine")

# (source name, channel, receipt time) -> the normaliser and context to read a kept payload
# with; None when the source (or its realtime subscription) is gone.
Resolve = Callable[[str, str, datetime], tuple[Normalizer, SourceContext] | None]
Channel = Literal["http", "realtime"]


def resolver(sources: Iterable[SourceConfig]) -> Resolve:
    """Resolve kept payloads with what the configured sources read them with today."""
    by_name = {source.name: source for source in sources}

    def resolve(
        name: str, channel: str, received_at: datetime
    ) -> tuple[Normalizer, SourceContext] | None:
        source = by_name.get(name)
        if source is None:
            return None
        if channel == "realtime":
            if source.realtime is None or source.vendor not in STREAMS:
                return None
            normalize = STREAMS[source.vendor]
        else:
            normalize = VENDORS[source.vendor].normalize
        return normalize, at(context_template(source, source.vendor), received_at)

    return resolve


_SUMMARY: Final = (
    "id, source, vendor, received_at, path, field, error, seen, state, reprocessed_at, size"
)
# A source's held entries and their bytes, for its cap: the quarantine_source_state index
# covers it, so no row is read however much is held.
HELD_USAGE_SQL: Final = (
    "SELECT count(*), total(size) FROM quarantine WHERE source = ? AND state = 'held'"
)
# A full quarantine refuses every bad push of a flood: log the first refusal, then every Nth.
_LOG_FULL_EVERY: Final = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class Cap:
    """How much one source may hold in quarantine."""

    max_entries: int = QUARANTINE_MAX_ENTRIES
    max_bytes: int = QUARANTINE_MAX_BYTES


def _summary(row: tuple[Any, ...]) -> dict[str, Any]:
    keys = ("id", "source", "vendor", "received_at", "path", "field", "error", "seen", "state")
    entry = dict(zip(keys, row, strict=False))
    entry["reprocessed_at"] = row[9]
    entry["size"] = row[10]
    return entry


class Quarantine:
    """Every source's refused payloads; built once by the daemon and given to each source."""

    def __init__(
        self, writer: Writer, reader: Reader, resolve: Resolve, *, sources: Iterable[SourceConfig]
    ) -> None:
        self._writer = writer
        self._reader = reader
        self._resolve = resolve
        self._caps: dict[str, Cap] = {}
        self.reconfigure(resolve, sources=sources)
        # Per source, read by /metrics: payloads kept (stored, or a retry counted) and payloads
        # refused because the source's quarantine was full. Plain Counters: nothing per request.
        self.kept: Counter[str] = Counter()
        self.full: Counter[str] = Counter()
        self._refusing: Counter[str] = Counter()  # refusals since the source last stored one

    def reconfigure(self, resolve: Resolve, *, sources: Iterable[SourceConfig]) -> None:
        """A reload's sources: how kept payloads are read again, and each source's caps."""
        self._resolve = resolve
        self._caps = {
            source.name: Cap(
                max_entries=source.quarantine_max_entries, max_bytes=source.quarantine_max_bytes
            )
            for source in sources
        }

    def cap(self, source: str) -> Cap:
        return self._caps.get(source, Cap())

    async def keep(
        self,
        *,
        source: str,
        vendor: str,
        payload: Payload,
        received_at: datetime,
        error: PayloadError,
        channel: Channel = "http",
    ) -> int:
        """Store a refused payload (once per distinct request); returns its quarantine id.

        Raises :class:`QuarantineFullError` (storing nothing) when a new payload would take the
        source past its cap, and :class:`OutboxError` when the outbox cannot write.
        """
        query = json.dumps(dict(payload.query), sort_keys=True)
        parts = [source.encode(), payload.path.encode(), query.encode(), payload.body]
        if channel != "http":  # HTTP entries keep the digests they had before channels
            parts.insert(1, channel.encode())
        digest = hashlib.sha256(b"\x1f".join(parts)).hexdigest()
        cap = self.cap(source)
        size = len(payload.body)
        row = (
            digest,
            source,
            vendor,
            received_at.timestamp(),
            payload.path,
            query,
            payload.content_type,
            payload.body,
            size,
            error.field,
            error.problem,
            channel,
        )

        def store(conn: sqlite3.Connection) -> tuple[int, bool]:
            retried = conn.execute(
                "UPDATE quarantine SET seen = seen + 1 WHERE digest = ? RETURNING id", (digest,)
            ).fetchall()
            if retried:
                return int(retried[0][0]), False
            entries, held = conn.execute(HELD_USAGE_SQL, (source,)).fetchone()
            if entries + 1 > cap.max_entries or held + size > cap.max_bytes:
                raise QuarantineFullError(
                    source=source,
                    held_entries=int(entries),
                    held_bytes=int(held),
                    max_entries=cap.max_entries,
                    max_bytes=cap.max_bytes,
                )
            (entry_id,) = conn.execute(
                "INSERT INTO quarantine (digest, source, vendor, received_at, path, query,"
                " content_type, body, size, field, error, channel)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " RETURNING id",
                row,
            ).fetchone()
            return int(entry_id), True

        try:
            entry_id, new = await self._writer.transact(store)
        except QuarantineFullError as exc:
            self.full[source] += 1
            self._refusing[source] += 1
            refused = self._refusing[source]
            if refused == 1 or refused % _LOG_FULL_EVERY == 0:
                log.warning(
                    "quarantine_full",
                    source=source,
                    refused=refused,
                    held_entries=exc.held_entries,
                    held_bytes=exc.held_bytes,
                    max_entries=exc.max_entries,
                    max_bytes=exc.max_bytes,
                    size_bytes=size,
                    field=error.field,
                    problem=error.problem,
                )
            raise
        self.kept[source] += 1
        if new:
            self._refusing.pop(source, None)
        return entry_id

    async def usage(self) -> dict[str, dict[str, int]]:
        """Each source's held entries and bytes, and its caps (configured sources always)."""

        def read(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return conn.execute(
                "SELECT source, count(*), total(size) FROM quarantine WHERE state = 'held'"
                " GROUP BY source"
            ).fetchall()

        held = {source: (int(n), int(size)) for source, n, size in await self._reader.run(read)}
        shown = {}
        for source in sorted({*self._caps, *held}):
            cap = self.cap(source)
            entries, size = held.get(source, (0, 0))
            shown[source] = {
                "held_entries": entries,
                "held_bytes": size,
                "max_entries": cap.max_entries,
                "max_bytes": cap.max_bytes,
            }
        return shown

    async def entries(
        self,
        *,
        state: str | None = "held",
        source: str | None = None,
        after: int = 0,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Entries in id order, every source's (or one's); page on with ``after`` = the last id."""

        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            where: list[str] = ["id > ?"]
            args: list[object] = [after]
            if state:
                where.append("state = ?")
                args.append(state)
            if source:
                where.append("source = ?")
                args.append(source)
            rows = conn.execute(
                f"SELECT {_SUMMARY} FROM quarantine WHERE {' AND '.join(where)}"
                " ORDER BY id LIMIT ?",
                [*args, limit],
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
                "SELECT id, source, received_at, path, query, content_type, body, channel"
                " FROM quarantine"
                " WHERE state = 'held'"
            )
            if ids is None:
                return conn.execute(sql + " ORDER BY id").fetchall()
            marks = ",".join("?" * len(ids))
            return conn.execute(f"{sql} AND id IN ({marks}) ORDER BY id", ids).fetchall()

        results = []
        rows = await self._reader.run(read)
        for entry_id, source, received, path, query, content_type, body, channel in rows:
            results.append(
                await self._reprocess_one(
                    entry_id,
                    source,
                    channel,
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
        self, entry_id: int, source: str, channel: str, received_at: datetime, payload: Payload
    ) -> dict[str, Any]:
        resolved = self._resolve(source, channel, received_at)
        if resolved is None:
            gone = f"source {source!r} ({channel}) is gone"
            return {"id": entry_id, "result": "failed", "error": gone}
        normalize, context = resolved
        try:
            events = normalise(normalize, payload, context)
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
