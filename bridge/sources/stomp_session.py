"""The STOMP 1.2 client session as a sans-I/O state machine: data and time in, data and events out.

No sockets, no ``await``, no clock: the driver (``stomp.py``) feeds in what the WebSocket
delivered and the time it is (any monotonic clock, in seconds), sends what
:meth:`Session.data_to_send` returns, acts on :meth:`Session.events_received`, and calls
:meth:`Session.tick` at :meth:`Session.next_deadline`. The session owns every protocol rule: the
CONNECT, the SUBSCRIBEs once CONNECTED, heart-beats both ways, the connect and receipt timeouts,
ERROR frames and protocol errors, and the DISCONNECT/RECEIPT close. Section names below are those
of the STOMP 1.2 specification.

::

    NEW --start--> CONNECTING --CONNECTED--> CONNECTED --close--> CLOSING --RECEIPT--> ENDED
                        |                        |                   |
                        +------------------------+-------------------+--> ENDED
                          ERROR, protocol error, a timeout, an overdue server, the link lost

A started session ends exactly once, with :class:`Closed` (our DISCONNECT was confirmed) or
:class:`Ended` (anything else); after that it ignores every input.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from bridge.sources import stomp_codec as codec

__all__ = [
    "Closed",
    "Connected",
    "Ended",
    "MessageReceived",
    "Session",
    "SessionEvent",
    "State",
]

RECEIPT_ID: Final = "disconnect"
_ERROR_DETAIL_BYTES: Final = 500


class State(enum.Enum):
    NEW = "new"
    CONNECTING = "connecting"  # CONNECT sent, waiting for CONNECTED
    CONNECTED = "connected"
    CLOSING = "closing"  # DISCONNECT sent, waiting for its RECEIPT
    ENDED = "ended"


@dataclass(frozen=True, slots=True, kw_only=True)
class Connected:
    """CONNECTED arrived; the heart-beats negotiated ("Heart-beating"), 0 = off."""

    send_ms: int
    expect_ms: int
    version: str | None
    server: str | None


@dataclass(frozen=True, slots=True)
class MessageReceived:
    frame: codec.Frame


@dataclass(frozen=True, slots=True, kw_only=True)
class Ended:
    """The session is over (close the connection); ``connected``: it had got to CONNECTED."""

    reason: str
    connected: bool


@dataclass(frozen=True, slots=True)
class Closed:
    """The RECEIPT for our DISCONNECT arrived: the server has everything we sent ("DISCONNECT")."""

    receipt_id: str


SessionEvent = Connected | MessageReceived | Ended | Closed


class Session:
    """One STOMP session, from CONNECT to its end; times are seconds on one monotonic clock."""

    def __init__(
        self,
        *,
        host: str = "",
        login: str | None = None,
        passcode: str | None = None,
        heartbeat_ms: tuple[int, int] = (0, 0),
        destinations: Sequence[str] = (),
        connect_timeout_s: float = 10.0,
        receipt_timeout_s: float = 0.5,
        max_frame_bytes: int = 1 << 20,
    ) -> None:
        self._connect = codec.connect(
            host=host, login=login, passcode=passcode, heartbeat=heartbeat_ms
        )
        self._heartbeat = heartbeat_ms
        self._destinations = tuple(destinations)
        self._connect_timeout_s = connect_timeout_s
        self._receipt_timeout_s = receipt_timeout_s
        self._decoder = codec.Decoder(max_frame_bytes=max_frame_bytes)
        self._out: list[str] = []
        self._events: list[SessionEvent] = []
        self._deadline: float | None = None  # CONNECTED or RECEIPT due by then
        self._send_ms = 0
        self._expect_ms = 0
        self._sent_at = 0.0
        self._heard_at = 0.0
        self.state = State.NEW
        self.connected = False  # it got as far as CONNECTED

    # -- inputs ----------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Send CONNECT; CONNECTED is due within the connect timeout."""
        if self.state is not State.NEW:
            raise RuntimeError(f"the session is already {self.state.value}")
        self.state = State.CONNECTING
        self._send(self._connect, now)
        self._heard_at = now
        self._deadline = now + self._connect_timeout_s

    def received(self, data: bytes | str, now: float) -> None:
        """One WebSocket message (any part of a frame, several frames, or heart-beats)."""
        if self.state in (State.NEW, State.ENDED):
            return
        # "Heart-beating": any new data shows the server is alive, even part of a frame.
        self._heard_at = now
        try:
            items = self._decoder.feed(data)
            for item in items:
                if self.ended:  # an ERROR or a protocol error: what follows is not read
                    break
                if isinstance(item, codec.Frame):  # a bare EOL only counted as data
                    self._frame(item, now)
        except codec.StompProtocolError as exc:
            self._end(f"protocol error: {exc}")

    def tick(self, now: float) -> None:
        """Act on every deadline that has passed: timeouts, an overdue server, a heart-beat."""
        if self.state in (State.NEW, State.ENDED):
            return
        if self._deadline is not None and now >= self._deadline:
            if self.state is State.CONNECTING:
                self._end(f"no CONNECTED frame within {self._connect_timeout_s:g} s")
            else:
                self._end(f"no RECEIPT for DISCONNECT within {self._receipt_timeout_s:g} s")
            return
        if self.state is State.CONNECTING:
            return
        overdue = self._overdue_at()
        if overdue is not None and now >= overdue:
            silent_s = 2 * self._expect_ms / 1000
            self._end(f"no data or heart-beat from the server for {silent_s:g} s")
            return
        beat = self._beat_at()
        if beat is not None and now >= beat:
            self._out.append(codec.HEARTBEAT_BYTES.decode())
            self._sent_at = now

    def close(self, now: float) -> None:
        """End the session: DISCONNECT with a receipt when CONNECTED, else at once."""
        if self.state is State.NEW:
            self.state = State.ENDED
        elif self.state is State.CONNECTING:
            self._end("closed by the client before CONNECTED")
        elif self.state is State.CONNECTED:
            # "DISCONNECT": wait for the RECEIPT so nothing we sent is lost, then close.
            self.state = State.CLOSING
            self._send(codec.disconnect(receipt=RECEIPT_ID), now)
            self._deadline = now + self._receipt_timeout_s

    def lost(self, reason: str) -> None:
        """The connection is gone (closed by the peer, a network error)."""
        if self.state not in (State.NEW, State.ENDED):
            self._end(reason)

    # -- outputs ---------------------------------------------------------------------------

    def data_to_send(self) -> list[str]:
        """WebSocket text messages to send now, in order (STOMP is text: frames, heart-beats)."""
        out, self._out = self._out, []
        return out

    def events_received(self) -> list[SessionEvent]:
        events, self._events = self._events, []
        return events

    def next_deadline(self) -> float | None:
        """When :meth:`tick` must run next (``None``: only data can change anything)."""
        if self.state in (State.NEW, State.ENDED):
            return None
        times = [self._deadline, self._beat_at(), self._overdue_at()]
        return min((t for t in times if t is not None), default=None)

    @property
    def ended(self) -> bool:
        return self.state is State.ENDED

    # -- rules -----------------------------------------------------------------------------

    def _frame(self, frame: codec.Frame, now: float) -> None:
        command = frame.command
        if command == "ERROR":
            # "ERROR": the server closes the connection after it.
            self._end(_error_text(frame))
        elif self.state is State.CONNECTING:
            if command != "CONNECTED":
                raise codec.StompProtocolError(f"{command} frame before CONNECTED")
            self._connected(frame, now)
        elif command == "MESSAGE":
            # Also while CLOSING: the server may deliver until it has read our DISCONNECT.
            self._events.append(MessageReceived(frame))
        elif command == "RECEIPT":
            # We ask for one receipt only; another would answer nothing we sent.
            if self.state is State.CLOSING and frame.header("receipt-id") == RECEIPT_ID:
                self.state = State.ENDED
                self._events.append(Closed(RECEIPT_ID))
        else:
            raise codec.StompProtocolError(f"unexpected {command} frame")

    def _connected(self, frame: codec.Frame, now: float) -> None:
        self._send_ms, self._expect_ms = codec.negotiate(
            self._heartbeat, frame.header("heart-beat")
        )
        self.state = State.CONNECTED
        self.connected = True
        self._deadline = None
        self._events.append(
            Connected(
                send_ms=self._send_ms,
                expect_ms=self._expect_ms,
                version=frame.header("version"),
                server=frame.header("server"),
            )
        )
        for index, destination in enumerate(self._destinations):
            self._send(codec.subscribe(id=f"sub-{index}", destination=destination), now)

    def _beat_at(self) -> float | None:
        if self.state not in (State.CONNECTED, State.CLOSING) or not self._send_ms:
            return None
        # "Heart-beating": something (a frame or an EOL) at least every send_ms.
        return self._sent_at + self._send_ms / 1000

    def _overdue_at(self) -> float | None:
        if self.state not in (State.CONNECTED, State.CLOSING) or not self._expect_ms:
            return None
        # "Heart-beating" lets the receiver allow for network delay: twice the interval is ours.
        return self._heard_at + 2 * self._expect_ms / 1000

    def _send(self, frame: codec.Frame, now: float) -> None:
        # Text WebSocket messages: RabbitMQ's web-stomp and browsers expect STOMP as text.
        self._out.append(codec.encode(frame).decode())
        self._sent_at = now

    def _end(self, reason: str) -> None:
        self.state = State.ENDED
        self._deadline = None
        self._events.append(Ended(reason=reason, connected=self.connected))


def _error_text(frame: codec.Frame) -> str:
    # A reason for logs and status events: a server's ERROR body can be a page long.
    detail = frame.body[:_ERROR_DETAIL_BYTES].decode(errors="replace").strip()
    message = (frame.header("message", "") or "")[:_ERROR_DETAIL_BYTES]
    return f"ERROR frame: {message}" + (f" ({detail})" if detail else "")
