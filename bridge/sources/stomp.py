"""A realtime source: STOMP 1.2 over WebSocket (Coral IRIS IVDX), subscribed forever.

One task per source owns the connection: CONNECT, SUBSCRIBE to the configured destinations,
read MESSAGE frames into the same writer as HTTP pushes, heart-beat both ways, and on any end
(server drop, dead peer, ERROR frame, refused login) wait with exponential backoff and jitter
and start again. STOMP topics have no replay, so every disconnect is a gap the consumers must
know about: each connect and disconnect is committed as a ``source.status`` event (the connect
after a gap carries its length), and ``/readyz`` shows the state.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import structlog
import websockets
from websockets.asyncio.client import ClientConnection, connect

from bridge.config import RealtimeConfig, SourceConfig
from bridge.errors import BridgeError, OutboxError, PayloadError
from bridge.events import Event, make_event
from bridge.sources import stomp_codec as codec
from bridge.sources.normalise import normalise
from bridge.store.commit import Committed
from bridge.store.writer import Writer
from bridge.vendors.base import Normalizer, Payload, SourceContext, at, context_template

log = structlog.get_logger("bridge.stomp")

Clock = Callable[[], datetime]


class SessionEnded(BridgeError):
    """The STOMP session ended; ``connected`` says whether it got as far as CONNECTED."""

    def __init__(self, reason: str, *, connected: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.connected = connected


@dataclass(slots=True)
class Status:
    """What /readyz and /metrics show of a realtime source."""

    connected: bool = False
    since: float | None = None  # monotonic time of the last connect or disconnect
    connects: int = 0
    disconnects: int = 0
    messages: int = 0
    rejected: int = 0
    lost: int = 0  # messages whose events the outbox could not commit
    last_error: str | None = None


def backoff_s(attempt: int, config: RealtimeConfig, rng: random.Random) -> float:
    """Exponential backoff with jitter: uniform in [min, min * 2**attempt], capped at max."""
    ceiling = min(config.reconnect_max_s, config.reconnect_min_s * 2 ** min(attempt, 30))
    return rng.uniform(config.reconnect_min_s, max(ceiling, config.reconnect_min_s))


class StompSource:
    """Owns one realtime subscription; an async context manager."""

    def __init__(
        self,
        source: SourceConfig,
        writer: Writer,
        normalize: Normalizer,
        *,
        vendor: str,
        clock: Clock = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
    ) -> None:
        assert source.realtime is not None
        self.name = source.name
        self._source = source
        self._config: RealtimeConfig = source.realtime
        self._writer = writer
        self._normalize = normalize
        self._vendor = vendor
        self._template = context_template(source, vendor)
        self._clock = clock
        self._rng = rng or random.Random()
        self._task: asyncio.Task[None] | None = None
        self._in_flight: deque[asyncio.Future[list[Committed]]] = deque()
        self.status = Status()

    async def __aenter__(self) -> StompSource:
        self._task = asyncio.create_task(self._run_forever(), name=f"stomp-{self.name}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._drain()

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    # -- the reconnect loop --------------------------------------------------------------

    async def _run_forever(self) -> None:
        attempt = 0
        gap_started: float | None = None
        with structlog.contextvars.bound_contextvars(source=self.name):
            while True:
                try:
                    await self._session(gap_started)
                except asyncio.CancelledError:
                    raise
                except SessionEnded as exc:
                    reason, connected = exc.reason, exc.connected
                except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                    reason, connected = f"{type(exc).__name__}: {exc}", self.status.connected
                except codec.StompProtocolError as exc:
                    reason, connected = f"protocol error: {exc}", self.status.connected
                if connected:
                    attempt = 0  # it worked for a while: start the backoff afresh
                    gap_started = time.monotonic()
                    self._set_disconnected(reason)
                    await self._record("disconnected", reason=reason)
                self.status.last_error = reason
                delay = backoff_s(attempt, self._config, self._rng)
                attempt += 1
                log.warning("realtime_reconnect_scheduled", reason=reason, delay_s=round(delay, 3))
                await asyncio.sleep(delay)

    async def _session(self, gap_started: float | None) -> None:
        config = self._config
        async with asyncio.timeout(config.connect_timeout_s):
            ws = await connect(
                config.url,
                # None, not []: an empty list would send an empty Sec-WebSocket-Protocol header,
                # which a strict server refuses (400).
                subprotocols=[websockets.Subprotocol(p) for p in config.subprotocols] or None,
                open_timeout=config.connect_timeout_s,
                max_size=2**22,
            )
        async with ws:
            decoder = codec.Decoder()
            send_ms, expect_ms = await self._handshake(ws, decoder)
            for index, destination in enumerate(config.destinations):
                await ws.send(_text(codec.subscribe(id=f"sub-{index}", destination=destination)))
            gap_s = None if gap_started is None else round(time.monotonic() - gap_started, 3)
            self._set_connected()
            log.info("realtime_connected", url=config.url, heartbeat_ms=[send_ms, expect_ms])
            await self._record("connected", gap_s=gap_s)
            beats = asyncio.create_task(self._heartbeats(ws, send_ms), name="stomp-heartbeats")
            try:
                await self._read(ws, decoder, expect_ms)
            finally:
                beats.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beats

    async def _handshake(self, ws: ClientConnection, decoder: codec.Decoder) -> tuple[int, int]:
        config = self._config
        frame = codec.connect(
            host=config.host,
            login=config.login,
            passcode=config.passcode,
            heartbeat=config.heartbeat_ms,
        )
        await ws.send(_text(frame))
        async with asyncio.timeout(config.connect_timeout_s):
            while True:
                data = await ws.recv()
                for item in decoder.feed(data):
                    if item is codec.HEARTBEAT or not isinstance(item, codec.Frame):
                        continue
                    if item.command == "CONNECTED":
                        return codec.negotiate(config.heartbeat_ms, item.header("heart-beat"))
                    if item.command == "ERROR":
                        raise SessionEnded(_error_text(item), connected=False)

    async def _heartbeats(self, ws: ClientConnection, send_ms: int) -> None:
        if not send_ms:
            return
        while True:
            await asyncio.sleep(send_ms / 1000)
            await ws.send(codec.HEARTBEAT_BYTES.decode())

    async def _read(self, ws: ClientConnection, decoder: codec.Decoder, expect_ms: int) -> None:
        # STOMP 1.2 "Heart-beating": allow for network delays; twice the interval is our margin.
        deadline = 2 * expect_ms / 1000 if expect_ms else None
        while True:
            try:
                async with asyncio.timeout(deadline):
                    data = await ws.recv()
            except TimeoutError:
                raise SessionEnded(
                    f"no data or heart-beat from the server for {deadline} s", connected=True
                ) from None
            except websockets.ConnectionClosed as exc:
                raise SessionEnded(f"connection closed: {exc}", connected=True) from None
            for item in decoder.feed(data):
                if not isinstance(item, codec.Frame):
                    continue  # a heart-beat: receiving it already reset the deadline
                if item.command == "MESSAGE":
                    await self._message(item)
                elif item.command == "ERROR":
                    raise SessionEnded(_error_text(item), connected=True)

    # -- messages into the writer ------------------------------------------------------

    async def _message(self, frame: codec.Frame) -> None:
        self.status.messages += 1
        payload = Payload(
            body=frame.body,
            content_type=frame.header("content-type", "") or "",
            path=frame.header("destination", "") or "",
        )
        try:
            events = normalise(self._normalize, payload, self._context())
        except PayloadError as exc:
            self.status.rejected += 1
            log.warning("realtime_message_rejected", field=exc.field, problem=exc.problem)
            return
        if events:
            await self._enqueue(events)

    async def _enqueue(self, events: list[Event]) -> None:
        """Hand events to the writer without waiting for each commit (order is kept).

        At most ``max_in_flight`` commits are awaited at once: past that, reading pauses, so a
        slow disk slows the socket rather than growing memory.
        """
        while len(self._in_flight) >= self._config.max_in_flight:
            await self._settle(self._in_flight.popleft())
        while True:
            try:
                future = self._writer.enqueue(events)
                break
            except OutboxError as exc:
                if self._in_flight:
                    await self._settle(self._in_flight.popleft())
                    continue
                self.status.lost += 1
                log.error("realtime_events_not_committed", error=str(exc), events=len(events))
                return
        self._in_flight.append(future)
        while self._in_flight and self._in_flight[0].done():
            await self._settle(self._in_flight.popleft())

    async def _settle(self, future: asyncio.Future[list[Committed]]) -> None:
        try:
            await future
        except OutboxError as exc:
            # The stream has no redelivery: say loudly what was lost.
            self.status.lost += 1
            log.error("realtime_events_not_committed", error=str(exc))

    async def _drain(self) -> None:
        while self._in_flight:
            await self._settle(self._in_flight.popleft())

    def _context(self) -> SourceContext:
        return at(self._template, self._clock())

    # -- status ------------------------------------------------------------------------

    def _set_connected(self) -> None:
        self.status.connected = True
        self.status.connects += 1
        self.status.since = time.monotonic()
        self.status.last_error = None

    def _set_disconnected(self, reason: str) -> None:
        self.status.connected = False
        self.status.disconnects += 1
        self.status.since = time.monotonic()
        log.warning("realtime_disconnected", reason=reason)

    async def _record(self, state: str, **extra: Any) -> None:
        """Commit a ``source.status`` event; consumers see every gap in the stream."""
        now = self._clock()
        data = {"status": state, "url": self._config.url, **extra}
        event = make_event(
            source_name=self._source.name,
            vendor=self._vendor,
            vendorevent=f"realtime.{state}",
            type="source.status",
            time=now,
            subject="pbx",
            identity=(state, now.isoformat()),
            data={key: value for key, value in data.items() if value is not None},
        )
        await self._enqueue([event])  # an outbox failure is logged (and counted) there

    def snapshot(self) -> dict[str, Any]:
        status = self.status
        return {
            "connected": status.connected,
            "for_s": None if status.since is None else round(time.monotonic() - status.since, 3),
            "connects": status.connects,
            "disconnects": status.disconnects,
            "messages": status.messages,
            "rejected": status.rejected,
            "lost": status.lost,
            "last_error": status.last_error,
        }


def _text(frame: codec.Frame) -> str:
    # STOMP is text: send WebSocket text frames (RabbitMQ's web-stomp and browsers expect them).
    return codec.encode(frame).decode()


def _error_text(frame: codec.Frame) -> str:
    detail = frame.body.decode(errors="replace").strip()
    message = frame.header("message", "") or ""
    return f"ERROR frame: {message}" + (f" ({detail})" if detail else "")
