"""Gap repair: what the PBX's query APIs know, folded back into the calls.

- **Active calls after a realtime gap.** A STOMP topic has no replay, so a call that ended
  while the stream was down never sends its hangup. After a reconnect the bridge asks the PBX
  for its active calls (``calls.active``); a call the outbox holds as not ended, whose last
  event came before the question was asked, and which the PBX no longer lists, has ended:
  a ``call.ended`` with ``learned_from: "query"`` goes through the call fold like any other
  (so its miss is decided by the settle window, and a late push of its real end is folded).
- **Call history on demand** (``reconcile``): the PBX's call records since a time
  (``calls.history``) become the events its pushes would have made, with the same ids
  (:attr:`Adapter.history_events`): what arrived is a duplicate the outbox drops, what never
  arrived is added, marked ``learned_from: "history"``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
import structlog

from bridge.commands.bound import bound_actions
from bridge.commands.service import Commander
from bridge.errors import (
    BridgeError,
    CommandInvalid,
    CommandNotSent,
    CommandRefused,
    CommandUnknown,
    PayloadError,
)
from bridge.events import Event, make_event
from bridge.store import commands as sql
from bridge.store.reader import Reader
from bridge.store.writer import Writer
from bridge.vendors.base import at, context_template

log = structlog.get_logger("bridge.commands")

MAX_PAGES: Final = 200  # of call history in one reconcile run
REPAIR_TRIES: Final = 5  # after a gap, while the PBX's API cannot be reached
REPAIR_BACKOFF_S: Final = 1.0  # then 2, 4, 8 s


class Repairer:
    def __init__(self, commander: Commander, writer: Writer, reader: Reader) -> None:
        self._commander, self._writer, self._reader = commander, writer, reader
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self.repairs = 0  # calls ended from a query, for /metrics

    @property
    def tasks(self) -> int:
        """Repairs running now."""
        return sum(not task.done() for task in self._tasks.values())

    def after_gap(self, source_name: str) -> None:
        """A realtime source reconnected after a gap: check its calls (once at a time)."""
        source = self._commander.source(source_name)
        if source is None or source.api is None or not source.api.repair_after_gap:
            return
        if "calls.active" not in bound_actions(source):
            return
        running = self._tasks.get(source_name)
        if running is not None and not running.done():
            return
        task = asyncio.get_running_loop().create_task(self._quietly(source_name))
        self._tasks[source_name] = task

    async def _quietly(self, source_name: str) -> None:
        """The repair after a gap, tried again with backoff while the PBX's API is not
        reachable (it often comes back with the stream, not before it)."""
        for attempt in range(REPAIR_TRIES):
            try:
                await self.active_calls(source_name)
                return
            except (CommandNotSent, CommandUnknown) as exc:
                log.warning("gap_repair_retrying", source=source_name, error=str(exc))
                await asyncio.sleep(REPAIR_BACKOFF_S * 2**attempt)
            except BridgeError as exc:
                log.warning("gap_repair_failed", source=source_name, error=str(exc))
                return
        log.warning("gap_repair_failed", source=source_name, error="the PBX's API not reached")

    async def active_calls(self, source_name: str) -> dict[str, Any]:
        """Ask the PBX for its active calls and end the calls it no longer has."""
        source = self._commander.source(source_name)
        if source is None:
            raise CommandInvalid("source", f"no source named {source_name!r}")
        head = self._writer.last_seq  # calls seen after this may postdate the snapshot
        result = await self._commander.query(source_name, "calls.active", {})
        listed = result.data.get("calls", [])
        ids = [call.get("call_id") for call in listed if isinstance(call, dict)]
        if len(ids) != len(listed) or not all(isinstance(i, str) and i for i in ids):
            # A list with a call the bridge cannot name would end that live call: do nothing.
            raise CommandRefused("the PBX's active calls include one without a call id")
        active = set(ids)
        name = f"/{source.vendor}/{source.name}"
        held = await self._reader.run(lambda conn: sql.open_calls(conn, name, head))
        now = datetime.now(UTC)
        ended: list[Event] = []
        for subject in held:
            key = subject.removeprefix("call/")
            if key in active:
                continue
            ended.append(
                make_event(
                    source_name=source.name,
                    vendor=source.vendor,
                    vendorevent="calls.active",
                    type="call.ended",
                    time=now,
                    subject=subject,
                    identity=("repair", subject),
                    data={"call_id": key, "learned_from": "query"},
                )
            )
        committed = await self._writer.submit(ended) if ended else []
        self.repairs += len(ended)
        summary = {
            "source": source.name,
            "active": len(active),
            "checked": len(held),
            "ended": sorted(event.subject.removeprefix("call/") for event in ended),
            "committed": len(committed),
        }
        log.info("gap_repaired", **{k: v for k, v in summary.items() if k != "ended"})
        return summary

    async def reconcile(
        self, source_name: str, *, since: str, until: str | None = None
    ) -> dict[str, Any]:
        """Fold the PBX's call records since ``since`` into the outbox."""
        source = self._commander.source(source_name)
        if source is None:
            raise CommandInvalid("source", f"no source named {source_name!r}")
        bound = bound_actions(source).get("calls.history")
        if bound is None or bound.adapter.history_events is None:
            raise CommandInvalid(
                "source", f"{source.vendor} source {source_name!r} has no call-history API"
            )
        template = context_template(source, source.vendor)
        records = added = events = duplicates = pages = 0
        page: int | None = 1
        while page is not None and pages < MAX_PAGES:
            args = {"since": since, "page": page, **({"until": until} if until else {})}
            result = await self._commander.query(source_name, "calls.history", args)
            pages += 1
            batch = result.data.get("records", [])
            records += len(batch)
            try:
                made = bound.adapter.history_events(batch, at(template, datetime.now(UTC)))
            except PayloadError as exc:  # what came before is committed; say where it stopped
                raise CommandRefused(
                    f"page {page} of the call history has a record that cannot be read"
                    f" ({exc}); {pages - 1} pages before it were folded in ({added} calls added)"
                ) from None
            # A call whose record already arrived (as a push, in whatever firmware's shape) is
            # skipped whole: the events' ids alone would miss a CDR pushed in another shape.
            subjects = sorted({e.subject for e in made})
            name = f"/{source.vendor}/{source.name}"
            recorded = await self._reader.run(
                lambda conn: sql.recorded_calls(conn, name, subjects)  # noqa: B023
            )
            marked = [
                msgspec.structs.replace(e, data={**e.data, "learned_from": "history"})
                for e in made
                if e.subject not in recorded
            ]
            committed = await self._writer.submit(marked) if marked else []
            new_ids = {c.id for c in committed}
            fresh = {e.subject for e in marked if e.id in new_ids and e.type == "call.completed"}
            added += len(fresh)
            duplicates += len({e.subject for e in made if e.type == "call.completed"} - fresh)
            events += len(committed)
            following = result.data.get("next_page")
            page = following if isinstance(following, int) and batch else None
        summary = {
            "source": source.name,
            "since": since,
            "pages": pages,
            "records": records,
            "added": added,  # calls whose record was missing and is now folded in
            "duplicates": duplicates,  # calls whose record had arrived
            "committed": events,
        }
        log.info("reconciled", **summary)
        return summary

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
