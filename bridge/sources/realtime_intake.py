"""What a realtime source commits: its messages' events, its refused messages, its status events.

A stream (a STOMP topic) has no redelivery, so nothing here may stop the reading or lose a
message quietly. Events are pipelined into the writer (order kept, at most ``max_in_flight``
commits outstanding, so a slow disk slows the socket instead of growing memory). A message that
cannot become events (not UTF-8, not JSON, a ``PayloadError``, a normaliser bug) is kept in the
quarantine byte for byte, and counted; what can be neither committed nor kept is counted lost and
logged. ``source.status`` events say when the stream was up and when it was not.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

import structlog

from bridge.config import SourceConfig
from bridge.errors import OutboxError, PayloadError
from bridge.events import Event, make_event
from bridge.sources.normalise import normalise
from bridge.store.commit import Committed
from bridge.store.reader import Reader
from bridge.store.writer import Writer
from bridge.vendors.base import Normalizer, Payload, at, context_template

log = structlog.get_logger("bridge.sources")

Clock = Callable[[], datetime]


class Quarantine(Protocol):
    """Where a message that cannot become events is kept (the bridge's quarantine).

    ``channel`` tells a reprocess to read the entry with the vendor's stream normaliser.
    """

    async def keep(
        self,
        *,
        source: str,
        vendor: str,
        payload: Payload,
        received_at: datetime,
        error: PayloadError,
        channel: Literal["realtime"],
    ) -> int: ...


@dataclass(slots=True)
class Counts:
    messages: int = 0
    rejected: int = 0  # messages that could not become events (quarantined when kept)
    lost: int = 0  # messages (or their events) neither committed nor quarantined


class RealtimeIntake:
    """One realtime source's way into the outbox; counts into ``counts``."""

    def __init__(
        self,
        source: SourceConfig,
        writer: Writer,
        normalize: Normalizer,
        *,
        vendor: str,
        clock: Clock,
        counts: Counts,
        quarantine: Quarantine | None = None,
        reader: Reader | None = None,
        max_in_flight: int = 1000,
    ) -> None:
        self._name, self._vendor = source.name, vendor
        self._reader = reader  # for reads; without one they go through the writer
        self._writer, self._normalize, self._quarantine = writer, normalize, quarantine
        self._template = context_template(source, vendor)
        self._clock = clock
        self._counts = counts
        self._max_in_flight = max_in_flight
        self._in_flight: deque[asyncio.Future[list[Committed]]] = deque()

    async def message(self, payload: Payload) -> None:
        """Commit the events of one message, or quarantine it."""
        self._counts.messages += 1
        received_at = self._clock()
        try:
            # Every failure to read it, a normaliser bug included, arrives as a PayloadError.
            events = normalise(self._normalize, payload, at(self._template, received_at))
        except PayloadError as exc:
            self._counts.rejected += 1
            log.warning("realtime_message_rejected", path=payload.path, problem=str(exc))
            if self._quarantine is not None:
                await self._keep(payload, received_at, exc)
            return
        if events:
            await self._enqueue(events)

    async def status(self, state: str, **data: Any) -> None:
        """Commit a ``source.status`` event (``None`` values left out)."""
        event = status_event(self._name, self._vendor, state, self._clock(), **data)
        await self._enqueue([event])  # an outbox failure is logged (and counted) there

    async def last_status_at(self) -> datetime | None:
        """The time of this source's newest ``source.status`` event in the outbox."""
        source = f"/{self._vendor}/{self._name}"

        def read(conn: sqlite3.Connection) -> tuple[str] | None:
            row: tuple[str] | None = conn.execute(
                "SELECT time FROM events WHERE source = ? AND type = 'source.status'"
                " ORDER BY seq DESC LIMIT 1",
                (source,),
            ).fetchone()
            return row

        try:
            if self._reader is not None:
                row = await self._reader.run(read)
            else:
                row = await self._writer.transact(read)
        except (OutboxError, sqlite3.Error) as exc:
            log.error("realtime_previous_status_unread", error=str(exc))
            return None
        return None if row is None else datetime.fromisoformat(row[0])

    async def drain(self) -> None:
        """Wait for every commit handed to the writer so far."""
        while self._in_flight:
            await self._settle(self._in_flight.popleft())

    async def _keep(self, payload: Payload, received_at: datetime, error: PayloadError) -> None:
        assert self._quarantine is not None
        try:
            kept = await self._quarantine.keep(
                source=self._name,
                vendor=self._vendor,
                payload=payload,
                received_at=received_at,
                error=error,
                channel="realtime",
            )
        except Exception as exc:  # OutboxError (quarantine or disk full), or a bug there
            self._counts.lost += 1
            bug = not isinstance(exc, OutboxError)
            log.error("realtime_message_lost", error=f"{type(exc).__name__}: {exc}", exc_info=bug)
            return
        log.info("realtime_message_quarantined", quarantine_id=kept, path=payload.path)

    async def _enqueue(self, events: list[Event]) -> None:
        # Queued before any wait, so a cancel (a shutdown) never drops them.
        while True:
            try:
                self._in_flight.append(self._writer.enqueue(events))
                break
            except OutboxError as exc:
                if self._in_flight:  # overloaded: let the oldest commit make room
                    await self._settle(self._in_flight.popleft())
                    continue
                self._counts.lost += 1
                log.error("realtime_events_not_committed", error=str(exc), events=len(events))
                return
        limit = self._max_in_flight
        while self._in_flight and (len(self._in_flight) > limit or self._in_flight[0].done()):
            await self._settle(self._in_flight.popleft())

    async def _settle(self, future: asyncio.Future[list[Committed]]) -> None:
        try:
            await future
        except OutboxError as exc:
            self._counts.lost += 1
            log.error("realtime_events_not_committed", error=str(exc))


def status_event(name: str, vendor: str, state: str, now: datetime, **data: Any) -> Event:
    """A realtime source's ``source.status`` event (``None`` values left out)."""
    return make_event(
        source_name=name,
        vendor=vendor,
        vendorevent=f"realtime.{state}",
        type="source.status",
        time=now,
        subject="pbx",
        identity=(state, now.isoformat()),
        data={"status": state, **{k: v for k, v in data.items() if v is not None}},
    )
