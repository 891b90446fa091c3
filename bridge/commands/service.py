"""The command service: every command durable, idempotent, limited, and audited.

The path of a command (``POST /v1/commands``):

1. **Checked** (:func:`bridge.commands.actions.check`): the source exists and has an API, it
   supports the action, the arguments fit. A bad command is refused before anything is stored.
2. **Limited**: a token bucket per source (``rate_per_s``, ``burst``) answers 429 rather than
   queue a burst at the PBX; at most ``concurrency`` commands per source are in flight.
3. **Requested**: a ``command.requested`` event is committed *before* anything is sent, so a
   crash can never leave a dial with no trace.
4. **Sent** through the adapter and the driver, in a task the service owns (a CRM that hangs up
   does not cut a command in half).
5. **Concluded**: ``command.succeeded`` or ``command.failed`` is committed, with the result or
   the vendor's own message, and that is the answer.

An ``Idempotency-Key`` names the command: its events' ids derive from it, so the CRM's retry
finds the stored outcome (or joins the command still in flight) instead of dialling twice, in
this process or after a restart. A command whose request was sent and never answered is
``outcome: "unknown"`` and is never sent again by the bridge; one that a crash interrupted is
concluded the same way when the daemon starts again (:meth:`Commander.recover`).

Queries (``calls.active``, ``extensions.status``, ``calls.history``) change nothing at the PBX:
they are limited the same way but answered directly, not written to the outbox.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final

import msgspec
import structlog

from bridge.commands import actions
from bridge.commands.bound import Bound, bound_actions
from bridge.commands.driver import Driver
from bridge.commands.model import Command, Result, Session, Target
from bridge.commands.outcome import (
    answer_of,
    canonical,
    command_event,
    failure,
    fingerprint_of,
    status_of,
)
from bridge.config import Config, SourceConfig
from bridge.errors import BridgeError, CommandError, CommandInvalid, CommandUnknown
from bridge.events import Event, decode, event_id
from bridge.store import commands as sql
from bridge.store.reader import Reader
from bridge.store.writer import Writer

log = structlog.get_logger("bridge.commands")

MAX_KEY: Final = 255
RECENT: Final = 256  # outcomes kept in memory while the outbox refuses to store them
DRAIN_S: Final = 5.0  # at shutdown, how long commands in flight may finish
_DRY_SESSION: Final = Session(token="dry-run", expires_at=float("inf"))
STORE_WAIT_S: Final = 5.0  # how long a CRM waits for its outcome to be stored


class RateLimited(CommandError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Conflict(CommandError):
    """An Idempotency-Key already names a different command."""

    code = "idempotency_conflict"


class _Lane:
    """A source's limits: a token bucket and a cap on commands in flight."""

    def __init__(self, *, rate_per_s: float, burst: int, concurrency: int) -> None:
        self.rate_per_s, self.burst = rate_per_s, burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()
        self.slots = asyncio.Semaphore(concurrency)

    def take(self) -> float | None:
        """None when a command may go now; else the seconds until one may."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate_per_s)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return None
        return (1 - self.tokens) / self.rate_per_s


def _command_id(key: str | None) -> str:
    return event_id("command", key) if key is not None else str(uuid.uuid4())


def _outcome_id(command_id: str) -> str:
    return event_id("command", command_id, "outcome")


class Commander:
    def __init__(
        self,
        config: Config,
        writer: Writer,
        reader: Reader,
        *,
        driver: Driver | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._writer, self._reader = writer, reader
        self.driver = driver or Driver(clock=clock)
        self._clock = clock
        self._sources: dict[str, SourceConfig] = {}
        self._lanes: dict[str, _Lane] = {}
        self._inflight: dict[str, tuple[tuple[str, str, str], asyncio.Future[dict[str, Any]]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._recent: dict[str, tuple[tuple[str, str, str], dict[str, Any]]] = {}
        self.counts: dict[tuple[str, str], int] = {}  # (source, outcome) -> commands
        self.configure(config)

    def configure(self, config: Config) -> None:
        """The sources as of ``config``; an unchanged source keeps its limits and login."""
        old = self._sources
        self._sources = {source.name: source for source in config.sources}
        for name, source in self._sources.items():
            if old.get(name) != source or name not in self._lanes:
                api = source.api
                self._lanes[name] = _Lane(
                    rate_per_s=api.rate_per_s if api else 5.0,
                    burst=api.burst if api else 10,
                    concurrency=api.concurrency if api else 4,
                )
                self.driver.forget(name)
        for name in set(self._lanes) - set(self._sources):
            del self._lanes[name]

    def source(self, name: str) -> SourceConfig | None:
        return self._sources.get(name)

    @property
    def reader(self) -> Reader:
        return self._reader

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    def pending(self, command_id: str) -> bool:
        return command_id in self._inflight

    @staticmethod
    def outcome_id(command_id: str) -> str:
        return _outcome_id(command_id)

    # -- commands ---------------------------------------------------------------------------

    def parse(self, body: object) -> tuple[SourceConfig, Bound, Command]:
        """The checked command in a request body, or :class:`CommandInvalid`."""
        if not isinstance(body, Mapping):
            raise CommandInvalid("", "expected a JSON object {source, action, args}")
        for name in body:
            if name not in ("source", "action", "args"):
                raise CommandInvalid(name, "unknown key: expected source, action, args")
        name, action = body.get("source"), body.get("action")
        if not isinstance(name, str) or not name:
            raise CommandInvalid("source", "required: the name of a configured source")
        source = self._sources.get(name)
        if source is None:
            known = ", ".join(sorted(self._sources)) or "none"
            raise CommandInvalid("source", f"no source named {name!r} (configured: {known})")
        bound = bound_actions(source)
        if not isinstance(action, str) or action not in bound:
            supported = sorted(bound)
            if not supported:
                problem = (
                    f"source {name!r} ({source.vendor}) takes no commands: give it an"
                    " [sources.api] table"
                )
            else:
                shown = repr(action) if isinstance(action, str) else "required"
                problem = (
                    f"{shown}: {source.vendor} source {name!r} supports {', '.join(supported)}"
                )
            raise CommandInvalid("action", problem, supported=supported)
        item = bound[action]
        args = actions.check(item.action, body.get("args", {}))
        command = Command(source=name, action=action, args=args)
        # Build the request once, dry (builds are pure): an argument only the vendor's adapter
        # can judge (a date's format, what an operation needs) is refused here, before the
        # command is stored, not after. Any other failure is the driver's to report.
        dry = Target(source=source, now=self._clock(), session=_DRY_SESSION)
        try:
            item.adapter.build(command, dry)
        except CommandInvalid:
            raise
        except Exception:  # the real build reports it, as not sent
            pass
        return source, item, command

    async def submit(
        self, body: object, *, key: str | None = None, by: str = ""
    ) -> tuple[int, dict[str, Any]]:
        """Run the command in ``body``; returns the HTTP status and the answer."""
        if key is not None and (not key or len(key) > MAX_KEY or not key.isprintable()):
            raise CommandInvalid("Idempotency-Key", f"expected 1 to {MAX_KEY} printable characters")
        source, item, command = self.parse(body)
        if item.action.query:
            result = await self._query(source, item, command)
            return 200, {
                "source": source.name,
                "action": command.action,
                "outcome": "succeeded",
                "result": result.data,
                **({"message": result.message} if result.message else {}),
            }
        command_id = _command_id(key)
        fingerprint = (command.source, command.action, canonical(command.args))
        joined = self._inflight.get(command_id)
        if joined is not None:
            if joined[0] != fingerprint:
                raise Conflict(f"Idempotency-Key {key!r} already names a different command")
            answer = await asyncio.shield(joined[1])
            return status_of(answer), {**answer, "replayed": True}
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._inflight[command_id] = (fingerprint, future)
        task = asyncio.get_running_loop().create_task(
            self._execute(source, item, command, command_id, key, by, fingerprint)
        )
        self._tasks.add(task)

        def done(task: asyncio.Task[dict[str, Any]]) -> None:
            self._tasks.discard(task)
            self._inflight.pop(command_id, None)
            if future.done():
                return
            if task.cancelled():
                future.cancel()
            elif (exc := task.exception()) is not None:
                future.set_exception(exc)
            else:
                future.set_result(task.result())

        task.add_done_callback(done)
        answer = await asyncio.shield(future)
        return status_of(answer), answer

    async def _execute(
        self,
        source: SourceConfig,
        item: Bound,
        command: Command,
        command_id: str,
        key: str | None,
        by: str,
        fingerprint: tuple[str, str, str],
    ) -> dict[str, Any]:
        outcome_id = _outcome_id(command_id)
        if key is not None:
            if (recent := self._recent.get(command_id)) is not None:
                if recent[0] != fingerprint:
                    raise Conflict(f"Idempotency-Key {key!r} already names a different command")
                return {**recent[1], "replayed": True}
            stored = await self._reader.run(lambda c: sql.bodies(c, [command_id, outcome_id]))
            if command_id in stored:
                requested = decode(stored[command_id])
                if fingerprint_of(requested) != fingerprint:
                    raise Conflict(f"Idempotency-Key {key!r} already names a different command")
                if outcome_id in stored:
                    return {**answer_of(requested, decode(stored[outcome_id])), "replayed": True}
                # Requested by a run that ended before its outcome: concluded, never re-sent.
                return {**await self._conclude_interrupted(requested), "replayed": True}
        lane = self._limit(source)  # held: a reload may drop the source meanwhile
        now = self._clock()
        requested = command_event(
            source,
            "command.requested",
            command_id,
            command.action,
            now,
            {
                "command_id": command_id,
                "action": command.action,
                "args": dict(command.args),
                "idempotency_key": key,
                "requested_by": by or None,
            },
        )
        committed = await self._writer.submit([requested])
        if not committed:  # already stored: whoever stored it owns it; never send twice
            stored = await self._reader.run(lambda c: sql.bodies(c, [command_id, outcome_id]))
            requested = decode(stored[command_id]) if command_id in stored else requested
            if outcome_id in stored:
                return answer_of(requested, decode(stored[outcome_id]))
            return await self._conclude_interrupted(requested)
        requested = msgspec.structs.replace(requested, seq=committed[0].seq)
        log.info("command_requested", source=source.name, action=command.action, id=command_id)
        started = time.monotonic()
        async with lane.slots:
            try:
                result = await self.driver.run(
                    item.adapter,
                    command,
                    source,
                    timeout_s=item.timeout_s,
                    connect_timeout_s=item.connect_timeout_s,
                )
            except CommandError as exc:
                outcome = failure(exc)
            except Exception as exc:  # a bug: the request may have gone, so never again
                log.exception("command_crashed", source=source.name, action=command.action)
                outcome = failure(
                    CommandUnknown(f"the command failed in the bridge ({type(exc).__name__})")
                )
            else:
                outcome = {"outcome": "succeeded", "result": result.data}
                if result.message:
                    outcome["message"] = result.message
        outcome["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
        return await self._conclude(source, requested, outcome)

    async def _conclude(
        self, source: SourceConfig, requested: Event, outcome: dict[str, Any]
    ) -> dict[str, Any]:
        command_id = requested.data["command_id"]
        kind = "command.succeeded" if outcome["outcome"] == "succeeded" else "command.failed"
        event = command_event(
            source,
            kind,
            _outcome_id(command_id),
            requested.vendorevent,
            self._clock(),
            {"command_id": command_id, "action": requested.data["action"], **outcome},
        )
        self.counts[source.name, outcome["outcome"]] = (
            self.counts.get((source.name, outcome["outcome"]), 0) + 1
        )
        error = outcome.get("error", {})
        log.info(
            "command_concluded",
            source=source.name,
            action=requested.data["action"],
            id=command_id,
            outcome=outcome["outcome"],
            code=error.get("code"),
            vendor_message=error.get("message"),
        )
        # The outcome is stored before it is answered. When the outbox refuses, the store is
        # retried in a task of its own; past STORE_WAIT_S the CRM is told the outcome with
        # "recorded": false (the retries go on until they succeed or the daemon stops).
        store = asyncio.get_running_loop().create_task(self._store(event))
        self._tasks.add(store)
        store.add_done_callback(self._tasks.discard)
        try:
            seq = await asyncio.wait_for(asyncio.shield(store), STORE_WAIT_S)
        except TimeoutError:
            # Until the store succeeds, a retry must find this outcome here, not conclude the
            # command anew from an outbox that holds only its request.
            answer = {**answer_of(requested, event), "recorded": False}
            self._remember(requested, answer)
            store.add_done_callback(lambda _: self._recent.pop(command_id, None))
            return answer
        if seq is not None:
            event = msgspec.structs.replace(event, seq=seq)
        return answer_of(requested, event)

    async def _store(self, event: Event) -> int | None:
        """Commit an outcome, retrying with backoff until the outbox takes it."""
        delay_s = 0.05
        while True:
            try:
                committed = await self._writer.submit([event])
            except BridgeError as exc:
                log.error("command_outcome_not_stored", id=event.data["command_id"], error=str(exc))
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 5.0)
                continue
            return committed[0].seq if committed else None

    async def _conclude_interrupted(self, requested: Event) -> dict[str, Any]:
        name = requested.source.rsplit("/", 1)[-1]
        source = self._sources.get(name) or SourceConfig(name=name, vendor=requested.vendor)
        return await self._conclude(
            source,
            requested,
            {
                "outcome": "unknown",
                "error": {
                    "code": "interrupted",
                    "message": "the bridge stopped while this command was in flight: it may"
                    " have reached the PBX, and is not sent again",
                },
            },
        )

    def _remember(self, requested: Event, answer: dict[str, Any]) -> None:
        self._recent[requested.data["command_id"]] = (fingerprint_of(requested), answer)
        while len(self._recent) > RECENT:
            del self._recent[next(iter(self._recent))]

    def _limit(self, source: SourceConfig, *, bucket: bool = True) -> _Lane:
        lane = self._lanes[source.name]
        wait_s = lane.take() if bucket else None
        if wait_s is not None:
            raise RateLimited(
                f"source {source.name!r} takes at most"
                f" {source.api.rate_per_s if source.api else 0:g} commands a second",
                retry_after_s=wait_s,
            )
        return lane

    async def _query(
        self, source: SourceConfig, item: Bound, command: Command, *, bucket: bool = True
    ) -> Result:
        lane = self._limit(source, bucket=bucket)
        async with lane.slots:
            return await self.driver.run(
                item.adapter,
                command,
                source,
                timeout_s=item.timeout_s,
                connect_timeout_s=item.connect_timeout_s,
            )

    async def query(self, source_name: str, action: str, args: Mapping[str, Any]) -> Result:
        """Run a query action for the bridge itself (gap repair, reconcile): not counted
        against the source's rate limit, which is the CRMs'; still within its concurrency."""
        source, item, command = self.parse({"source": source_name, "action": action, "args": args})
        return await self._query(source, item, command, bucket=False)

    # -- lifecycle --------------------------------------------------------------------------

    async def recover(self) -> int:
        """Conclude every command a previous run left without an outcome: ``unknown``."""
        requests = await self._reader.run(sql.requests)
        ids = [_outcome_id(decode(body).data["command_id"]) for _, body in requests]
        done = await self._reader.run(lambda c: sql.bodies(c, ids))
        open_ = [
            decode(body) for (_, body), oid in zip(requests, ids, strict=True) if oid not in done
        ]
        for requested in open_:
            await self._conclude_interrupted(requested)
        if open_:
            log.warning("commands_interrupted", count=len(open_))
        return len(open_)

    async def close(self, drain_s: float = DRAIN_S) -> None:
        """Let commands in flight finish for up to ``drain_s``; the rest are cut (and concluded
        ``unknown`` at the next start)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=drain_s)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self.driver.close()
