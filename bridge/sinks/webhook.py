"""Webhook sinks: every matching committed event delivered at least once, signed, in order per
call, through any outage of the receiver.

This is the thin driver: it reads the outbox, sends what :class:`Dispatcher` says, tells it the
outcomes and writes what it asks (see :mod:`bridge.sinks.dispatch` for the rules, and
:mod:`bridge.store.deliveries` for the rows). ``run`` is a supervised service: if the outbox
fails under it, it ends with that error and the supervisor starts it again, from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from functools import partial
from types import TracebackType
from typing import Any

import structlog

from bridge import redact
from bridge.api.hub import Hub
from bridge.config import WebhookSinkConfig
from bridge.errors import TransportError
from bridge.lifecycle import Service
from bridge.sinks import policy, signing
from bridge.sinks.dispatch import Dispatcher
from bridge.sinks.items import Rules, Send, Stats
from bridge.sinks.sender import HttpSender, Sender
from bridge.store import deliveries
from bridge.store.reader import Reader
from bridge.store.writer import Writer

log = structlog.get_logger("bridge.sinks")


def rules(config: WebhookSinkConfig) -> Rules:
    return Rules(
        concurrency=config.concurrency,
        batch_size=config.batch_size,
        max_in_memory=config.max_in_memory,
        schedule=config.retry_schedule_s,
        expire_s=config.expire_s,
        sources=config.sources,
        breaker_threshold=config.breaker_threshold,
        breaker_cool_down_s=config.breaker_cool_down_s,
    )


class WebhookSink:
    """One sink: its dispatcher, its sender, its supervised ``run``."""

    kind = "webhook"

    def __init__(
        self,
        config: WebhookSinkConfig,
        *,
        writer: Writer,
        reader: Reader,
        hub: Hub,
        sender: Sender | None = None,
        rng: random.Random | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.name = config.name
        self.config = config
        self._writer, self._reader, self._hub = writer, reader, hub
        self._sender: Sender = sender or HttpSender(config.concurrency)
        self._secrets = [signing.parse_secret(secret) for secret in config.secrets]
        self._rng = rng or random.Random()
        self._wall = wall
        self._rules = rules(config)
        self.stats = Stats()
        self.dispatcher = Dispatcher(self._rules, rng=self._rng, stats=self.stats)
        self._wake = asyncio.Event()
        self._news = True
        self._crashed: BaseException | None = None
        self._draining = False  # closing: send nothing new, end when nothing is in flight
        self._drained = asyncio.Event()
        self.service = Service(f"sink-{self.name}", self.run)

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> WebhookSink:
        self.service.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self, drain_s: float = 0.0) -> None:
        """Stop. With ``drain_s``, the requests in flight first get that long to finish and
        their outcomes are stored, so a reload or a shutdown does not send them twice."""
        if drain_s > 0 and self.service.state in ("running", "backoff"):
            self._draining = True
            self.service.ending()
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain_s):
                    await self._drained.wait()
        await self.service.stop()
        await self._sender.close()

    @property
    def cursor(self) -> int:
        return self.dispatcher.cursor

    @property
    def breaker(self) -> policy.Breaker:
        return self.dispatcher.breaker

    # -- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        self._crashed = None
        stored = await deliveries.load(self._reader, self.name)
        dispatcher = self.dispatcher = Dispatcher(
            self._rules,
            rng=self._rng,
            cursor=stored.cursor,
            disabled=stored.disabled,
            recorded=stored.items,
            finished=stored.finished,
            stats=self.stats,
        )
        if stored.items:
            log.info(
                "sink_resumed", sink=self.name, cursor=stored.cursor, pending=len(stored.items)
            )
        sending: set[asyncio.Task[None]] = set()
        with self._hub.bell(self._ring), structlog.contextvars.bound_contextvars(sink=self.name):
            try:
                while True:
                    self._wake.clear()  # before the work: whatever happens during it wakes us
                    if self._draining and not sending:
                        break
                    if self._news:
                        self._news = False
                        dispatcher.news()
                    asked = dispatcher.wants(self._wall())
                    if asked:
                        page = await self._reader.page(
                            after=dispatcher.read_pos, limit=asked, types=self.config.types
                        )
                        dispatcher.offer(page.events, page.next_after, asked=asked)
                    if self._crashed is not None:
                        raise self._crashed  # the supervisor starts us again, from the store
                    for send in () if self._draining else dispatcher.poll(self._wall()):
                        task = asyncio.create_task(self._deliver(dispatcher, send))
                        sending.add(task)
                        task.add_done_callback(partial(self._delivered, sending))
                    await self._flush(dispatcher)
                    # Draining, what is due is not sent: wait for the requests in flight only.
                    await self._sleep(
                        None if self._draining else dispatcher.next_wake(self._wall())
                    )
            finally:
                for task in sending:
                    task.cancel()  # unsettled: the store still has them before the cursor
                await asyncio.gather(*sending, return_exceptions=True)
                with contextlib.suppress(Exception):
                    await self._flush(dispatcher, force=True)
                if self._draining:
                    self._drained.set()

    def _delivered(self, sending: set[asyncio.Task[None]], task: asyncio.Task[None]) -> None:
        sending.discard(task)
        if self._draining:
            self._wake.set()  # the run ends once nothing is in flight: let it see that now
        if not task.cancelled() and task.exception() is not None:
            # A bug past the sender: its slot would never come back. End the run instead.
            self._crashed = task.exception()
            self._wake.set()

    def _ring(self) -> None:
        self._news = True
        self._wake.set()

    async def _sleep(self, until: float | None) -> None:
        delay = None if until is None else until - self._wall()
        if delay is not None and delay <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()

    async def _flush(self, dispatcher: Dispatcher, *, force: bool = False) -> None:
        flush = dispatcher.flush(self._wall(), force=force)
        if flush is not None:
            await deliveries.save(self._writer, self.name, flush, self._wall())
            dispatcher.flushed(flush, self._wall())

    async def _deliver(self, dispatcher: Dispatcher, send: Send) -> None:
        now = self._wall()
        headers = {
            **self.config.headers,
            "Content-Type": "application/json",
            **signing.headers(
                secrets=self._secrets, msg_id=send.msg_id, timestamp=int(now), body=send.body
            ),
        }
        status: int | None = None
        retry_after: str | None = None
        error: BaseException | None = None
        try:
            response = await self._sender(
                self.config.url, send.body, headers, self.config.timeout_s
            )
            status, retry_after = response.status, response.retry_after
        except (TransportError, OSError, TimeoutError) as exc:
            error = exc
        except Exception as exc:  # a sender bug: dead-lettered by the policy, and said loudly
            log.exception("sink_sender_failed")
            error = exc
        decision = dispatcher.done(
            send, self._wall(), status=status, error=error, retry_after=retry_after
        )
        self._wake.set()
        first = send.items[0]
        if decision.action is policy.Action.RETRY:
            log.info(
                "sink_retry_scheduled",
                seq=first.seq,
                attempt=first.attempts,
                reason=decision.reason,
                probe=send.probe,
            )
        elif decision.action is policy.Action.DEAD:
            log.warning(
                "sink_dead_lettered", seqs=[i.seq for i in send.items], reason=decision.reason
            )
        elif decision.action is policy.Action.DISABLE:
            log.error("sink_disabled", reason=decision.reason, status=status)

    # -- operations -----------------------------------------------------------------------

    async def dead_letters(self, *, limit: int = 1000) -> list[dict[str, Any]]:
        return await deliveries.dead_letters(self._reader, self.name, limit=limit)

    async def retry_dead(self, seqs: list[int] | None) -> int:
        """Re-drive dead letters (all, or these seqs; at most ``max_in_memory`` of them, the oldest,
        per call): they are delivered again from attempt 1."""
        count = await deliveries.retry_dead(
            self._writer, self.name, seqs, self._wall(), limit=self.config.max_in_memory
        )
        if count:
            await self.service.restart()
        return count

    async def purge_dead(self, seqs: list[int] | None) -> int:
        return await deliveries.purge_dead(self._writer, self.name, seqs)

    async def replay(self, from_seq: int) -> None:
        """Send history again from ``from_seq`` (and re-enable a disabled sink)."""
        await self.service.restart(lambda: deliveries.replay(self._writer, self.name, from_seq))

    def snapshot(self, head: int) -> dict[str, Any]:
        dispatcher, stats = self.dispatcher, self.dispatcher.stats
        breaker = dispatcher.breaker
        failing = breaker.failing_since
        return {
            "name": self.name,
            "type": self.kind,
            "url": redact.url(self.config.url),
            "headers": sorted(self.config.headers),  # names only: values are often credentials
            "state": self.service.state,
            "cursor": dispatcher.cursor,
            "lag": max(0, head - dispatcher.cursor),
            "in_flight": dispatcher.in_flight,
            "in_memory": dispatcher.in_memory,
            "waiting": dispatcher.waiting(),  # for a retry
            "breaker": breaker.state,
            "failing_for_s": None if failing is None else round(self._wall() - failing, 3),
            "delivered": stats.delivered,
            "retried": stats.retried,
            "dead_lettered": stats.dead,  # since start; "dead" (stored) is added by the API
            "expired": stats.expired,
            "probes": stats.probes,
            "last_error": stats.last_error or self.service.last_error,
            "disabled": dispatcher.disabled,
        }
