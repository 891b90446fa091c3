"""A realtime source: STOMP 1.2 over WebSocket (Coral IRIS IVDX), subscribed forever.

A thin ``websockets`` driver around the sans-I/O :class:`~bridge.sources.stomp_session.Session`,
which owns every protocol rule. ``run`` is the reconnect loop: after any expected end (server
drop, dead peer, ERROR frame, refused login, a network error) it waits with exponential backoff
and jitter and starts again; anything unexpected escapes to the :class:`~bridge.lifecycle.Service`
running it, which logs ``task_died`` and starts ``run`` again. Cancelled, it ends cleanly:
DISCONNECT, a brief wait for the RECEIPT, a WebSocket close "going away", a ``stopped`` status.

STOMP topics have no replay, so every gap is on the stream: each connect, disconnect and stop is
a ``source.status`` event, and a connect after a gap carries ``gap_s`` and ``gap_since`` (the
first one after a restart too: the previous run's last status is read from the outbox). A
message that cannot become events is quarantined byte for byte, and the stream goes on.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final

import structlog
import websockets
from websockets.asyncio.client import ClientConnection, connect

from bridge import redact
from bridge.config import RealtimeConfig, SourceConfig
from bridge.events import rfc3339
from bridge.lifecycle import Backoff, Service
from bridge.sources.realtime_intake import Counts, Quarantine, RealtimeIntake
from bridge.sources.stomp_session import Closed, Connected, Ended, MessageReceived, Session
from bridge.store.reader import Reader
from bridge.store.writer import Writer
from bridge.vendors.base import Normalizer, Payload

log = structlog.get_logger("bridge.stomp")

Clock = Callable[[], datetime]

# Shutdown takes about a second at most whatever the server does: this long for the RECEIPT,
# then this long for the WebSocket closing handshake before the TCP connection is dropped.
RECEIPT_TIMEOUT_S: Final = 0.5
CLOSE_TIMEOUT_S: Final = 0.25


@dataclass(slots=True)
class Status(Counts):
    """What /readyz and /metrics show of a realtime source (and the message counts)."""

    connected: bool = False
    since: float | None = None  # monotonic time of the last connect or disconnect
    connects: int = 0
    disconnects: int = 0
    last_error: str | None = None
    gaps: int = 0  # connects after a gap (the first one after a restart too)
    gap_s: float = 0.0  # the seconds of those gaps


def backoff_s(attempt: int, config: RealtimeConfig, rng: random.Random) -> float:
    """The wait before reconnect attempt ``attempt`` (0 first): the supervisors' backoff."""
    return Backoff(config.reconnect_min_s, config.reconnect_max_s).delay_s(attempt, rng)


class StompSource:
    """One realtime subscription: ``run`` under a Service, or ``async with`` (which runs one)."""

    def __init__(
        self,
        source: SourceConfig,
        writer: Writer,
        normalize: Normalizer,
        *,
        vendor: str,
        quarantine: Quarantine | None = None,
        reader: Reader | None = None,
        clock: Clock = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
        on_gap: Callable[[str], None] | None = None,
    ) -> None:
        assert source.realtime is not None
        self.name = source.name
        self._on_gap = on_gap  # told the source's name after a connect that ended a gap
        self._config: RealtimeConfig = source.realtime
        self._clock = clock
        self._rng = rng or random.Random()
        self.status = Status()
        self._intake = RealtimeIntake(
            source,
            writer,
            normalize,
            vendor=vendor,
            clock=clock,
            counts=self.status,
            quarantine=quarantine,
            reader=reader,
            max_in_flight=self._config.max_in_flight,
        )
        # Where the current gap began: wall time, and monotonic time when it began in this run.
        self._gap: tuple[datetime, float | None] | None = None
        self._gap_read = False
        # What ``async with`` runs ``run`` under (a daemon may run ``run`` under its own instead).
        self.service = Service(f"realtime-{self.name}", self.run, health=self.health)

    async def __aenter__(self) -> StompSource:
        self.service.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.service.stop()
        await self.drain()

    def health(self) -> str | None:
        """``None`` while subscribed, else why not."""
        if self.status.connected:
            return None
        return f"realtime disconnected: {self.status.last_error or 'not connected yet'}"

    async def drain(self) -> None:
        """Wait for the commits already handed to the writer (once ``run`` has stopped)."""
        await self._intake.drain()

    # -- the reconnect loop ----------------------------------------------------------------

    async def run(self) -> None:
        """Connect, subscribe and commit until cancelled, reconnecting after every end."""
        with structlog.contextvars.bound_contextvars(source=self.name):
            if not self._gap_read:
                # The gap a restart left began at the previous run's last status: "stopped"
                # after a clean stop, else (a crash) its last connect or disconnect.
                last = await self._intake.last_status_at()
                self._gap, self._gap_read = (None if last is None else (last, None)), True
            attempt = 0
            try:
                while True:
                    try:
                        reason = (await self._session()).reason
                    except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                        reason = f"{type(exc).__name__}: {exc}"
                    if self.status.connected:
                        attempt = 0  # it worked for a while: start the backoff afresh
                        await self._down("disconnected", reason)
                    self.status.last_error = reason
                    delay = backoff_s(attempt, self._config, self._rng)
                    attempt += 1
                    log.warning(
                        "realtime_reconnect_scheduled", reason=reason, delay_s=round(delay, 3)
                    )
                    await asyncio.sleep(delay)
            except asyncio.CancelledError:
                if self.status.connected:
                    await self._down("stopped", None)
                raise
            except Exception as exc:  # a bug: the Service restarts run; the gap begins here
                if self.status.connected:
                    await self._down("disconnected", f"internal error: {type(exc).__name__}")
                raise

    async def _session(self) -> Ended:
        config = self._config
        async with asyncio.timeout(config.connect_timeout_s):
            ws = await connect(
                config.url,
                # None, not []: an empty list would send an empty Sec-WebSocket-Protocol header,
                # which a strict server refuses (400).
                subprotocols=[websockets.Subprotocol(p) for p in config.subprotocols] or None,
                open_timeout=config.connect_timeout_s,
                close_timeout=CLOSE_TIMEOUT_S,
                max_size=2**22,
            )
        session = Session(
            host=config.host,
            login=config.login,
            passcode=config.passcode,
            heartbeat_ms=config.heartbeat_ms,
            destinations=config.destinations,
            connect_timeout_s=config.connect_timeout_s,
            receipt_timeout_s=RECEIPT_TIMEOUT_S,
        )
        going_away = False
        try:
            session.start(_now())
            end = await self._pump(ws, session)
            assert isinstance(end, Ended)  # only our close() ends in Closed
            return end
        except asyncio.CancelledError:
            going_away = True
            session.close(_now())  # DISCONNECT; the session's receipt deadline bounds the wait
            try:
                async with asyncio.timeout(2 * RECEIPT_TIMEOUT_S):  # guarding the guard
                    last = await self._pump(ws, session)
                problem = None if isinstance(last, Closed) or not last.connected else last.reason
            except Exception as exc:  # shutting down: nothing may keep the cancel from us
                problem = f"{type(exc).__name__}: {exc}"
            if problem is not None:  # e.g. RabbitMQ 3.10's web-stomp just closes the socket
                log.info("realtime_disconnect_unconfirmed", reason=problem)
            raise
        finally:
            code, reason = (1001, "going away") if going_away else (1000, "")
            try:
                async with asyncio.timeout(2 * CLOSE_TIMEOUT_S):
                    await ws.close(code, reason)
            except TimeoutError:
                ws.transport.abort()

    async def _pump(self, ws: ClientConnection, session: Session) -> Ended | Closed:
        """Move data between the socket and the session, acting on its events, until it ends."""
        while True:
            for text in session.data_to_send():
                try:
                    await ws.send(text)
                except websockets.ConnectionClosed as exc:
                    session.lost(f"connection closed: {exc}")
                    break
            for event in session.events_received():
                if isinstance(event, Connected):
                    await self._connected(event)
                elif isinstance(event, MessageReceived):
                    frame = event.frame
                    payload = Payload(
                        body=frame.body,
                        content_type=frame.header("content-type", "") or "",
                        path=frame.header("destination", "") or "",
                    )
                    await self._intake.message(payload)
                else:
                    return event
            try:
                async with asyncio.timeout_at(session.next_deadline()):
                    data = await ws.recv()
            except TimeoutError:
                session.tick(_now())
            except websockets.ConnectionClosed as exc:
                session.lost(f"connection closed: {exc}")
            else:
                now = _now()
                session.received(data, now)
                session.tick(now)  # a server that never pauses must not starve the deadlines

    # -- status ----------------------------------------------------------------------------

    async def _connected(self, event: Connected) -> None:
        gap: dict[str, Any] = {}
        if self._gap is not None:  # None: the first connect this outbox has seen
            since, monotonic = self._gap
            if monotonic is not None:
                gap_s = time.monotonic() - monotonic
            else:  # the gap spans a restart: only the wall clock does too
                gap_s = max(0.0, (self._clock() - since).total_seconds())
            gap = {"gap_s": round(gap_s, 3), "gap_since": rfc3339(since)}
            self.status.gaps += 1
            self.status.gap_s += gap_s
        self._gap = None
        status = self.status
        status.connected, status.since, status.last_error = True, time.monotonic(), None
        status.connects += 1
        heartbeat_ms = [event.send_ms, event.expect_ms]
        shown = redact.url(self._config.url)
        log.info("realtime_connected", url=shown, heartbeat_ms=heartbeat_ms, **gap)
        await self._intake.status("connected", url=shown, **gap)
        if gap and self._on_gap is not None:
            self._on_gap(self.name)  # e.g. ask the PBX which calls are still active

    async def _down(self, state: str, reason: str | None) -> None:
        """The stream stopped (``disconnected`` with a reason, or ``stopped``): commit it."""
        self._gap = (self._clock(), time.monotonic())
        status = self.status
        status.connected, status.since, status.last_error = False, time.monotonic(), reason or state
        status.disconnects += 1
        if reason is None:
            log.info("realtime_stopped")
        else:
            log.warning("realtime_disconnected", reason=reason)
        await self._intake.status(state, url=redact.url(self._config.url), reason=reason)

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


def _now() -> float:
    # asyncio's own clock, so the session's deadlines are timeout_at's deadlines as they are.
    return asyncio.get_running_loop().time()
