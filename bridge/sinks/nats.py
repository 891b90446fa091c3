"""NATS JetStream sink: every matching committed event published to a stream, at least once.

One task per sink reads the outbox by ``seq`` after its durable cursor, a page of up to
``max_in_flight`` events at a time, puts the whole page on the wire with ``publish_async``,
waits for every ack, and only then moves the cursor past the page (one transaction per page).
Any failure (timeout, no responders, connection closed, API error) leaves the cursor where it
was: back off, publish the page again. ``Nats-Msg-Id`` is the event ``id``, so JetStream drops
the copies within its duplicate window: exactly once per id as the stream's consumers see it.

Subjects are ``<prefix>.<vendor>.<type>`` (``pbx.coocenter.call.ringing``): the type's dot is a
subject separator on purpose, so consumers can subscribe to ``pbx.*.call.>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
from types import TracebackType
from typing import Any

import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StreamConfig

from bridge.api.hub import Hub
from bridge.config import NatsSinkConfig
from bridge.errors import OutboxError
from bridge.lifecycle import Backoff, Service
from bridge.store import deliveries
from bridge.store.commit import Committed
from bridge.store.reader import Reader
from bridge.store.writer import Writer

log = structlog.get_logger("bridge.sinks")

DUPLICATE_WINDOW_S = 120.0  # for a stream we create; replays older than this are stored again
CLOSE_TIMEOUT_S = 2.0
# What a publish can fail with; every one of them means: back off, publish the page again.
RETRYABLE = (nats.errors.Error, TimeoutError, OSError, OutboxError)

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def subject_for(prefix: str, vendor: str, event_type: str) -> str:
    """``<prefix>.<vendor>.<type>``; outside ``[A-Za-z0-9_-]`` (wildcards, spaces, a dot in the
    vendor) is ``_``, so neither can add, drop or widen a token; the type's dots separate."""
    parts = [vendor, *event_type.split(".")]
    return ".".join([prefix, *(_UNSAFE.sub("_", part) or "_" for part in parts)])


class NatsSink:
    """One sink's publisher: its supervised ``run`` owns the connection."""

    kind = "nats"

    def __init__(
        self,
        config: NatsSinkConfig,
        *,
        writer: Writer,
        reader: Reader,
        hub: Hub,
        rng: random.Random | None = None,
    ) -> None:
        self.name = config.name
        self.config = config
        self._writer, self._reader, self._hub = writer, reader, hub
        self._rng = rng or random.Random()
        self._news = asyncio.Event()
        self.service = Service(f"sink-{self.name}", self.run)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._stream_checked = False
        self.cursor = 0
        self.published = 0
        self.duplicates = 0  # acks JetStream marked duplicate (a replay, or a retried page)
        self.retries = 0  # pages that failed and were published again
        self.last_error: str | None = None

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> NatsSink:
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
        """Stop. ``drain_s`` is not needed: a page published again after a restart is dropped
        by JetStream (``Nats-Msg-Id``) within its duplicate window."""
        await self.service.stop()

    async def replay(self, from_seq: int) -> None:
        """Publish history again from ``from_seq``; the stream drops ids it has in its window."""
        await self.service.restart(lambda: self._save(max(0, from_seq - 1)))

    def snapshot(self, head: int) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": "nats",
            "stream": self.config.stream,
            "cursor": self.cursor,
            "lag": max(0, head - self.cursor),
            "published": self.published,
            "duplicates": self.duplicates,
            "retries": self.retries,
            "last_error": self.last_error,
            "connected": self._nc is not None and self._nc.is_connected,
            "state": self.service.state,
        }

    # -- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        # Rung before the first read: whatever commits after it wakes us.
        with (
            self._hub.bell(self._news.set),
            structlog.contextvars.bound_contextvars(sink=self.name),
        ):
            try:
                self.cursor = await deliveries.cursor(self._reader, self.name)
                await self._publish_forever()
            finally:
                await self._close()

    async def _publish_forever(self) -> None:
        failures = 0
        while True:
            self._news.clear()  # the outbox is the truth: read it after this point
            try:
                js = await self._jetstream()
                while await self._publish_page(js):
                    pass  # a full page: there may be more right behind it
            except RETRYABLE as exc:
                failures += 1
                self.retries += 1
                self._stream_checked = False  # it may be the stream that is gone
                await self._failed(exc)
                await asyncio.sleep(self._backoff_s(failures))
                continue
            if failures:
                log.info("nats_publishing_resumed", cursor=self.cursor, failures=failures)
                failures = 0
            await self._news.wait()

    async def _publish_page(self, js: JetStreamContext) -> bool:
        """Publish the next page and wait for its acks, then move the cursor; True if full."""
        limit = self.config.max_in_flight
        page = await self._reader.page(after=self.cursor, limit=limit, types=self.config.types)
        batch = [event for event in page.events if self._wanted(event)]
        futures: list[asyncio.Future[Any]] = []
        stream = self.config.stream
        try:  # the timeout covers the sends too: a stalled socket can block a flush
            async with asyncio.timeout(self.config.ack_timeout_s):
                for event in batch:
                    subject, headers = self._message(event)
                    sending = js.publish_async(subject, event.body, headers=headers, stream=stream)
                    futures.append(await sending)  # on the wire; its ack is the future
                acks = await asyncio.gather(*futures)
        finally:
            for future in futures:
                future.cancel()  # no-op once acked; frees nats-py's slot for one that is not
        self.published += len(acks)
        self.duplicates += sum(1 for ack in acks if ack.duplicate)
        if page.next_after > self.cursor:
            await self._save(page.next_after)
        return len(page.events) == limit

    def _wanted(self, event: Committed) -> bool:
        sources = self.config.sources
        return not sources or event.source.rsplit("/", 1)[-1] in sources

    def _message(self, event: Committed) -> tuple[str, dict[str, str]]:
        vendor = event.source.strip("/").split("/")[0]
        headers = {
            "Nats-Msg-Id": event.id,
            # CloudEvents NATS binding: the body is structured-mode JSON; the ce- headers
            # repeat the routing attributes for consumers that filter without parsing it.
            "Content-Type": "application/cloudevents+json",
            "ce-specversion": "1.0",
            "ce-id": event.id,
            "ce-source": event.source,
            "ce-type": event.type,
        }
        return subject_for(self.config.subject_prefix, vendor, event.type), headers

    async def _save(self, seq: int) -> None:
        await deliveries.save_cursor(self._writer, self.name, seq)
        self.cursor = seq  # only once it is durable

    # -- the connection -------------------------------------------------------------------

    async def _jetstream(self) -> JetStreamContext:
        """The connection (made on first use, and again if nats-py gave up on it), its stream."""
        if self._nc is None or self._js is None or self._nc.is_closed:
            await self._close()
            self._nc = await self._connect()
            # One context per connection: its first publish_async subscribes the ack inbox.
            self._js = self._nc.jetstream(
                timeout=self.config.ack_timeout_s,
                publish_async_max_pending=self.config.max_in_flight,
            )
        if self.config.create_stream and not self._stream_checked:
            await self._ensure_stream(self._js)
            self._stream_checked = True
        return self._js

    async def _connect(self) -> Client:
        config, nc = self.config, Client()
        await nc.connect(
            servers=list(config.servers),
            user=config.user,
            password=config.password,
            token=config.token,
            name=f"pbx-bridge/{self.name}",
            max_reconnect_attempts=-1,  # forever; the first connect too
            reconnect_time_wait=config.reconnect_min_s,  # type: ignore[arg-type]  # int hint
            connect_timeout=max(1, round(config.ack_timeout_s)),
            error_cb=self._failed,  # not nats-py's default: a traceback per reconnect attempt
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
        )
        url = nc.connected_url  # host and port only: a URL may carry credentials
        server = f"{url.hostname}:{url.port}" if url is not None else None
        log.info("nats_connected", server=server, stream=config.stream)
        return nc

    async def _on_disconnected(self) -> None:
        if self._nc is not None:  # not our own close()
            log.warning("nats_disconnected")

    async def _on_reconnected(self) -> None:
        log.info("nats_reconnected")  # publishes buffered meanwhile go out; acks may follow

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        name, subjects = self.config.stream, [f"{self.config.subject_prefix}.>"]
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.stream_info(name)
            return
        config = StreamConfig(name=name, subjects=subjects, duplicate_window=DUPLICATE_WINDOW_S)
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError:
            await js.stream_info(name)  # another bridge created it first: fine if it is there
        log.info("nats_stream_created", stream=name, subjects=subjects)

    async def _close(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await nc.close()

    async def _failed(self, exc: BaseException) -> None:
        error = f"{type(exc).__name__}: {exc}".rstrip(": ")
        if error != self.last_error:  # once per distinct error, not once per retry
            log.warning("nats_failed", error=error, cursor=self.cursor)
        self.last_error = error

    def _backoff_s(self, failures: int) -> float:
        backoff = Backoff(self.config.reconnect_min_s, self.config.reconnect_max_s)
        return backoff.delay_s(failures - 1, self._rng)
